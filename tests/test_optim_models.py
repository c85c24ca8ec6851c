"""SpectralKron on real models: MLP, CNN and a tiny transformer in float32 and bfloat16,
mixed precision (autocast, GradScaler), long bf16 runs, resuming, roots, Cayley variants and
non-finite gradients. Small and CPU-only: the whole file runs in well under a minute."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import manifold_spectral as ms
from manifold_spectral.experiments.nn_training import MarkovTask, TeacherTask, TinyGPT
from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)

KW = dict(beta2=0.05, damping=1e-8, update_every=2, warm_start=True, clip_rms=1.0)


def tiny_markov() -> MarkovTask:
    return MarkovTask(
        vocab=8, seq_len=12, batch=16, model=dict(dim=16, heads=2, ff=32, layers=1), eval_size=64
    )


def cnn_task(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 1, 8, 8, generator=g)
    Y = (X[:, 0, :4].mean(dim=(1, 2)) > X[:, 0, 4:].mean(dim=(1, 2))).long()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 64, 2),
    )  # fmt: skip
    return model, X, Y


def train_task(task, model, opt, steps, *, dtype=None, autocast=False, seed=1):
    """Fresh minibatches each step; returns (first eval loss, last eval loss)."""
    g = torch.Generator().manual_seed(seed)
    first = task.eval_loss(model) if dtype is None else None
    losses = []
    for _ in range(steps):
        x, y = task.sample(task.batch, g)
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = task.loss(model, x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    if dtype is None:
        return first, task.eval_loss(model)
    k = max(1, steps // 5)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "transformer"])
def test_loss_decreases(kind, dtype):
    """The whole model (parameters, gradients, optimizer state) in ``dtype``."""
    if kind == "cnn":
        model, X, Y = cnn_task()
        model = model.to(dtype)
        opt = SpectralKron(model.parameters(), lr=3e-2, **KW)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X.to(dtype)).float(), Y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.5 * losses[0], losses[::8]
        assert opt.state[model[0].weight]["pc_B_R"].shape == (9, 9)
        return
    task = (
        TeacherTask(d_in=16, width=32, batch=64, eval_size=256) if kind == "mlp" else tiny_markov()
    )
    model = task.make_model(0).to(dtype)
    opt = SpectralKron(SpectralKron.param_groups(model), lr=1e-2, **KW)
    first, last = train_task(task, model, opt, 60, dtype=dtype)
    for st in opt.state.values():
        for k, v in st.items():
            # the step and the count of the kept GOP sums are float64 counters; the
            # correction's second moment is kept in at least float32
            if k not in ("step", "gop_count"):
                assert v.dtype == (torch.float32 if k == "eig_v" else dtype), k
    assert last < first - (0.3 if kind == "mlp" else 0.15), (first, last)


def test_autocast_bf16_with_bf16_state():
    task = tiny_markov()
    model = task.make_model(0)
    opt = SpectralKron(SpectralKron.param_groups(model), lr=1e-2, state_dtype=torch.bfloat16, **KW)
    first, last = train_task(task, model, opt, 60, autocast=True)
    assert last < first - 0.15, (first, last)
    w = model.blocks[0].qkv.weight
    assert w.dtype == torch.float32 and opt.state[w]["pc_B_L"].dtype == torch.bfloat16


def test_grad_scaler_skips_overflow_then_trains():
    """``GradScaler`` unscales the gradients before ``step`` and skips steps whose gradients
    overflow, so SpectralKron never sees them (no error) and training proceeds."""
    task = TeacherTask(d_in=16, width=32, batch=64, eval_size=256)
    model = task.make_model(0)
    opt = SpectralKron(model.parameters(), lr=1e-2, **KW)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1000)
    g = torch.Generator().manual_seed(1)
    first = task.eval_loss(model)
    for step in range(60):
        x, y = task.sample(task.batch, g)
        opt.zero_grad()
        overflow = 1e38 if step in (3, 7) else 1.0  # x 2^16: Inf gradients at two steps
        scaler.scale(task.loss(model, x, y) * overflow).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0**14  # backed off twice
    assert int(opt.state[model[0].weight]["step"]) == 58  # the two steps were skipped
    assert task.eval_loss(model) < first - 0.3


def test_bf16_1000_steps_finite_and_orthogonal():
    torch.manual_seed(5)
    W = nn.Parameter(torch.randn(24, 16, dtype=torch.bfloat16))
    target = torch.randn(24, 16, dtype=torch.bfloat16)
    # lr 1.5e-3 at the default momentum 0.85: the step of lr 1e-3 at 0.9, ``lr / (1 - momentum)``
    # (the 1000 steps reach the target at that step size)
    opt = SpectralKron([W], lr=1.5e-3, beta2=0.05, damping=1e-4, update_every=1)
    worst = 0.0
    for step in range(1000):
        opt.zero_grad()
        ((W - target).float() ** 2).sum().backward()
        W.grad.add_(0.3 * torch.randn_like(W))
        opt.step()
        if step % 50 == 49:
            st = opt.state[W]
            for key in ("pc_B_L", "pc_B_R"):
                worst = max(worst, float(ms.linalg.orthogonality_error(st[key])))
    st = opt.state[W]
    assert all(bool(torch.isfinite(v).all()) for v in st.values())
    assert bool((st["pc_d_L"] > 0).all()) and bool((st["pc_d_R"] > 0).all())
    # bf16 rounding of B alone gives ||B^T B - I||_F ~ sqrt(n) 2^-8 ~ 0.02: bounded, no drift
    assert worst < 0.1, worst
    assert float((W.detach() - target).float().pow(2).mean()) < 0.1


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"state_dtype": torch.bfloat16},
        {"update_every": 2, "warm_start": True, "graft": "adam"},
        {"cayley": "exact", "state_dtype": torch.bfloat16},
    ],
    ids=["fp32", "bf16", "every2-warm-graft", "exact-bf16"],
)
def test_resume_is_bitwise_across_reorthogonalization(kw):
    """24 steps in one go == 12 steps, save, load into a fresh optimizer, 12 steps; the
    Newton-Schulz steps (every 10 updates) fall on both sides of the cut."""
    task = TeacherTask(d_in=16, width=32, batch=32, eval_size=64)
    opts = dict(lr=1e-2, beta2=0.05, damping=1e-6, **kw)

    def run(model, opt, g, steps):
        for _ in range(steps):
            x, y = task.sample(task.batch, g)
            opt.zero_grad()
            task.loss(model, x, y).backward()
            opt.step()

    model = task.make_model(0)
    opt = SpectralKron(model.parameters(), **opts)
    g = torch.Generator().manual_seed(3)
    run(model, opt, g, 12)
    snap = copy.deepcopy((model.state_dict(), opt.state_dict(), g.get_state()))
    run(model, opt, g, 12)

    resumed = task.make_model(1)
    resumed.load_state_dict(snap[0])
    opt2 = SpectralKron(resumed.parameters(), **opts)
    opt2.load_state_dict(snap[1])
    g2 = torch.Generator()
    g2.set_state(snap[2])
    run(resumed, opt2, g2, 12)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
        for k, v in opt.state[p].items():
            assert v.dtype == opt2.state[q][k].dtype and torch.equal(v, opt2.state[q][k]), k


@pytest.mark.parametrize("root", [1.0, 2.0])
def test_root_direction_matches_dense_power(root):
    """One step from a random state: the update is ``S^(-1/p) vec(g)`` with the dense ``S``."""
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
    opt = SpectralKron(
        [W], lr=1.0, beta2=0.02, damping=1e-3, root=root, momentum=0.0, warm_start=False,
        eigenvalue_correction=False,  # the paper's S^(-1/p), whose dense form is checked
    )  # fmt: skip
    W.grad = torch.randn(4, 6, dtype=torch.float64)
    opt.step()  # initialises the state
    K = ms.KroneckerSpectralSPD(4, 6, dtype=torch.float64, cayley="neumann")
    W.grad = torch.randn(4, 6, dtype=torch.float64)
    W0 = W.detach().clone()
    opt.step()
    st = opt.state[W]
    x = ms.KroneckerSpectralPoint(
        st["pc_alpha"],
        ms.SpectralPoint(st["pc_B_L"], st["pc_d_L"]),
        ms.SpectralPoint(st["pc_B_R"], st["pc_d_R"]),
    )
    expected = K.power(x, -1.0 / root) @ W.grad.reshape(-1)
    torch.testing.assert_close((W0 - W.detach()).reshape(-1), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("root", [1.0, 2.0])
def test_both_roots_train_the_transformer(root):
    task = tiny_markov()
    model = task.make_model(0)
    opt = SpectralKron(SpectralKron.param_groups(model), lr=1e-2, root=root, **KW)
    first, last = train_task(task, model, opt, 60)
    assert last < first - 0.15, (first, last)


def test_exact_and_neumann_cayley_close_on_transformer():
    task = tiny_markov()
    finals = []
    for cayley in ("exact", "neumann"):
        model = task.make_model(0)
        opts = dict(lr=3e-3, beta2=1e-3, damping=1e-6, update_every=1, cayley=cayley)
        train_task(task, model, SpectralKron(SpectralKron.param_groups(model), **opts), 15)
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    diff = torch.linalg.vector_norm(finals[0] - finals[1])
    assert diff < 1e-3 * torch.linalg.vector_norm(finals[0]), diff


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_nonfinite_gradient_clear_error(bad):
    task = tiny_markov()
    model = task.make_model(0)
    opt = SpectralKron(SpectralKron.param_groups(model), lr=1e-2, **KW)
    train_task(task, model, opt, 2)
    before = [p.detach().clone() for p in model.parameters()]
    model.blocks[0].fc1.weight.grad[1, 2] = bad
    with pytest.raises(ValueError, match=r"shape \(32, 16\).*NaN or Inf"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bf16_warm_start_large_factor_with_repeated_eigenvalues():
    """Regression: a 192 x 16 weight with rank-4 gradients in bf16 state. The warm start had
    raised (bf16 positive-definiteness floor), and 176 equal eigenvalues made the rounded
    ``log det`` of the left factor exceed the core's 0.25 tolerance."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 192, bias=False)
    opt = SpectralKron(
        lin.parameters(), lr=1e-3, beta2=0.05, damping=1e-8, warm_start=True,
        state_dtype=torch.bfloat16, update_every=1,
    )  # fmt: skip
    for _ in range(30):
        x = torch.randn(4, 16)
        opt.zero_grad()
        lin(x).pow(2).mean().backward()
        opt.step()
    st = opt.state[lin.weight]
    assert st["pc_B_L"].dtype == torch.bfloat16 and bool(torch.isfinite(st["pc_d_L"]).all())


def test_warm_start_matches_gradient_scale():
    """Warm start: ``tr(S) / (ab) = mean(g^2) + damping`` (not its square)."""
    W = nn.Parameter(torch.zeros(5, 7, dtype=torch.float64))
    G = 1e-3 * torch.randn(5, 7, dtype=torch.float64)
    opt = SpectralKron([W], lr=1e-3, warm_start=True, damping=1e-9, update_every=2)
    pre = opt._preconditioner(opt.param_groups[0], W)
    x = pre.point(pre.init_state(G, warm_start=True))
    S = pre.manifold.to_matrix(x)
    torch.testing.assert_close(torch.trace(S) / 35, (G * G).mean() + 1e-9, rtol=1e-10, atol=0.0)


def test_tiny_gpt_parameter_kinds():
    model = TinyGPT(vocab=8, seq_len=12, dim=16, heads=2, ff=32, layers=1)
    opt = SpectralKron(SpectralKron.param_groups(model), lr=1e-3)
    kinds = {
        name: opt._preconditioner(g, p).kind
        for name, p in model.named_parameters()
        for g in opt.param_groups
        if any(p is q for q in g["params"])
    }
    assert kinds["tok.weight"] == kinds["pos.weight"] == "diagonal"
    assert kinds["blocks.0.qkv.weight"] == kinds["head.weight"] == "kronecker"
    assert kinds["blocks.0.ln1.weight"] == kinds["blocks.0.qkv.bias"] == "diagonal"


def test_gpu_train_script_tiny_cpu(tmp_path):
    """``benchmarks/gpu_train.py --device cpu --tiny`` runs every optimizer end to end."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("pytorch_optimizer")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for method in ("adamw", "soap", "muon", "spectral-p2", "spectral-p1"):
        assert method in proc.stdout
    data = json.loads((tmp_path / "gpu_train.json").read_text())
    assert all(r["error"] is None and r["final"] < 10 for r in data["results"])
    assert (tmp_path / "gpu_train.png").exists()


def test_cli_reproduce_nn_small(tmp_path, capsys):
    from manifold_spectral import cli

    argv = ["reproduce", "nn", "--trials", "2", "--steps", "12", "--methods", "adamw"]
    argv += ["spectral-p2", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "random search with 2 trials" in text and "wall time (nn)" in text
    for label in ("AdamW", "SpectralKron defaults (ours)", "bf16 state", "exact Cayley"):
        assert label in text
    assert (tmp_path / "nn.png").read_bytes()[:4] == b"\x89PNG"
    assert "nn" in cli.REPRODUCTIONS and cli.REPRODUCTIONS["nn"].quick


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trials", "0"], "argument --trials: expected a positive integer"),
        (["--methods", "sgd"], "argument --methods: invalid choice"),
        (["--precision", "fp16"], "argument --precision: invalid choice"),
    ],
)
def test_cli_reproduce_nn_rejects_bad_options(argv, message, capsys):
    from manifold_spectral import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "nn", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
