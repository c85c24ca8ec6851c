"""The packed state of a bucket, kept between steps.

A bucket's update runs on its parameters' state entries packed into one batched tensor
(stacked, concatenated, or embedded with identity padding); the results are unpacked into
per-parameter entries. Packing them again at the next step is a copy per entry and
parameter, which for small layers costs more than the arithmetic. ``PackCache`` keeps a
packed tensor whose per-parameter entries are views of it (a stacked or concatenated
bucket's, and a padded bucket's eigenvalues and largest member), and hands it back only
while every one of those is still the very tensor in the parameter's state (``is``, with
an unchanged version counter). A write into such an entry is a write into the kept tensor,
however it is made: also through ``.data``, a NumPy view or a ``torch.distributed``
collective, which do not increment ``Tensor._version``. An entry that is a copy (a padded
bucket's smaller factors and matrices, or the tensors of a fresh pack, e.g. after a loaded
state dict) could be written unseen, so its bucket packs it afresh at every step: the
cache changes no result. Memory: the kept tensors are the views' storage.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["PackCache"]


class PackCache:
    """The cache entries of one bucket for one step.

    ``store``: the optimizer's dict of bucket -> {name: (packed, ([tensor, ...], [version, ...]))};
    ``params``: the bucket; ``pre``: its preconditioner (``pack``). With one parameter
    nothing is cached (there is nothing to pack)."""

    def __init__(self, store: dict[Any, Any], params: Sequence[Tensor], pre: Any) -> None:
        self._store = store
        self._key = tuple(id(p) for p in params)
        self._pre = pre
        self._on = len(params) > 1
        self._old: dict[str, Any] = store.get(self._key, {}) if self._on else {}
        self._new: dict[str, Any] = {}

    def __call__(self, name: str, tensors: Sequence[Tensor], key: str | None = None) -> Tensor:
        """``pre.pack(tensors, key)``, or the packed tensor they were unpacked from."""
        hit = self._old.get(name)
        if hit is None or not _same(hit[1], tensors):
            # A fresh pack is a copy of ``tensors``, which a write that bumps no version
            # counter would leave stale: not kept (``record`` keeps views).
            return self._pre.pack(tensors, key)
        self._new.setdefault(name, hit)
        return hit[0]

    def record(self, name: str, packed: Tensor, parts: Sequence[Tensor]) -> None:
        """``parts`` (the per-parameter entries about to be written) came from ``packed``
        (replaces what ``__call__`` kept under ``name`` this step); kept only where every
        part is a view of ``packed``, so that no write into a part can leave it stale."""
        if not self._on:
            return
        if all(_views(t, packed) for t in parts):
            self._new[name] = (packed, _record(parts))
        else:
            self._new.pop(name, None)

    def store(self) -> None:
        """Keep this step's entries; drop the entries of other buckets that shared a
        parameter with this one (a parameter belongs to one bucket a step)."""
        if not self._on:
            return
        ids = set(self._key)
        for other in [o for o in self._store if o != self._key and not ids.isdisjoint(o)]:
            del self._store[other]
        self._store[self._key] = self._new


def _same(recorded: tuple[list[Tensor], list[int]], tensors: Sequence[Tensor]) -> bool:
    """Whether ``tensors`` are the recorded ones (``is``), each at its recorded version."""
    kept, versions = recorded
    return (
        len(kept) == len(tensors)
        and all(map(operator.is_, kept, tensors))
        and list(map(_version, tensors)) == versions
    )


_version = operator.attrgetter("_version")


def _record(tensors: Sequence[Tensor]) -> tuple[list[Tensor], list[int]]:
    """The tensors and their versions, as ``_same`` compares them."""
    return list(tensors), list(map(_version, tensors))


def _views(part: Tensor, packed: Tensor) -> bool:
    """``part`` shares ``packed``'s storage (a slice of it, not a copy)."""
    return part.untyped_storage().data_ptr() == packed.untyped_storage().data_ptr()
