"""Immutable containers for points and chart (tangent) coordinates.

Points and tangents are frozen dataclasses of tensors. Tangents support the vector-space
operations (``+``, ``-``, scalar ``*``, unary ``-``) leaf by leaf, so generic code (``RGD``'s
momentum, line searches) never needs to know a manifold's coordinates.

A batch of ``k`` points of a manifold built with ``batch=k`` is one container whose leaves
carry a leading dimension ``k``: ``Point.stack([x_1, ..., x_k])`` builds it from unbatched
points and ``x.unbind()`` splits it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..linalg import all_finite

__all__ = [
    "TensorTree",
    "SpectralPoint",
    "SpectralTangent",
    "DiagonalPoint",
    "DiagonalTangent",
]


class TensorTree:
    """Mixin for frozen dataclasses whose fields are tensors or other ``TensorTree``s."""

    def leaves(self) -> list[Tensor]:
        """All tensors, depth first, in field order."""
        out: list[Tensor] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out.extend(v.leaves() if isinstance(v, TensorTree) else [v])
        return out

    def map(self, fn: Callable[..., Tensor], *others: Any) -> Any:
        """Apply ``fn`` leaf by leaf (to matching leaves of ``others``), keeping the structure."""
        kwargs = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            ov = [getattr(o, f.name) for o in others]
            kwargs[f.name] = v.map(fn, *ov) if isinstance(v, TensorTree) else fn(v, *ov)
        return type(self)(**kwargs)

    @classmethod
    def stack(cls, trees: Sequence[Any]) -> Any:
        """One batched tree from ``k`` trees of this type: leaf by leaf ``torch.stack``
        (a new leading dimension of size ``k``)."""
        trees = list(trees)
        if not trees or not all(type(t) is cls for t in trees):
            raise TypeError(f"stack: expected a non-empty sequence of {cls.__name__}")
        return trees[0].map(lambda *ts: torch.stack(ts), *trees[1:])

    def unbind(self) -> list[Any]:
        """The ``k`` elements of a batched tree (views along the leading dimension)."""
        k = self.leaves()[0].shape[0]
        return [self.map(lambda t, i=i: t[i]) for i in range(k)]

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """``Tensor.to`` on every leaf (dtype and/or device)."""
        return self.map(lambda t: t.to(*args, **kwargs))

    def clone(self) -> Any:
        return self.map(torch.clone)

    def detach(self) -> Any:
        return self.map(torch.Tensor.detach)

    def is_finite(self) -> bool:
        """True when no leaf holds NaN or Inf."""
        return all(all_finite(t) for t in self.leaves())

    @property
    def dtype(self) -> torch.dtype:
        return self.leaves()[0].dtype

    @property
    def device(self) -> torch.device:
        return self.leaves()[0].device

    # Vector-space operations (meaningful for tangents).
    def __add__(self, other: Any) -> Any:
        return self.map(torch.add, other)

    def __sub__(self, other: Any) -> Any:
        return self.map(torch.sub, other)

    def __neg__(self) -> Any:
        return self.map(torch.neg)

    def __mul__(self, c: float | Tensor) -> Any:
        return self.map(lambda t: t * c)

    __rmul__ = __mul__

    def __truediv__(self, c: float | Tensor) -> Any:
        return self.map(lambda t: t / c)


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralPoint(TensorTree):
    """A point of ``manifold_spectral.SpectralSPD``: ``S = B Diag(d) B^T``.

    ``B`` (n, n) orthogonal, ``d`` (n,) positive.
    """

    B: Tensor
    d: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralTangent(TensorTree):
    """Local coordinates of the spectral chart: ``m`` (n,) and strictly lower-triangular ``M``
    (``chart`` and ``retr`` read only its strictly lower triangle)."""

    m: Tensor
    M: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class DiagonalPoint(TensorTree):
    """A point of ``manifold_spectral.DiagonalSPD``: ``S = Diag(d)``, ``d > 0``."""

    d: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class DiagonalTangent(TensorTree):
    """Local coordinates of the diagonal chart ``d(m) = d * exp(m)``."""

    m: Tensor
