"""``SpectralKron`` on ``torch.distributed``: sharded preconditioner work and ``DTensor``
parameters.

Under DDP nothing here runs: gradients are all-reduced before ``step``, so every rank computes
the update a single process would compute from the global batch.

Sharding (``shard=True``, ZeRO-1 style, as Distributed Shampoo): every parameter has one owner
rank, chosen once and identically on every rank by a greedy largest-first balance of the
preconditioner cost (``param_cost``, ``assign_owners``) over units that share an owner (the
Kronecker buckets of ``batched``). A step then

1. computes, on each rank, the updates of the parameters it owns, and keeps their state only;
2. all-reduces one small integer vector (gradient presence, non-finite gradients, failed
   computations), so that every rank takes the same decision (raise, skip, go on) before
   anything is written: a step stays all-or-nothing;
3. all-gathers the updates, already cast to the parameter dtype as the unsharded step casts
   them, as raw bytes (one buffer per rank, one collective for every dtype): the result is the
   unsharded run's bit for bit, because an owner computes whole buckets (``batched``) as the
   unsharded step does: the owners are assigned per bucket (``SpectralKron._owner_units``);
4. applies weight decay and every update on every rank.

``DTensor`` parameters (FSDP2's ``fully_shard``): a Kronecker factor needs the whole gradient
matrix, so the gradient is gathered (``full_tensor``) and the full update computed, by every
rank or, with ``shard=True``, by the owner only; each rank then adds its own slice
(``distribute_tensor(..., src_data_rank=None)`` slices locally, no communication).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.algorithms.join import Join

from . import consensus
from .checks import (
    NonFiniteUpdate,
    max_norms,
    nonfinite_gradient_error,
    square_bound,
    unsteppable_error,
    warn_skipped,
)
from .preconditioners import param_cost  # re-exported: the owners balance this cost

__all__ = [
    "Sharding",
    "param_cost",
    "assign_owners",
    "is_dtensor",
    "has_dtensor",
    "local_part",
    "step",
]

#: Replicated work: every rank computes the update (``DTensor`` parameters, ``shard=False``).
EVERY_RANK = -1
#: Byte alignment of each update in the exchange buffer (``view`` needs aligned offsets).
_ALIGN = 16


def assign_owners(
    costs: Sequence[int], world: int, loads: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """Greedy largest-first balance (LPT): each cost, largest first (ties: lower index), goes to
    the least-loaded rank (ties: lower rank). Returns ``(owners, loads)``; ``loads`` seeds the
    balance when parameters are added later, so existing owners never move. Integer costs keep
    the result identical on every rank."""
    load = list(loads) if loads is not None else [0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += costs[i]
    return owners, load


class Sharding:
    """Owner ranks of the parameters of one sharded optimizer over ``process_group``."""

    def __init__(self, process_group: Any = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "shard=True: torch.distributed is not initialised; call "
                "torch.distributed.init_process_group before building the optimizer"
            )
        self.group = process_group
        self.rank = dist.get_rank(process_group)
        self.world = dist.get_world_size(process_group)
        if self.rank < 0:  # torch's answer outside the group; its collectives return at once
            raise ValueError(
                f"process_group: this process (rank {dist.get_rank()} of the world) is not one "
                "of its ranks; build the sharded optimizer on the group's ranks only"
            )
        self.owners: dict[Tensor, int] = {}
        self.loads = [0] * self.world

    def assign(
        self,
        param_groups: list[dict[str, Any]],
        units_of: Callable[[dict[str, Any], list[Tensor]], list[list[Tensor]]] | None = None,
    ) -> None:
        """Give an owner to every parameter that has none yet (all of them at construction,
        the new ones after ``add_param_group``). ``units_of(group, params)`` splits a group's
        new parameters into units that share one owner (``SpectralKron._owner_units``: the
        batched buckets); default: each parameter alone. Raises ``ValueError`` on every rank,
        with no owner given, unless every rank holds the same parameters (``check_params``)."""
        self.check_params(param_groups)
        units: list[list[Tensor]] = []
        costs: list[int] = []
        for g in param_groups:
            new = [p for p in g["params"] if p not in self.owners]
            for unit in units_of(g, new) if units_of is not None else [[p] for p in new]:
                units.append(unit)
                costs.append(sum(param_cost(p.shape, g) for p in unit))
        owners, self.loads = assign_owners(costs, self.world, self.loads)
        for unit, r in zip(units, owners, strict=True):
            self.owners.update({p: r for p in unit})

    def check_params(
        self, param_groups: list[dict[str, Any]], error: Exception | None = None
    ) -> None:
        """Raise ``ValueError`` on every rank unless all hold the same number of parameters
        with the same shapes and dtypes, in order: one all-reduce of their fingerprints
        ``[rejected, h, h^2]`` (``consensus.agree``) per ``assign``, not per step. They size
        the step's collectives (the consensus flags, the exchange): sizes that differ abort
        gloo's processes before the step's fingerprint is read, equal ones pair other
        parameters.
        ``error``: this rank rejected the new group before the collective (re-raised here,
        the other ranks raise naming how many did). A collective (``consensus.call``)."""
        params = [p for g in param_groups for p in g["params"]]
        h = consensus.fingerprint([(tuple(p.shape), p.dtype) for p in params])
        device = params[0].device if params else torch.device("cpu")
        body = [error is not None, h, h * h] + [0] * (4 * self.known(param_groups))
        header = consensus.call(consensus.ADD, body, self.group, device)[:3]
        what = "the number of parameters, or their shapes or dtypes"
        consensus.agree(header, self.world, error, what)

    def known(self, param_groups: list[dict[str, Any]]) -> int:
        """How many parameters of ``param_groups`` have an owner: the ``n`` that sizes every
        rank's first vector of a call (``consensus.call``) alike while the ranks agree."""
        return sum(p in self.owners for g in param_groups for p in g["params"])

    @property
    def device(self) -> torch.device:
        """Where the vectors of ``consensus.call`` live: the parameters' (NCCL needs it)."""
        return next(iter(self.owners), torch.empty(0)).device

    def owns(self, p: Tensor) -> bool:
        return self.owners[p] == self.rank


def is_dtensor(t: Any) -> bool:
    # No DTensor can exist before init_process_group: skip the import for one process.
    if not (dist.is_available() and dist.is_initialized()):
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def has_dtensor(param_groups: list[dict[str, Any]]) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return any(is_dtensor(p) for g in param_groups for p in g["params"])


def local_part(full: Tensor, like: Tensor) -> Tensor:
    """``full`` for ``like``: as a ``DTensor`` laid out as ``like`` when ``like`` is one (each
    rank keeps its slice, no communication), else ``full`` itself."""
    if not is_dtensor(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def _nbytes(p: Tensor) -> int:
    n = math.prod(p.shape) * p.element_size()
    return -(-n // _ALIGN) * _ALIGN


def exchange(
    updates: dict[int, Tensor],
    params: list[Tensor],
    owners: list[int],
    stepped: list[bool],
    sharding: Sharding,
    device: torch.device,
) -> dict[int, Tensor]:
    """Every rank's updates on every rank: each rank packs the (flat, parameter-dtype) updates
    it owns as bytes in parameter order, and one ``all_gather`` moves them. Offsets follow
    from the global shapes and dtypes, which every rank knows."""
    sizes = [0] * sharding.world
    where: dict[int, tuple[int, int]] = {}
    for i, p in enumerate(params):
        if stepped[i]:
            where[i] = (owners[i], sizes[owners[i]])
            sizes[owners[i]] += _nbytes(p)
    if max(sizes) == 0:
        return {}
    buf = torch.zeros(max(sizes), dtype=torch.uint8, device=device)
    for i, u in updates.items():
        _, off = where[i]
        raw = u.contiguous().view(torch.uint8)
        buf[off : off + raw.numel()] = raw.to(device)
    gathered = [torch.empty_like(buf) for _ in range(sharding.world)]
    dist.all_gather(gathered, buf, group=sharding.group)
    out = {}
    for i, (r, off) in where.items():
        p = params[i]
        n = math.prod(p.shape) * p.element_size()
        out[i] = gathered[r][off : off + n].view(p.dtype)
    return out


def step(opt: Any, sync: Callable[[], None]) -> bool:
    """One step of ``opt`` (a ``SpectralKron`` with ``shard=True`` or ``DTensor``
    parameters), after ``sync`` (the validation of the options changed since the last step)
    on every rank. Returns ``False`` when the step is skipped (non-finite gradient,
    ``nonfinite="skip"``); raises on every rank, with nothing written, when it fails."""
    Join.notify_join_context(opt)  # a collective only when opt is Join's first joinable
    rejected: Exception | None = None
    try:
        sync()
    except Exception as e:  # noqa: BLE001 - re-raised below, once every rank knows
        rejected = e  # this rank computes nothing, but still takes part in every collective
    sharding: Sharding | None = opt.sharding
    rank = sharding.rank if sharding else 0
    entries = [
        (gi, pi, g, p) for gi, g in enumerate(opt.param_groups) for pi, p in enumerate(g["params"])
    ]
    if sharding is not None:  # a parameter put into a group by hand has no owner
        stray = [(gi, pi) for gi, pi, _, p in entries if p not in sharding.owners]
        if stray and rejected is None:
            rejected = ValueError(
                f"params[{stray[0][0]}][{stray[0][1]}]: put into param_groups without an owner "
                "rank; with shard=True add parameters with add_param_group on every rank"
            )
        entries = [e for e in entries if e[3] in sharding.owners]  # the other ranks' params
    where = [(gi, pi) for gi, pi, _, _ in entries]
    groups = [g for _, _, g, _ in entries]
    params = [p for *_, p in entries]
    owners = [sharding.owners[p] if sharding else EVERY_RANK for p in params]
    n = len(params)
    device = params[0].device if params else torch.device("cpu")
    # [presence | non-finite gradient | failed computation | non-finite update], summed over
    # the ranks after a header [options rejected, groups' fingerprint h, h^2] (consensus.agree).
    flags = [0] * (4 * n)
    results: dict[int, tuple[dict[str, Any], Tensor]] = {}
    errors: dict[int, BaseException] = {}
    doomed = rejected is not None  # the step will not be taken
    mine: dict[int, list[int]] = {}  # group index -> this rank's parameters with a gradient
    grads: dict[int, Tensor] = {}
    for i, p in enumerate(params):
        grad, (gi, pi) = p.grad, where[i]
        if grad is None or not p.numel():  # an empty parameter has nothing to update
            continue
        error = unsteppable_error(gi, pi, p)
        if error is not None:
            raise error
        if is_dtensor(grad):
            grad = grad.full_tensor()  # a collective: every rank, same order, every step
        if opt._awaits_warm_start(groups[i], p, grad):  # the whole gradient: every rank alike
            continue
        flags[i] = 1
        grads[i] = grad
    # Every rank checks every gradient it holds, not only its own parameters': a NaN or an
    # overflowing gradient on any rank then decides the step on every rank whoever owns the
    # parameter (gradients that differ between ranks are the caller's error, but one that
    # no owner sees must not pass unnoticed). One host synchronisation for all of them.
    # (A rank that rejected its options reads none of them: its bounds may be invalid.)
    checked = [i for i, g in grads.items() if g.numel() and rejected is None]
    tops = torch.stack(max_norms([grads[i] for i in checked])).tolist() if checked else []
    for i, top in zip(checked, tops, strict=True):
        if not math.isfinite(top):
            flags[n + i] = 1
            doomed = True
        elif top > square_bound(opt._state_dtype(groups[i], params[i])):
            flags[3 * n + i] = 1  # its squares overflow the state dtype: skipped everywhere
            doomed = True
    for i in grads:
        if owners[i] in (EVERY_RANK, rank):
            mine.setdefault(where[i][0], []).append(i)
    index = {id(p): i for i, p in enumerate(params)}
    for gi, idxs in mine.items():
        if doomed:
            break
        group = opt.param_groups[gi]
        # The unsharded step's buckets (an owner holds whole buckets: ``_owner_units``).
        for bucket in opt._buckets(group, [params[i] for i in idxs]):
            ids = [index[id(p)] for p in bucket]
            try:
                out = opt._compute_many(group, bucket, [grads[i] for i in ids])
            except NonFiniteUpdate:
                for i in ids:
                    flags[3 * n + i] = 1  # the step is skipped on every rank
                continue
            except Exception as e:  # noqa: BLE001 - re-raised below, once every rank knows
                # Raising now would leave the other ranks waiting in the all-reduce.
                for i in ids:
                    flags[2 * n + i] = 1
                    errors[i] = e
                continue
            for i, (new_state, u) in zip(ids, out, strict=True):
                results[i] = (new_state, u.reshape(-1).to(params[i].dtype))
    # Sharded or DTensor parameters: the process group is initialised.
    pg = sharding.group if sharding else opt.process_group
    world = dist.get_world_size(pg)
    h = consensus.groups_key(opt)
    header = [rejected is not None, h, h * h]
    summed = consensus.call(consensus.STEP, header + flags, pg, device)
    header, flags = summed[:3], summed[3:]
    consensus.agree(header, world, rejected)
    _raise_or_skip(opt, flags, n, world, where, owners, errors)
    if any(flags[n : 2 * n]):
        return False
    if any(flags[3 * n :]):
        gi, pi = where[next(i for i in range(n) if flags[3 * n + i])]
        warn_skipped(
            f"params[{gi}][{pi}]: its gradient's squares, its curvature step or its update "
            "overflowed the state or parameter dtype"
        )
        return False
    stepped = [bool(f) for f in flags[:n]]
    updates = {i: u for i, (_, u) in results.items()}
    if sharding is not None and sharding.world > 1:
        updates = exchange(updates, params, owners, stepped, sharding, device)
    for i, (group, p) in enumerate(zip(groups, params, strict=True)):
        if not stepped[i]:
            continue
        new_state = results[i][0] if i in results else None
        opt.apply_update(group, p, new_state, updates[i].to(p.device).view(p.shape))
    return True


def _raise_or_skip(
    opt: Any,
    flags: list[int],
    n: int,
    world: int,
    where: list[tuple[int, int]],
    owners: list[int],
    errors: dict[int, BaseException],
) -> None:
    """The same decision on every rank, from the all-reduced flags."""
    for i in range(n):
        if 0 < flags[i] < world:
            gi, pi = where[i]
            raise ValueError(
                f"params[{gi}][{pi}]: has a gradient on {flags[i]} of {world} ranks; "
                "every rank must have the same gradients; nothing was changed"
            )
    bad = [i for i in range(n) if flags[n + i]]
    if bad and opt.nonfinite == "raise":
        gi, pi = where[bad[0]]
        raise nonfinite_gradient_error(gi, pi, tuple(opt.param_groups[gi]["params"][pi].shape))
    failed = [i for i in range(n) if flags[2 * n + i]]
    if failed and not bad:
        i = failed[0]
        if i in errors:
            raise errors[i]
        gi, pi = where[i]
        raise FloatingPointError(
            f"SpectralKron: the update of params[{gi}][{pi}] failed on rank {owners[i]} "
            "(its owner, which raised the error); nothing was changed"
        )
