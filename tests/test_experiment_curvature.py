"""Sec. 4.1 curvature-learning experiment (fixed-point / iterate matching) and its CLI.

Thresholds come from measurements (n = 10, seed 0 .. 5; see the comments) with margin, and
each one is shown to reject a broken scheme: the spectral scheme with its rotation update
removed (only ``d`` moves, in the initial basis).
"""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import manifold_spectral as ms
from manifold_spectral import cli
from manifold_spectral.experiments import curvature as cv

N = 10


@pytest.fixture(scope="module")
def run_fixed_point():
    # beta2 = 0.01, 500 steps (5 time constants): long enough for the default scheme to reach
    # its stationary noise and for ours to halve its initial fixed-point error and end within
    # 1.5x of the default's (``_fixed_point_ok``).
    return cv.run_full_matrix(n=N, steps=500, beta2=0.01, seed=0, progress=False)


@pytest.fixture(scope="module")
def run_iterate():
    # beta2 = 0.001, 400 steps: small enough a step that both schemes stay in their first-order
    # regime and follow the default's iterates (the bound of ``test_iterate_matching``).
    return cv.run_full_matrix(n=N, steps=400, beta2=0.001, seed=0, progress=False, w2=False)


def _frozen_basis_histories(beta2, steps, seed=0):
    """The negative control: spectral eigenvalue update without the rotation update."""
    gen_sigma, gen_init, gen_stream = cv._generators(seed, 3)
    Q, lam = cv.ground_truth(N, 2.0, gen_sigma)
    Sigma = (Q * lam) @ Q.T
    S0 = cv.initial_matrix("random", Q, lam, gen_init)
    M = ms.SpectralSPD(N, dtype=torch.float64)

    def frozen(x, g):
        q = x.B.T @ g
        return ms.SpectralPoint(x.B, x.d * torch.exp(beta2 * (q * q / x.d - 1.0)))

    schemes = [
        cv.Scheme("default", lambda S: S, lambda S, g: cv.default_step(S, g, beta2), lambda S: S),
        cv.Scheme("frozen", M.from_matrix, frozen, M.to_matrix),
    ]
    stream = cv.gradient_stream(Q, lam, steps, gen_stream, torch.float64)
    return cv.track(
        schemes, "default", Sigma, S0, stream, steps, cv.log_checkpoints(steps, 30), w2=False
    )


def _fixed_point_ok(fp_scheme, fp_default):
    return fp_scheme[-1] < 0.5 * fp_scheme[0] and fp_scheme[-1] < 1.5 * fp_default[-1]


def test_fixed_point_matching(run_fixed_point):
    r = run_fixed_point
    fp = r.fixed_point
    assert set(fp) == {"default", "spectral", "cholesky"}
    assert fp["spectral"][0] == pytest.approx(fp["default"][0])  # same S0
    for scheme in ("spectral", "cholesky"):
        assert _fixed_point_ok(fp[scheme], fp["default"]), (scheme, fp[scheme][-1])
    # The negative control fails the same check: without the rotation update the eigenbasis
    # stays that of S0, and no eigenvalue update alone reaches Sigma.
    h = _frozen_basis_histories(0.01, 500)
    assert not _fixed_point_ok(h.fixed_point["frozen"], h.fixed_point["default"])


def test_iterate_matching(run_iterate):
    it = run_iterate.iterate
    assert set(it) == {"spectral", "cholesky"}
    assert it["spectral"].max() < 0.04
    assert it["cholesky"].max() < 0.04
    # Negative control: without the rotation update the iterates leave the default's (the
    # same bound fails).
    h = _frozen_basis_histories(0.001, 400)
    assert max(h.iterate["frozen"]) > 0.04


def test_result_shape_and_diagnostics(run_fixed_point):
    r = run_fixed_point
    its = r.iterations
    assert its[0] == 0 and its[-1] == r.steps == 500
    assert np.all(np.diff(its) > 0)
    assert {1, 10, 100}.issubset(set(its.tolist()))
    for hist in (
        *r.fixed_point.values(),
        *r.iterate.values(),
        *r.fixed_point_w2.values(),
        *r.iterate_w2.values(),
    ):
        assert hist.shape == its.shape and np.all(np.isfinite(hist))
    assert set(r.fixed_point_w2) == {"default", "spectral", "cholesky"}
    assert r.diverged == {}
    assert r.orthogonality_error < 1e-10
    assert r.iterate["spectral"][0] < 1e-10 and r.iterate["cholesky"][0] < 1e-10


def test_seeded_and_deterministic(run_iterate):
    again = cv.run_full_matrix(n=N, steps=400, beta2=0.001, seed=0, progress=False, w2=False)
    np.testing.assert_array_equal(
        again.fixed_point["spectral"], run_iterate.fixed_point["spectral"]
    )
    other = cv.run_full_matrix(n=N, steps=20, beta2=0.001, seed=1, progress=False, w2=False)
    assert other.fixed_point["default"][0] != run_iterate.fixed_point["default"][0]


def test_divergence_is_recorded_not_raised():
    # beta2 = 0.5 is far outside the Cholesky scheme's first-order regime (its K overflows
    # within the 60 steps); the run goes on and reports it.
    r = cv.run_full_matrix(n=N, steps=60, beta2=0.5, seed=0, progress=False, w2=False)
    assert "cholesky" in r.diverged
    assert np.isnan(r.fixed_point["cholesky"][-1]) and np.isfinite(r.fixed_point["spectral"][-1])
    assert "cholesky: diverged at iteration" in cv.format_table(r)


def test_table_and_plot(run_fixed_point, tmp_path):
    text = cv.format_table(run_fixed_point)
    assert "relative Frobenius error" in text and "Wasserstein-2 distance" in text
    rows = [ln.split()[0] for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert rows == ["1", "10", "100", "500"] * 2
    path = tmp_path / "fig.png"
    cv.plot(run_fixed_point, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_step_and_bures_wasserstein():
    S = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    G = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    H = G.T @ G / 2
    torch.testing.assert_close(cv.default_step(S, G, 0.1), 0.9 * S + 0.1 * H)
    torch.testing.assert_close(cv.default_step(S, G, 0.1, gamma=0.0), S + 0.1 * H)
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    A, B = torch.diag(a).double(), torch.diag(b).double()
    # Commuting matrices: W2 = ||sqrt(a) - sqrt(b)||.
    assert cv.bures_wasserstein(A, B) == pytest.approx(math.sqrt(1 + 0 + 4))
    assert cv.bures_wasserstein(A, A) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n"),
        ({"beta2": -1.0}, "beta2"),
        ({"beta2": 1.0}, "beta2"),
        ({"steps": 0}, "steps"),
        ({"seed": -1}, "seed"),
        ({"init": "identity"}, "init"),
    ],
)
def test_run_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cv.run_full_matrix(**{"n": 4, "steps": 5, "progress": False, **kwargs})


def test_default_steps_and_progress_bar(capsys):
    assert cv.default_steps(1e-3) == 10_000
    r = cv.run_full_matrix(n=4, steps=30, beta2=0.1, progress=True, w2=False)
    assert r.steps == 30
    assert torch.get_num_threads() >= 1


# CLI -----------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "res"
    rc = cli.main(
        [
            "reproduce",
            "curvature",
            "--n",
            "6",
            "--steps",
            "40",
            "--beta2",
            "0.02",
            "0.01",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert text.count("relative Frobenius error") == 2
    assert "beta2=0.02" in text and "beta2=0.01" in text and "wall time (curvature)" in text
    assert (out / "curvature_full.png").read_bytes()[:4] == b"\x89PNG"
    assert "fixed-point spectral" in (out / "curvature_full.txt").read_text()


def test_cli_reproduce_all_uses_quick_defaults(tmp_path, capsys, reproductions):
    for name in list(reproductions):
        if name != "curvature":  # the other reproductions' quick runs are tested elsewhere
            del reproductions[name]
    tiny = {"n": 5, "steps": 30, "beta2": [0.05]}
    reproductions["curvature"] = dataclasses.replace(reproductions["curvature"], quick=tiny)
    assert cli.main(["reproduce", "all", "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "n=5, beta2=0.05" in text and "wall time (all)" in text
    assert (tmp_path / "curvature_full.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "0"], "argument --n: expected a positive integer"),
        (["--beta2", "-1"], "argument --beta2: expected a number in (0, 1)"),
        (["--beta2", "1.5"], "argument --beta2: expected a number in (0, 1)"),
        (["--steps", "ten"], "argument --steps: expected a positive integer"),
        (["--seed", "-3"], "argument --seed: expected an integer in [0, 2147483647]"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "curvature", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_unknown_experiment_and_runtime_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "nope"])
    assert exc.value.code == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = cli.main(
        [
            "reproduce",
            "curvature",
            "--n",
            "3",
            "--steps",
            "3",
            "--out",
            str(blocker),
            "--no-progress",
        ]
    )
    assert rc == 1
    assert "manifold-spectral: error:" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "manifold_spectral", "reproduce", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "curvature" in proc.stdout
