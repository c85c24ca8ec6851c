"""Padded batches of ``KroneckerSpectralSPD``: ``k`` matrices of different shapes in one batch.

Element ``i`` of a manifold built with ``batch=k, sizes=[(a_1, b_1), ...]`` is an
``(a_i, b_i)`` Kronecker point embedded in the manifold's ``(a, b)`` with identity padding:

    B_l = Diag(B_l^true, I),   d_l = (d_l^true, 1, ..., 1),   G = [[G^true, 0], [0, 0]].

The GOP step (``closed_form_step``) then keeps the padding exactly and computes the true
block's step of the unpadded manifold, to rounding:

* ``Z = B_L^T G B_R`` and ``W_l`` vanish outside the true block (zero rows and columns of
  ``G``), so every padded rotation coordinate ``M_ij`` is 0 and each factor's Cayley map is
  ``Diag(C^true, I)``, exactly; ``rho = ||N^4||_F^(1/4)`` is that of the true block;
* what depends on the true sizes is taken from this layout: ``kappa_L = b_i`` and
  ``kappa_R = a_i`` per element, the damping trace ``tr(S_other^-1)`` over the true entries,
  and the determinant normalisation's means of ``log d`` over the true entries (the padding
  is then reset to 1). (The Neumann argument's Frobenius pre-clip to ``max_norm sqrt(n)``
  uses the padded ``n``; it changes nothing but rounding: the rescaling to
  ``||N^4||_F^(1/4) = max_norm`` that follows it is the same with either bound, since
  ``||N||_2 >= ||N||_F / sqrt(rank N)``.)

Point checks, ``apply_power_matrix``, ``to_eigenbasis`` and the Newton-Schulz polar step need
nothing: they map the padding to itself (``d = 1``, ``B = I``, zero gradient blocks). This is
what lets ``SpectralKron`` update many small layers of different shapes with one set of
batched products, whose per-call overhead dominates small layers.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..linalg import as_dtype

__all__ = ["KroneckerPadding"]

#: The kinds shaped like a factor (square), and the layout whose index they share.
_SQUARE = {"B_L": "B_L", "B_R": "B_R", "W_L": "B_L", "W_R": "B_R"}


class KroneckerPadding:
    """The true sizes of the elements of a padded batch (see the module docstring).

    ``mask_L`` (k, a) and ``mask_R`` (k, b): 1 on the true entries, 0 on the padding (in the
    manifold's dtype); ``size_L = (a_i)`` and ``size_R = (b_i)`` (k,) in at least float32
    (bfloat16 has no exact integers above 256).
    """

    def __init__(
        self, sizes: Sequence[tuple[int, int]], a: int, b: int, dtype: torch.dtype, device: Any
    ) -> None:
        self.sizes = tuple((int(ai), int(bi)) for ai, bi in sizes)
        self.a, self.b = a, b
        rows = torch.tensor([s[0] for s in self.sizes], device=device)
        cols = torch.tensor([s[1] for s in self.sizes], device=device)
        self.mask_L = (torch.arange(a, device=device) < rows[:, None]).to(dtype)
        self.mask_R = (torch.arange(b, device=device) < cols[:, None]).to(dtype)
        wide = torch.float32 if torch.finfo(dtype).bits <= 16 else dtype
        self.size_L, self.size_R = rows.to(wide), cols.to(wide)
        self._indices: dict[tuple[str, str], Tensor] = {}  # _index's, per kind and device
        #: ``a_i b_i`` (k, 1, 1): the true entries of each element's (a, b) matrix.
        self.numel = (self.size_L * self.size_R)[:, None, None]

    def trace_inverse(self, d: Tensor, side: str) -> Tensor:
        """``sum_j 1 / d_j`` over the true entries of one factor (``side``: "L" or "R")."""
        return d.reciprocal().mul_(self._mask(side)).sum(-1)

    def mean_log(self, d: Tensor, side: str) -> Tensor:
        """``mean(log d)`` over the true entries (``d``: (k, n), any floating dtype)."""
        mask = self._mask(side).to(d.dtype)
        return torch.log(d).mul_(mask).sum(-1) / self._size(side).to(d.dtype)

    def reset(self, d: Tensor, side: str) -> Tensor:
        """``d`` with the padding set to 1."""
        return torch.where(self._mask(side).bool(), d, torch.ones((), dtype=d.dtype))

    # The embedding of the elements and its inverse ------------------------------------

    def embed(self, tensors: Sequence[Tensor], kind: str) -> Tensor:
        """The k elements' tensors as one padded batch: ``kind`` "B_L" / "B_R" (factors,
        padded with the identity), "W_L" / "W_R" (matrices of a factor's shape, padded with
        0), "d_L" / "d_R" (eigenvalues, padded with 1) or "matrix" (any tensor with a_i b_i
        entries, reshaped to (a_i, b_i) and padded with 0)."""
        t0 = tensors[0]
        opts = dict(dtype=t0.dtype, device=t0.device)
        k = len(tensors)
        if kind in ("d_L", "d_R"):
            out = torch.ones(k, self._n(kind), **opts)
            for o, t in zip(out, tensors, strict=True):
                o[: t.shape[-1]].copy_(t)
            return out
        if kind in ("B_L", "B_R"):
            out = torch.eye(self._n(kind), **opts).repeat(k, 1, 1)
        elif kind in ("W_L", "W_R"):
            out = torch.zeros(k, self._n(kind), self._n(kind), **opts)
        else:
            out = torch.zeros(k, self.a, self.b, **opts)
        return self.fill(
            out, as_dtype(torch.cat([t.reshape(-1) for t in tensors]), out.dtype), kind
        )

    def fill(self, out: Tensor, flat: Tensor, kind: str) -> Tensor:
        """``out`` (a padded batch of ``kind``, written in place) with its true blocks set to
        ``flat``: every true block's entries in order, each block row-major (as ``extract``
        returns them). One indexed copy moves them all; the padding is left as it is. A
        ``scatter_`` (``out[index[i]] = flat[i]``, the positions distinct: what
        ``index_copy_`` writes) is the cheaper kernel of the two on a CPU."""
        out.view(-1).scatter_(0, self._index(kind, out.device), flat)
        return out

    def extract(self, t: Tensor, kind: str) -> tuple[Tensor, ...]:
        """The inverse of ``embed``: each element's true block, contiguous (views of one copy
        of all the true entries, or of ``t`` for eigenvalues)."""
        if kind in ("d_L", "d_R"):
            i = 0 if kind == "d_L" else 1
            return tuple(e[: s[i]] for e, s in zip(t, self.sizes, strict=True))
        blocks = self._blocks(kind)
        if all((r, c) == tuple(t.shape[-2:]) for r, c in blocks):
            return t.unbind(0)  # no padding on this side: views of ``t``, as a stack's
        flat = t.reshape(-1).index_select(0, self._index(kind, t.device))
        parts = flat.split_with_sizes([r * c for r, c in blocks])
        return tuple(e.view(r, c) for e, (r, c) in zip(parts, blocks, strict=True))

    def _blocks(self, kind: str) -> list[tuple[int, int]]:
        """The true block of each element: (a_i, a_i) / (b_i, b_i) for a factor's shape, else
        (a_i, b_i)."""
        if kind in _SQUARE:
            i = 0 if kind.endswith("L") else 1
            return [(s[i], s[i]) for s in self.sizes]
        return list(self.sizes)

    def _index(self, kind: str, device: Any) -> Tensor:
        """The flat (row-major) positions of the true blocks' entries in a padded batch of
        ``kind``, element after element, each block row-major (kept per kind and device): one
        indexed copy moves them all, where a copy per element costs several small calls."""
        key = (_SQUARE.get(kind, "matrix"), str(device))
        index = self._indices.get(key)
        if index is None:
            rows, cols = (self._n(kind),) * 2 if kind in _SQUARE else (self.a, self.b)
            starts = [i * rows * cols for i in range(len(self.sizes))]
            index = torch.cat(
                [
                    (o + torch.arange(r)[:, None] * cols + torch.arange(c)).reshape(-1)
                    for o, (r, c) in zip(starts, self._blocks(kind), strict=True)
                ]
            ).to(device)
            self._indices[key] = index
        return index

    def _n(self, kind: str) -> int:
        return self.a if kind.endswith("L") else self.b

    def _mask(self, side: str) -> Tensor:
        return self.mask_L if side == "L" else self.mask_R

    def _size(self, side: str) -> Tensor:
        return self.size_L if side == "L" else self.size_R


def check_sizes(sizes: Any, a: int, b: int, batch: int | None) -> tuple[tuple[int, int], ...]:
    """``sizes`` as a tuple of ``batch`` pairs ``(a_i, b_i)`` with ``1 <= a_i <= a`` and
    ``1 <= b_i <= b``; ``ValueError`` naming ``sizes`` otherwise."""
    if batch is None:
        raise ValueError("sizes: needs batch=k (one (a_i, b_i) per element)")

    def whole(v: Any) -> bool:  # an int (not a bool, not a float that int() would truncate)
        return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))

    try:
        ok = all(len(s) == 2 and whole(s[0]) and whole(s[1]) for s in sizes)
        pairs = tuple((int(s[0]), int(s[1])) for s in sizes) if ok else ()
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok or len(pairs) != batch:
        raise ValueError(f"sizes: expected {batch} pairs (a_i, b_i), got {sizes!r}")
    bad = [s for s in pairs if not (1 <= s[0] <= a and 1 <= s[1] <= b)]
    if bad:
        raise ValueError(f"sizes: every (a_i, b_i) must lie in [1, {a}] x [1, {b}], got {bad[0]}")
    return pairs
