"""``accumulate_gop``: with a curvature period above 1, the Kronecker curvature step learns
from the GOP of every gradient since the previous one (``KroneckerGOPSides``, the sums of
``gop_side_sums`` kept in the optimizer state), not from the current gradient alone."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import manifold_spectral as ms
from manifold_spectral.manifolds import KroneckerSpectralPoint, SpectralPoint
from manifold_spectral.manifolds.kronecker import KroneckerGOP
from manifold_spectral.optim import SpectralKron

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel(u: torch.Tensor, v: torch.Tensor) -> float:
    return float((u - v).norm() / v.norm())


def _by_hand_point(k: int | None = None):
    """The point and gradients of ``test_gop_side_sums_by_hand`` (stacked ``k`` times)."""
    x = KroneckerSpectralPoint(
        torch.tensor(1.5, dtype=DT),
        SpectralPoint(torch.eye(2, dtype=DT), torch.tensor([2.0, 0.5], dtype=DT)),
        SpectralPoint(torch.eye(3, dtype=DT), torch.tensor([4.0, 0.5, 0.5], dtype=DT)),
    )
    Z = torch.tensor([[[1, 2, 0], [0, 1, -1]], [[0, 0, 2], [1, 0, 0]]], dtype=DT)
    if k is None:
        return ms.KroneckerSpectralSPD(2, 3, dtype=DT), x, Z
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT, batch=k)
    sides = [
        SpectralPoint(p.B.expand(k, *p.B.shape), p.d.expand(k, *p.d.shape))
        for p in (x.left, x.right)
    ]
    xs = KroneckerSpectralPoint(x.alpha.expand(k), *sides)
    return K, xs, Z.expand(k, *Z.shape)


# The sums of test_gop_side_sums_by_hand, and kept means M_L, M_R (M_R = 0).
W_L_HAND = torch.tensor([[16.25, 4.0], [4.0, 4.25]], dtype=DT)
W_R_HAND = torch.tensor([[2.5, 1.0, 0.0], [1.0, 4.0, -2.0], [0.0, -2.0, 4.0]], dtype=DT)
M_L_HAND = torch.tensor([[4.0, 0.0], [0.0, 8.0]], dtype=DT)


def test_gop_side_sums_by_hand():
    # Identity bases, d_L = (2, 1/2), d_R = (4, 1/2, 1/2); two gradients in the eigenbasis.
    # W_L = sum_i Z_i D_R^-1 Z_i^T, D_R^-1 = (1/4, 2, 2):
    #   Z_1 rows (1, 2, 0), (0, 1, -1): [[1/4 + 8, 4], [4, 2 + 2]];  Z_2 rows (0, 0, 2),
    #   (1, 0, 0): [[8, 0], [0, 1/4]]  ->  [[16.25, 4], [4, 4.25]].
    # W_R = sum_i Z_i^T D_L^-1 Z_i, D_L^-1 = (1/2, 2): the rows' outer products weighted
    #   1/2 and 2: Z_1 [[.5, 1, 0], [1, 2 + 2, -2], [0, -2, 2]], Z_2 [[2, 0, 0], [0, 0, 0],
    #   [0, 0, 2]].
    K, x, Z = _by_hand_point()
    W_L, W_R = K.gop_side_sums(x, Z)
    assert torch.equal(W_L, W_L_HAND)
    assert torch.equal(W_R, W_R_HAND)
    # One gradient at a time (m = 1, the optimizer's case): the same sums added up.
    ones = [K.gop_side_sums(x, Z[i : i + 1]) for i in range(2)]
    assert torch.equal(ones[0][0] + ones[1][0], W_L_HAND)
    assert torch.equal(ones[0][1] + ones[1][1], W_R_HAND)


def test_gop_side_sums_of_one_gradient_as_a_matrix_by_hand():
    """One gradient as a matrix ((a, b), batched (k, a, b): the optimizer's rotated
    gradient, without an ``m`` axis) gives the by-hand sums, with and without a mean."""
    K, x, Z = _by_hand_point()
    ones = [K.gop_side_sums(x, Z[i]) for i in range(2)]
    assert torch.equal(ones[0][0] + ones[1][0], W_L_HAND)
    assert torch.equal(ones[0][1] + ones[1][1], W_R_HAND)
    M_R = torch.zeros(3, 3, dtype=DT)
    # Z_2 alone (by hand above): W_L [[8, 0], [0, 1/4]], W_R [[2, 0, 0], 0, [0, 0, 2]]
    W_L, W_R = K.gop_side_sums(x, Z[1], mean=(M_L_HAND, M_R, 2.0))
    assert torch.equal(W_L, torch.tensor([[6.0, 0.0], [0.0, 4.125]], dtype=DT))
    assert torch.equal(W_R, torch.diag(torch.tensor([1.0, 0.0, 1.0], dtype=DT)))
    K, x, Z = _by_hand_point(2)
    ones = [K.gop_side_sums(x, Z[:, i]) for i in range(2)]
    for i in range(2):
        assert torch.equal(ones[0][0][i] + ones[1][0][i], W_L_HAND)
        assert torch.equal(ones[0][1][i] + ones[1][1][i], W_R_HAND)
    for bad in (Z[:, 0, :, :2], Z[0, 0, 0]):
        with pytest.raises(ValueError, match="Ht.Z"):
            K.gop_side_sums(x, bad)


def test_gop_side_sums_running_means_by_hand():
    """``mean = (M_L, M_R, n)``: ``(1 - 1/n) M + W / n`` (all exact here), for a count as a
    number (unbatched and shared by a batch) and one count per batch element."""
    K, x, Z = _by_hand_point()
    M_R = torch.zeros(3, 3, dtype=DT)
    W_L, W_R = K.gop_side_sums(x, Z, mean=(M_L_HAND, M_R, 4.0))
    assert torch.equal(W_L, torch.tensor([[7.0625, 1.0], [1.0, 7.0625]], dtype=DT))
    assert torch.equal(W_R, W_R_HAND / 4)
    K, x, Z = _by_hand_point(2)
    M = (M_L_HAND.expand(2, 2, 2).clone(), torch.zeros(2, 3, 3, dtype=DT))
    for n, want in ((4.0, (4.0, 4.0)), (torch.tensor([4.0, 2.0], dtype=DT), (4.0, 2.0))):
        W_L, W_R = K.gop_side_sums(x, Z, mean=(*M, n))
        for i, c in enumerate(want):
            assert torch.equal(W_L[i], (1 - 1 / c) * M_L_HAND + W_L_HAND / c), (n, i)
            assert torch.equal(W_R[i], W_R_HAND / c), (n, i)


@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("shape", [(4, 3), (3, 3)])  # square: both factors in one pass
def test_the_step_on_side_means_is_the_step_on_the_gop(shape, batch):
    """The closed-form and the layered precision step on the means of the sums of three
    gradients (added one by one, as the optimizer does) equal those on their GOP."""
    a, b = shape
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT, batch=batch)
    x = K.random(gen(1), log_scale=0.5)
    bs = () if batch is None else (batch,)
    Z = torch.randn(*bs, 3, a, b, generator=gen(2), dtype=DT)
    sums = [K.gop_side_sums(x, Z[..., i : i + 1, :, :]) for i in range(3)]
    W_L = sum(s[0] for s in sums) / 3
    W_R = sum(s[1] for s in sums) / 3
    sides = K.gop_sides(W_L, W_R, damping=0.02)
    gop = KroneckerGOP(Z, torch.tensor(0.02, dtype=DT))
    got = K.closed_form_step(x, sides, 0.2, 1.0, exponential="truncated")
    want = K.closed_form_step(x, gop, 0.2, 1.0, exponential="truncated")
    for u, v in zip(got.leaves(), want.leaves(), strict=True):
        assert rel(u, v) < 1e-12
    g1, g2 = (K.precision_egrad_eigenbasis(x, H, 1.0) for H in (sides, gop))
    for u, v in zip(g1.leaves(), g2.leaves(), strict=True):
        assert rel(u, v) < 1e-12


def test_gop_sides_checks_the_shapes():
    K = ms.KroneckerSpectralSPD(3, 2, dtype=DT)
    with pytest.raises(ValueError, match="W_R"):
        K.gop_sides(torch.eye(3, dtype=DT), torch.eye(3, dtype=DT))


def _run(grads, **options):
    p = nn.Parameter(torch.zeros(5, 3, dtype=DT))
    opt = SpectralKron([p], lr=1e-2, update_every=2, **options)
    states = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        states.append({k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()})
    return opt, p, states


@pytest.mark.parametrize("correction", [True, False])
def test_the_curvature_step_takes_every_gradient_of_its_period(correction):
    """update_every=2: step 1 updates the curvature, step 2 only keeps its gradient's sums,
    step 3 updates it from the GOP of the gradients of steps 2 and 3 (at the point of step 1);
    without the option, from the gradient of step 3 alone."""
    grads = [torch.randn(5, 3, generator=gen(10 + i), dtype=DT) for i in range(3)]
    opt, p, states = _run(grads, eigenvalue_correction=correction)
    pre = opt._preconditioner(opt.param_groups[0], p)
    pc = {k[3:]: v for k, v in states[1].items() if k.startswith("pc_")}
    B_L, B_R = pc["B_L"], pc["B_R"]
    Z = torch.stack([B_L.T @ g @ B_R for g in grads[1:]])  # (m = 2, a, b)
    want = pre.update(pc, grads[2], count=2, rotated=Z)
    for key, v in want.items():
        assert rel(states[2]["pc_" + key], v) < 1e-12, key
    assert states[1]["gop_count"] == 1 and states[2]["gop_count"] == 0
    assert float(states[2]["gop_W_L"].abs().max()) == 0.0  # reset by the curvature step
    # The paper's scheme: the gradient of step 3 alone.
    _, _, off = _run(grads, eigenvalue_correction=correction, accumulate_gop=False)
    alone = pre.update(pc, grads[2], count=2, rotated=Z[1])
    for key, v in alone.items():
        assert rel(off[2]["pc_" + key], v) < 1e-12, key
    assert rel(states[2]["pc_B_L"], off[2]["pc_B_L"]) > 1e-6  # the option changes the step


def test_padded_and_stacked_buckets_keep_each_members_sums():
    """Batched buckets (two same-shaped matrices, one padded into their shape) give each
    parameter the result of its own unbatched update, sums included."""
    shapes = [(6, 4), (5, 3), (5, 3)]

    def run(batched):
        ps = [nn.Parameter(torch.zeros(*s, dtype=DT)) for s in shapes]
        opt = SpectralKron(ps, lr=1e-2, update_every=3, batched=batched)
        for t in range(5):
            for i, p in enumerate(ps):
                p.grad = torch.randn(*p.shape, generator=gen(100 * t + i), dtype=DT)
            opt.step()
        return [opt.state[p] for p in ps]

    buckets = run(True)
    single = run(False)
    for st_b, st_s in zip(buckets, single, strict=True):
        assert st_b["gop_count"] == st_s["gop_count"] == 1
        for key in ("gop_W_L", "gop_W_R", "pc_B_L", "pc_d_R", "pc_alpha"):
            assert st_b[key].shape == st_s[key].shape
            assert rel(st_b[key], st_s[key]) < 1e-12, key


def test_overflowing_sums_skip_the_step():
    """Squares of a finite gradient beyond the state dtype: the step is skipped and the
    kept sums stay finite (no eigenvalue correction: the sums are the only squares)."""
    p = nn.Parameter(torch.zeros(4, 3))
    opt = SpectralKron([p], lr=1e-2, update_every=2, eigenvalue_correction=False)
    for scale in (1.0, 1.0, 1.0):  # curvature, keep, curvature
        p.grad = scale * torch.randn(4, 3, generator=gen(5))
        opt.step()
    p.grad = 1e19 * torch.ones(4, 3)  # squares below float32 max; W ~ 12e38 / d beyond it
    before = {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert any("step skipped" in str(w.message) for w in caught)
    assert opt.skipped_steps == 1
    for k, v in before.items():
        assert torch.equal(opt.state[p][k], v), k


def test_kept_sums_that_overflow_the_curvature_step_give_way_to_the_gradient():
    """A finite spike on a keeping step (its sums fit the float32 state, but not the
    curvature step: ``diag(W) / alpha`` beyond float32 at a small ``alpha``) must not stop
    training: a skip keeps the means, so every later step would fail on them. The next
    curvature step takes its own gradient's GOP, exactly as from a state without kept
    sums, and is counted; every later step succeeds."""
    p = nn.Parameter(torch.zeros(4, 3))
    opt = SpectralKron([p], lr=1e-2, update_every=2)
    g = gen(5)
    p.grad = 1e-2 * torch.randn(4, 3, generator=g)
    opt.step()  # curvature (warm start at the gradient's scale)
    p.grad = 1e18 * torch.ones(4, 3)
    opt.step()  # keeping: finite sums, taken
    assert opt.skipped_steps == 0 and torch.isfinite(opt.state[p]["gop_W_L"]).all()
    twin = nn.Parameter(p.detach().clone())
    ref = SpectralKron([twin], lr=1e-2, update_every=2)
    sd = copy.deepcopy(opt.state_dict())
    for key in ("gop_W_L", "gop_W_R", "gop_count"):
        del sd["state"][0][key]
    ref.load_state_dict(sd)
    grad = 1e-2 * torch.randn(4, 3, generator=g)
    p.grad, twin.grad = grad.clone(), grad.clone()
    opt.step()
    ref.step()
    assert opt.skipped_steps == 0 and opt.state[p]["gop_fallbacks"] == opt.gop_fallbacks == 1
    assert "gop_fallbacks" not in ref.state[twin]
    for key in ("pc_B_L", "pc_B_R", "pc_d_L", "pc_d_R", "pc_alpha"):
        assert torch.equal(opt.state[p][key], ref.state[twin][key]), key
    assert torch.equal(p, twin)
    for _ in range(6):
        p.grad = 1e-2 * torch.randn(4, 3, generator=g)
        opt.step()
    assert opt.skipped_steps == 0 and opt.state[p]["step"] == 9
    assert all(torch.isfinite(v).all() for v in opt.state[p].values() if torch.is_tensor(v))


def test_a_resumed_period_continues_bit_for_bit():
    grads = [torch.randn(5, 3, generator=gen(20 + i), dtype=DT) for i in range(6)]
    _, _, whole = _run(grads)
    opt, p, _ = _run(grads[:4])  # stops after a keeping step (4 = 2 mod 2 + 2)
    assert opt.state[p]["gop_count"] == 1
    q = nn.Parameter(p.detach().clone())
    resumed = SpectralKron([q], lr=1e-2, update_every=2)
    resumed.load_state_dict(opt.state_dict())
    for g in grads[4:]:
        q.grad = g.clone()
        resumed.step()
    for key in ("pc_B_L", "pc_d_L", "pc_alpha", "gop_W_L", "momentum_buffer"):
        assert torch.equal(resumed.state[q][key], whole[-1][key]), key


def test_an_old_state_dict_keeps_the_single_gradient_gop():
    """A state dict saved before the option existed resumes with the scheme it ran."""
    opt, p, _ = _run([torch.ones(5, 3, dtype=DT)], accumulate_gop=False)
    sd = opt.state_dict()
    del sd["param_groups"][0]["accumulate_gop"]
    fresh = SpectralKron([nn.Parameter(torch.zeros(5, 3, dtype=DT))], lr=1e-2, update_every=2)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["accumulate_gop"] is False


def test_a_non_finite_kept_sum_is_refused_on_load():
    grads = [torch.randn(5, 3, generator=gen(30 + i), dtype=DT) for i in range(2)]
    opt, p, _ = _run(grads)
    sd = opt.state_dict()
    sd["state"][0]["gop_W_L"][0, 0] = float("nan")
    fresh = SpectralKron([nn.Parameter(torch.zeros(5, 3, dtype=DT))], lr=1e-2, update_every=2)
    with pytest.raises(ValueError, match="gop_W_L"):
        fresh.load_state_dict(sd)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_a_bad_accumulate_gop_is_named(bad):
    p = nn.Parameter(torch.zeros(3, 2))
    opt = SpectralKron([p], accumulate_gop=False)
    with pytest.raises((TypeError, ValueError), match="accumulate_gop"):
        SpectralKron([p], accumulate_gop=bad)
    with pytest.raises((TypeError, ValueError), match="accumulate_gop"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2, 2))], "accumulate_gop": bad})


def test_kept_sums_are_embedded_with_zero_padding():
    """A padded bucket packs its members' sums (a factor's shape) with zeros outside their
    true blocks, and ``extract`` gives the blocks back."""
    from manifold_spectral.manifolds.kronecker_padding import KroneckerPadding

    pad = KroneckerPadding([(2, 3), (3, 1)], 3, 3, DT, "cpu")
    W = [torch.full((2, 2), 5.0, dtype=DT), torch.full((3, 3), 7.0, dtype=DT)]
    t = pad.embed(W, "W_L")
    want = torch.zeros(2, 3, 3, dtype=DT)
    want[0, :2, :2], want[1] = 5.0, 7.0
    assert torch.equal(t, want)
    V = [torch.full((3, 3), 2.0, dtype=DT), torch.full((1, 1), 3.0, dtype=DT)]
    u = pad.embed(V, "W_R")
    assert float(u[1].sum()) == 3.0 and float(u[1, 0, 0]) == 3.0
    for got, w in zip(pad.extract(t, "W_L"), W, strict=True):
        assert torch.equal(got, w)
