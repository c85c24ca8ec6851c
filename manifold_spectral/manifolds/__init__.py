"""Spectral manifolds: points, charts, closed-form Fisher-Rao metrics and retractions."""

from .base import SpectralManifold
from .diagonal import DiagonalSPD
from .points import DiagonalPoint, DiagonalTangent, SpectralPoint, SpectralTangent, TensorTree
from .spectral import SpectralSPD

__all__ = [
    "SpectralManifold",
    "SpectralSPD",
    "DiagonalSPD",
    "SpectralPoint",
    "SpectralTangent",
    "DiagonalPoint",
    "DiagonalTangent",
    "TensorTree",
]
