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

__all__ = ["CALLS", "STEP", "ADD", "CONSOLIDATE", "call", "fingerprint", "groups_key", "agree"]

#: The collectives of an optimizer over a process group, as the first entries of the vector
#: that each of them all-reduces first (``call``).
CALLS = ("step()", "add_param_group()", "consolidated_state_dict()")
STEP, ADD, CONSOLIDATE = range(len(CALLS))


def call(kind: int, body: list[int], group: Any, device: torch.device) -> list[int]:
    """All-reduce ``[one-hot of kind in CALLS] + body`` over ``group`` and return the summed
    ``body``; raise ``ValueError`` on every rank when the ranks made different calls (one
    rank in ``add_param_group`` while another steps). Every call exchanges a vector of
    ``3 + 3 + 4n`` integers first (``n``: the parameters with an owner, equal on every rank
    that agreed so far; ``body`` is padded to it), so mismatched calls meet in one
    collective of one size and are read here, instead of gloo aborting the processes on a
    size mismatch or the ranks waiting in different collectives until the timeout."""
    one_hot = [int(k == kind) for k in range(len(CALLS))]
    vec = torch.tensor(one_hot + body, dtype=torch.int64, device=device)
    dist.all_reduce(vec, group=group)
    summed = vec.tolist()
    calls, world = summed[: len(CALLS)], dist.get_world_size(group)
    if calls[kind] != world:
        made = ", ".join(f"{c} on {k} of {world}" for c, k in zip(CALLS, calls, strict=True) if k)
        raise ValueError(
            f"SpectralKron: the ranks made different collective calls ({made} ranks); "
            "call step(), add_param_group() and consolidated_state_dict() on every rank, "
            "in the same order; nothing was changed"
        )
    return summed[len(CALLS) :]


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
