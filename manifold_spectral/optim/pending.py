"""The checks of a step's results, read back in one host synchronisation.

Each bucket's update ends with checks that read a reduced value back to the host: its
eigenvalue-correction second moment is finite (squares of a finite gradient may overflow
the buffer's dtype) and its update fits the parameters' dtypes (``updates.update_fits``).
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

__all__ = ["PendingChecks"]


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
