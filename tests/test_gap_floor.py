"""``gap_floor``: the gap damping's scale ``max(d_i, d_j)`` floored at ``f max_k d_k``."""

from __future__ import annotations

import math

import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.linalg import skew
from manifold_spectral.manifolds import blocks
from manifold_spectral.optim import SpectralKron

DT = torch.float64


def test_inverse_gaps_with_a_floor_is_the_tikhonov_form_at_the_floored_scale() -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.cat([torch.rand(3, generator=g, dtype=DT) + 1, 1e-6 * torch.rand(5, dtype=DT)])
    rho, f = 0.3, 1e-3
    got = blocks.inverse_gaps(d, 1e-8, rho, f)
    top = max(d.tolist())
    for i in range(8):
        for j in range(8):
            gap = float(d[i] - d[j])
            scale = rho * max(float(d[i]), float(d[j]), f * top)
            assert float(got[i, j]) == pytest.approx(gap / (gap * gap + scale * scale), rel=1e-12)
    assert torch.equal(blocks.inverse_gaps(d, 1e-8, rho, 0.0), blocks.inverse_gaps(d, 1e-8, rho))


def test_the_floor_frees_the_neumann_bound_on_a_wide_rank_deficient_factor() -> None:
    """Ten eigenvalues carry the gradient, 190 sit far below: the rotation generator of a
    rank-10 GOP is dominated by the small-small pairs without the floor, so the Neumann
    bound's norm ``||N^4||_F^(1/4)`` is several times larger than with it."""
    g = torch.Generator().manual_seed(1)
    n = 200
    d = torch.cat(
        [
            1 + torch.rand(10, generator=g, dtype=DT),
            1e-7 * (1 + torch.rand(n - 10, generator=g, dtype=DT)),
        ]
    )
    V = torch.randn(n, 10, generator=g, dtype=DT)
    W = V @ V.T * 1e-7
    rho = []
    for f in (0.0, 1e-3):
        M = blocks.inverse_gaps(d, 1e-8, 0.3, f).mul_(W).mul_(-0.1)
        N = skew(blocks.jacobi_angles(M.tril(-1)))
        N4 = N @ N @ N @ N
        rho.append(float(torch.linalg.matrix_norm(N4, ord="fro") ** 0.25))
    assert rho[1] < rho[0] / 3, rho


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf])
def test_bad_gap_floor_is_named(bad) -> None:
    p = torch.nn.Parameter(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="gap_floor"):
        SpectralKron([p], gap_floor=bad)
    with pytest.raises(ValueError, match="gap_floor"):
        ms.SpectralSPD(4, dtype=DT, gap_floor=bad)


def test_a_zero_floor_is_the_default_bit_for_bit() -> None:
    def run(**kw):
        torch.manual_seed(0)
        layer = torch.nn.Linear(12, 3)
        opt = SpectralKron(layer.parameters(), lr=1e-2, **kw)
        g = torch.Generator().manual_seed(2)
        for _ in range(4):
            layer.weight.grad = torch.randn(3, 12, generator=g)
            layer.bias.grad = torch.randn(3, generator=g)
            opt.step()
        return layer.weight.detach().clone()

    assert torch.equal(run(), run(gap_floor=0.0))
    assert not torch.equal(run(), run(gap_floor=0.5))
