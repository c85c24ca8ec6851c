"""Padded batches: k Kronecker matrices of different shapes on one ``batch=k`` manifold.

``KroneckerSpectralSPD(a, b, batch=k, sizes=[(a_i, b_i)])`` embeds each (a_i, b_i) point in
(a, b) with identity factors; the GOP step must give every true block the step of its own
unpadded manifold (to rounding) and keep the padding exactly identity. ``SpectralKron``
pads small layers of different shapes into one bucket (``buckets._pad_buckets``); its
parameters must equal the one-by-one run to rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import manifold_spectral as ms
from manifold_spectral.gaussian import GOP, Gaussian, Rotated
from manifold_spectral.manifolds import KroneckerSpectralPoint, SpectralPoint
from manifold_spectral.optim import SpectralKron, buckets
from manifold_spectral.optim.buckets import PAD_OVERHEAD_COST, _pad_buckets

torch.set_num_threads(1)

A, B = 5, 6
SIZES = [(5, 6), (3, 6), (5, 2), (2, 3)]
K = len(SIZES)


def pad_point(x: KroneckerSpectralPoint, a: int, b: int) -> KroneckerSpectralPoint:
    """The (a, b) point inside (A, B): identity factors, eigenvalues 1 on the padding."""
    dt = x.alpha.dtype
    BL, BR = torch.eye(A, dtype=dt), torch.eye(B, dtype=dt)
    dL, dR = torch.ones(A, dtype=dt), torch.ones(B, dtype=dt)
    BL[:a, :a], dL[:a] = x.left.B, x.left.d
    BR[:b, :b], dR[:b] = x.right.B, x.right.d
    return KroneckerSpectralPoint(x.alpha, SpectralPoint(BL, dL), SpectralPoint(BR, dR))


def tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 4e-2}[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cayley", ["neumann", "exact"])
@pytest.mark.parametrize("exponential", ["truncated", "exact"])
@pytest.mark.parametrize("gap_damping", [0.0, 0.3])
def test_padded_step_is_each_elements_own_step(dtype, cayley, exponential, gap_damping):
    """Six GOP steps (one of them with gradients 300 times larger: saturated Jacobi angles,
    the Neumann argument clipped and rescaled; damping on, so that the trace of the other
    factor's inverse counts), one Newton-Schulz step."""
    opts = dict(cayley=cayley, gap_damping=gap_damping)
    mans = [ms.KroneckerSpectralSPD(a, b, dtype, **opts) for a, b in SIZES]
    pman = ms.KroneckerSpectralSPD(A, B, dtype, batch=K, sizes=SIZES, **opts)
    g = torch.Generator().manual_seed(0)
    pts = [m.random(g, log_scale=0.7) for m in mans]
    X = KroneckerSpectralPoint.stack([pad_point(x, *s) for x, s in zip(pts, SIZES, strict=True)])
    step = dict(beta2=0.2, exponential=exponential, jacobi=True, reorthogonalize_every=4)
    singles = [Gaussian(m, **step) for m in mans]
    padded = Gaussian(pman, **step)
    for t in range(6):
        # (the exact exponential of such a step overflows: that map gets the small ones)
        scale = 300.0 if t == 2 and exponential == "truncated" else 1.0
        G = [scale * torch.randn(3, a, b, generator=g, dtype=torch.float64) for a, b in SIZES]
        Gp = torch.zeros(K, 3, A, B, dtype=torch.float64)
        for i, (a, b) in enumerate(SIZES):
            Gp[i, :, :a, :b] = G[i]
        cols = Gp.reshape(K, 3, A * B).mT.to(dtype)
        X = padded.precision_step(X, Rotated(pman.gop_eigenbasis(X, cols, 1e-2)), count=t + 1)
        pts = [
            s.precision_step(x, GOP(Gi.reshape(3, -1).to(dtype), 1e-2), count=t + 1)
            for s, x, Gi in zip(singles, pts, G, strict=True)
        ]
    assert pman.check_point(X, fast=True) == (True, None)
    for i, ((a, b), x) in enumerate(zip(SIZES, pts, strict=True)):
        got = X.unbind()[i]
        for u, v in (
            (got.alpha, x.alpha),
            (got.left.B[:a, :a], x.left.B),
            (got.left.d[:a], x.left.d),
            (got.right.B[:b, :b], x.right.B),
            (got.right.d[:b], x.right.d),
        ):
            err = float((u.double() - v.double()).abs().max() / v.double().abs().max())
            assert err <= tolerance(dtype), (i, err)
        # The padding stays exactly identity: eigenvalues 1, B = Diag(B_true, I).
        for Bf, d, n, N in ((got.left.B, got.left.d, a, A), (got.right.B, got.right.d, b, B)):
            assert torch.equal(d[n:], torch.ones(N - n, dtype=dtype))
            assert torch.equal(Bf[n:, n:], torch.eye(N - n, dtype=dtype))
            assert not Bf[:n, n:].any() and not Bf[n:, :n].any()


def test_padded_preconditioning_is_each_elements_own():
    mans = [ms.KroneckerSpectralSPD(a, b, torch.float64) for a, b in SIZES]
    pman = ms.KroneckerSpectralSPD(A, B, torch.float64, batch=K, sizes=SIZES)
    g = torch.Generator().manual_seed(1)
    pts = [m.random(g, log_scale=0.7) for m in mans]
    X = KroneckerSpectralPoint.stack([pad_point(x, *s) for x, s in zip(pts, SIZES, strict=True)])
    Gp = torch.zeros(K, A, B, dtype=torch.float64)
    for i, (a, b) in enumerate(SIZES):
        Gp[i, :a, :b] = torch.randn(a, b, generator=g, dtype=torch.float64)
    P = pman.apply_power_matrix(X, Gp, -0.5)
    for i, ((a, b), m, x) in enumerate(zip(SIZES, mans, pts, strict=True)):
        ref = m.apply_power_matrix(x, Gp[i, :a, :b], -0.5)
        torch.testing.assert_close(P[i, :a, :b], ref, rtol=1e-13, atol=0)
        assert not P[i, a:].any() and not P[i, :, b:].any()


def test_padded_manifold_rejects_bad_sizes_and_unpadded_paths():
    with pytest.raises(ValueError, match="sizes"):
        ms.KroneckerSpectralSPD(A, B, sizes=SIZES)  # no batch
    with pytest.raises(ValueError, match="sizes"):
        ms.KroneckerSpectralSPD(A, B, batch=K, sizes=SIZES[:2])
    with pytest.raises(ValueError, match="sizes"):
        ms.KroneckerSpectralSPD(A, B, batch=2, sizes=[(5, 6), (6, 2)])
    with pytest.raises(ValueError, match="sizes"):
        ms.KroneckerSpectralSPD(A, B, batch=2, sizes=[(5, 6), (0, 2)])
    pman = ms.KroneckerSpectralSPD(A, B, torch.float64, batch=K, sizes=SIZES)
    x = pman.origin()
    for call in (
        lambda: pman.random(),
        lambda: pman.metric(x),
        lambda: pman.logdet(x),
        lambda: pman.retr(x, pman.zero_tangent(x)),
        lambda: Gaussian(pman, beta2=0.1).precision_step(
            x, Rotated(pman.rotate(x, torch.zeros(K, A * B, A * B, dtype=torch.float64)))
        ),
    ):
        with pytest.raises(NotImplementedError, match="padded"):
            call()
    # All sizes equal to (a, b): a plain batch.
    assert ms.KroneckerSpectralSPD(A, B, batch=2, sizes=[(A, B)] * 2).padding is None


def test_pad_buckets_rule():
    """Equal shapes share a bucket; different ones while the padding costs at most
    ``PAD_OVERHEAD_COST`` per extra member (hand-computed costs a^3 + b^3 + ab(a + b))."""
    assert PAD_OVERHEAD_COST == 4 * 80**3

    def groups(shapes):
        return [[shapes[i] for i in g] for g in _pad_buckets(list(range(len(shapes))), shapes)]

    # (80, 80) + (8, 8): 2 * 4 * 80^3 - 4 * 80^3 - 4 * 8^3 <= 4 * 80^3: one bucket.
    assert groups([(8, 8), (80, 80)]) == [[(8, 8), (80, 80)]]
    # (84, 84) + (8, 8): 4 * 84^3 - 2048 > 4 * 80^3: two.
    assert sorted(map(len, groups([(8, 8), (84, 84)]))) == [1, 1]
    # Equal large shapes always share, and never take a padded small one.
    assert groups([(200, 200), (8, 8), (200, 200)]) == [[(200, 200), (200, 200)], [(8, 8)]]
    # A smaller bound pads less: (32, 32) + (8, 8) pad within 4 * 32^3
    # (2 * 4 * 32^3 - 4 * 32^3 - 4 * 8^3 <= 4 * 32^3), (48, 48) + (8, 8) do not.
    low = 4 * 32**3
    assert len(_pad_buckets([0, 1], [(8, 8), (32, 32)], low)) == 1
    assert len(_pad_buckets([0, 1], [(8, 8), (48, 48)], low)) == 2
    # A kernel and its transpose pad to (72, 72): 2 * 4 * 72^3 - 2 * 478720 <= 4 * 80^3; then
    # (8, 9): 3 * 4 * 72^3 - (2 * 478720 + 2465) <= 2 * 4 * 80^3.
    assert groups([(8, 9), (16, 72), (72, 16)]) == [[(8, 9), (16, 72), (72, 16)]]
    # A join counts the padding it adds to the members already there. (96, 32) + (64, 32):
    # 2 * 1310720 - 1310720 - 491520 = 819200 <= 4 * 80^3. (32, 64) would widen them to
    # (96, 64): 3 * 2129920 - 2 * 1310720 - 491520 = 3276800 > 4 * 80^3, though the bucket's
    # average padding, (3 * 2129920 - 2293760) / 2 = 2048000, would be within the bound.
    assert groups([(96, 32), (64, 32), (32, 64)]) == [[(96, 32), (64, 32)], [(32, 64)]]
    # bench_optim_batched.py's "mixed" layers: (16, 72) would widen the (96, 64) bucket to
    # (96, 72) for all its members; by the average it joined one bucket of eight.
    mixed = [(8, 9), (16, 72)] + [(96, 32), (32, 32), (64, 32), (32, 64)] * 2
    assert groups(mixed) == [
        [(8, 9), (96, 32), (32, 32), (64, 32), (96, 32), (32, 32), (64, 32)],
        [(16, 72), (32, 64), (32, 64)],
    ]


def test_pad_bound_is_read_when_bucketing(monkeypatch):
    """``_buckets`` pads within ``buckets.PAD_OVERHEAD_COST`` as it is when it buckets, not as
    it was when ``_pad_buckets`` was defined: benchmarks/bench_optim_batched.py's padding
    table sets it to force one padded bucket. (128, 128) + (32, 32) pad by
    4 * 128^3 - 4 * 32^3 = 8.26e6 > 4 * 80^3 per extra member: two buckets by default."""
    ps = [nn.Parameter(torch.randn(128, 128)), nn.Parameter(torch.randn(32, 32))]
    opt = SpectralKron(ps)
    for p in ps:
        p.grad = torch.randn_like(p)
    group = opt.param_groups[0]
    assert len(opt._buckets(group)) == 2
    monkeypatch.setattr(buckets, "PAD_OVERHEAD_COST", 10**15)
    assert len(opt._buckets(group)) == 1
    monkeypatch.setattr(buckets, "PAD_OVERHEAD_COST", 0)
    assert len(opt._buckets(group)) == 2


def models():
    """Conv kernels (8 x 9, 6 x 72), a rank-deficient linear layer (batch 4 < fan-in 96) and
    two small ones: four Kronecker shapes in one padded bucket."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.Tanh(),
        nn.Conv2d(8, 6, 3),
        nn.Flatten(),
        nn.Linear(96, 7),
        nn.Tanh(),
        nn.Linear(7, 3),
    ).double()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        # the paper's scheme (p = 1, no squaring: which amplifies p = 1's rounding, see
        # tests/test_optim_continuity.py)
        {"eigenvalue_correction": False, "root": 1.0, "neumann_squarings": 0},
        {"state_dtype": torch.float32},
        {"state_dtype": torch.bfloat16},
    ],
    ids=["defaults", "paper", "float32-state", "bfloat16-state"],
)
def test_padded_bucket_equals_separate_updates(kw):
    """Twelve steps on a batch of 4 (rank-deficient layers): the padded bucket's parameters
    equal the one-by-one run's to 1e-10 in float64; with a float32 state, to no more than
    ten times the distance that a one-ulp change of the input data makes (rounding
    amplified by training, measured, not guessed)."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    Y = torch.randint(0, 3, (4,), generator=g)
    eps = torch.finfo(kw.get("state_dtype", torch.float64)).eps
    runs = []
    calls = []
    for batched, x in ((True, X), (False, X), (False, X * (1 + eps))):
        model = models()
        opt = SpectralKron(model.parameters(), lr=0.005, batched=batched, **kw)
        compute = opt._compute_many

        def counted(group, params, grads, *rest, compute=compute):
            calls.append(len(params))
            return compute(group, params, grads, *rest)

        opt._compute_many = counted  # type: ignore[method-assign]
        for _ in range(12):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), Y).backward()
            opt.step()
            if batched:
                # One call per bucket: the padded bucket's update succeeded (a failed batched
                # update is redone parameter by parameter, which would equal the separate run
                # and hide a broken padding).
                assert len(calls) == len(opt._buckets(opt.param_groups[0]))
                calls.clear()
        runs.append((model, opt))
    (m1, o1), (m0, _), (me, _) = runs
    shapes = [[tuple(p.shape) for p in b] for b in o1._buckets(o1.param_groups[0])]
    assert [(8, 1, 3, 3), (6, 8, 3, 3), (7, 96), (3, 7)] in shapes  # one bound for every dtype

    def dist(ma, mb):
        pairs = zip(ma.parameters(), mb.parameters(), strict=True)
        return [float((p - q).detach().norm() / q.detach().norm()) for p, q in pairs]

    noise = dist(me, m0)
    for err, ref in zip(dist(m1, m0), noise, strict=True):
        assert err <= (1e-10 if eps < 1e-10 else 10 * ref), (err, ref)
