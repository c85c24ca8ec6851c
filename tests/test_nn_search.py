"""The hyper-parameter search of the NN comparison (``run_quality``): the stratified draws put
one draw in each log-stratum of every knob's range, and the refinement rounds after them
bisect the log learning rate around the best run so far, at the same budget for every method.

The training runs are replaced by a known loss of the learning rate, so the search's choices
can be computed here by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manifold_spectral.experiments.nn_training import OPTIMIZERS, training
from manifold_spectral.experiments.nn_training.training import Run, run_quality

TINY = {"mlp": {"d_in": 8, "width": 16, "batch": 8, "eval_size": 64}}


def _fake_train(optimum: dict[str, float], diverge: set[str] = frozenset()):
    """A ``train`` whose final loss is the squared distance in decades of the lr to the
    method's ``optimum`` (``inf`` for the methods in ``diverge``)."""

    def train(task, method, hp, seed, steps, **kw):
        final = math.inf if method in diverge else math.log10(hp["lr"] / optimum[method]) ** 2
        z = np.zeros(steps)
        return Run(method, dict(hp), seed, z, z, [steps], [final], final)

    return train


@pytest.mark.parametrize("trials", [3, 6])
def test_draws_fill_one_log_stratum_each(trials):
    for name, spec in OPTIMIZERS.items():
        draws = spec.sample(np.random.default_rng(7), trials)
        assert len(draws) == trials, name
        for knob, (lo, hi) in spec.space.items():
            pos = [math.log(d[knob] / lo) / math.log(hi / lo) for d in draws]
            assert sorted(math.floor(p * trials) for p in pos) == list(range(trials)), (name, knob)


@pytest.mark.parametrize("refine", [0, 1, 3])
def test_refinement_bisects_the_log_lr_around_the_best_run(monkeypatch, refine):
    methods = ["adamw", "muon", "spectral-p2"]
    # optima inside each range, between draws, so that the rounds have somewhere to go
    optimum = {"adamw": 2.1e-3, "muon": 0.047, "spectral-p2": 6.3e-4}
    monkeypatch.setattr(training, "train", _fake_train(optimum))
    trials = 4
    out = run_quality(
        tasks=["mlp"], methods=methods, ablations=False, trials=trials, refine=refine,
        steps=3, seeds=[1, 2], precision="fp32", task_kw=TINY, progress=False,
    )  # fmt: skip
    t = out.tasks[0]
    assert out.refine == refine
    for m in methods:
        runs = t.trials[m]
        assert len(runs) == trials + 2 * refine, m  # the same budget for every method
        lo, hi = OPTIMIZERS[m].space["lr"]
        decades = math.log10(hi / lo)
        best = min(runs[:trials], key=lambda r: r.final).hp
        for r in range(1, refine + 1):
            step = decades / trials / 2**r  # half a stratum, then halved every round
            below, above = runs[trials + 2 * r - 2], runs[trials + 2 * r - 1]
            assert below.hp["lr"] == pytest.approx(best["lr"] * 10**-step, rel=1e-12), (m, r)
            assert above.hp["lr"] == pytest.approx(best["lr"] * 10**step, rel=1e-12), (m, r)
            # the other knobs stay at the best run's
            assert {k: v for k, v in below.hp.items() if k != "lr"} == {
                k: v for k, v in best.items() if k != "lr"
            }
            best = min([*runs[:trials], *runs[trials : trials + 2 * r]], key=lambda x: x.final).hp
        assert t.best[m] == best
        assert all(s.hp == best for s in t.runs[m])  # the seeds re-run the best trial
        if refine == 3:  # three rounds land within the last round's step of the optimum
            err = abs(math.log10(best["lr"] / optimum[m]))
            assert err <= decades / trials / 2**refine + 1e-12, (m, err)


def test_refinement_skips_a_method_whose_draws_all_diverged(monkeypatch):
    monkeypatch.setattr(
        training, "train", _fake_train({"adamw": 1e-3, "soap": 1e-3}, diverge={"soap"})
    )
    out = run_quality(
        tasks=["mlp"], methods=["adamw", "soap"], ablations=False, trials=3, refine=2,
        steps=3, seeds=[1], precision="fp32", task_kw=TINY, progress=False,
    )  # fmt: skip
    t = out.tasks[0]
    assert len(t.trials["soap"]) == 3 and t.best["soap"] is None and t.runs["soap"] == []
    assert len(t.trials["adamw"]) == 3 + 4 and t.best["adamw"] is not None
