"""Validation of ``SpectralKron`` hyper-parameters and saved state, before anything is written.

A state dict is checked whole before ``load_state_dict`` touches the optimizer: a negative
``lr`` would train as ascent, a NaN momentum buffer or step count would make every later step
fail, so each is refused with a ``ValueError`` naming the entry, and nothing is loaded.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch
from torch import Tensor

from ..linalg import check_cayley, max_abs
from ..validation import (
    check_count,
    check_dtype,
    check_exponential,
    check_flag,
    check_fraction,
    check_momentum,
    check_positive,
    check_size,
    computes_in,
)
from . import option_defaults
from .option_defaults import curvature_period

__all__ = [
    "validate_group",
    "curvature_period",
    "state_dtype_of",
    "check_state_matches",
    "COUNTERS",
    "NonFiniteUpdate",
    "square_bound",
    "largest",
    "warn_skipped",
    "STEP_OPTIONS",
    "LAYOUT_OPTIONS",
    "option_signature",
]

#: Per-parameter event counters kept in the state (ints, saved with it): curvature steps
#: whose truncated eigenvalue map left the positive reals and were taken with the continued
#: map, curvature steps recorded as failed (a state saved when a failed curvature step
#: kept the previous curvature; a failing step is now skipped whole: ``skipped_steps``), and
#: curvature steps whose period's mean GOP (``accumulate_gop``) overflowed them and that took
#: the step's own gradient's GOP instead.
COUNTERS = ("curvature_fallbacks", "curvature_rejections", "gop_fallbacks")


#: Options a step reads from its group (a change takes effect at the next step); a change of
#: any other option rebuilds the group's preconditioners from their kept state. Not the
#: periods ``update_every`` and ``diagonal_every``: they set the curvature steps' default
#: rate (``option_defaults.beta2``), which the preconditioners are built with.
STEP_OPTIONS = frozenset(
    {
        "lr",
        "weight_decay",
        "momentum",
        "nesterov",
        "correction_beta",
        "eigenvalue_correction",
        "clip_rms",
        "graft",
    }
)
#: Options that fix the layout of a parameter's state (Kronecker factors or the diagonal
#: scheme, and their dtype): they cannot change once a parameter of the group has state.
LAYOUT_OPTIONS = ("state_dtype", "diagonal", "max_factor_dim", "max_aspect")


def option_signature(group: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The group's options ``keys`` as a comparable tuple, to see which changed between steps.

    Each option is its type and value: ``True == 1`` and ``1 == 1.0``, so a flag set to ``1``
    or a period set to ``True`` would compare equal to the old value and escape the validation
    that the constructor gives it. A tensor option is its identity and version counter: its
    value is read by the step itself, and torch's schedulers write a tensor ``lr`` in place
    (``fill_``), which only the version counter records (a negative ``lr`` would then train
    as ascent unvalidated). An inference tensor has no version counter: it is validated at
    every step."""
    values = tuple(map(group.get, keys))
    types = tuple(map(type, values))
    # the usual case, no tensor option, tested over the few distinct types (read every step)
    if not any(issubclass(t, Tensor) for t in set(types)):
        return tuple(zip(types, values, strict=True))
    return tuple(
        (t, _tensor_signature(v) if isinstance(v, Tensor) else v)
        for t, v in zip(types, values, strict=True)
    )


def _tensor_signature(v: Tensor) -> tuple[Any, ...]:
    """A tensor option's identity and version (``option_signature``); a fresh object, equal to
    no earlier signature, for an inference tensor, which has no version counter."""
    return ("tensor", id(v), object() if v.is_inference() else v._version)


class NonFiniteUpdate(FloatingPointError):
    """A finite gradient whose step the state dtype cannot hold (an overflow of its squares,
    of the curvature step or of the update): the step is skipped, nothing is written."""


@functools.cache
def largest(dtype: torch.dtype) -> float:
    """``finfo(dtype).max`` (cached: a step reads it per parameter, and ``finfo`` is built
    anew on every call)."""
    return float(torch.finfo(dtype).max)


@functools.cache
def square_bound(dtype: torch.dtype) -> float:
    """``sqrt(finfo(dtype).max)``: above it a gradient entry's square, and so its curvature
    (``EMA(g^2)``, ``G G^T``), is not representable in ``dtype``. Preconditioning such a
    gradient with a curvature that could not take it in (the previous one) would step by
    ``lr |g|``, e.g. ``1e17`` for ``|g| = 1e20`` in float32, so the step is skipped."""
    return math.sqrt(largest(dtype))


def warn_skipped(reason: str) -> None:
    """A ``RuntimeWarning`` for a skipped step of finite gradients (never silent)."""
    warnings.warn(
        f"SpectralKron: step skipped, nothing changed (counted in skipped_steps): {reason}",
        RuntimeWarning,
        stacklevel=3,
    )


_FLAGS = (
    "jacobi",
    "updated_gaps",
    "accumulate_gop",
    "nesterov",
    "warm_start",
    "diagonal",
    "batched",
)


#: The numeric options of a group (``None`` allowed for ``clip_rms``).
_NUMBERS = (
    "lr",
    "beta2",
    "basis_scale",
    "root",
    "damping",
    "gamma",
    "weight_decay",
    "gap_damping",
    "gap_floor",
    "momentum",
    "correction_beta",
    "clip_rms",
)


def _check_not_shaped(value: Any, name: str) -> None:
    """``ValueError`` for a tensor option of one or more dimensions: the step uses an option
    as it is given (a tensor ``lr`` as ``torch._foreach_add_``'s ``alpha``, a ``momentum`` as a
    factor of the buffer), which takes a number or a 0-d tensor; a ``(1,)`` tensor passed the
    scalar checks and then failed inside the step, after its state was written."""
    if isinstance(value, Tensor) and value.dim():
        raise ValueError(
            f"{name}: expected a number or a 0-d tensor, got a tensor of shape {tuple(value.shape)}"
        )


def validate_group(g: dict[str, Any]) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first invalid option of a parameter group
    (every option present)."""
    for key in _NUMBERS:
        _check_not_shaped(g[key], key)
    check_positive(g["lr"], "lr", allow_zero=True)
    if g["beta2"] is not None:
        check_positive(g["beta2"], "beta2")
    check_positive(g["basis_scale"], "basis_scale")
    check_positive(g["root"], "root")
    check_positive(g["damping"], "damping")  # > 0: a zero gradient entry needs a floor
    check_positive(g["gamma"], "gamma", allow_zero=True)
    check_positive(g["weight_decay"], "weight_decay", allow_zero=True)
    check_positive(g["gap_damping"], "gap_damping", allow_zero=True)
    check_fraction(g["gap_floor"], "gap_floor")
    check_momentum(g["momentum"])
    for flag in _FLAGS:
        check_flag(g[flag], flag)
    if g["eigenvalue_correction"] is not None:
        check_flag(g["eigenvalue_correction"], "eigenvalue_correction")
    check_exponential(g["exponential"])
    check_size(g["update_every"], "update_every")
    if g["diagonal_every"] is not None:
        check_size(g["diagonal_every"], "diagonal_every")
    if g["exponential"] != "exact":
        for kind in ("kronecker", "diagonal"):
            rate = option_defaults.beta2(g, kind)
            if float(g["gamma"]) * float(rate) >= 1.0:
                raise ValueError(
                    f"beta2: the truncated scheme needs gamma * beta2 < 1, got gamma * beta2 = "
                    f"{float(g['gamma']) * float(rate):g} ({kind} curvature step)"
                )
    check_size(g["max_factor_dim"], "max_factor_dim")
    if g["max_aspect"] is not None and check_positive(g["max_aspect"], "max_aspect") < 1.0:
        raise ValueError(f"max_aspect: expected None or a number >= 1, got {g['max_aspect']!r}")
    check_cayley(g["cayley"])
    k = g["neumann_squarings"]
    if k is not None and check_count(k, "neumann_squarings") and g["cayley"] != "neumann":
        # the exact map has no bound to lift: the option would change nothing, silently
        raise ValueError(
            f"neumann_squarings: applies to cayley='neumann' only, got cayley={g['cayley']!r}"
        )
    if g["clip_rms"] is not None:
        check_positive(g["clip_rms"], "clip_rms")
    if g["graft"] not in (None, "adam"):
        raise ValueError(f"graft: expected None or 'adam', got {g['graft']!r}")
    dtype = g["state_dtype"]
    if dtype is not None:
        check_dtype(dtype, "state_dtype")
    if not check_positive(g["correction_beta"], "correction_beta") < 1.0:
        raise ValueError(
            f"correction_beta: expected a value in (0, 1), got {g['correction_beta']!r}"
        )


def check_state_matches(
    state: dict[str, Any], p: Tensor, grad: Tensor, state_dtype: torch.dtype, kind: str
) -> None:
    """``ValueError`` (nothing changed) unless parameter ``p``'s existing state is laid out as
    its group's options lay it out now: its (whole) gradient's shape, the state dtype and the
    scheme (``kind``: "kronecker" or "diagonal"). A mismatch means that the parameter, or
    its group's ``state_dtype`` / ``diagonal`` / ``max_factor_dim`` / ``max_aspect``, changed
    after the state was made (``p.data`` replaced, ``model.double()``, the parameter moved
    to another group)."""
    buf = state["momentum_buffer"]
    shape = tuple(grad.shape)
    if tuple(buf.shape) != shape:
        raise ValueError(
            f"a parameter of shape {shape} has optimizer state of shape {tuple(buf.shape)}: "
            "its shape changed after its state was made; drop that state (opt.state.pop(p)) "
            "or build a new optimizer; nothing was changed"
        )
    if buf.dtype != state_dtype:
        raise ValueError(
            f"a parameter of shape {shape} and dtype {p.dtype} has optimizer state of dtype "
            f"{buf.dtype}, not the state_dtype {state_dtype} of its group: the parameter's "
            "dtype changed after its state was made (or it moved to a group of another "
            "state_dtype); opt.load_state_dict(opt.state_dict()) converts the state; nothing "
            "was changed"
        )
    if ("pc_B_L" in state) != (kind == "kronecker"):
        had = "Kronecker" if "pc_B_L" in state else "diagonal"
        raise ValueError(
            f"a parameter of shape {shape} has {had} optimizer state but its group's "
            f"options (diagonal, max_factor_dim, max_aspect) give it the {kind} scheme: it "
            "moved to another group after its state was made; drop that state "
            "(opt.state.pop(p)) or keep it in a group with the same layout options; nothing "
            "was changed"
        )


def warn_float16_state(group: dict[str, Any]) -> None:
    """A ``UserWarning`` for a group registered with ``state_dtype=torch.float16``: what it
    does to the step (``preconditioners.damping_floor`` and ``state_dtype_of`` have the
    why). One text from one place, so Python's default filter shows it once."""
    if group["state_dtype"] == torch.float16:
        warnings.warn(_float16_state_warning(), UserWarning, stacklevel=2)


@functools.cache
def _float16_state_warning() -> str:
    info = torch.finfo(torch.float16)
    floor = math.sqrt(float(info.tiny))
    return (
        f"state_dtype=torch.float16: its range holds squared gradients only from "
        f"{float(info.tiny):.1e} to {float(info.max):.0f}, so the damping is floored at "
        f"sqrt(tiny) = {floor:.1e}: gradient entries below {math.sqrt(floor):.3f} (most of a "
        "network's) take steps shrunk in proportion to their size, and the learned basis "
        "hardly turns; torch.bfloat16 (float32's range, the same memory) or the default "
        "(float32 for float16 parameters) keeps the step's scale"
    )


def state_dtype_of(opts: dict[str, Any], p: Tensor) -> torch.dtype:
    """The state dtype of parameter ``p`` under group options ``opts``: ``state_dtype``, by
    default the parameter's dtype, except float32 for float16: its five exponent bits hold
    squared gradients only between ``6e-8`` and ``65504``, so the damping floor
    ``sqrt(tiny)`` and the overflow bound would swallow the curvature of gradients below
    ``0.1`` or above ``256`` (bfloat16 has float32's range)."""
    if opts["state_dtype"] is not None:
        return opts["state_dtype"]
    return torch.float32 if p.dtype == torch.float16 else p.dtype


def max_norms(tensors: list[Tensor]) -> list[Tensor]:
    """``max |t|`` of each (non-empty) tensor: finite exactly when every entry is finite (a
    maximum cannot overflow), so one host synchronisation on their stack checks a whole
    step's gradients. Tensors of up to ``FUSED_MAX_NUMEL`` entries in two fused calls
    (``|t|`` then the maxima: the per-call cost dominates small tensors), larger ones one
    ``linalg.max_abs`` pass each (no ``|t|`` temporary; the fused inf-norm kernel is a
    generic, several times slower reduction)."""
    out: list[Tensor | None] = [None] * len(tensors)
    small = [i for i, t in enumerate(tensors) if t.numel() <= FUSED_MAX_NUMEL]
    if small:
        maxima = torch._foreach_max(torch._foreach_abs([tensors[i] for i in small]))
        for i, m in zip(small, maxima, strict=True):
            out[i] = m
    return [max_abs(t) if m is None else m for t, m in zip(tensors, out, strict=True)]


#: Largest tensor whose ``max |t|`` ``max_norms`` takes in the fused calls: the per-call cost
#: (about as much as ``aminmax`` on 64k entries) is what fusing saves.
FUSED_MAX_NUMEL = 1 << 16


def unsteppable_error(gi: int, pi: int, p: Tensor) -> ValueError | TypeError | None:
    """The error for ``params[gi][pi]`` (with a gradient) that a step cannot take, checked
    before anything is written (one text for every step path); ``None`` when it can: a
    parameter whose dtype became complex or integer after construction (the constructor's
    ``TypeError``, ``param_dtype_error``); a
    sparse gradient; a parameter on the ``meta`` device (no data to read or write); a
    parameter whose elements share memory (a stride 0 over a dimension longer than 1, e.g.
    ``expand``), which the in-place update cannot write, and would fail half-way through a
    step after other parameters were written."""
    if not computes_in(p.dtype):
        return param_dtype_error(gi, pi, p.dtype)
    grad = p.grad
    if grad is not None and grad.is_sparse:
        return ValueError(f"params[{gi}][{pi}]: sparse gradients are not supported")
    if p.is_meta:
        return ValueError(
            f"params[{gi}][{pi}] is on the meta device (no data): materialise the model (e.g. "
            "module.to_empty(device=...) and initialise it) before stepping; nothing was changed"
        )
    # A contiguous tensor has no stride 0 over a dimension longer than 1: the usual case
    # costs one flag read.
    if not p.is_contiguous() and any(
        s == 0 and n > 1 for s, n in zip(p.stride(), p.shape, strict=True)
    ):
        return ValueError(
            f"params[{gi}][{pi}] (shape {tuple(p.shape)}, stride {p.stride()}): its elements "
            "share memory (an expanded tensor), so it cannot be updated in place; give the model a "
            "parameter of its own (clone()); nothing was changed"
        )
    return None


def nonfinite_gradient_error(gi: int, pi: int, shape: tuple[int, ...]) -> ValueError:
    """The error for a NaN or Inf gradient of ``params[gi][pi]``: nothing was changed."""
    return ValueError(
        f"params[{gi}][{pi}] (shape {shape}): gradient contains NaN or Inf; nothing was "
        "changed (pass nonfinite='skip' to skip such steps)"
    )


#: Options of the whole optimizer (the constructor's), which a parameter group cannot set:
#: ``torch.optim`` keeps any key of a group, so one given there would be silently ignored.
CONSTRUCTOR_ONLY = ("nonfinite", "shard", "process_group")


def check_group_keys(group: dict[str, Any]) -> None:
    """``ValueError`` naming a ``CONSTRUCTOR_ONLY`` option given in a parameter group."""
    for key in CONSTRUCTOR_ONLY:
        if key in group:
            raise ValueError(
                f"{key}: an option of the whole optimizer (SpectralKron(..., {key}=...)), "
                "not of a parameter group; nothing was changed"
            )


def param_dtype_error(gi: int, pi: int, dtype: torch.dtype) -> TypeError:
    """The error for ``params[gi][pi]`` of a dtype the optimizer cannot compute in."""
    return TypeError(
        f"params[{gi}][{pi}]: expected a real floating point parameter of 16, 32 or 64 bits, "
        f"got dtype {dtype}; nothing was changed"
    )


def listed_params(group: dict[str, Any], index: int) -> dict[str, Any]:
    """``group`` with its ``params`` iterable made a list (read once: a generator is spent by
    one pass), ``TypeError`` naming ``params[index][i]`` for a parameter that is not a real
    floating point tensor of 16, 32 or 64 bits, ``ValueError`` for one listed twice (the
    step would add its update once per listing, with one state; ``torch.optim`` only warns).
    A tensor, set or missing ``params`` is left to ``torch.optim``'s own errors."""
    if isinstance(group.get("params"), (Tensor, set, type(None))):
        return group
    group = dict(group, params=list(group["params"]))
    seen: dict[int, int] = {}
    for i, p in enumerate(group["params"]):
        if isinstance(p, Tensor) and not computes_in(p.dtype):
            raise param_dtype_error(index, i, p.dtype)
        first = seen.setdefault(id(p), i)
        if first != i:
            raise ValueError(
                f"params[{index}][{i}]: the same tensor as params[{index}][{first}]; a "
                f"parameter listed twice would be stepped twice"
            )
    return group
