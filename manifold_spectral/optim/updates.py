"""The update of ``SpectralKron``: its preconditioners, buckets of same-shaped parameters and
the per-parameter computation of the new state and the direction (writing nothing).

The order of one parameter's update (``_compute_many``): momentum; with the eigenvalue
correction, the direction in the eigenbasis before this step's curvature update (as SOAP's),
whose rotated gradient the curvature step's GOP reuses; the curvature update (with its
fallbacks, ``_curvature_update``); grafting and clipping. ``SpectralKron.step`` writes the
results only after every parameter's computation succeeded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..linalg import all_finite, max_abs
from ..manifolds.blocks import TruncationError
from . import checks, transforms
from .checks import COUNTERS, NonFiniteUpdate
from .pack_cache import PackCache
from .preconditioners import kronecker_cost, make_preconditioner, param_cost

__all__ = ["UpdateMixin", "PRECOND_PREFIX", "BATCH_MAX_COST", "PAD_OVERHEAD_COST"]

#: Prefix of the preconditioner's entries in a parameter's optimizer state.
PRECOND_PREFIX = "pc_"

#: ``batched`` buckets only parameters whose preconditioner cost ``a^3 + b^3 + ab(a + b)``
#: is at most that of a 256 x 256 matrix: above it the products dominate the per-parameter
#: overhead, and batched elementwise work on large factors falls out of cache
#: (``benchmarks/bench_optim_batched.py`` measures both sides of the bound).
BATCH_MAX_COST = 4 * 256**3

#: What one bucket fewer saves, in units of ``param_cost``: a Kronecker update makes the same
#: number of small tensor calls whatever its size, and on a CPU core in float32 padding a
#: bucket costs more than those calls once it adds more than the products of an 80 x 80
#: layer per member beyond the first (``benchmarks/bench_optim_batched.py``, "padding"
#: table: separate vs padded steps of small layers). ``_pad_buckets`` pads within that
#: bound. A 16-bit state's products run in float32 on a CPU (``linalg.matmul``), so the
#: bound is one for every state dtype.
PAD_OVERHEAD_COST = 4 * 80**3


class UpdateMixin:
    """``SpectralKron``'s per-parameter update (no writes); see the module docstring."""

    def _state_dtype(self, group: dict[str, Any], p: Tensor) -> torch.dtype:
        return checks.state_dtype_of(group, p)

    def _preconditioner(self, group: dict[str, Any], p: Tensor) -> Any:
        pre = self._preconditioners.get(p)
        if pre is None:
            pre = make_preconditioner(p, self._state_dtype(group, p), group)
            self._preconditioners[p] = pre
        return pre

    @staticmethod
    def _precond_state(state: dict[str, Any]) -> dict[str, Tensor]:
        n = len(PRECOND_PREFIX)
        return {k[n:]: v for k, v in state.items() if k.startswith(PRECOND_PREFIX)}

    def _compute_many(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> list[tuple[dict[str, Any], Tensor]]:
        """``compute_update`` for parameters of one group that share a preconditioner shape, state
        dtype, device and step count (a ``_buckets`` bucket). For more than one, the curvature
        updates and the preconditioning run on a ``batch=k`` manifold: the same formulas, one
        set of batched products. Per-parameter state stays per parameter (stacked for the
        update, then sliced and copied back)."""
        k = len(params)
        state_dtype = self._state_dtype(group, params[0])
        singles = [self._preconditioner(group, p) for p in params]
        pre = singles[0] if k == 1 else self._batched_preconditioner(group, params)
        news: list[dict[str, Any]] = []
        pcs, bufs, steps = [], [], []
        for p, grad, single in zip(params, grads, singles, strict=True):
            # .get, not self.state[p]: a lookup would add an entry to a step that may fail
            state, new = self.state.get(p, {}), {}
            if not state:
                pcs.append(single.init_state(grad, group["warm_start"]))
                steps.append(1)
                bufs.append(torch.zeros_like(grad, dtype=state_dtype))
                if group["graft"] == "adam":
                    new["exp_avg_sq"] = torch.zeros_like(grad, dtype=torch.float32)
            else:
                if state["momentum_buffer"].shape != grad.shape:  # p.data was replaced
                    raise ValueError(
                        f"a parameter of shape {tuple(grad.shape)} has optimizer state of shape "
                        f"{tuple(state['momentum_buffer'].shape)}: its shape changed after its "
                        "state was made; drop that state (opt.state.pop(p)) or build a new "
                        "optimizer; nothing was changed"
                    )
                if state["momentum_buffer"].dtype != state_dtype:  # e.g. model.double()
                    raise ValueError(
                        f"a parameter of shape {tuple(grad.shape)} and dtype {p.dtype} has "
                        f"optimizer state of dtype {state['momentum_buffer'].dtype}, not the "
                        f"state_dtype {state_dtype}: the parameter's dtype changed after its "
                        "state was made; opt.load_state_dict(opt.state_dict()) converts the "
                        "state to it; nothing was changed"
                    )
                pcs.append(self._precond_state(state))
                # A bucket's members share their step count (``_buckets``): one read (a
                # host synchronisation) for the bucket.
                steps.append(int(state["step"]) + 1 if not steps else steps[0])
                bufs.append(state["momentum_buffer"])
            news.append(new)
        step = steps[0]
        packed = PackCache(self._packed, params, pre)
        if k == 1:
            G = grads[0].to(state_dtype)
        elif all(g.dtype == grads[0].dtype for g in grads):
            G = pre.pack(grads).to(state_dtype)  # one conversion; embedding is exact
        else:
            G = pre.pack([g.to(state_dtype) for g in grads])
        if group["momentum"]:
            # Elementwise, so on the packed bucket it is each parameter's own step, bit for bit.
            buf = bufs[0] if k == 1 else packed("momentum_buffer", bufs)
            buf, D = transforms.heavy_ball(buf, G, group["momentum"], group["nesterov"])
            new_bufs = [buf]
            if k > 1:
                parts = zip(pre.unpack(buf), grads, strict=True)
                new_bufs = [transforms.as_shape(b, g.shape) for b, g in parts]
            packed.record("momentum_buffer", buf, new_bufs)
        else:
            D, new_bufs = G, bufs
        for new, buf in zip(news, new_bufs, strict=True):
            new["momentum_buffer"] = buf
        pc = (
            pcs[0]
            if k == 1
            else {key: packed(PRECOND_PREFIX + key, [c[key] for c in pcs], key) for key in pcs[0]}
        )
        corrected = checks.corrected(group) and pre.kind == "kronecker"
        rotated = None
        if corrected:
            # In the basis before this step's curvature update (as SOAP): the rotated gradient
            # then serves the curvature step's GOP too.
            wide = transforms.wide_dtype(state_dtype)
            vs = [
                self.state[p]["eig_v"]
                if "eig_v" in self.state.get(p, ())
                else torch.zeros_like(g, dtype=wide)
                for p, g in zip(params, grads, strict=True)
            ]
            U, V, rotated = pre.precondition_corrected(
                pc, D, G, vs[0] if k == 1 else packed("eig_v", vs), step, group["correction_beta"]
            )
            if not all_finite(V):  # squares of a finite gradient overflowed the buffer's dtype
                raise NonFiniteUpdate(
                    "the eigenvalue-correction second moment of a parameter of shape "
                    f"{tuple(params[0].shape)}{' (and its bucket)' if k > 1 else ''} overflowed"
                )
        updated = (step - 1) % group["update_every"] == 0
        if updated:
            count = (step - 1) // group["update_every"] + 1
            if k == 1:
                pc = self._curvature_update(
                    pre, pc, G, count, news[0], self.state.get(params[0], {}), rotated
                )
            else:
                try:
                    pc = pre.update(pc, G, count=count, rotated=rotated)
                except (FloatingPointError, ValueError):
                    # One element failed: update them one by one (each with its fallbacks),
                    # exactly as unbatched.
                    return [
                        self._compute_many(group, [p], [g])[0]
                        for p, g in zip(params, grads, strict=True)
                    ]
        if not corrected:
            U = pre.precondition(pc, D)
        # Per-parameter slices of the bucket's results (views where the layout allows); each
        # parameter's state entries are replaced, never written in place. Without a curvature
        # update the preconditioner state is the parameters' own, unchanged.
        if k == 1:
            pcs = [pc]
        elif updated:
            parts = [pre.unpack(v, key) for key, v in pc.items()]
            pcs = [dict(zip(pc, e, strict=True)) for e in zip(*parts, strict=True)]
            for key, e in zip(pc, parts, strict=True):
                packed.record(PRECOND_PREFIX + key, pc[key], e)
        Vs = ([V] if k == 1 else pre.unpack(V)) if corrected else [None] * k
        Us = [U] if k == 1 else pre.unpack(U)
        per_param = group["graft"] == "adam" or group["clip_rms"] is not None
        lr = group["lr"]
        wd = group["weight_decay"]
        if not per_param and not update_fits(U, lr, params, wd):  # one reduction: the bucket
            for u, p in zip(Us, params, strict=True):
                self._check_update(u, p, lr, wd)
        out = []
        # One step tensor for the bucket's members (a state entry is replaced, never written
        # in place, so sharing it is safe): ``_buckets`` then reads it once per bucket.
        # float64: a float32 count stops at 2^24 steps, and the update schedule reads it.
        step_t = torch.tensor(float(step), dtype=torch.float64)
        for p, grad, new, pci, Vi, u in zip(params, grads, news, pcs, Vs, Us, strict=True):
            new.update({PRECOND_PREFIX + key: v for key, v in pci.items()})
            if corrected:
                new["eig_v"] = transforms.as_shape(Vi, p.shape)
            if group["graft"] == "adam":
                v = self.state.get(p, {}).get("exp_avg_sq", new.get("exp_avg_sq"))
                v, adam = transforms.adam_direction(v, grad.float(), step)
                new["exp_avg_sq"] = v
                u = transforms.graft_norm(u, adam)
            if group["clip_rms"] is not None:
                u = transforms.clip_by_rms(u, group["clip_rms"])
            if per_param:
                self._check_update(u, p, lr, wd)
            new["step"] = step_t
            out.append((new, u))
        if corrected:
            packed.record("eig_v", V, [new["eig_v"] for new in news])
        packed.store()
        return out

    @staticmethod
    def _check_update(u: Tensor, p: Tensor, lr: float, weight_decay: float) -> None:
        """``NonFiniteUpdate`` (naming ``p``'s shape) unless ``update_fits``."""
        if not update_fits(u, lr, [p], weight_decay):
            raise NonFiniteUpdate(
                f"the update (times lr = {lr:.3g}) of a parameter of shape {tuple(p.shape)} "
                f"is not finite in its dtype {p.dtype}"
            )

    @staticmethod
    def _curvature_update(
        pre: Any,
        pc: dict[str, Tensor],
        g: Tensor,
        count: int,
        new: dict,
        state: dict,
        rotated: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One parameter's curvature step: a truncated map that leaves the positive reals is
        redone with the map continued positively below ``m = -1/2`` (``blocks.eig_retract``:
        elementwise, same cost; the exact exponential would overflow on the very steps that
        need this), counted in ``new`` (the pending state). A step that fails even so (an
        overflow of the state dtype) raises ``NonFiniteUpdate``: the whole step is skipped,
        since preconditioning this gradient with the previous curvature, which never saw
        its scale, would move the parameter by about ``lr |g|``."""
        counts = {key: state.get(key, 0) for key in COUNTERS}
        try:
            try:
                out = pre.update(pc, g, count=count, rotated=rotated)
            except TruncationError:
                counts["curvature_fallbacks"] += 1
                out = pre.update(pc, g, count=count, continued=True, rotated=rotated)
        except (FloatingPointError, ValueError) as e:
            raise NonFiniteUpdate(
                f"the curvature step of a parameter of shape {tuple(g.shape)} overflowed its "
                f"state dtype ({e})"
            ) from e
        new.update({key: v for key, v in counts.items() if v or key in state})
        return out

    @property
    def curvature_fallbacks(self) -> int:
        """Curvature steps taken with the continued instead of the truncated map."""
        return sum(st.get("curvature_fallbacks", 0) for st in self.state.values())

    @property
    def curvature_rejections(self) -> int:
        """Curvature steps recorded as failed in the state (``COUNTERS``); a failing
        curvature step skips the whole step (``skipped_steps``)."""
        return sum(st.get("curvature_rejections", 0) for st in self.state.values())

    def _buckets(
        self, group: dict[str, Any], params: list[Tensor] | None = None
    ) -> list[list[Tensor]]:
        """``params`` (default: the group's parameters with a gradient), bucketed for
        ``_compute_many``: with ``batched``, parameters of one state dtype, device and step
        count share a bucket when they all use the diagonal scheme (elementwise: their
        entries are concatenated), or when they are Kronecker parameters of cost at most
        ``BATCH_MAX_COST`` that ``_pad_buckets`` groups (one shape, or small shapes padded to
        the largest); every other parameter is alone."""
        buckets: dict[Any, list[Tensor]] = {}
        small: dict[Any, list[Tensor]] = {}
        if params is None:
            # an empty parameter has nothing to update (and no Kronecker factors)
            params = [p for p in group["params"] if p.grad is not None and p.numel()]
        read: dict[int, int] = {}  # id of a step tensor -> its value (one host sync each)
        for p in params:
            pre = self._preconditioner(group, p)
            key: Any = id(p)
            if group["batched"]:
                state = self.state.get(p)  # not self.state[p]: that would add an entry
                step = 0
                if state:
                    t = state["step"]
                    step = read[id(t)] if id(t) in read else read.setdefault(id(t), int(t))
                key = ("diagonal", self._state_dtype(group, p), p.device, step)
                if pre.kind == "kronecker":
                    if param_cost(p.shape, group) <= BATCH_MAX_COST:
                        small.setdefault(key[1:], []).append(p)
                        continue
                    key = id(p)
            buckets.setdefault(key, []).append(p)
        out = list(buckets.values())
        for params in small.values():
            shapes = [self._preconditioner(group, p).shape for p in params]
            out.extend(_pad_buckets(params, shapes))
        return out

    def _owner_units(self, group: dict[str, Any], params: list[Tensor]) -> list[list[Tensor]]:
        """``params`` of ``group`` as the units that ``shard=True`` gives one owner each: the
        Kronecker buckets ``_buckets`` forms from them (so that an owner computes a bucket
        exactly as the unsharded step does), every other parameter alone (the diagonal
        scheme is elementwise: any split of its buckets gives the same bits)."""
        units = [[p] for p in params]
        if group["batched"]:
            kron = [
                b
                for b in self._buckets(group, params)
                if self._preconditioner(group, b[0]).kind == "kronecker"
            ]
            ids = {id(p) for b in kron for p in b}
            units = kron + [[p] for p in params if id(p) not in ids]
        return units

    def _batched_preconditioner(self, group: dict[str, Any], params: list[Tensor]) -> Any:
        """The preconditioner of a bucket (cached): ``batch=k`` Kronecker factors for k
        parameters (padded to the largest sides when their shapes differ), or the diagonal
        scheme over their concatenated entries."""
        p, k = params[0], len(params)
        state_dtype = self._state_dtype(group, p)
        single = self._preconditioner(group, p)
        if single.kind == "kronecker":
            size: Any = tuple(self._preconditioner(group, q).shape for q in params)
        else:
            size = tuple(q.numel() for q in params)
        # The group's position by identity: ``list.index`` compares the group dicts with
        # ``==``, which compares their parameter lists tensor by tensor (an error, or an
        # ambiguous truth value, when an earlier group has as many parameters).
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        key = (index, single.kind, single.shape, state_dtype, size)
        pre = self._batched.get(key)
        if pre is None:
            pre = make_preconditioner(p, state_dtype, group, batch=k, sizes=size)
            self._batched[key] = pre
        return pre


def update_fits(u: Tensor, lr: float, params: list[Tensor], weight_decay: float = 0.0) -> bool:
    """Whether the write ``p <- p (1 - lr wd) - lr u`` (``u`` in the state dtype, cast to the
    parameter's) stays finite in every dtype of ``params``: ``u``, ``lr`` and ``lr u`` within
    ``finfo.max`` of the narrowest (a float32 update beyond a float16 parameter's range, or an
    ``lr`` its dtype cannot hold, would write Inf or fail half-way), and, only when ``lr u``
    comes within a factor 1024 of it, the parameters' own size added. One reduction and one
    host synchronisation in the usual case; NaN fails every comparison."""
    top = min(torch.finfo(p.dtype).max for p in params)
    umax = float(max_abs(u))
    step = umax * lr
    if not (umax <= top and lr <= top and step <= top):
        return False
    if step <= top / 1024 and lr * weight_decay <= 1.0:
        return True  # |p| would have to be within 0.1% of the largest value to overflow
    pmax = max((float(max_abs(p)) for p in params if p.numel()), default=0.0)
    return pmax * abs(1.0 - lr * weight_decay) + step <= top


def _pad_buckets(
    params: list[Tensor], shapes: list[tuple[int, int]], bound: int = PAD_OVERHEAD_COST
) -> list[list[Tensor]]:
    """Kronecker parameters (Kronecker shapes ``shapes``) grouped into buckets.

    Parameters of one shape stay together. Shapes in decreasing cost join the first bucket
    in which the padding costs at most ``bound`` (``PAD_OVERHEAD_COST``) per member beyond
    the first,

        k cost(max a_i, max b_i) - sum_i cost(a_i, b_i) <= (k - 1) bound

    (``cost = a^3 + b^3 + ab(a + b)``, ``k`` members with them), else start one: padding is
    paid in products, and each member saves the fixed per-call cost of its own update."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        by_shape.setdefault(tuple(s), []).append(i)
    order = sorted(by_shape, key=lambda s: -kronecker_cost(*s))
    groups: list[tuple[list[int], list[int]]] = []  # (members, [max a, max b, sum of costs])
    for a, b in order:
        new = by_shape[(a, b)]
        for members, acc in groups:
            A, B = max(acc[0], a), max(acc[1], b)
            own = acc[2] + len(new) * kronecker_cost(a, b)
            k = len(members) + len(new)
            if k * kronecker_cost(A, B) - own <= (k - 1) * bound:
                members.extend(new)
                acc[:] = [A, B, own]
                break
        else:
            groups.append((list(new), [a, b, len(new) * kronecker_cost(a, b)]))
    return [[params[i] for i in sorted(members)] for members, _ in groups]
