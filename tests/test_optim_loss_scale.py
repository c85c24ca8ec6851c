"""Loss scale: SpectralKron's defaults move the trajectory about as little as AdamW's when the
loss is multiplied by a constant, and the diagonal scheme's curvature step (in closed form)
stays finite where an entry's ``d`` sits at the damping and its gradient then is large, or
where ``d^2`` overflows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)


class Net(nn.Module):
    """A matrix with batch 4 < fan-in 64 (rank-deficient gradients) and an embedding table
    (diagonal scheme, rows without gradient), in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 16)
        self.emb = nn.Embedding(50, 16)

    def forward(self, x, tok):
        return self.lin(torch.tanh(x)) + self.emb(tok)


def displacements(make_opt, scale: float, steps: int = 10) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = Net()
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = make_opt(net)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(4, 64, generator=g), torch.randn(4, 16, generator=g)
        tok = torch.randint(0, 50, (4,), generator=g)
        opt.zero_grad()
        (((net(x, tok) - y) ** 2).mean() * scale).backward()
        opt.step()
    return {n: p.detach() - start[n] for n, p in net.named_parameters() if "bias" not in n}


def relative_change(make_opt, scale: float) -> dict[str, float]:
    ref, scaled = displacements(make_opt, 1.0), displacements(make_opt, scale)
    return {n: float((scaled[n] - ref[n]).norm() / ref[n].norm()) for n in ref}


@pytest.mark.parametrize("scale", [1e-4, 1e4, 1e11, 1e15])
def test_loss_scale_moves_the_trajectory_about_as_little_as_adamw(scale):
    """Gradient entries here are ~1e-2 .. 1e-1: at ``scale=1e-4`` they are ~1e-6 .. 1e-5,
    whose squares a damping of ``1e-12`` (the previous default) dominated; at ``1e11`` and
    ``1e15`` their squares fit float32 while the warm start's intermediate ``c^2`` did not
    (it fell back to the identity). The change must stay within twice AdamW's (and 2 %), for
    the Kronecker matrix and the embedding."""
    # lr 4.5e-3 at the default momentum 0.85: the step size of lr 3e-3 at 0.9, for which the
    # bound was set (``lr / (1 - momentum)``)
    sk = relative_change(lambda net: SpectralKron(SpectralKron.param_groups(net), lr=4.5e-3), scale)
    adamw = relative_change(lambda net: torch.optim.AdamW(net.parameters(), lr=3e-3), scale)
    for name, change in sk.items():
        assert change <= max(2 * adamw[name], 0.02), (name, change, adamw[name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_diagonal_entry_at_the_damping_takes_a_large_gradient(dtype):
    """Embedding rows without gradient keep ``d`` at the damping; when such a row then gets a
    gradient of 1e4. The layered step's Euclidean gradient ``(H - d) / d^2`` overflowed the
    dtype there, the curvature step was rejected, ``d`` stayed at the damping and the step was
    ``g / sqrt(damping)`` (~1e12); the closed form ``d + beta2 (H - d)`` (paper App. A.1) is
    taken (no rejection) and the update stays of the order of ``lr``."""
    p = nn.Parameter(torch.zeros(8, 4))
    opt = SpectralKron([p], lr=1e-3, diagonal=True, state_dtype=dtype)
    G = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    G[:4] = 0.0  # rows without gradient at the first step
    p.grad = G.clone()
    opt.step()
    p.grad = 1e4 * torch.ones(8, 4)
    before = p.detach().clone()
    opt.step()
    assert opt.curvature_rejections == 0 and opt.skipped_steps == 0
    assert float((p.detach() - before).abs().max()) < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_diagonal_curvature_follows_a_gradient_whose_d_squared_overflows(dtype):
    """``d = g^2 = 1e20``: ``d^2`` overflows float32 and bfloat16 (``d`` does not). The layered
    step's ``(H - d) / d^2`` was 0 there, so ``d`` silently stopped following the gradient; the
    closed form has no ``d^2``."""
    p = nn.Parameter(torch.zeros(8))
    opt = SpectralKron([p], lr=1e-3, state_dtype=dtype)
    p.grad = torch.full((8,), 1e10)
    opt.step()
    d = opt.state[p]["pc_d"].float().clone()
    p.grad = torch.full((8,), 1e12)
    opt.step()
    assert opt.curvature_rejections == 0
    # truncated map: d + beta2 (g^2 + damping - d), about 1e23
    assert bool((opt.state[p]["pc_d"].float() > 100 * d).all())


@pytest.mark.parametrize("scale", [1e12, 1e15])
def test_entry_at_the_damping_takes_a_gradient_whose_ratio_to_d_overflows(scale):
    """A bias entry without gradient for 300 steps sits at the damping (1e-16); then a
    gradient of 1e12 or 1e15 arrives: ``g^2 / d`` (1e40, 1e46) overflows float32 while the
    new ``d = (1 - beta2) d + beta2 g^2`` (1e23, 1e29) does not. The step divided first and
    was rejected (``d`` kept at the damping); it must be taken, with the RMSprop value."""
    b = nn.Parameter(torch.zeros(6))
    opt = SpectralKron([b], lr=1e-3)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    for _ in range(300):
        b.grad = mask.clone()
        opt.step()
    d = opt.state[b]["pc_d"].double()
    assert float(d[2]) < 1e-15  # at the damping
    b.grad = torch.full((6,), scale)
    opt.step()
    assert opt.curvature_rejections == 0 and opt.curvature_fallbacks == 0
    beta2 = 0.1  # the default rate at period 1 (SpectralKron's docstring)
    want = (1.0 - beta2) * d + beta2 * (scale**2 + 1e-16)
    got = opt.state[b]["pc_d"].double()
    assert float(((got - want) / want).abs().max()) < 1e-5
