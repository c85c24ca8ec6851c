"""SpectralKron rules that a mutation audit found unguarded: each test fails under the
mutation named in its docstring and checks a value computed without the code under test."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from manifold_spectral.manifolds import KroneckerSpectralSPD
from manifold_spectral.optim import SpectralKron, transforms
from manifold_spectral.rgd import AUTO_REORTHOGONALIZE_EVERY

torch.set_num_threads(1)


def test_clip_by_rms_never_enlarges_a_small_update():
    """``u min(1, c / rms(u))``: an update below the bound is returned as it is, one above it
    is scaled to rms ``c`` exactly (a clip that could scale up by 2 passed every other test)."""
    u = torch.tensor([[0.3, -0.4], [0.0, 0.0]], dtype=torch.float64)  # rms 0.25
    assert torch.equal(transforms.clip_by_rms(u, 1.0), u)
    assert torch.equal(transforms.clip_by_rms(u, 0.25), u)
    torch.testing.assert_close(transforms.clip_by_rms(u, 0.125), u / 2, rtol=1e-15, atol=0)


def test_gamma_reaches_the_curvature_step():
    """The group's ``gamma`` is the entropy weight of the curvature step: a diagonal-scheme
    entry moves from ``d = 1`` (no warm start) to ``(1 - gamma beta2) d + beta2 (g^2 +
    damping)`` (the truncated map, paper Fig. 5). An optimizer that always used
    ``gamma = 1`` passed every other test."""
    b = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    g = torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)
    gamma, beta2, lam = 0.25, 0.1, 1e-3
    opt = SpectralKron([b], lr=0.1, beta2=beta2, gamma=gamma, damping=lam, warm_start=False)
    b.grad = g.clone()
    opt.step()
    want = (1 - gamma * beta2) * 1.0 + beta2 * (g * g + lam)
    torch.testing.assert_close(opt.state[b]["pc_d"], want, rtol=1e-14, atol=0)


@pytest.mark.parametrize(("bound", "kind"), [(6, "kronecker"), (5, "diagonal")])
def test_max_factor_dim_is_inclusive(bound, kind):
    """``max_factor_dim``: a matrix whose larger side is *at most* the bound gets Kronecker
    factors; one side above it, the diagonal scheme (``<`` for ``<=`` passed every other
    test)."""
    W = nn.Parameter(torch.zeros(4, 6, dtype=torch.float64))
    opt = SpectralKron([W], max_factor_dim=bound, warm_start=False)
    W.grad = torch.ones(4, 6, dtype=torch.float64)
    opt.step()
    assert ("pc_B_L" in opt.state[W]) == (kind == "kronecker")
    assert ("pc_d" in opt.state[W]) == (kind == "diagonal")


@pytest.mark.parametrize("every", [2, 3])
def test_reorthogonalisation_follows_the_curvature_update_count(monkeypatch, every):
    """With ``update_every = k`` the Newton-Schulz step runs on every 10th *curvature update*
    (Neumann map, ``AUTO_REORTHOGONALIZE_EVERY``), i.e. at optimizer step
    ``k (10 - 1) + 1``, not at step 10 (a count equal to the optimizer step, which for k = 2
    never hits a multiple of 10, passed every other test)."""
    period = AUTO_REORTHOGONALIZE_EVERY["neumann"]
    calls: list[int] = []
    step = [0]
    original = KroneckerSpectralSPD.reorthogonalize

    def spy(self, x, steps=1):
        calls.append(step[0])
        return original(self, x, steps)

    monkeypatch.setattr(KroneckerSpectralSPD, "reorthogonalize", spy)
    torch.manual_seed(0)
    W = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    opt = SpectralKron([W], lr=1e-3, update_every=every, cayley="neumann")
    for t in range(1, 2 * every * period + 1):
        step[0] = t
        W.grad = torch.randn(3, 4, dtype=torch.float64)
        opt.step()
    assert calls == [every * (period - 1) + 1, every * (2 * period - 1) + 1]


@pytest.mark.parametrize(("shape", "together"), [((256, 256), True), ((257, 256), False)])
def test_batch_bound_is_inclusive(shape, together):
    """``batched`` buckets Kronecker parameters of cost ``a^3 + b^3 + ab(a + b)`` *at most*
    ``BATCH_MAX_COST = 4 * 256^3``: two 256 x 256 layers (cost exactly ``4 * 256^3``) share
    a bucket, two 257 x 256 layers do not (``<`` for ``<=`` passed every other test)."""
    ps = [nn.Parameter(torch.zeros(shape)) for _ in range(2)]
    for p in ps:
        p.grad = torch.ones(shape)  # nonzero: an all-zero first gradient awaits its warm start
    opt = SpectralKron(ps)
    buckets = opt._buckets(opt.param_groups[0])
    assert sorted(len(b) for b in buckets) == ([2] if together else [1, 1])
