"""SPD curvature learning from a gradient stream (paper Sec. 4.1, Fig. 2 left, Fig. 7, App. B.1).

Setup (full matrix): a ground-truth SPD ``Sigma`` (n x n: a Haar-random rotation and
eigenvalues log-uniform over ``decades`` decades, seeded) and a stream ``g_k ~ N(0, Sigma)``,
one gradient per step. Three schemes learn ``S`` from the same stream and the same ``S0``,
with ``gamma = 1``:

* default:  ``S <- (1 - beta2) S + beta2 g g^T`` (``default_step``, paper Eq. (3));
* spectral: ``S = B Diag(d) B^T`` by RGD in local charts (``manifold_spectral.Gaussian``
  with the GOP, exact exponential and exact Cayley; Fig. 1 top box);
* Cholesky: ``S = (K K^T)^-1``, ``K <- K (I - beta2 Phi(K^T g g^T K - I))``
  (``manifold_spectral.baselines.CholeskyCurvature``, Lin et al. 2024).

Two measurements, both as relative Frobenius errors (and the Bures-Wasserstein distance
``W2(N(0, A), N(0, B))`` as a second metric, App. B.1):

* fixed-point matching: ``||S_k - Sigma||_F / ||Sigma||_F`` (``Sigma = E[g g^T]`` is the
  fixed point of the default scheme);
* iterate matching: ``||S_k - S_k^default||_F / ||S_k^default||_F``.

Initialisation ``S0``: NOT the identity. At repeated eigenvalues the spectral chart's metric
is singular (``C_ij = 0``), so the first rotation step from ``S0 = c I`` is zero and nearly
repeated ones give huge steps. The default ``init="random"`` draws an SPD matrix independent
of ``Sigma`` with distinct eigenvalues: a Haar rotation and eigenvalues log-uniform over one
decade around the geometric mean of ``Sigma``'s spectrum (so the initial fixed-point error is
of order one, as in Fig. 7). ``init="sample"`` uses the sample covariance of ``4 n`` extra
draws from ``N(0, Sigma)`` plus a ridge ``1e-3 tr(Sigma) / n`` (a warm start).

Evaluation happens at ``num_checkpoints`` log-spaced iterations (plus 0 and the last), so
its dense matrices, the triangular solve of the Cholesky scheme and the eigendecompositions
of the W2 metric stay off the update path and cheap.

The Kronecker variant (Fig. 2 right, Fig. 8, App. B.2) is ``run_kronecker`` in
``curvature_kronecker``: the same ``track`` loop, metrics, table and plot, with
Kronecker-structured schemes and the projection baseline.

Layout: the problem (``Sigma``, ``S0``, the stream, the default scheme) is
``curvature_problem``; ``Scheme``, the ``track`` loop, the metrics and ``CurvatureResult``
are ``curvature_track``; the tables are ``curvature_report`` and the figure
``curvature_plot``. This module builds the full-matrix schemes, runs them, and re-exports
the public names of the others.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .._threads import torch_threads
from ..baselines import CholeskyCurvature
from ..gaussian import GOP, Gaussian
from ..linalg import orthogonality_error
from ..manifolds import SpectralSPD
from .curvature_plot import SCHEME_STYLE, plot  # noqa: F401 (re-exported)
from .curvature_problem import (
    _check_int,
    _check_run_args,
    _generators,
    default_step,
    default_steps,
    gradient_stream,
    ground_truth,
    initial_matrix,
)
from .curvature_report import csv_tables, format_table
from .curvature_track import CurvatureResult, Scheme, bures_wasserstein, log_checkpoints, track

__all__ = [
    "CurvatureResult",
    "Scheme",
    "default_step",
    "ground_truth",
    "initial_matrix",
    "bures_wasserstein",
    "log_checkpoints",
    "track",
    "run_full_matrix",
    "format_table",
    "csv_tables",
    "plot",
]


def run_full_matrix(
    n: int = 100,
    steps: int | None = None,
    beta2: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    progress: bool = True,
    *,
    init: str = "random",
    decades: float = 2.0,
    num_checkpoints: int = 60,
    w2: bool = True,
    num_threads: int | None = 1,
    device: Any = None,
) -> CurvatureResult:
    """Full-matrix fixed-point and iterate matching (paper Sec. 4.1, Fig. 2 left, Fig. 7).

    Args:
        n: matrix size (paper: 100).
        steps: number of gradients; default ``default_steps`` (``10 / beta2``), enough
            for the default scheme to reach its stationary noise level.
        beta2: step size of every scheme, in (0, 1). Smaller values average more gradients
            (stationary relative error of the default scheme ``~ sqrt(beta2 (r + 1) / 2)``,
            ``r = tr(Sigma)^2 / ||Sigma||_F^2`` the effective rank of ``Sigma``, between 1 and
            ``n``) and keep every scheme in its first-order regime. The Cholesky scheme's
            fixed point carries a second-order bias: at stationarity
            ``E[K^T g g^T K] - I ~ beta2 E[A A^T]``, whose i-th diagonal entry is about
            ``beta2 i``, i.e. a relative bias ``~ beta2 n / 2``.
        seed: seeds ``Sigma``, ``S0`` and the stream through independent generators.
        dtype: dtype of the schemes' states and updates (evaluation is in float64).
        progress: tqdm progress bar (stderr).
        init: ``"random"`` or ``"sample"`` (see the module docstring).
        decades: spread of ``Sigma``'s log-uniform spectrum.
        num_checkpoints: about this many log-spaced evaluation points.
        w2: also record the Bures-Wasserstein distance.
        num_threads: torch intra-op threads during the run (restored afterwards); one thread
            is fastest for matrices this small. ``None`` leaves torch's setting.
        device: where the schemes run (default CPU). ``Sigma``, ``S0`` and the stream are
            drawn on the CPU and moved, so every device sees the same numbers.
    """
    n = _check_int(n, "n")
    beta2, seed, num_checkpoints = _check_run_args(beta2, seed, num_checkpoints, decades, dtype)
    steps = default_steps(beta2) if steps is None else _check_int(steps, "steps")

    start = time.perf_counter()
    with torch_threads(num_threads):
        gen_sigma, gen_init, gen_stream = _generators(seed, 3)
        Q, lam = ground_truth(n, float(decades), gen_sigma)
        Sigma = (Q * lam[None, :]) @ Q.T
        S0 = initial_matrix(init, Q, lam, gen_init).to(device)
        Sigma = Sigma.to(device)

        manifold = SpectralSPD(n, dtype=dtype, device=device)
        gauss = Gaussian(
            manifold,
            beta1=1.0,
            beta2=beta2,
            gamma=1.0,
            root=2.0,
            exponential="exact",
            cayley="exact",
        )
        chol = CholeskyCurvature(n, dtype=dtype, device=device)
        schemes = [
            Scheme(
                "default",
                lambda S: S.to(dtype),
                lambda S, g: default_step(S, g, beta2),
                lambda S: S,
            ),
            Scheme(
                "spectral",
                manifold.from_matrix,
                lambda x, g: gauss.precision_step(x, GOP(g)),
                manifold.to_matrix,
            ),
            Scheme(
                "cholesky", chol.from_matrix, lambda K, g: chol.step(K, g, beta2), chol.to_matrix
            ),
        ]
        checkpoints = log_checkpoints(steps, num_checkpoints)
        h = track(
            schemes,
            "default",
            Sigma,
            S0,
            gradient_stream(Q, lam, steps, gen_stream, dtype, device=device),
            steps,
            checkpoints,
            w2=w2,
            progress=progress,
            desc=f"curvature n={n} beta2={beta2:g}",
        )
        B = h.states["spectral"].B.to(torch.float64)
        ortho = float(orthogonality_error(B))
        if "spectral" in h.diverged:
            ortho = float("nan")

    return CurvatureResult(
        structure="full",
        n=n,
        steps=steps,
        beta2=beta2,
        gamma=1.0,
        seed=seed,
        dtype=str(dtype).replace("torch.", ""),
        init=init,
        decades=float(decades),
        iterations=checkpoints,
        **h.result_fields(),
        orthogonality_error=ortho,
        wall_time=time.perf_counter() - start,
    )
