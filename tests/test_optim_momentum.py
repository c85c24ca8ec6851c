"""``SpectralKron``'s momentum direction: Nesterov's, bias-corrected, by default.

For a constant gradient ``g`` the curvature (and the eigenvalue correction's second moment)
sees only ``g``, so a run with momentum ``mu`` and one without share their preconditioner
and differ only in the direction fed to it: after ``t`` steps the buffer is
``(1 - mu^t) / (1 - mu) g``, the heavy ball's direction that buffer, Nesterov's
``g + mu buf = (1 - mu^(t+1)) / (1 - mu) g``, and the bias-corrected direction of either
``g / (1 - mu)``. The steps of the two runs are in that ratio, computed here by hand, not by
the optimizer's code.
"""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.optim import SpectralKron

MU = 0.9
SHAPES = [(5, 3), (7,)]  # Kronecker factors (with the eigenvalue correction), diagonal scheme
NESTEROV = [(1 - MU ** (t + 1)) / (1 - MU) for t in range(1, 5)]  # 1.9, 2.71, 3.439, 4.0951
HEAVY_BALL = [(1 - MU**t) / (1 - MU) for t in range(1, 5)]  # 1, 1.9, 2.71, 3.439
DEBIASED = [1 / (1 - MU)] * 4  # 10 at every step


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
def test_default_steps_have_the_steady_size_from_the_first(shape):
    plain = _steps(shape, momentum=0.0)
    _assert_ratios(_steps(shape, momentum=MU), plain, DEBIASED)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "nesterov, debias, ratios",
    [
        (True, False, NESTEROV),
        (False, False, HEAVY_BALL),
        (True, True, DEBIASED),
        (False, True, DEBIASED),
    ],
)
def test_momentum_directions(shape, nesterov, debias, ratios):
    plain = _steps(shape, momentum=0.0)
    steps = _steps(shape, momentum=MU, nesterov=nesterov, debias_momentum=debias)
    _assert_ratios(steps, plain, ratios)


@pytest.mark.parametrize("shape", SHAPES)
def test_default_direction_is_nesterov(shape):
    plain = _steps(shape, momentum=0.0)
    _assert_ratios(_steps(shape, momentum=MU, debias_momentum=False), plain, NESTEROV)


def test_state_saved_without_the_option_resumes_without_debias():
    """A state dict of a version before ``debias_momentum`` resumes that version's steps."""
    p = torch.nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.ones(3, 2)
    opt = SpectralKron([p], lr=1e-3)
    opt.step()
    sd = opt.state_dict()
    del sd["param_groups"][0]["debias_momentum"]
    fresh = SpectralKron([p], lr=1e-3)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["debias_momentum"] is False


def test_debias_momentum_must_be_a_bool():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises((TypeError, ValueError), match="debias_momentum"):
        SpectralKron([p], debias_momentum="yes")
