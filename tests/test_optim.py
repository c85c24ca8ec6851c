"""SpectralKron: a thin torch.optim layer over the Kronecker/diagonal spectral manifolds."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import manifold_spectral as ms
from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)


def data(seed: int = 0, n: int = 256):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 12, generator=g)
    Y = (X @ torch.randn(12, 4, generator=g)).argmax(1)
    return X, Y


def mlp(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 4))


def train(model, opt, X, Y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), Y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


OPTS = dict(lr=1e-2, beta2=0.05, damping=1e-4)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"root": 1.0, "clip_rms": 1.0},
        {"root": 1.0, "warm_start": False, "eigenvalue_correction": False},
        {"state_dtype": torch.bfloat16},
        {"cayley": "exact", "exponential": "exact"},
        {"warm_start": True, "update_every": 2},
        {"graft": "adam", "clip_rms": 1.0, "weight_decay": 1e-3, "nesterov": True},
        {"jacobi": True, "cayley": "exact"},
        {"eigenvalue_correction": False},
    ],
    ids=lambda kw: ",".join(kw) or "defaults",
)
def test_mlp_loss_decreases(kw):
    X, Y = data()
    model = mlp()
    losses = train(model, SpectralKron(model.parameters(), **OPTS, **kw), X, Y, 60)
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_small_cnn_bf16_state_loss_decreases():
    torch.manual_seed(0)
    X = torch.randn(64, 1, 8, 8)
    Y = (X.mean(dim=(1, 2, 3)) > 0).long()
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2)
    )
    opt = SpectralKron(model.parameters(), **OPTS, state_dtype=torch.bfloat16)
    losses = train(model, opt, X, Y, 40)
    assert losses[-1] < 0.5 * losses[0]
    conv_state = opt.state[model[0].weight]
    assert conv_state["pc_B_L"].shape == (4, 4) and conv_state["pc_B_R"].shape == (9, 9)
    assert conv_state["pc_B_L"].dtype == torch.bfloat16


def test_parameter_kinds_get_the_right_preconditioner():
    model = nn.Sequential(
        nn.Embedding(50, 8), nn.Linear(8, 16), nn.Linear(16, 3000), nn.LayerNorm(3000)
    )
    opt = SpectralKron(SpectralKron.param_groups(model), **OPTS, max_factor_dim=2048)
    kinds = {id(p): opt._preconditioner(g, p).kind for g in opt.param_groups for p in g["params"]}
    emb, lin1, lin2, norm = model
    assert kinds[id(emb.weight)] == "diagonal"  # embeddings: diagonal scheme
    assert kinds[id(lin1.weight)] == "kronecker"
    assert kinds[id(lin2.weight)] == "diagonal"  # 3000 > max_factor_dim
    assert {kinds[id(p)] for p in (lin1.bias, lin2.bias, norm.weight, norm.bias)} == {"diagonal"}


def test_one_step_equals_manifold_update_plus_mean_step():
    """The optimizer composes the manifold's code: GOP step, then alpha^-1/p S_L^-1/p G S_R^-1/p."""
    torch.manual_seed(3)
    W = nn.Parameter(torch.randn(5, 7, dtype=torch.float64))
    G = torch.randn(5, 7, dtype=torch.float64)
    W.grad = G.clone()
    lr, beta2, lam, p = 0.1, 0.05, 1e-3, 2.0
    opt = SpectralKron(
        [W], lr=lr, beta2=beta2, damping=lam, root=p, momentum=0.0, warm_start=False,
        eigenvalue_correction=False,  # the paper's alpha^-1/p S_L^-1/p G S_R^-1/p
    )  # fmt: skip
    W0 = W.detach().clone()
    opt.step()
    # the defaults' rotation: from the identity only the updated gaps turn the basis
    gap = opt.defaults["gap_damping"]
    K = ms.KroneckerSpectralSPD(  # the default Neumann map: one squaring
        5, 7, dtype=torch.float64, cayley="neumann", gap_damping=gap, neumann_squarings=1
    )
    gauss = ms.Gaussian(  # the defaults' rotation step: twice beta2 (basis_scale=2)
        K, beta2=beta2, gamma=1.0, root=p, exponential="truncated", jacobi=True,
        updated_gaps=True, basis_scale=2.0,
    )  # fmt: skip
    x = gauss.precision_step(K.origin(), ms.GOP(G.reshape(-1), damping=lam))
    expected = W0 - lr * K.apply_power(x, G, -1.0 / p)
    torch.testing.assert_close(W.detach(), expected, rtol=1e-12, atol=1e-12)
    state = opt.state[W]
    torch.testing.assert_close(state["pc_alpha"], x.alpha)
    torch.testing.assert_close(state["pc_B_L"], x.left.B)


def test_state_dict_resume_is_bitwise():
    X, Y = data(2)
    # float64 state on float32 parameters: torch.optim's load casts state to the parameter
    # dtype, which would round it; the resume must still be bitwise.
    for sd in (None, torch.bfloat16, torch.float64):
        model = mlp()
        kw = dict(state_dtype=sd, graft="adam", eigenvalue_correction=True)
        opt = SpectralKron(model.parameters(), **OPTS, **kw)
        train(model, opt, X, Y, 4)
        snap_opt, snap_model = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
        train(model, opt, X, Y, 4)
        resumed = mlp()
        resumed.load_state_dict(snap_model)
        opt2 = SpectralKron(resumed.parameters(), **OPTS, **kw)
        opt2.load_state_dict(snap_opt)
        train(resumed, opt2, X, Y, 4)
        for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
            assert torch.equal(a, b)
        for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
            for k, v in opt.state[p].items():
                assert v.dtype == opt2.state[q][k].dtype and torch.equal(v, opt2.state[q][k])


def test_exact_and_neumann_cayley_close_for_small_steps():
    X, Y = data(4)
    finals = []
    for cayley in ("exact", "neumann"):
        model = mlp()
        opt = SpectralKron(
            model.parameters(), lr=1e-2, beta2=1e-3, damping=1e-3, cayley=cayley, warm_start=False
        )
        train(model, opt, X, Y, 20)
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    diff = torch.linalg.vector_norm(finals[0] - finals[1])
    assert diff < 1e-4 * torch.linalg.vector_norm(finals[0])


def test_bf16_long_run_stays_finite_and_orthogonal():
    torch.manual_seed(5)
    W = nn.Parameter(torch.randn(16, 24))
    opt = SpectralKron([W], lr=1e-3, beta2=0.05, damping=1e-3, state_dtype=torch.bfloat16)
    target = torch.randn(16, 24)
    for _ in range(300):
        opt.zero_grad()
        ((W - target) ** 2).sum().backward()
        W.grad.add_(0.1 * torch.randn_like(W))
        opt.step()
    st = opt.state[W]
    for key in ("pc_B_L", "pc_B_R"):
        assert float(ms.linalg.orthogonality_error(st[key])) < 0.5
    assert all(bool(torch.isfinite(v).all()) for v in st.values())
    assert bool((st["pc_d_L"] > 0).all()) and bool((st["pc_d_R"] > 0).all())


def test_nonfinite_gradient_raises_and_changes_nothing():
    X, Y = data()
    model = mlp()
    opt = SpectralKron(model.parameters(), **OPTS)
    train(model, opt, X, Y, 2)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    model[0].weight.grad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"params\[0\]\[0\].*NaN"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    after = opt.state_dict()
    for k, v in state["state"].items():
        for name, t in v.items():
            assert torch.equal(t, after["state"][k][name])
    skipper = SpectralKron(model.parameters(), **OPTS, nonfinite="skip")
    skipper.step()
    assert skipper.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"lr": -1.0}, "lr"),
        ({"beta2": 0.0}, "beta2"),
        ({"root": 0.0}, "root"),
        ({"momentum": 1.0}, "momentum"),
        ({"cayley": "pade"}, "cayley"),
        ({"graft": "sgd"}, "graft"),
        ({"update_every": 0}, "update_every"),
        ({"state_dtype": torch.int32}, "state_dtype"),
        ({"clip_rms": -1.0}, "clip_rms"),
        ({"truncated": "yes"}, "truncated"),
        ({"nonfinite": "ignore"}, "nonfinite"),
        ({"updated_gaps": 1}, "updated_gaps"),
        ({"gamma": 1.0, "beta2": 1.0}, "beta2"),
    ],
)
def test_unsupported_options_rejected_at_construction(kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        SpectralKron(mlp().parameters(), **{**OPTS, **kw})


@pytest.mark.parametrize("truncated, exponential", [(True, "truncated"), (False, "exact")])
def test_state_dict_saved_before_new_options_loads(truncated, exponential):
    """A state dict whose groups lack options added later (``batched``, ``jacobi``,
    ``updated_gaps``) loads and
    resumes with the defaults of those options; its ``truncated`` bool (the earlier spelling
    of ``exponential``) becomes ``exponential``."""
    X, Y = data(7)
    model = mlp()
    opt = SpectralKron(model.parameters(), **OPTS)
    train(model, opt, X, Y, 3)
    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        del g["batched"], g["jacobi"], g["exponential"], g["updated_gaps"]
        del g["neumann_squarings"]
        g["truncated"] = truncated
    opt2 = SpectralKron(model.parameters(), **OPTS)
    opt2.load_state_dict(old)
    assert opt2.param_groups[0]["batched"] is True and opt2.param_groups[0]["jacobi"] is False
    assert opt2.param_groups[0]["updated_gaps"] is False  # the RGD step of that version
    assert opt2.param_groups[0]["neumann_squarings"] == 0  # the plain Neumann map then
    assert opt2.param_groups[0]["exponential"] == exponential
    assert "truncated" not in opt2.param_groups[0]
    losses = train(model, opt2, X, Y, 3)
    assert all(map(math.isfinite, losses))


def test_eigenvalue_correction_step_by_hand():
    """Two steps with ``eigenvalue_correction``. Each step preconditions in the eigenbasis
    before its curvature update (as SOAP):
    ``u = B_L [Z_m / (sqrt(v_hat + lambda + f mean(v_hat)) + eps)] B_R^T`` with
    ``Z = B_L^T (.) B_R`` at the state before the step and ``v_hat`` the bias-corrected EMA of
    ``Z_g^2``; then the curvature takes the manifold's own step from the GOP of the gradient.
    The first step starts at the identity, so only the second tells the basis before the
    update from the one after it."""
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(5, 7, dtype=torch.float64))
    G1, G2 = torch.randn(2, 5, 7, dtype=torch.float64)
    lr, beta2, lam, beta = 0.1, 0.05, 1e-3, 0.9
    opt = SpectralKron(
        [W],
        lr=lr,
        beta2=beta2,
        damping=lam,
        momentum=0.5,
        eigenvalue_correction=True,
        correction_beta=beta,
        warm_start=False,
    )
    gap = opt.defaults["gap_damping"]
    K = ms.KroneckerSpectralSPD(  # the default Neumann map: one squaring
        5, 7, dtype=torch.float64, cayley="neumann", gap_damping=gap, neumann_squarings=1
    )
    gauss = ms.Gaussian(  # the defaults' rotation step: twice beta2 (basis_scale=2)
        K, beta2=beta2, gamma=1.0, root=2.0, exponential="truncated", jacobi=True,
        updated_gaps=True, basis_scale=2.0,
    )  # fmt: skip
    x, v = K.origin(), torch.zeros(5, 7, dtype=torch.float64)
    buf = torch.zeros(5, 7, dtype=torch.float64)
    for t, G in enumerate((G1, G2), start=1):
        W0 = W.detach().clone()
        W.grad = G.clone()
        opt.step()
        buf = 0.5 * buf + G  # the momentum buffer sums gradients
        D = G + 0.5 * buf  # Nesterov's direction (the default)
        Z, Zm = x.left.B.T @ G @ x.right.B, x.left.B.T @ D @ x.right.B
        v = beta * v + (1 - beta) * Z * Z
        vhat = v / (1 - beta**t)
        floor = lam + 1e-6 * vhat.mean()  # transforms.RELATIVE_FLOOR of the mean v_hat
        u = x.left.B @ (Zm / ((vhat + floor).sqrt() + 1e-8)) @ x.right.B.T
        torch.testing.assert_close(W.detach(), W0 - lr * u, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(opt.state[W]["eig_v"], v, rtol=1e-10, atol=1e-14)
        x = gauss.precision_step(x, ms.GOP(G.reshape(-1), damping=lam))
        torch.testing.assert_close(opt.state[W]["pc_B_L"], x.left.B, rtol=0, atol=1e-12)
        torch.testing.assert_close(opt.state[W]["pc_d_R"], x.right.d, rtol=1e-10, atol=0)
        torch.testing.assert_close(opt.state[W]["pc_alpha"], x.alpha, rtol=1e-10, atol=0)
    assert float((x.left.B - torch.eye(5, dtype=torch.float64)).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="correction_beta"):
        SpectralKron([W], correction_beta=1.0)
    with pytest.raises(TypeError, match="eigenvalue_correction"):
        SpectralKron([W], eigenvalue_correction=1)


def test_corrupted_state_dict_is_rejected_before_loading():
    """Updates check only their results, so a loaded state must be a valid point: a saved
    ``B_L`` that is not orthogonal, or a negative eigenvalue, is refused with nothing loaded."""
    X, Y = data(8)
    model = mlp()
    opt = SpectralKron(model.parameters(), **OPTS)
    train(model, opt, X, Y, 2)
    before = copy.deepcopy(opt.state_dict())
    for key, corrupt in (("pc_B_L", lambda v: 2 * v), ("pc_d", lambda v: -v)):
        bad = copy.deepcopy(before)
        i = next(i for i, st in bad["state"].items() if key in st)
        bad["state"][i][key] = corrupt(bad["state"][i][key])
        with pytest.raises(ValueError, match="not a valid preconditioner"):
            opt.load_state_dict(bad)
        after = opt.state_dict()
        for j, st in before["state"].items():
            for k, v in st.items():
                assert torch.equal(v, after["state"][j][k])


@pytest.mark.parametrize(
    "root, flag, expected",
    [(2.0, None, True), (1.0, None, False), (1.0, True, True), (2.0, False, False)],
)
def test_eigenvalue_correction_default_follows_the_root(root, flag, expected):
    """``None`` runs the correction for ``root >= 2`` only (its ``(v + lambda)^(-1/p)`` would
    amplify near-zero directions by ``1 / lambda`` at ``p = 1``); an explicit flag wins."""
    W = nn.Parameter(torch.randn(5, 7, dtype=torch.float64))
    opt = SpectralKron([W], root=root, eigenvalue_correction=flag)
    W.grad = torch.randn(5, 7, dtype=torch.float64)
    opt.step()
    assert ("eig_v" in opt.state[W]) == expected


def test_parameter_groups_step_with_their_own_lr_and_weight_decay():
    """The parameter writes of a step are batched per group (``_apply_updates``): each group
    must keep its own lr and weight decay. Two groups in one optimizer give the bits of two
    optimizers with one group each (the update of a parameter reads only its own group)."""
    X, Y = data()
    opts = ({"lr": 3e-2, "weight_decay": 0.1}, {"lr": 1e-3, "weight_decay": 0.0})
    model_a, model_b = mlp(), mlp()
    mods_a, mods_b = (model_a[0], model_a[2]), (model_b[0], model_b[2])
    joint = SpectralKron(
        [{"params": m.parameters(), **o} for m, o in zip(mods_a, opts, strict=True)]
    )
    alone = [SpectralKron(m.parameters(), **o) for m, o in zip(mods_b, opts, strict=True)]
    for _ in range(4):
        for model in (model_a, model_b):
            model.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
        joint.step()
        for opt in alone:
            opt.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(model_a[0].weight, mlp()[0].weight)


def test_decoupled_weight_decay_shrinks_by_lr_times_decay():
    """``p <- p (1 - lr wd) - lr u``: one step with decay minus one without is ``lr wd p``
    (the direction ``u`` does not depend on the decay)."""
    X, Y = data()
    lr, wd = 3e-2, 0.1
    out = []
    for decay in (wd, 0.0):
        model = mlp()
        opt = SpectralKron(model.parameters(), lr=lr, weight_decay=decay)
        nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
        out.append([p.detach().clone() for p in model.parameters()])
    for p0, with_decay, without in zip(mlp().parameters(), *out, strict=True):
        torch.testing.assert_close(without - with_decay, lr * wd * p0.detach(), rtol=0, atol=1e-6)
