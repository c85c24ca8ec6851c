"""docs/geoopt.md, "Momentum with RiemannianSGD": geoopt seeds its momentum buffer with the
Euclidean gradient of the packed tensor, so the first momentum step is not a step of the
chart's metric; a buffer seeded with zeros makes it the Riemannian step ``-lr rgrad``.

The problem: log-det, ``f(S) = tr(S Q) - log det S`` at n = 4 from a random start whose two
smallest eigenvalues are about 0.07 (the Euclidean gradient of ``d`` scales like ``1/d``).
"""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.geoopt import SpectralSPD

geoopt = pytest.importorskip("geoopt")

N = 4
Q = torch.eye(N, dtype=torch.float64) + 0.5  # minimum at Q^-1


def _start() -> torch.Tensor:
    d = torch.tensor([0.082, 2.4, 0.069, 0.97], dtype=torch.float64)
    B = torch.linalg.qr(torch.randn(N, N, dtype=torch.float64, generator=_gen()))[0]
    return torch.cat([B, d[None]])


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _loss(M: SpectralSPD, x: torch.Tensor) -> torch.Tensor:
    return (M.to_matrix(x) * Q).sum() - torch.log(x[-1]).sum()


def _run(seed_buffer: bool, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    M = SpectralSPD(N)
    x = geoopt.ManifoldParameter(_start(), manifold=M)
    opt = geoopt.optim.RiemannianSGD([x], lr=0.1, momentum=0.5)
    if seed_buffer:
        opt.state[x]["momentum_buffer"] = torch.zeros_like(x)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        _loss(M, x).backward()
        opt.step()
        first = x.detach().clone() if first is None else first
    return first, M.to_matrix(x.detach())


def test_seeded_buffer_makes_the_first_momentum_step_riemannian():
    M = SpectralSPD(N)
    x0 = _start().requires_grad_()
    _loss(M, x0).backward()
    riemannian = M.retr(x0.detach(), -0.1 * M.egrad2rgrad(x0.detach(), x0.grad))
    seeded, _ = _run(True, 1)
    torch.testing.assert_close(seeded, riemannian, rtol=1e-12, atol=1e-12)
    unseeded, _ = _run(False, 1)  # geoopt's own start: the eigenvalues jump by e^O(1/d)
    assert unseeded[-1].max() > 100 * riemannian[-1].max()


def test_seeded_momentum_run_converges():
    _, S = _run(True, 300)
    assert torch.linalg.matrix_norm(S @ Q - torch.eye(N, dtype=torch.float64)) < 1e-10
