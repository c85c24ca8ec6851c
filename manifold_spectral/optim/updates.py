"""The update of ``SpectralKron``: its preconditioners, buckets of same-shaped parameters, the
per-parameter computation of the new state and the direction (writing nothing), and the
writes of a step's results (``_apply_updates``).

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

from ..linalg import all_finite, as_dtype
from ..manifolds.blocks import TruncationError
from . import checks, option_defaults, transforms
from .buckets import BucketMixin
from .checks import COUNTERS, NonFiniteUpdate
from .gop_sums import accumulate_gop
from .pack_cache import PackCache
from .pending import PendingChecks, check_update, fits_verdict, moment_verdict
from .preconditioners import make_preconditioner

__all__ = ["UpdateMixin", "PRECOND_PREFIX"]

#: Prefix of the preconditioner's entries in a parameter's optimizer state.
PRECOND_PREFIX = "pc_"


class UpdateMixin(BucketMixin):
    """``SpectralKron``'s per-parameter update (no writes); see the module docstring."""

    def _state_dtype(self, group: dict[str, Any], p: Tensor) -> torch.dtype:
        return checks.state_dtype_of(group, p)

    def _preconditioner(self, group: dict[str, Any], p: Tensor) -> Any:
        # Kept with the group dict it was built from: a parameter moved to another group, or
        # a group dict replaced, gets one built from its new options (``_sync_groups`` sees
        # only options changed inside a group).
        hit = self._preconditioners.get(p)
        if hit is None or hit[0] is not group:
            hit = (group, make_preconditioner(p, self._state_dtype(group, p), group))
            self._preconditioners[p] = hit
        return hit[1]

    def _step_count(self, t: Tensor) -> int:
        """``int(t)`` of a state's ``step`` tensor, read once per optimizer step (a host
        synchronisation each): the bucketing and the updates of a step read every step tensor
        they share once. A read is reused only for the very tensor at the same version (the
        reads are dropped when a step starts: ``_new_step_tensors``)."""
        reads = self._step_reads
        hit = reads.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == t._version:
            return hit[2]
        value = int(t)
        reads[id(t)] = (t, t._version, value)
        return value

    def _step_tensor(self, step: int) -> Tensor:
        """The ``step`` state entry of value ``step`` (also a ``gop_count`` of that value),
        one tensor for every parameter that reaches it in this optimizer step (a state entry
        is replaced, never written in place, so sharing it is safe): one tensor to make, and
        the next step reads it once. float64: a float32 count stops at 2^24 steps, and the
        update schedule reads it."""
        t = self._step_made.get(step)
        if t is None:
            t = self._step_made[step] = torch.scalar_tensor(step, dtype=torch.float64)
        return t

    def _new_step_tensors(self) -> None:
        """Forget the step counts read and the step tensors made (at the start of a step)."""
        self._step_reads: dict[int, tuple[Tensor, int, int]] = {}
        self._step_made: dict[int, Tensor] = {}

    @staticmethod
    def _precond_state(state: dict[str, Any]) -> dict[str, Tensor]:
        n = len(PRECOND_PREFIX)
        return {k[n:]: v for k, v in state.items() if k.startswith(PRECOND_PREFIX)}

    def _compute_many(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        pending: PendingChecks | None = None,
        packed_grads: Tensor | None = None,
        pre: Any = None,
    ) -> list[tuple[dict[str, Any], Tensor]]:
        """``compute_update`` for parameters of one group that share a preconditioner shape, state
        dtype, device and step count (a ``_buckets`` bucket). For more than one, the curvature
        updates and the preconditioning run on a ``batch=k`` manifold: the same formulas, one
        set of batched products. Per-parameter state stays per parameter (stacked for the
        update, then sliced and copied back). ``pending``: the step's checks of the results,
        added to it and flushed before a curvature update (default: a list of this call's,
        flushed before it returns); a failed check raises ``NonFiniteUpdate``. ``packed_grads``:
        ``_pack_grads(params)``, when the caller has it; ``pre``: the bucket's
        ``_bucket_preconditioner``, when the caller has it."""
        k = len(params)
        # A gradient in another memory layout (of a parameter stored transposed, e.g. a
        # checkpoint loaded with ``.T``) holds the same values, but a product or a reduction
        # over it adds in another order: made contiguous, every layout gives the contiguous
        # gradient's bits, and the state entries made from it are contiguous.
        grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
        state_dtype = self._state_dtype(group, params[0])
        if pre is None:
            pre = self._bucket_preconditioner(group, params)
        # .get, not self.state[p]: a lookup would add an entry to a step that may fail
        states = [self.state.get(p, {}) for p in params]
        news: list[dict[str, Any]] = [{} for _ in params]
        pcs, bufs = [], []
        names: list[tuple[str, str]] = []  # (key, its state entry's name), of the first member
        step = 0
        for p, grad, state in zip(params, grads, states, strict=True):
            if not state:
                single = self._preconditioner(group, p)
                pcs.append(single.init_state(grad, group["warm_start"]))
                step = 1
                bufs.append(torch.zeros_like(grad, dtype=state_dtype))
                continue
            # a bucket's members share their scheme (``_buckets``): ``pre.kind`` is each one's
            checks.check_state_matches(state, p, grad, state_dtype, pre.kind)
            if not pcs:
                # A bucket's members share their step count (``_buckets``): one read (a
                # host synchronisation) for the bucket.
                step = self._step_count(state["step"]) + 1
                pcs.append(self._precond_state(state))
            else:
                # the members' entries under the first one's keys (a KeyError if one lacks it)
                names = names or [(key, PRECOND_PREFIX + key) for key in pcs[0]]
                pcs.append({key: state[name] for key, name in names})
            bufs.append(state["momentum_buffer"])
        packed = PackCache(self._packed, params, pre)
        if k == 1:
            G = as_dtype(grads[0], state_dtype)
        elif packed_grads is not None or all(g.dtype == grads[0].dtype for g in grads):
            # one conversion; the embedding is exact
            G = as_dtype(pre.pack(grads) if packed_grads is None else packed_grads, state_dtype)
        else:
            G = pre.pack([as_dtype(g, state_dtype) for g in grads])
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
        local = pending is None
        if pending is None:
            pending = PendingChecks()
        corrected = option_defaults.corrected(group) and pre.kind == "kronecker"
        rotated = None
        if corrected:
            # In the basis before this step's curvature update (as SOAP): the rotated gradient
            # then serves the curvature step's GOP too.
            wide = transforms.wide_dtype(state_dtype)
            vs = [
                st["eig_v"] if "eig_v" in st else torch.zeros_like(g, dtype=wide)
                for st, g in zip(states, grads, strict=True)
            ]
            U, V, rotated = pre.precondition_corrected(
                pc, D, G, vs[0] if k == 1 else packed("eig_v", vs), step, group["correction_beta"]
            )
            pending.add([V.sum()], moment_verdict(V, params[0].shape, k))
        period = checks.curvature_period(group, pre.kind)
        updated = (step - 1) % period == 0
        sides = None
        accumulate = group["accumulate_gop"] and period > 1
        # Sums kept earlier are reset by a curvature step even without accumulation (gop_sums).
        if pre.kind == "kronecker" and (accumulate or any("gop_W_L" in st for st in states)):
            sides = accumulate_gop(
                pre,
                pc,
                G,
                rotated,
                states,
                news,
                updated,
                accumulate,
                pending,
                packed,
                params[0].shape,
                self._step_count,
                self._step_tensor,
            )
        if updated:
            pending.flush()  # an earlier failure decides before this update's own
            count = (step - 1) // period + 1
            if k == 1:
                pc = self._curvature_update(pre, pc, G, count, news[0], states[0], rotated, sides)
            else:
                try:
                    pc = pre.update(pc, G, count=count, rotated=rotated, sides=sides)
                except (FloatingPointError, ValueError):
                    # One element failed: update them one by one (each with its fallbacks),
                    # exactly as unbatched.
                    out = [
                        self._compute_many(group, [p], [g], pending)[0]
                        for p, g in zip(params, grads, strict=True)
                    ]
                    if local:
                        pending.flush()
                    return out
        if not corrected:
            floor = None
            if period > 1:
                # The curvature has not seen every gradient in the direction (those since its
                # last step; without accumulate_gop, none between two steps): floored by the
                # direction's own GOP, a spike is not stepped as far as it is large.
                floor = (1.0 - group["momentum"], option_defaults.beta2(group, pre.kind))
            U = pre.precondition(pc, D, floor)
        # Per-parameter slices of the bucket's results (views where the layout allows); each
        # parameter's state entries are replaced, never written in place. Without a curvature
        # update the preconditioner state is the parameters' own, unchanged: not written.
        if not updated:
            pcs = [{}] * k
        elif k == 1:
            pcs = [pc]
        else:
            parts = [pre.unpack(v, key) for key, v in pc.items()]
            pcs = [dict(zip(pc, e, strict=True)) for e in zip(*parts, strict=True)]
            for key, e in zip(pc, parts, strict=True):
                packed.record(PRECOND_PREFIX + key, pc[key], e)
        Vs = ([V] if k == 1 else pre.unpack(V)) if corrected else [None] * k
        Us = [U] if k == 1 else pre.unpack(U)
        per_param = group["graft"] == "adam" or group["clip_rms"] is not None
        lr = group["lr"]
        wd = group["weight_decay"]
        if not per_param:  # one reduction: the bucket
            pending.add(list(torch.aminmax(U)), fits_verdict(Us, params, lr, wd))
        out = []
        step_t = self._step_tensor(step)
        for p, grad, state, new, pci, Vi, u in zip(
            params, grads, states, news, pcs, Vs, Us, strict=True
        ):
            for key, v in pci.items():
                new[PRECOND_PREFIX + key] = v
            if corrected:
                new["eig_v"] = transforms.as_shape(Vi, p.shape)
            if per_param:
                pending.flush()  # the checks made so far decide before this member's own
            if group["graft"] == "adam":
                v = state.get("exp_avg_sq")
                if v is None:  # a first step, or graft turned on later: Adam's zero start
                    v = torch.zeros_like(grad, dtype=torch.float32)
                v, adam = transforms.adam_direction(v, grad.float(), step)
                if not all_finite(v):  # float32 squares of a float64 gradient above 1.8e19
                    raise NonFiniteUpdate(
                        f"the graft's float32 Adam second moment of a parameter of shape "
                        f"{tuple(p.shape)} overflowed"
                    )
                new["exp_avg_sq"] = v
                u = transforms.graft_norm(u, adam)
            if group["clip_rms"] is not None:
                u = transforms.clip_by_rms(u, group["clip_rms"])
            if per_param:
                check_update(u, p, lr, wd)
            new["step"] = step_t
            out.append((new, u))
        if corrected:
            packed.record("eig_v", V, [new["eig_v"] for new in news])
        if local:
            pending.flush()
        packed.store()
        return out

    def _apply_updates(self, pending: list[tuple[dict[str, Any], Tensor, Any]]) -> None:
        """``apply_update`` for every ``(group, p, (new_state, u))`` of a step, the parameter
        writes of a group as ``torch._foreach_*`` calls (one dispatch per group instead of
        one or two per parameter; the same elementwise kernels, the same bits)."""
        by_group: dict[int, tuple[dict[str, Any], list[Tensor], list[Tensor]]] = {}
        for group, p, (new_state, update) in pending:
            self.state[p].update(new_state)
            _, ps, us = by_group.setdefault(id(group), (group, [], []))
            ps.append(p)
            us.append(as_dtype(transforms.as_shape(update, p.shape), p.dtype))
        for group, ps, us in by_group.values():
            transforms.weight_decay(ps, group["lr"], group["weight_decay"])
            torch._foreach_add_(ps, us, alpha=-group["lr"])

    def _pack_grads(
        self, group: dict[str, Any], params: list[Tensor], pre: Any = None
    ) -> Tensor | None:
        """The gradients of a bucket as one tensor in their dtype (``pre.pack``, ``pre`` the
        bucket's preconditioner; a single parameter's own), what ``_compute_many`` updates;
        ``None`` when their dtypes differ (each is then converted to the state dtype first)."""
        grads = [p.grad for p in params]
        if len(grads) == 1:
            return grads[0]
        if any(g.dtype != grads[0].dtype for g in grads):
            return None
        if pre is None:
            pre = self._bucket_preconditioner(group, params)
        return pre.pack(grads)

    @staticmethod
    def _curvature_update(
        pre: Any,
        pc: dict[str, Tensor],
        g: Tensor,
        count: int,
        new: dict,
        state: dict,
        rotated: Tensor | None = None,
        sides: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """One parameter's curvature step: a truncated map that leaves the positive reals is
        redone with the map continued positively below ``m = -1/2`` (``blocks.eig_retract``:
        elementwise, same cost; the exact exponential would overflow on the very steps that
        need this), counted in ``new`` (the pending state). A step that fails even so (an
        overflow of the state dtype) raises ``NonFiniteUpdate``: the whole step is skipped,
        since preconditioning this gradient with the previous curvature, which never saw
        its scale, would move the parameter by about ``lr |g|``.

        A step that fails on the period's mean GOP (``sides``, ``accumulate_gop``) is redone
        on this gradient's GOP alone (counted: ``gop_fallbacks``). Why: a gradient kept
        earlier in the period was finite, so its step was taken, but its sums can be too
        large for the curvature step; a skip changes nothing, so the same means would fail
        every later step, and training would stop on one finite spike (at period 1 the
        spike's own step is the one skipped)."""
        counts = {key: state.get(key, 0) for key in COUNTERS}
        tried = dict(counts)
        try:
            try:
                out = _curvature_step(pre, pc, g, count, tried, rotated, sides)
            except (FloatingPointError, ValueError):
                if sides is None:
                    raise
                tried = dict(counts, gop_fallbacks=counts["gop_fallbacks"] + 1)
                out = _curvature_step(pre, pc, g, count, tried, rotated, None)
            counts = tried
        except (FloatingPointError, ValueError) as e:
            # The exact map's exp(beta2 h / d) overflows where a squared gradient entry is
            # hundreds of times its curvature (early steps): not the learning rate's doing.
            why = (
                "; exponential='exact' overflows where a gradient's square far exceeds its "
                "curvature, the default 'truncated' map does not"
                if pre.gauss.exponential == "exact"
                else ""
            )
            raise NonFiniteUpdate(
                f"the curvature step of a parameter of shape {tuple(g.shape)} overflowed its "
                f"state dtype ({e}{why})"
            ) from e
        new.update({key: v for key, v in counts.items() if v or key in state})
        return out

    @property
    def curvature_fallbacks(self) -> int:
        """Curvature steps taken with the continued instead of the truncated map."""
        return sum(st.get("curvature_fallbacks", 0) for st in self.state.values())

    @property
    def gop_fallbacks(self) -> int:
        """Curvature steps that the period's mean GOP overflowed, taken on their own
        gradient's GOP (``accumulate_gop``)."""
        return sum(st.get("gop_fallbacks", 0) for st in self.state.values())

    @property
    def curvature_rejections(self) -> int:
        """Curvature steps recorded as failed in the state (``COUNTERS``); a failing
        curvature step skips the whole step (``skipped_steps``)."""
        return sum(st.get("curvature_rejections", 0) for st in self.state.values())


def _curvature_step(
    pre: Any,
    pc: dict[str, Tensor],
    g: Tensor,
    count: int,
    counts: dict[str, int],
    rotated: Tensor | None,
    sides: tuple[Tensor, Tensor] | None,
) -> dict[str, Tensor]:
    """``pre.update``, redone with the continued map where the truncated one fails
    (``TruncationError``; counted in ``counts``)."""
    try:
        return pre.update(pc, g, count=count, rotated=rotated, sides=sides)
    except TruncationError:
        counts["curvature_fallbacks"] += 1
        return pre.update(pc, g, count=count, continued=True, rotated=rotated, sides=sides)
