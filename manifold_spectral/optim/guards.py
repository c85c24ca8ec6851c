"""The checks a ``SpectralKron`` step makes before it computes anything: the gradients
(finite, and whose squares the state dtype can hold) and the group options (changed since
the last step: validated, and the preconditioners rebuilt where they were built with them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..linalg import all_finite
from . import checks
from .pending import PendingChecks
from .preconditioners import kronecker_shape

__all__ = ["GuardsMixin", "GradientCheckFailed"]


class GradientCheckFailed(Exception):
    """A gradient check that ``_check_grads`` deferred to the step's ``PendingChecks`` failed:
    the step, which has written nothing, is to be decided by a check read at once."""


class GuardsMixin:
    """``_check_grads`` and ``_sync_groups`` of ``SpectralKron``."""

    def _check_grads(
        self,
        packed: Callable[[], list[Tensor]] | None = None,
        defer: Callable[[], PendingChecks | None] | None = None,
    ) -> bool:
        """Whether the step may be taken: ``False`` to skip it (a NaN or Inf gradient with
        ``nonfinite="skip"``, or a finite gradient whose squares overflow its state dtype:
        ``checks.square_bound``, with a warning); a NaN or Inf gradient with
        ``nonfinite="raise"`` raises, naming the parameter.

        ``packed``: called once the parameters passed ``checks.unsteppable_error``, tensors
        holding every gradient entry (in its dtype) and otherwise zeros, e.g. the step's
        packed buckets: the test that all is well then reads a few maxima instead of one per
        gradient. ``defer`` (called after ``packed``): a ``PendingChecks`` to read that test
        with (one host synchronisation for the gradients and the step's results; its verdict
        raises ``GradientCheckFailed``, and ``True`` is returned now), or ``None``: read now.
        Only a caller that computes nothing from a bad gradient but what it discards can
        defer: a step of parameters with state (a first step's initialisation reads them)."""
        grads, bounds = [], []
        for gi, group in enumerate(self.param_groups):
            by_dtype: dict[torch.dtype, float] = {}  # a parameter dtype's bound in this group
            for pi, p in enumerate(group["params"]):
                grad = p.grad
                if grad is None:
                    continue
                error = checks.unsteppable_error(gi, pi, p)
                if error is not None:
                    raise error
                if grad.numel():
                    grads.append(grad)
                    bound = by_dtype.get(p.dtype)
                    if bound is None:
                        bound = checks.square_bound(self._state_dtype(group, p))
                        by_dtype[p.dtype] = bound
                    bounds.append(bound)
        if not grads:
            return True
        # One host synchronisation for all gradients: the largest max-norm is NaN or Inf
        # exactly when an entry is (a maximum cannot overflow, and NaN propagates), and
        # below the smallest bound every square fits its state dtype. The tests per
        # parameter run only to name a bad one.
        if packed is not None:
            # |0| <= max |g|, and NaN propagates: the same largest max-norm (one bucket's is
            # read as it is: no stack and maximum of one value)
            maxima = checks.max_norms(packed())
            if not maxima:  # every gradient is zero, awaiting its warm start (_buckets)
                return True
            top = maxima[0] if len(maxima) == 1 else torch.stack(maxima).max()
            pending = defer() if defer is not None else None
            if pending is not None:
                pending.add([top], _gradients_verdict(min(bounds)))
                return True
            if float(top) <= min(bounds):
                return True
        norms = torch.stack(checks.max_norms(grads))
        if float(norms.max()) <= min(bounds):
            return True
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is not None and not all_finite(p.grad):
                    if self.nonfinite == "skip":
                        return False
                    raise checks.nonfinite_gradient_error(gi, pi, tuple(p.shape))
        for (gi, pi), norm, bound in zip(self._with_grads(), norms.tolist(), bounds, strict=True):
            if norm > bound:
                p = self.param_groups[gi]["params"][pi]
                checks.warn_skipped(
                    f"params[{gi}][{pi}] (shape {tuple(p.shape)}) has a gradient entry of "
                    f"size {norm:.3g}, whose square overflows its state dtype "
                    f"{self._state_dtype(self.param_groups[gi], p)} (above {bound:.3g}); a "
                    "float64 state_dtype or a smaller loss scale takes it"
                )
                return False
        return True

    def _sync_groups(self) -> None:
        """Options changed in ``param_groups`` since the last step (a schedule, a user):
        validated like the constructor's (an error names the option, nothing changed); a
        change of an option the preconditioners were built with (``beta2``, ``damping``,
        ``root``, ``cayley``, ...) rebuilds them from the kept state, so that it takes effect
        at once, as it would after a ``load_state_dict``; a change of ``LAYOUT_OPTIONS`` once
        the group's parameters have state is a ``ValueError``."""
        keys = tuple(self.defaults)
        for gi, group in enumerate(self.param_groups):
            sig = checks.option_signature(group, keys)
            old = self._signatures.get(id(group))
            if sig == old:
                continue
            self._validate(group)
            if old is not None:
                changed = {k for k, a, b in zip(keys, old, sig, strict=True) if a != b}
                before = {k: v for k, (_, v) in zip(keys, old, strict=True)}
                for p in group["params"]:
                    if self.state.get(p) and _layout(p, before) != _layout(p, group):
                        layout = [k for k in checks.LAYOUT_OPTIONS if k in changed]
                        raise ValueError(
                            f"{layout[0]}: changed in param_groups[{gi}] after its parameters "
                            "got state laid out by the old value; build a new optimizer (or "
                            "load a state_dict saved with the new value); nothing was changed"
                        )
                if changed - checks.STEP_OPTIONS:
                    for p in group["params"]:
                        self._preconditioners.pop(p, None)
                    for key in [k for k in self._batched if k[0] == gi]:
                        del self._batched[key]
                    self._packed.clear()
            self._signatures[id(group)] = sig

    def _with_grads(self) -> list[tuple[int, int]]:
        """``(group, index)`` of the parameters with a non-empty dense gradient, in order."""
        return [
            (gi, pi)
            for gi, group in enumerate(self.param_groups)
            for pi, p in enumerate(group["params"])
            if p.grad is not None and p.grad.numel()
        ]


def _gradients_verdict(bound: float) -> Callable[[list[float]], None]:
    """The verdict on the gradients' largest max-norm: ``GradientCheckFailed`` unless it is at
    most ``bound`` (NaN fails the comparison)."""

    def verdict(values: list[float]) -> None:
        if not values[0] <= bound:
            raise GradientCheckFailed

    return verdict


def _layout(p: Tensor, opts: dict[str, Any]) -> tuple[Any, ...]:
    """What a parameter's state layout depends on: its state dtype and Kronecker shape (or
    ``None``: the diagonal scheme)."""
    return (checks.state_dtype_of(opts, p), kronecker_shape(tuple(p.shape), opts))
