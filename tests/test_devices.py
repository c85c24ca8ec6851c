"""``device=`` of the reproductions that use torch reaches the torch objects (issue 16, item 4):
spies record the ``device`` each state is built with; with CUDA the tiny runs also run there
and agree with the CPU where the numbers are drawn on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral.experiments import curvature as cv
from manifold_spectral.experiments import curvature_kronecker as ck
from manifold_spectral.experiments import nes as ex_nes

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def spy(monkeypatch, module, name: str) -> list:
    """Replace ``module.name`` (a class) by a wrapper recording its ``device`` keyword."""
    seen: list = []
    cls = getattr(module, name)

    def build(*args, **kw):
        seen.append(kw.get("device"))
        return cls(*args, **kw)

    monkeypatch.setattr(module, name, build)
    return seen


def test_curvature_states_on_the_device(monkeypatch):
    spectral, chol = spy(monkeypatch, cv, "SpectralSPD"), spy(monkeypatch, cv, "CholeskyCurvature")
    cv.run_full_matrix(n=4, steps=3, beta2=0.1, progress=False, w2=False, device="cpu")
    assert spectral == ["cpu"] and chol == ["cpu"]


def test_kronecker_states_on_the_device(monkeypatch):
    names = ("KroneckerSpectralSPD", "KroneckerCholeskyCurvature", "KroneckerProjection")
    seen = [spy(monkeypatch, ck, n) for n in names]
    ck.run_kronecker(a=2, b=3, steps=3, beta2=0.1, progress=False, w2=False, device="cpu")
    assert seen == [["cpu"], ["cpu"], ["cpu"]]


@pytest.mark.parametrize(
    "method,cls", [("spectral", "NES"), ("xnes", "XNES"), ("cholesky", "CholeskyNES")]
)
def test_nes_states_on_the_device(monkeypatch, method, cls):
    seen = spy(monkeypatch, ex_nes, cls)
    ex_nes.run_method(method, "ackley", 4, seed=0, max_evals=40, device="cpu")
    assert seen == ["cpu"]


def test_bbob_nes_on_the_device(monkeypatch):
    pytest.importorskip("cocoex")
    from manifold_spectral.experiments import bbob
    from manifold_spectral.solvers import nes

    seen = []
    real = nes.minimize
    monkeypatch.setattr(
        nes, "minimize", lambda *a, **kw: seen.append(kw["device"]) or real(*a, **kw)
    )
    bbob.run_one(("nes", 1, 2, 1, 20.0), device="cpu")
    assert seen == ["cpu"]


@CUDA
def test_tiny_runs_on_cuda_match_the_cpu():
    kw = dict(n=6, steps=20, beta2=0.1, progress=False, w2=False)
    cpu, gpu = cv.run_full_matrix(**kw), cv.run_full_matrix(**kw, device="cuda")
    for name in cpu.fixed_point:  # the same stream, float64: equal up to rounding
        np.testing.assert_allclose(gpu.fixed_point[name], cpu.fixed_point[name], rtol=1e-8)
    kw = dict(a=2, b=3, steps=20, beta2=0.1, progress=False, w2=False)
    cpu, gpu = ck.run_kronecker(**kw), ck.run_kronecker(**kw, device="cuda")
    for name in cpu.fixed_point:
        np.testing.assert_allclose(gpu.fixed_point[name], cpu.fixed_point[name], rtol=1e-6)
    run = ex_nes.run_method("spectral", "ackley", 6, seed=0, max_evals=2000, device="cuda")
    assert np.isfinite(run.final) and run.final < run.fbest[0]


def test_nn_train_moves_model_batches_and_state_to_the_device(monkeypatch):
    """``nn_training.train(device=...)`` sends every batch to the device (a wiring check on
    the CPU; the CUDA test below compares the runs)."""
    from manifold_spectral.experiments import nn_training as nt

    task = nt.TeacherTask(d_in=4, width=8, batch=8, eval_size=16)
    targets = []
    real_to = torch.Tensor.to

    def record(self, *a, **kw):
        if a and isinstance(a[0], str):
            targets.append(a[0])
        return real_to(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "to", record)
    nt.train(task, "adamw", {"lr": 1e-2, "1-beta2": 0.05}, 1, 4, precision="fp32", device="cpu")
    assert targets.count("cpu") >= 8  # x and y of each of the 4 batches


@CUDA
def test_nn_train_on_cuda_matches_the_cpu():
    from manifold_spectral.experiments import nn_training as nt

    task = nt.TeacherTask(d_in=4, width=8, batch=8, eval_size=16)
    hp = {"lr": 1e-2, "1-beta2": 0.05}
    cpu = nt.train(task, "adamw", hp, 1, 10, precision="fp32")
    gpu = nt.train(task, "adamw", hp, 1, 10, precision="fp32", device="cuda")
    np.testing.assert_allclose(gpu.eval_loss, cpu.eval_loss, rtol=1e-4)
