"""Immutable containers for points and chart (tangent) coordinates.

Points and tangents are frozen dataclasses of tensors. Tangents support the vector-space
operations (``+``, ``-``, scalar ``*``, unary ``-``) leaf by leaf, so generic code (``RGD``'s
momentum, line searches) never needs to know a manifold's coordinates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

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

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """``Tensor.to`` on every leaf (dtype and/or device)."""
        return self.map(lambda t: t.to(*args, **kwargs))

    def clone(self) -> Any:
        return self.map(torch.clone)

    def detach(self) -> Any:
        return self.map(torch.Tensor.detach)

    def is_finite(self) -> bool:
        """True when no leaf holds NaN or Inf."""
        return all(bool(torch.isfinite(t).all()) for t in self.leaves())

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
    """Local coordinates of the spectral chart: ``m`` (n,) and strictly lower-triangular ``M``."""

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
