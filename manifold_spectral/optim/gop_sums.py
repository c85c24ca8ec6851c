"""``SpectralKron``'s ``accumulate_gop``: the Kronecker curvature step learns from the GOP of
every gradient since the previous curvature step, not from the current one alone.

Between two curvature steps the factors do not move, so the one-sided sums that the GOP
step reads of each gradient (``W_L = Z D_R^-1 Z^T``, ``W_R = Z^T D_L^-1 Z``,
``KroneckerSpectralSPD.gop_side_sums``) are sums at one point: the state keeps their
running means over the period (``gop_W_L`` (a, a), ``gop_W_R`` (b, b), and their number
``gop_count``), which the curvature step takes (``KroneckerGOPSides``): the GOP
``mean_i vec(G_i) vec(G_i)^T`` of the period's gradients. Means, not sums: they overflow only
where one gradient's sums do. With ``update_every = 1`` nothing is kept.

Kept sums are always sums at the current point: a curvature step moves the point, so one
taken without accumulating (``accumulate_gop`` or ``update_every`` changed mid-run) resets
sums kept earlier, which the option turned on again would otherwise add to gradients taken
at another point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .pack_cache import PackCache
from .pending import PendingChecks, moment_verdict

__all__ = ["accumulate_gop"]


def accumulate_gop(
    pre: Any,
    pc: dict[str, Tensor],
    G: Tensor,
    rotated: Tensor | None,
    states: list[dict[str, Any]],
    news: list[dict[str, Any]],
    updated: bool,
    accumulate: bool,
    pending: PendingChecks,
    packed: PackCache,
    shape: torch.Size,
    read: Callable[[Tensor], int] = int,
    count: Callable[[int], Tensor] | None = None,
) -> tuple[Tensor, Tensor] | None:
    """One step of a Kronecker bucket's sums (module docstring): ``pre``'s one-sided sums
    of the (packed) gradient ``G`` at the point ``pc`` (``rotated``: ``B_L^T G B_R`` when
    the caller has it) added to those its members' ``states`` keep, written into ``news``
    (their pending state; ``packed``: the bucket's ``PackCache``), kept as running means.
    ``updated``: a curvature step follows, which gets the means ``(W_L, W_R)`` of the
    period's ``n`` gradients (the kept means then start afresh at zero), or ``None`` where
    nothing was kept (the first step, or the option turned on mid-run): it then takes this
    gradient's GOP alone. The means' finiteness is checked through ``pending`` (``shape``:
    the parameter's, for the message). ``accumulate`` false (the option off, or a period of
    1): only the reset of a curvature step, of means kept earlier (module docstring); this
    gradient is not added. ``read`` and ``count``: the value of a kept 0-d count and a 0-d
    count of a value (default ``int`` and a fresh tensor; ``SpectralKron`` passes its step
    counts' ``_step_count`` and ``_step_tensor``, which read a count shared by the buckets
    once a step and make one tensor per value, instead of an addition per bucket)."""
    if count is None:
        count = _fresh_count
    if not (accumulate or updated):
        return None  # the point does not move: sums kept earlier stay sums at it
    # Members that kept sums and members that did not (the option toggled while some took
    # no step) share no history: the bucket starts afresh, as from a state without sums.
    kept = all("gop_W_L" in st for st in states)
    keys = ("W_L", "W_R")
    if (updated and not kept) or not accumulate:
        sums = None
    else:
        # Float64 counts (as the step's), exact integers, on the CPU (read without a device
        # synchronisation; a count loaded onto an accelerator is read once and replaced).
        # Members of a bucket share one 0-d count; each its own (stacked, (k,)) only where
        # their entries differ (after a load, or an option toggled while some took no step:
        # then they may have kept different numbers of gradients).
        counts = [st["gop_count"] for st in states] if kept else []
        if not kept:
            n = count(1)
            sums = pre.side_sums(pc, G, rotated)
        else:  # a bucket's members share their history (``_buckets``)
            if all(c is counts[0] for c in counts):
                values = [read(counts[0]) + 1]
                n = count(values[0])
            else:
                n = torch.stack([torch.as_tensor(c, dtype=torch.float64) for c in counts]) + 1
                values = n.tolist()
            old = [[st["gop_" + key] for st in states] for key in keys]
            if len(news) > 1:
                old = [packed("gop_" + key, o, key) for key, o in zip(keys, old, strict=True)]
            else:
                old = [o[0] for o in old]
            # The running means, not the sums (``gop_side_sums``): they overflow only where
            # one gradient's sums do (then the paper's scheme overflows too), whereas a sum
            # of ``n`` large ones would skip every step until the next curvature step. One
            # count for the bucket (equal counts too: the same bits as a shared one) is
            # taken inside the products.
            scale = values[0] if len(set(values)) == 1 else n
            sums = pre.side_sums(pc, G, rotated, mean=(*old, scale))
        for W in sums:  # squares of a finite gradient may overflow the state dtype
            pending.add([W.sum()], moment_verdict(W, shape, len(news), "GOP sums"))
    if updated:  # the curvature step below takes them in; the sums start afresh
        Bs = (pc["B_L"], pc["B_R"])
        kept_sums, total = [B.new_zeros(B.shape) for B in Bs], count(0)
    else:
        kept_sums, total = sums, n
    for key, W in zip(keys, kept_sums, strict=True):
        parts = [W] if len(news) == 1 else pre.unpack(W, key)
        for new, w in zip(news, parts, strict=True):
            new["gop_" + key] = w
        packed.record("gop_" + key, W, parts)
    per_member = total.ndim == 1
    for i, new in enumerate(news):  # entries are replaced, never written: views may share
        new["gop_count"] = total[i] if per_member else total
    if not updated or sums is None:
        return None
    return sums


def _fresh_count(n: int) -> Tensor:
    """A float64 0-d count of value ``n`` on the CPU (``accumulate_gop``'s default)."""
    return torch.scalar_tensor(n, dtype=torch.float64)
