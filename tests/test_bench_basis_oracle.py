"""``benchmarks/bench_basis_oracle.py``: the oracle basis is the eigenbasis of the EMA before
the current gradient, it changes the direction alone (not the curvature state), the own
target's formula, and a tiny run."""

from __future__ import annotations

import pytest
import torch
from _benchmarks import import_benchmark


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("sklearn")
    yield from import_benchmark("bench_basis_oracle")


def _off(B: torch.Tensor, L: torch.Tensor) -> float:
    M = B.T @ L @ B
    return float((M - torch.diag(torch.diag(M))).norm() / M.norm())


def _grads(steps: int, a: int = 6, b: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(a, b, generator=g, dtype=torch.float64) for _ in range(steps)]


def _drive(opt: torch.optim.Optimizer, p: torch.Tensor, grads: list[torch.Tensor], each=None):
    for t, G in enumerate(grads, 1):
        p.grad = G.clone()
        opt.step()
        if each is not None:
            each(t)


def test_basis_is_the_eigenbasis_of_the_ema_before_this_gradient(oracle):
    """At step t the direction's basis diagonalises EMA(G G^T) of steps 1 .. t-1 (SOAP's Q),
    computed here from the gradients, and not the EMA that includes step t."""
    grads, beta = _grads(5), 0.9
    p = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
    opt = oracle.OracleKron([p], lr=1e-2, target="soap", beta=beta)
    ema = [(1 - beta) * grads[0] @ grads[0].T]
    for G in grads[1:]:
        ema.append(beta * ema[-1] + (1 - beta) * G @ G.T)
    seen = []

    def check(t: int) -> None:
        if t == 1:
            assert p not in opt.bases  # no gradient before the first
            return
        B_L = opt.bases[p][0]
        seen.append((_off(B_L, ema[t - 2]), _off(B_L, ema[t - 1])))

    _drive(opt, p, grads, check)
    assert len(seen) == 4
    for before, with_current in seen:
        assert before < 1e-12 and with_current > 1e-3


def test_oracle_changes_the_direction_not_the_curvature_state(oracle):
    """The same gradients: the learned factors (the curvature step's GOP stays in the learned
    basis) equal plain SpectralKron's bit for bit, while the parameters move differently."""
    grads = _grads(5)
    ps, opts = [], []
    for make in (
        lambda q: oracle.SpectralKron([q], lr=1e-2, batched=False),
        lambda q: oracle.OracleKron([q], lr=1e-2, target="own", beta=0.9),
    ):
        p = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
        opt = make(p)
        _drive(opt, p, grads)
        ps.append(p)
        opts.append(opt)
    s0, s1 = (o.state[p] for o, p in zip(opts, ps, strict=True))
    for key in ("pc_alpha", "pc_B_L", "pc_d_L", "pc_B_R", "pc_d_R"):
        assert torch.equal(s0[key], s1[key]), key
    assert (ps[0] - ps[1]).abs().max() > 1e-6


def test_own_target_is_whitened_by_the_other_factor(oracle):
    """``targets``' own terms are ``G S_R^-1 G^T`` and ``G^T S_L^-1 G`` of the factors
    ``S = B Diag(d) B^T`` (inverses formed here by ``torch.linalg.inv``)."""
    tracking = pytest.importorskip("bench_basis_tracking")
    g = torch.Generator().manual_seed(1)
    G = torch.randn(5, 3, generator=g, dtype=torch.float64)
    B_L = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0]
    B_R = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    d_L, d_R = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]), torch.tensor([0.25, 1.0, 5.0])
    st = {"pc_B_L": B_L, "pc_d_L": d_L, "pc_B_R": B_R, "pc_d_R": d_R}
    t = tracking.targets(G, st)
    S_L = B_L @ torch.diag(d_L.double()) @ B_L.T
    S_R = B_R @ torch.diag(d_R.double()) @ B_R.T
    torch.testing.assert_close(t["TL"], G @ torch.linalg.inv(S_R) @ G.T)
    torch.testing.assert_close(t["TR"], G.T @ torch.linalg.inv(S_L) @ G)
    torch.testing.assert_close(t["L"], G @ G.T)
    assert set(tracking.targets(G, None)) == {"L", "R"}


def test_bad_target_is_rejected(oracle):
    with pytest.raises(ValueError, match="target"):
        oracle.OracleKron([torch.zeros(2, 2, requires_grad=True)], target="exact", beta=0.9)


def test_tiny_run_prints_every_row(oracle, monkeypatch):
    monkeypatch.setattr(oracle, "_quarter_decades", lambda lo, n: [lo])
    rows = {k: (n, b, [lrs[0]], f) for k, (n, b, lrs, f) in oracle.ROWS.items()}
    monkeypatch.setattr(oracle, "ROWS", rows)
    from manifold_spectral.experiments.nn_training import optimizers

    before = tuple(optimizers.OPTIMIZERS)
    out = oracle.format_table(oracle.measure(seeds=2, steps=3))
    for label in oracle.ROWS:
        assert f"| {label} |" in out
    # the registry is the CLI's method list (tests/test_real_tasks.py): left as it was
    assert tuple(optimizers.OPTIMIZERS) == before
