"""The checks of a step's results, read back in one host synchronisation.

Each bucket's update ends with checks that read a reduced value back to the host: its
eigenvalue-correction second moment is finite (squares of a finite gradient may overflow
the buffer's dtype) and its update fits the parameters' dtypes (``update_fits``).
Read bucket by bucket, each is a synchronisation and a tensor call of its own;
``PendingChecks`` stacks the values of every check since its last ``flush`` and reads them
at once, then decides in the order the checks were added, raising the first failure: the
outcome of checking each at once. ``SpectralKron`` flushes before a curvature update (whose
own failure must not mask an earlier check's) and before it writes anything.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..linalg import finite_with_sum, max_abs, max_abs_from
from .checks import NonFiniteUpdate, largest

__all__ = [
    "PendingChecks",
    "moment_verdict",
    "fits_verdict",
    "check_update",
    "update_fits",
    "fits_with_max",
]


class PendingChecks:
    """Checks whose values are read together: ``add(values, verdict)``, then ``flush``."""

    def __init__(self) -> None:
        self._items: list[tuple[list[Tensor], Callable[[list[float]], None]]] = []

    def add(self, values: list[Tensor], verdict: Callable[[list[float]], None]) -> None:
        """Check ``values`` (0-d tensors) at the next ``flush``: ``verdict`` gets them as
        Python floats and raises when the check fails."""
        self._items.append((values, verdict))

    def flush(self) -> None:
        """Read every pending value (one synchronisation per device among them) and run the
        verdicts in order; the first failure raises, the checks are cleared. Values of
        different dtypes are stacked in the widest (``torch.stack`` promotes: exact between
        floating types)."""
        items, self._items = self._items, []
        if not items:
            return
        flat = [v for values, _ in items for v in values]
        read: list[float] = [0.0] * len(flat)
        groups: dict[torch.device, list[int]] = {}
        for i, v in enumerate(flat):
            groups.setdefault(v.device, []).append(i)
        for ids in groups.values():
            got = torch.stack([flat[i] for i in ids]).tolist() if len(ids) > 1 else None
            for j, i in enumerate(ids):
                read[i] = got[j] if got is not None else float(flat[i])
        start = 0
        for values, verdict in items:
            verdict(read[start : start + len(values)])
            start += len(values)


def fits_verdict(
    us: list[Tensor], params: list[Tensor], lr: float, wd: float
) -> Callable[[list[float]], None]:
    """The verdict on a bucket's ``aminmax(U)`` (``us``: its members' slices): ``fits_with_max``,
    else ``check_update`` of each member, which names the first that does not fit."""

    def verdict(values: list[float]) -> None:
        if not fits_with_max(max_abs_from(*values), lr, params, wd):
            for u, p in zip(us, params, strict=True):
                check_update(u, p, lr, wd)

    return verdict


def check_update(u: Tensor, p: Tensor, lr: float, weight_decay: float) -> None:
    """``NonFiniteUpdate`` (naming ``p``'s shape) unless ``update_fits``."""
    if not update_fits(u, lr, [p], weight_decay):
        raise NonFiniteUpdate(
            f"the update (times lr = {lr:.3g}) of a parameter of shape {tuple(p.shape)} "
            f"is not finite in its dtype {p.dtype}"
        )


def moment_verdict(
    V: Tensor, shape: torch.Size, k: int, what: str = "eigenvalue-correction second moment"
) -> Callable[[list[float]], None]:
    """The verdict on the sum of a bucket's eigenvalue-correction second moment ``V`` (or of
    another buffer of squares, ``what``): ``NonFiniteUpdate`` unless every entry is finite
    (squares of a finite gradient may overflow the buffer's dtype)."""

    def verdict(values: list[float]) -> None:
        if not finite_with_sum(V, values[0]):
            raise NonFiniteUpdate(
                f"the {what} of a parameter of shape "
                f"{tuple(shape)}{' (and its bucket)' if k > 1 else ''} overflowed"
            )

    return verdict


def update_fits(u: Tensor, lr: float, params: list[Tensor], weight_decay: float = 0.0) -> bool:
    """Whether the write ``p <- p (1 - lr wd) - lr u`` (``u`` in the state dtype, cast to the
    parameter's) stays finite in every dtype of ``params``: ``u``, ``lr`` and ``lr u`` within
    ``finfo.max`` of the narrowest (a float32 update beyond a float16 parameter's range, or an
    ``lr`` its dtype cannot hold, would write Inf or fail half-way), and, only when ``lr u``
    comes within a factor 1024 of it, the parameters' own size added. One reduction and one
    host synchronisation in the usual case; NaN fails every comparison."""
    return fits_with_max(float(max_abs(u)), lr, params, weight_decay)


def fits_with_max(umax: float, lr: float, params: list[Tensor], weight_decay: float = 0.0) -> bool:
    """``update_fits`` given ``umax = max |u|``, read by the caller (``PendingChecks``)."""
    top = min(largest(p.dtype) for p in params)
    step = umax * lr
    if not (umax <= top and lr <= top and step <= top):
        return False
    if step <= top / 1024 and lr * weight_decay <= 1.0:
        return True  # |p| would have to be within 0.1% of the largest value to overflow
    pmax = max((float(max_abs(p)) for p in params if p.numel()), default=0.0)
    return pmax * abs(1.0 - lr * weight_decay) + step <= top
