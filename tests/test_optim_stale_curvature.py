"""A gradient spike under a curvature that has not seen it (an outside tester's finding,
session 32). With ``update_every > 1`` and the eigenvalue correction off (``root=1``, the
paper's scheme), the Kronecker step between two curvature steps preconditioned the
direction with a curvature that had not taken in the current gradient (nor, without
``accumulate_gop``, any gradient since its last step, which the momentum carries on): a
loss multiplied by ``s`` at such a step moved the weights about ``s`` times a normal step
(``s = 1e4``: 2.8e4 learning rates; ``1e15``: weights at 1e12, the loss at 1e24 for good).
The eigenvalues are now floored by the direction's own GOP (``eigen_floor``): the move is
bounded whatever ``s``, as with ``update_every=1``."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.experiments.nn_training import PAPER_SCHEME
from manifold_spectral.optim import SpectralKron

g = torch.Generator().manual_seed(1)
X, Y = torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)

# the paper's scheme without its clip_rms (which bounds every step by itself)
PAPER = {k: v for k, v in PAPER_SCHEME.items() if k not in ("state_dtype", "clip_rms")}
CASES = {
    "uncorrected-period3": dict(lr=1e-3, eigenvalue_correction=False, update_every=3),
    "root1-period3": dict(lr=1e-4, root=1.0, update_every=3),
    "paper-period2": dict(PAPER, lr=1e-3, update_every=2),
}


def _moves(opts: dict, spike: float, at: int = 6, after: int = 4) -> tuple[float, float]:
    """The largest move of any weight (in learning rates) over the spike's step (``at``: not
    a curvature step at periods 2 and 3) and the ``after`` steps that follow, and the loss
    at the end."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = SpectralKron(m.parameters(), **opts)
    largest = 0.0
    for k in range(1, at + after + 1):
        before = [p.detach().clone() for p in m.parameters()]
        opt.zero_grad()
        (((m(X) - Y) ** 2).mean() * (spike if k == at else 1.0)).backward()
        opt.step()
        if k >= at:
            pairs = zip(m.parameters(), before, strict=True)
            move = max(float((p.detach() - b).abs().max()) for p, b in pairs)
            largest = max(largest, move / opt.param_groups[0]["lr"])
    with torch.no_grad():
        return largest, float(((m(X) - Y) ** 2).mean())


@pytest.mark.parametrize("name", list(CASES))
def test_a_spike_between_curvature_steps_moves_the_weights_a_bounded_distance(name) -> None:
    opts = CASES[name]
    calm, calm_loss = _moves(opts, 1.0)
    for spike in (1e4, 1e8, 1e15):
        moved, loss = _moves(opts, spike)
        # bounded: not growing with the spike (before: about spike x calm)
        assert moved < 50.0 * max(calm, 1.0), (spike, moved, calm)
        assert loss < 10.0 * calm_loss + 1.0, (spike, loss, calm_loss)
    assert _moves(opts, 1e8)[0] < 2.0 * _moves(opts, 1e4)[0] + 50.0


@pytest.mark.parametrize("batch", [None, 3])
def test_eigen_floor_bounds_the_whitened_gradient(batch) -> None:
    """Under the floor, ``alpha d_Li d_Rj >= beta2 Z_ij^2 / kappa_L`` (``d_Li >= beta2
    Z_ij^2 / (d_Rj alpha kappa_L)``, ``d_Rj`` not lowered), so every whitened entry
    ``|Z_ij| / (alpha d_Li d_Rj)^(1/2)`` is at most ``sqrt(kappa / beta2)`` (``kappa_L = b``,
    ``kappa_R = a``; both sides' bounds hold) however large ``Z``; a ``Z`` whose floor does not
    bind leaves the point's bits as they are."""
    import manifold_spectral as ms

    a, b, beta2 = 4, 7, 0.05
    kw = {} if batch is None else {"batch": batch}
    man = ms.KroneckerSpectralSPD(a, b, dtype=torch.float64, **kw)
    gen = torch.Generator().manual_seed(3)
    x = man.random(generator=gen)
    shape = (a, b) if batch is None else (batch, a, b)
    for scale in (1e3, 1e9):
        Z = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
        y = man.eigen_floor(x, Z, 1e-12, beta2)
        S = y.alpha[..., None, None] * y.left.d[..., :, None] * y.right.d[..., None, :]
        whitened = (Z.abs() / S.sqrt()).max()
        assert whitened <= (min(a, b) / beta2) ** 0.5 * (1 + 1e-12), (scale, float(whitened))
        # the module docstring's W_l diagonals, written out: n_l >= beta2 diag(W_l) / (alpha
        # kappa_l) with W_L = Z D_R^-1 Z^T + lambda tr(S_R^-1) I (kappa_L = b), W_R alike
        lam, al = 1e-12, x.alpha[..., None]
        hL = (Z**2 / x.right.d[..., None, :]).sum(-1) + lam * (1 / x.right.d).sum(-1)[..., None]
        hR = (Z**2 / x.left.d[..., :, None]).sum(-2) + lam * (1 / x.left.d).sum(-1)[..., None]
        torch.testing.assert_close(y.left.d, torch.maximum(x.left.d, beta2 * hL / (al * b)))
        torch.testing.assert_close(y.right.d, torch.maximum(x.right.d, beta2 * hR / (al * a)))
    tiny = 1e-30 * torch.randn(shape, generator=gen, dtype=torch.float64)
    same = man.eigen_floor(x, tiny, 0.0, beta2)
    for p, q in ((same.left, x.left), (same.right, x.right)):
        assert torch.equal(p.d, q.d) and p.B is q.B
    d = torch.rand(9, generator=gen, dtype=torch.float64)
    g = 1e6 * torch.randn(9, generator=gen, dtype=torch.float64)
    floored = ms.DiagonalSPD.eigen_floor(d, g, 0.0, beta2)
    assert ((g.abs() / floored.sqrt()).max() <= beta2**-0.5 * (1 + 1e-12)).item()
