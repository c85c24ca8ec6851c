"""Buckets of ``SpectralKron``'s parameters: which parameters one batched update computes
together (``batched=True``), and the preconditioner of a bucket.

Diagonal-scheme parameters of one state dtype, device and step count concatenate their
entries; small Kronecker parameters of one shape stack their factors, and small ones of
different shapes are padded to the largest sides (``manifolds.kronecker_padding``) where
the padding costs less than the per-call overhead it saves (``_pad_buckets``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .preconditioners import kronecker_cost, make_preconditioner

__all__ = ["BucketMixin", "BATCH_MAX_COST", "PAD_OVERHEAD_COST"]

#: ``batched`` buckets only parameters whose preconditioner cost ``a^3 + b^3 + ab(a + b)``
#: is at most that of a 256 x 256 matrix: above it the products dominate the per-parameter
#: overhead, and batched elementwise work on large factors falls out of cache
#: (``benchmarks/bench_optim_batched.py`` measures both sides of the bound).
BATCH_MAX_COST = 4 * 256**3

#: What one bucket fewer saves, in units of ``param_cost``: a Kronecker update makes the same
#: number of small tensor calls whatever its size, and padding pays for them in products;
#: ``_pad_buckets`` lets a member join while the padding it adds stays within the products
#: of an 80 x 80 layer. ``benchmarks/bench_optim_batched.py`` measures both sides: its
#: "padding" table (separate vs one padded bucket, every step a curvature update, where the
#: per-call cost is largest) and the small layers at SOAP's period 10 (mostly
#: precondition-only steps, whose products the padding enlarges as much but whose calls are
#: fewer). A 16-bit state's small products run in float32 on a CPU (``linalg.matmul``), so
#: the bound is one for every state dtype.
PAD_OVERHEAD_COST = 4 * 80**3


class BucketMixin:
    """Bucketing of ``SpectralKron`` (mixed into ``UpdateMixin``; reads its
    ``_preconditioner``, ``_state_dtype`` and ``_step_count``)."""

    def _bucket_preconditioner(self, group: dict[str, Any], params: list[Tensor]) -> Any:
        """The preconditioner of a bucket: its one parameter's, or ``_batched_preconditioner``."""
        if len(params) == 1:
            return self._preconditioner(group, params[0])
        return self._batched_preconditioner(group, params)

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
        small: dict[Any, tuple[list[Tensor], list[tuple[int, int]]]] = {}
        if params is None:
            # an empty parameter has nothing to update (and no Kronecker factors)
            params = [
                p
                for p in group["params"]
                if p.grad is not None
                and p.numel()
                and not self._awaits_warm_start(group, p, p.grad)
            ]
        batched = group["batched"]
        # Members of a bucket share their step tensor (``_step_tensor``) and their dtype:
        # each read once a call, not once per parameter.
        counter, count = None, 0
        dtypes: dict[torch.dtype, torch.dtype] = {}
        for p in params:
            pre = self._preconditioner(group, p)
            key: Any = id(p)
            if batched:
                state = self.state.get(p)  # not self.state[p]: that would add an entry
                step = 0
                if state:
                    if state["step"] is not counter:
                        counter = state["step"]
                        count = self._step_count(counter)  # one host sync per tensor
                    step = count
                dtype = dtypes.get(p.dtype)
                if dtype is None:
                    dtype = dtypes[p.dtype] = self._state_dtype(group, p)
                key = ("diagonal", dtype, p.device, step)
                if pre.kind == "kronecker":
                    if kronecker_cost(*pre.shape) <= BATCH_MAX_COST:  # param_cost(p.shape)
                        members, shapes = small.setdefault(key[1:], ([], []))
                        members.append(p)
                        shapes.append(pre.shape)
                        continue
                    key = id(p)
            buckets.setdefault(key, []).append(p)
        out = list(buckets.values())
        for members, shapes in small.values():
            if shapes.count(shapes[0]) == len(shapes):  # one shape: one bucket, in order
                out.append(members)
                continue
            # the bound read now, not when _pad_buckets was defined (benchmarks set it)
            out.extend(_pad_buckets(members, shapes, PAD_OVERHEAD_COST))
        return out

    def _awaits_warm_start(self, group: dict[str, Any], p: Tensor, grad: Tensor) -> bool:
        """Whether ``p`` is left alone this step (no state, no update, no weight decay): it
        has no state yet, ``warm_start`` is on and its gradient is all zeros. Why: the warm
        start takes the first gradient's scale (``S`` from its outer products), and a zero
        gradient has none; started there, ``S`` sits at the damping, and the first nonzero
        gradient enters at the curvature rate ``beta2`` only, a step ``beta2^(-1/p)`` times
        the one it takes as a first gradient (zero-initialised output layers, a loss term
        switched on later). One host synchronisation per parameter, until its first nonzero
        gradient."""
        return bool(group["warm_start"]) and not self.state.get(p) and not bool(grad.any())

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
        key = (index, single.kind, single.shape, state_dtype, p.device, size)
        hit = self._batched.get(key)
        if hit is None or hit[0] is not group:  # as ``_preconditioner``
            hit = (group, make_preconditioner(p, state_dtype, group, batch=k, sizes=size))
            self._batched[key] = hit
        return hit[1]


def _pad_buckets(
    params: list[Tensor], shapes: list[tuple[int, int]], bound: int = PAD_OVERHEAD_COST
) -> list[list[Tensor]]:
    """Kronecker parameters (Kronecker shapes ``shapes``) grouped into buckets.

    Parameters of one shape stay together. Shapes in decreasing cost join the first bucket
    to which they add at most ``bound`` (``PAD_OVERHEAD_COST``) of padding per joining
    member: ``n`` members of shape (a, b) join ``k`` padded to (A, B) when

        (k + n) cost(A', B') - k cost(A, B) - n cost(a, b) <= n bound,   A' = max(A, a), ...

    (``cost = a^3 + b^3 + ab(a + b)``), else start one: padding is paid in products, and
    each member saves the fixed per-call cost of its own update. The padding a join adds
    counts the growth of the members already there (a join that widens the bucket pads all
    of them): a bound on the bucket's average padding would let a member that costs the
    others more than it saves join a bucket whose earlier members padded little."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        by_shape.setdefault(tuple(s), []).append(i)
    order = sorted(by_shape, key=lambda s: -kronecker_cost(*s))
    groups: list[tuple[list[int], list[int]]] = []  # (members, [A, B]: their padded shape)
    for a, b in order:
        new = by_shape[(a, b)]
        n, own = len(new), kronecker_cost(a, b)
        for members, size in groups:
            A, B, k = max(size[0], a), max(size[1], b), len(members)
            added = (k + n) * kronecker_cost(A, B) - k * kronecker_cost(*size) - n * own
            if added <= n * bound:
                members.extend(new)
                size[:] = [A, B]
                break
        else:
            groups.append((list(new), [a, b]))
    return [[params[i] for i in sorted(members)] for members, _ in groups]
