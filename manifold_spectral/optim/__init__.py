"""torch.optim adapters: ``SpectralKron`` (Kronecker + diagonal spectral preconditioning)."""

from .spectral_kron import SpectralKron

__all__ = ["SpectralKron"]
