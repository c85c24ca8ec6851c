"""Shared references of the ``KroneckerSpectralSPD`` tests (``test_kronecker*.py``): points
of each kind (random, near-repeated, repeated eigenvalues, the origin), symmetric matrices,
and the nearest Kronecker product by an SVD of the Van Loan-Pitsianis rearrangement."""

from __future__ import annotations

import torch

import manifold_spectral as ms

DT = torch.float64
SHAPES = [(2, 3), (3, 4), (4, 2)]
KINDS = ["random", "near-repeated", "repeated", "origin"]

# The autograd reference forms C_ij ~ 4 delta^2 by cancellation, so a near-repeated pair
# (relative gap delta = 3e-5) costs it ~eps / delta^2 relative accuracy in that coordinate;
# REF_RTOL loosens the comparison for that kind only (elsewhere 1e-10 or tighter).
REF_RTOL = {"near-repeated": 1e-5}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_point(a: int, b: int, kind: str, seed: int = 0):
    """A point of ``KroneckerSpectralSPD(a, b)``: random (distinct eigenvalues), with a
    near-repeated or an exactly repeated eigenvalue pair in each factor, or the origin."""
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT)
    if kind == "origin":
        return K, K.origin()
    x = K.random(gen(seed))
    if kind == "random":
        return K, x
    dL, dR = x.left.d.clone(), x.right.d.clone()
    if kind == "near-repeated":
        dL[1] = dL[0] * (1 + 1e-4)
        dR[1] = dR[0] * (1 + 3e-5)
    else:  # repeated: a pair in the left factor, a pair (or triple) in the right one
        dL[1] = dL[0]
        dR[1:3] = dR[0]
    return K, K.normalize(x.alpha, ms.SpectralPoint(x.left.B, dL), ms.SpectralPoint(x.right.B, dR))


def random_sym(n: int, seed: int) -> torch.Tensor:
    A = torch.randn(n, n, generator=gen(seed), dtype=DT)
    return A + A.T


def factor(B: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return (B * d) @ B.T


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


def nearest_kronecker_product(S: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Van Loan-Pitsianis: ``R[(i,l),(j,k)] = S[(i,j),(l,k)]``, best rank-1 ``R`` by an SVD."""
    R = torch.empty(a * a, b * b, dtype=S.dtype)
    for i in range(a):
        for l in range(a):
            R[i * a + l] = S[i * b : (i + 1) * b, l * b : (l + 1) * b].reshape(-1)
    U, s, Vh = torch.linalg.svd(R)
    return s[0] * torch.kron(U[:, 0].reshape(a, a), Vh[0].reshape(b, b))
