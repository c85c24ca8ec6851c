"""``SpectralKron``'s momentum direction: Nesterov's (0.85) by default, the heavy ball's on request.

For a constant gradient ``g`` the curvature (and the eigenvalue correction's second moment)
sees only ``g``, so a run with momentum ``mu`` and one without share their preconditioner
and differ only in the direction fed to it: after ``t`` steps the buffer is
``(1 - mu^t) / (1 - mu) g``, the heavy ball's direction that buffer, Nesterov's
``g + mu buf = (1 - mu^(t+1)) / (1 - mu) g``. The steps of the two runs are in that ratio,
computed here by hand, not by the optimizer's code.
"""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.optim import SpectralKron

MU = 0.9
SHAPES = [(5, 3), (7,)]  # Kronecker factors (with the eigenvalue correction), diagonal scheme
NESTEROV = [(1 - MU ** (t + 1)) / (1 - MU) for t in range(1, 5)]  # 1.9, 2.71, 3.439, 4.0951
HEAVY_BALL = [(1 - MU**t) / (1 - MU) for t in range(1, 5)]  # 1, 1.9, 2.71, 3.439
# The defaults' coefficient 0.85, summed by hand:
DEFAULT_NESTEROV = [1.85, 2.5725, 3.186625, 3.70863125]  # 1 + mu + ... + mu^t


def _steps(shape: tuple[int, ...], n: int = 4, **options: object) -> list[torch.Tensor]:
    """The parameter changes of ``n`` steps on one constant gradient (float64)."""
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    opt = SpectralKron([p], lr=1e-3, **options)
    out = []
    for _ in range(n):
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        out.append(p.detach() - before)
    return out


def _assert_ratios(steps: list[torch.Tensor], plain: list[torch.Tensor], ratios: list[float]):
    assert len(steps) == len(plain) == len(ratios)
    for t, (s, q, r) in enumerate(zip(steps, plain, ratios, strict=True), start=1):
        assert q.abs().max() > 0
        torch.testing.assert_close(s, q * r, rtol=1e-9, atol=0.0, msg=f"step {t}")


@pytest.mark.parametrize("shape", SHAPES)
def test_default_direction_is_nesterov(shape):
    plain = _steps(shape, momentum=0.0)
    _assert_ratios(_steps(shape, momentum=MU), plain, NESTEROV)


@pytest.mark.parametrize("shape", SHAPES)
def test_default_momentum_is_085(shape):
    """Without a ``momentum`` argument the steps are Nesterov's with ``mu = 0.85`` (the
    defaults' shorter memory; 0.9 would give 1.9, 2.71, ...)."""
    plain = _steps(shape, momentum=0.0)
    _assert_ratios(_steps(shape), plain, DEFAULT_NESTEROV)


@pytest.mark.parametrize("shape", SHAPES)
def test_heavy_ball_on_request(shape):
    plain = _steps(shape, momentum=0.0)
    _assert_ratios(_steps(shape, momentum=MU, nesterov=False), plain, HEAVY_BALL)


@pytest.mark.parametrize("shape", SHAPES)
def test_paper_scheme_keeps_the_papers_heavy_ball(shape):
    """``PAPER_SCHEME`` (the benchmarks' "paper scheme" rows) steps with the paper's heavy-ball
    momentum 0.9 (its own ``momentum``, not the caller's), not the defaults' Nesterov 0.85."""
    from manifold_spectral.experiments.nn_training import PAPER_SCHEME

    options = {k: v for k, v in PAPER_SCHEME.items() if k not in ("state_dtype", "clip_rms")}
    plain = _steps(shape, **{**options, "momentum": 0.0})
    _assert_ratios(_steps(shape, **options), plain, HEAVY_BALL)


def test_paper_scheme_takes_the_plain_neumann_map():
    """The "paper scheme" rows run the paper's Cayley map, not the defaults' squaring."""
    from manifold_spectral.experiments.nn_training import PAPER_SCHEME

    layer = torch.nn.Linear(5, 4, bias=False)
    opt = SpectralKron(layer.parameters(), lr=1e-2, **PAPER_SCHEME)
    layer(torch.randn(3, 5)).square().sum().backward()
    opt.step()
    (pre,) = [pre for _, pre in opt._preconditioners.values() if pre.kind == "kronecker"]
    assert pre.manifold.neumann_squarings == 0
