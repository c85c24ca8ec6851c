"""The packed state of a bucket, kept between steps.

A bucket's update runs on its parameters' state entries packed into one batched tensor
(stacked, concatenated, or embedded with identity padding); the results are unpacked into
per-parameter entries. Packing them again at the next step is a copy per entry and
parameter, which for small layers costs more than the arithmetic. ``PackCache`` keeps the
packed tensor of each entry, in one of two ways:

* views: the per-parameter entries are views of it (a stacked or concatenated bucket's, and
  a padded bucket's eigenvalues). It is handed back only while every entry is still the
  very tensor in the parameter's state (``is``, with an unchanged version counter and
  address). A write into such an entry is a write into the kept tensor, however it is
  made: also through ``.data``, a NumPy view or a ``torch.distributed`` collective, which
  do not increment ``Tensor._version``.
* refill: a padded bucket's factors and matrices are unpacked as views of one copy of all
  the members' true blocks (``KroneckerPadding.extract``), so a write into an entry, seen
  or not, is a write into that copy. While every entry is still the very tensor at the same
  address, the kept padded tensor gets that copy written into its true blocks (one indexed
  copy, ``refill``): the fresh pack without building the padding again, which the updates
  keep exactly (identity, ones, zeros: ``manifolds.kronecker_padding``).

Anything else (a replaced entry, the tensors of a fresh pack, e.g. after a loaded state
dict) is packed afresh: the cache changes no result. Memory: the kept tensors are the
entries' storage, plus one padded tensor per refilled entry.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["PackCache"]


class PackCache:
    """The cache entries of one bucket for one step.

    ``store``: the optimizer's dict of bucket -> {name: (packed, ([tensor, ...], ([address,
    ...], [version, ...])), flat)}, with ``flat`` ``None`` for views, or the copy the entries
    are views of for a refill (no versions: the copy is read whatever they are); ``params``:
    the bucket; ``pre``: its preconditioner (``pack``, ``refill``). With one parameter
    nothing is cached (there is nothing to pack)."""

    def __init__(self, store: dict[Any, Any], params: Sequence[Tensor], pre: Any) -> None:
        self._pre = pre
        self._on = len(params) > 1
        self._old: dict[str, Any] = {}
        if not self._on:  # a step of every single-parameter bucket: nothing more to set
            return
        self._store = store
        self._key = tuple(map(id, params))
        self._refills = getattr(pre, "padding", None) is not None
        self._old = store.get(self._key, {})
        self._new: dict[str, Any] = {}

    def __call__(self, name: str, tensors: Sequence[Tensor], key: str | None = None) -> Tensor:
        """``pre.pack(tensors, key)``, or the packed tensor they were unpacked from."""
        hit = self._old.get(name)
        if hit is None:
            return self._pre.pack(tensors, key)
        packed, (kept, stamps), flat = hit
        if len(kept) != len(tensors) or not all(map(operator.is_, kept, tensors)):
            # A fresh pack is a copy of ``tensors``, which a write that bumps no version
            # counter would leave stale: not kept (``record`` keeps views).
            return self._pre.pack(tensors, key)
        # ``.data = other`` swaps an entry's storage and bumps no version counter: the address
        if list(map(_address, tensors)) != stamps[0]:
            return self._pre.pack(tensors, key)
        if flat is None:
            if list(map(_version, tensors)) != stamps[1]:
                return self._pre.pack(tensors, key)
        else:  # the entries are still views of ``flat``: whatever was written into them is there
            self._pre.refill(packed, flat, key)
        self._new.setdefault(name, hit)
        return packed

    def record(self, name: str, packed: Tensor, parts: Sequence[Tensor]) -> None:
        """``parts`` (the per-parameter entries about to be written) came from ``packed``
        (replaces what ``__call__`` kept under ``name`` this step); kept where every part is
        a view of ``packed``, or, in a padded bucket, where the parts tile one copy (``_tiled``)
        and ``packed`` is contiguous (``refill`` writes through its flat view), so that no
        write into a part can leave it stale."""
        if not self._on:
            return
        # a part whose ``_base`` is ``packed``'s root is a view of it (``unpack``'s views): the
        # storage comparison only for the others
        base = packed if packed._base is None else packed._base
        if all(t._base is base or _views(t, packed) for t in parts):
            self._new[name] = (packed, _record(parts, True), None)
        elif self._refills and packed.is_contiguous() and (flat := _tiled(parts)) is not None:
            self._new[name] = (packed, _record(parts, False), flat)
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


def _record(
    tensors: Sequence[Tensor], versions: bool
) -> tuple[list[Tensor], tuple[list[int], ...]]:
    """The tensors and their addresses (and versions), as ``__call__`` compares them."""
    stamps = (list(map(_address, tensors)),)
    return list(tensors), stamps + (list(map(_version, tensors)),) if versions else stamps


_version = operator.attrgetter("_version")
_address = Tensor.data_ptr


def _views(part: Tensor, packed: Tensor) -> bool:
    """``part`` shares ``packed``'s storage (a slice of it, not a copy)."""
    return part.untyped_storage().data_ptr() == packed.untyped_storage().data_ptr()


def _tiled(parts: Sequence[Tensor]) -> Tensor | None:
    """The contiguous 1-d tensor that ``parts`` are contiguous views of, one after another
    from its start to its end (each part's entries row-major: ``KroneckerPadding.extract``'s
    layout), or ``None``."""
    flat = parts[0]._base
    if flat is None or flat.dim() != 1 or not flat.is_contiguous():
        return None
    at = flat.storage_offset()
    for t in parts:
        if t._base is not flat or not t.is_contiguous() or t.storage_offset() != at:
            return None
        at += t.numel()
    return flat if at == flat.storage_offset() + flat.numel() else None
