"""Agreement between the ranks of a sharded ``SpectralKron`` (``distributed``): every
collective call of the optimizer first all-reduces one integer vector that says which call
this is (``call``) and carries fingerprints of what must be equal on every rank
(``groups_key``, ``Sharding.check_params``), read by ``agree``. A rank that differs then
raises on every rank, before anything is written, instead of gloo aborting the processes on
a size mismatch, a rank waiting for one that raised, or the ranks silently disagreeing."""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.algorithms.join import Joinable, JoinHook, _JoinConfig

__all__ = [
    "CALLS",
    "STEP",
    "ADD",
    "CONSOLIDATE",
    "LOAD",
    "JOINED",
    "call",
    "blank",
    "fingerprint",
    "groups_key",
    "agree",
    "JoinableMixin",
    "on_cpu",
]

#: The collectives of an optimizer over a process group, as the first entries of the vector
#: that each of them all-reduces first (``call``); the last is no call of the user's: the
#: shadow of a step by a rank that ran out of inputs inside ``Join`` (``JoinableMixin``).
CALLS = (
    "step()",
    "add_param_group()",
    "consolidated_state_dict()",
    "load_state_dict()",
    "Join's hook",
)
STEP, ADD, CONSOLIDATE, LOAD, JOINED = range(len(CALLS))


def call(kind: int, body: list[int], group: Any, device: torch.device) -> list[int]:
    """All-reduce ``[one-hot of kind in CALLS] + body`` over ``group`` and return the summed
    ``body``; raise ``ValueError`` on every rank when the ranks made different calls (one
    rank in ``add_param_group`` while another steps), or when a rank that ran out of inputs
    in ``Join`` shadows the step (``JOINED``). Every call exchanges a vector of
    ``5 + 3 + 4n`` integers first (``n``: the parameters with an owner, equal on every rank
    that agreed so far; ``body`` is padded to it, ``blank``), so mismatched calls meet in
    one collective of one size and are read here, instead of gloo aborting the processes on
    a size mismatch or the ranks waiting in different collectives until the timeout."""
    one_hot = [int(k == kind) for k in range(len(CALLS))]
    vec = torch.tensor(one_hot + body, dtype=torch.int64, device=device)
    dist.all_reduce(vec, group=group)
    summed = vec.tolist()
    calls, world = summed[: len(CALLS)], dist.get_world_size(group)
    if calls[JOINED]:
        raise ValueError(
            f"SpectralKron(shard=True): {calls[JOINED]} of {world} ranks ran out of inputs "
            "inside torch.distributed.algorithms.join.Join while the others step; a sharded "
            "step needs every rank's gradients (each rank computes the updates of the "
            "parameters it owns), which a joined rank no longer has. Give every rank the "
            "same number of batches (e.g. DistributedSampler(..., drop_last=True)) or use "
            "shard=False; nothing was changed"
        )
    if calls[kind] != world:
        made = ", ".join(f"{c} on {k} of {world}" for c, k in zip(CALLS, calls, strict=True) if k)
        raise ValueError(
            f"SpectralKron: the ranks made different collective calls ({made} ranks); "
            "call step(), add_param_group(), consolidated_state_dict() and "
            "load_state_dict() on every rank, in the same order; nothing was changed"
        )
    return summed[len(CALLS) :]


def blank(n: int) -> list[int]:
    """The body of a call that carries nothing but itself: ``3 + 4n`` zeros, the size of a
    step's header and flags for ``n`` parameters with an owner (``call``)."""
    return [0] * (3 + 4 * n)


def fingerprint(items: Any) -> int:
    """A 20-bit hash of ``repr(items)``, the same on every rank for equal items (CRC-32, not
    Python's salted ``hash``); 20 bits keep ``world * sum h^2`` (``agree``) far inside int64."""
    return zlib.crc32(repr(items).encode()) & 0xFFFFF


def groups_key(opt: Any) -> int:
    """A 20-bit fingerprint of the parameter groups: the number of parameters in each and its
    options (a tensor option by its value: a scheduler writes a tensor ``lr`` in place, and
    the step reads it anyway to apply the updates), and of ``nonfinite``, which decides
    between skipping and raising on every rank alike."""
    keys = tuple(opt.defaults)
    groups = [
        (
            len(g["params"]),
            *(("tensor", g[k].tolist()) if isinstance(g[k], Tensor) else g[k] for k in keys),
        )
        for g in opt.param_groups
    ]
    return fingerprint((opt.nonfinite, groups))


def agree(
    header: list[int],
    world: int,
    error: Exception | None,
    what: str = "the number of groups, of parameters in a group, an option's value or nonfinite",
) -> None:
    """Raise on every rank unless every rank accepted its parameter groups and all hold the
    same ones, from the all-reduced ``[rejected, h, h^2]`` of the fingerprints ``h_r``
    (``groups_key``, or ``Sharding.check_params``'s; ``what`` they cover):
    ``W sum h_r^2 = (sum h_r)^2`` exactly when all are equal (Cauchy-Schwarz). The step's
    collectives pair the ranks' vectors by position: groups that differ would pair different
    parameters (gloo aborts the process on a size mismatch; equal sizes give ranks that
    silently disagree), and a rank that raised alone would leave the others waiting."""
    rejected, total, squares = header
    if error is not None:
        raise error
    if rejected:
        raise ValueError(
            f"param_groups: rejected on {rejected} of {world} ranks (their error names the "
            "option); change an option on every rank; nothing was changed"
        )
    if world * squares != total * total:
        raise ValueError(
            f"param_groups: differ between the ranks ({what}); build the optimizer with the "
            "same groups on every rank and change an option on every rank; nothing was changed"
        )


class JoinableMixin(Joinable):
    """``SpectralKron`` as a ``Joinable`` (``torch.distributed.algorithms.join``), as torch's
    ``ZeroRedundancyOptimizer`` is: ``Join([model, opt])`` calls ``join_hook``'s
    ``main_hook`` on a rank that ran out of inputs, once per step of the others, and
    ``post_hook`` on every rank at the end. Unsharded, a step has no collective of its own
    under DDP: the main hook does nothing, and the post hook gives the ranks that joined
    early a last joiner's state (``_ShadowStep.post_hook``). Sharded, the
    joined rank cannot shadow the step (it owns parameters whose gradients it no longer
    has, and the exchanged updates would lack theirs); its hook takes part in the step's
    first all-reduce as ``JOINED`` instead, and every rank raises ``ValueError`` there
    (``call``), with nothing changed, instead of gloo aborting the processes when that
    all-reduce meets ``Join``'s own of another size."""

    #: Join sets it on the instance; a class default spares ``__init__`` and unpickling.
    _join_config = _JoinConfig.construct_disabled_join_config()

    def join_hook(self, **kwargs: Any) -> JoinHook:
        """The hook that ``Join`` runs on a rank out of inputs (``_ShadowStep``); no
        keyword is read."""
        return _ShadowStep(self)

    @property
    def join_device(self) -> torch.device:
        """The parameters' device, where ``Join``'s all-reduces live (NCCL needs it)."""
        params = [p for g in self.param_groups for p in g["params"]]
        return params[0].device if params else torch.device("cpu")

    @property
    def join_process_group(self) -> Any:
        """``process_group``, or the default group that DDP answers: ``Join`` requires the
        same group from every joinable."""
        return self.process_group if self.process_group is not None else dist.group.WORLD


class _ShadowStep(JoinHook):
    """What a rank out of inputs does in place of ``SpectralKron``'s step (``main_hook``)
    and once every rank is out (``post_hook``)."""

    def __init__(self, opt: Any) -> None:
        self.opt = opt

    def main_hook(self) -> None:
        """Sharded: meet the others' step in its first all-reduce as ``JOINED``, where
        every rank raises (``call``). Unsharded: nothing (no collective in the step)."""
        sharding = self.opt.sharding
        if sharding is None:
            return
        body = blank(sharding.known(self.opt.param_groups))
        call(JOINED, body, sharding.group, sharding.device)  # raises on every rank

    def post_hook(self, is_last_joiner: bool) -> None:
        """Unsharded: a rank that joined early sat out the others' last steps, and its state
        (momentum, factors, step counts) lags theirs: from the next step on its updates
        would differ and the ranks' parameters part (DDP's own hook gives it the last
        joiner's model, not the optimizer's state). It loads a last joiner's state instead,
        broadcast through the CPU; one all-reduce when every rank joined last."""
        opt = self.opt
        if opt.sharding is not None:  # only reached when every rank joined last
            return
        group, device = opt.join_process_group, opt.join_device
        rank = dist.get_rank(group)
        # [a last joiner's rank, whether a rank joined early], by one MAX all-reduce
        vec = torch.tensor([rank if is_last_joiner else -1, int(not is_last_joiner)])
        vec = vec.to(device)
        dist.all_reduce(vec, op=dist.ReduceOp.MAX, group=group)
        src, early = vec.tolist()
        if not early:
            return
        state = [opt.state_dict() if rank == src else None]
        if rank == src:
            state[0]["state"] = on_cpu(state[0]["state"])
        dist.broadcast_object_list(state, group=group, group_src=src)
        if rank != src:
            opt.load_state_dict(state[0])


def on_cpu(state: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """A state dict's ``"state"`` with its tensors copied to the CPU: the objects that
    ``all_gather_object`` and ``broadcast_object_list`` pickle, so that no rank unpickles
    a tensor on another rank's accelerator and none holds another's state there."""
    return {
        k: {name: v.cpu() if isinstance(v, Tensor) else v for name, v in st.items()}
        for k, st in state.items()
    }
