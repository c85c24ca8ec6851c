"""Spectral manifolds: points, charts, closed-form Fisher-Rao metrics and retractions."""

from .base import SpectralManifold
from .diagonal import DiagonalSPD
from .kronecker import (
    KroneckerSpectralPoint,
    KroneckerSpectralSPD,
    KroneckerSpectralTangent,
)
from .points import DiagonalPoint, DiagonalTangent, SpectralPoint, SpectralTangent, TensorTree
from .spectral import SpectralSPD

__all__ = [
    "SpectralManifold",
    "SpectralSPD",
    "DiagonalSPD",
    "KroneckerSpectralSPD",
    "KroneckerSpectralPoint",
    "KroneckerSpectralTangent",
    "SpectralPoint",
    "SpectralTangent",
    "DiagonalPoint",
    "DiagonalTangent",
    "TensorTree",
]
