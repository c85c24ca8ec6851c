"""manifold_spectral: learn the eigendecomposition of an SPD curvature matrix by Riemannian
gradient descent in local charts (Lin et al., ICML 2025), so that any matrix root
``S^(-1/p)`` costs an elementwise power instead of an eigendecomposition."""

from . import linalg
from .gaussian import GOP, DenseCurvature, Gaussian
from .manifolds import (
    DiagonalPoint,
    DiagonalSPD,
    DiagonalTangent,
    KroneckerSpectralPoint,
    KroneckerSpectralSPD,
    KroneckerSpectralTangent,
    SpectralManifold,
    SpectralPoint,
    SpectralSPD,
    SpectralTangent,
)
from .rgd import RGD

__version__ = "0.1.0"

__all__ = [
    "linalg",
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
    "RGD",
    "Gaussian",
    "GOP",
    "DenseCurvature",
]


def __getattr__(name: str) -> object:
    if name == "Hessian":  # renamed: gaussian.__getattr__ warns
        from . import gaussian

        return gaussian.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
