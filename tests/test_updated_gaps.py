"""``updated_gaps`` (``SpectralKron``'s default): the closed-form curvature step divides the
rotation by the gaps of the eigenvalues after the step, so that with ``jacobi`` each pair turns
by the exact eigenvector angle of its 2 x 2 block of the updated curvature
``(1 - beta2) S_L + beta2 / (alpha b) (G S_R^-1 G^T + lambda tr(S_R^-1) I)`` (``gamma = 1``,
truncated map). A 2 x 2 left factor has one pair: the step must diagonalise that matrix,
computed here from the state with plain products and checked with ``numpy.linalg.eigh``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import manifold_spectral as ms
from manifold_spectral.gaussian import DenseCurvature, Gaussian
from manifold_spectral.optim import SpectralKron

DT = torch.float64
COLUMNS = torch.tensor([1e3, 1e-3, 1.0], dtype=DT)  # badly scaled inputs of a first layer


def updated_left_curvature(st: dict, G: torch.Tensor, beta2: float, lam: float) -> np.ndarray:
    """``(1 - beta2) S_L + beta2 / (alpha b) (G S_R^-1 G^T + lambda tr(S_R^-1) I)`` at ``st``."""
    BL, dL = st["pc_B_L"].numpy(), st["pc_d_L"].numpy()
    BR, dR = st["pc_B_R"].numpy(), st["pc_d_R"].numpy()
    alpha, g, b = float(st["pc_alpha"]), G.numpy(), G.shape[1]
    S_L = (BL * dL) @ BL.T
    SR_inv = (BR / dR) @ BR.T
    W = g @ SR_inv @ g.T + lam * np.trace(SR_inv) * np.eye(2)
    return (1 - beta2) * S_L + beta2 / (alpha * b) * W


def off_diagonal(B: np.ndarray, A: np.ndarray) -> float:
    """``|(B^T A B)_12|`` relative to ``A``'s spectral norm."""
    return abs((B.T @ A @ B)[0, 1]) / np.abs(np.linalg.eigvalsh(A)).max()


@pytest.mark.parametrize("c", [1.0, 2.0])  # basis_scale: the paper's 1, the default 2
@pytest.mark.parametrize("warm_start", [False, True])
def test_default_step_diagonalises_the_updated_two_by_two_curvature(warm_start, c):
    """From the identity (``warm_start=False``: equal eigenvalues, which the old gaps never
    turned) and from a warm start on a gradient with columns scaled by 1e3 / 1e-3 / 1, every
    step's new ``B_L`` is the eigenbasis of the updated curvature (gap damping off and the
    exact Cayley map, so that the 2 x 2 Jacobi angle is turned exactly); with
    ``basis_scale=c``, of the updated curvature whose off-diagonal entry in the old basis is
    ``c`` times larger (the over-relaxed angle)."""
    beta2, lam = 0.1, 1e-3
    g = torch.Generator().manual_seed(5)
    W = nn.Parameter(torch.randn(2, 3, generator=g, dtype=DT))
    opt = SpectralKron(
        [W], lr=1e-3, beta2=beta2, damping=lam, gap_damping=0.0, cayley="exact",
        warm_start=warm_start, basis_scale=c,
    )  # fmt: skip
    W.grad = torch.randn(2, 3, generator=g, dtype=DT) * COLUMNS
    opt.step()  # the first step initialises the state (and, warm, updates it once)
    for _ in range(4):
        G = torch.randn(2, 3, generator=g, dtype=DT) * COLUMNS
        st = {k: v.clone() for k, v in opt.state[W].items() if k.startswith("pc_")}
        A = updated_left_curvature(st, G, beta2, lam)
        B_old = st["pc_B_L"].numpy()
        M = B_old.T @ A @ B_old  # in the old basis; the off-diagonal entry scaled by c
        A = B_old @ (np.diag(np.diag(M)) + c * (M - np.diag(np.diag(M)))) @ B_old.T
        assert off_diagonal(B_old, A) > 1e-6  # the old basis is not it
        W.grad = G.clone()
        opt.step()
        B_new = opt.state[W]["pc_B_L"].numpy()
        assert off_diagonal(B_new, A) < 1e-12
        # the same basis as eigh's, up to the order and signs of the columns
        U = np.linalg.eigh(A)[1]
        overlap = np.abs(B_new.T @ U)
        np.testing.assert_allclose(np.sort(overlap.max(0)), [1.0, 1.0], rtol=0, atol=1e-12)


def test_updated_gaps_change_only_the_rotation():
    """The eigenvalues and ``alpha`` of the closed-form step are those of the RGD step; the
    basis differs (here: the origin, where the old gaps are all zero and do not turn it)."""
    K = ms.KroneckerSpectralSPD(3, 4, dtype=DT, gap_damping=0.3)
    x = K.origin()
    V = torch.randn(12, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    Ht = K.gop_eigenbasis(x, V, damping=0.01)
    kw = dict(exponential="truncated", cayley="neumann", jacobi=True)
    old = K.closed_form_step(x, Ht, 0.1, 1.0, **kw)
    new = K.closed_form_step(x, Ht, 0.1, 1.0, updated_gaps=True, **kw)
    for u, v in ((old.alpha, new.alpha), (old.left.d, new.left.d), (old.right.d, new.right.d)):
        torch.testing.assert_close(u, v, rtol=1e-14, atol=0)
    torch.testing.assert_close(old.left.B, torch.eye(3, dtype=DT), rtol=0, atol=0)
    assert float((new.left.B - torch.eye(3, dtype=DT)).abs().max()) > 1e-2


def test_updated_gaps_needs_the_closed_form():
    """A variant of the closed form only: refused with ``second_order`` and, naming the option,
    for a curvature without a closed form (a dense one), the point untouched."""
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="updated_gaps"):
        Gaussian(K, beta2=0.1, second_order=True, updated_gaps=True)
    with pytest.raises(TypeError, match="updated_gaps"):
        Gaussian(K, beta2=0.1, updated_gaps=1)
    x = K.random(torch.Generator().manual_seed(2))
    before = x.left.B.clone()
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=DT)
    with pytest.raises(ValueError, match="updated_gaps"):
        Gaussian(K, beta2=0.1, updated_gaps=True).precision_step(x, DenseCurvature(A @ A.T))
    torch.testing.assert_close(x.left.B, before, rtol=0, atol=0)
