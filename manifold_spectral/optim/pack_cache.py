"""The packed state of a bucket, kept between steps.

A bucket's update runs on its parameters' state entries packed into one batched tensor
(stacked, concatenated, or embedded with identity padding); the results are unpacked into
per-parameter entries. Packing them again at the next step is a copy per entry and
parameter, which for small layers costs more than the arithmetic. ``PackCache`` keeps each
packed tensor with the per-parameter tensors it was unpacked into, and hands it back only
while every one of those is still the very tensor in the parameter's state, unmodified:
the same object (``is``) with the same version counter (``Tensor._version``, which every
in-place write increments, through any view). Anything else (a loaded state dict, an entry
the caller replaced or wrote into, a step whose results were not written) packs afresh, so
the cache changes no result. A fresh pack is kept too (it equals the pack of its tensors
while they stay unmodified), so after a reload the packing is paid once, not until the next
curvature update. Memory: a stacked or concatenated bucket's per-parameter entries are views
of the kept tensor; a padded bucket (small layers only) keeps its packed state besides the
per-parameter copies.
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
            # a fresh pack equals pack(tensors) while they are unmodified, as an unpacked one
            hit = (self._pre.pack(tensors, key), _record(tensors))
        self._new.setdefault(name, hit)
        return hit[0]

    def record(self, name: str, packed: Tensor, parts: Sequence[Tensor]) -> None:
        """``parts`` (the per-parameter entries about to be written) came from ``packed``
        (replaces what ``__call__`` kept under ``name`` this step)."""
        if self._on:
            self._new[name] = (packed, _record(parts))

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
