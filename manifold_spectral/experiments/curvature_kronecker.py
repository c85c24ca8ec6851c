"""Kronecker-structured curvature learning (paper Sec. 4.1, Fig. 2 right, Fig. 8, App. B.2).

Setup: the ground truth ``Sigma`` is an *unstructured* SPD (ab x ab) matrix drawn as in the
full-matrix experiment (``curvature.ground_truth``: Haar rotation, log-uniform spectrum over
``decades``), and the stream is ``g_k ~ N(0, Sigma)``, one gradient ``G_k = Mat(g_k)``
(a x b, row-major) per step. Every scheme starts from the same Kronecker-structured ``S0``
(see ``initial_kronecker``) and uses ``gamma = 1``:

* ``default``: the full-matrix moving average ``S <- (1 - beta2) S + beta2 g g^T``, the
  reference (unstructured; its fixed point is ``Sigma``);
* ``spectral``: ours, ``S = alpha (S_L kron S_R)`` with spectral unit-determinant factors,
  exact RGD (``KroneckerSpectralSPD`` + ``Gaussian``, ``exponential="exact"``; Fig. 1
  bottom box);
* ``spectral practical``: ours with the truncated exponential (Fig. 6 right);
* ``cholesky``: the inverse-free Kronecker Cholesky-factor scheme
  (``baselines.KroneckerCholeskyCurvature``, Lin et al. 2023/2024);
* ``projection``: the impractical ``Proj((1 - beta2) S_L kron S_R + beta2 g g^T)`` with the
  nearest Kronecker product (``baselines.KroneckerProjection``, Van Loan & Pitsianis).

Measurements (as in the full case): fixed-point matching ``||S_k - Sigma||_F / ||Sigma||_F``
and iterate matching ``||S_k - S_k^default||_F / ||S_k^default||_F``, plus the
Bures-Wasserstein distance. A Kronecker-structured scheme cannot reach 0 in either; two
floors are reported with the table:

* the Frobenius-nearest Kronecker product ``NKP(Sigma)``, the smallest possible fixed-point
  error; the projection scheme's stationary point is, to first order in ``beta2``, this one;
* the Kronecker point ``S*`` where the affine-invariant (Fisher) projection of ``Sigma - S*``
  vanishes, ``S*_L = E[G S*_R^-1 G^T] / b``, ``S*_R = E[G^T S*_L^-1 G] / a`` (flip-flop, the
  matrix-normal maximum-likelihood equations): the fixed point of the spectral and Cholesky
  schemes, whose steps are Fisher natural gradients. Its Frobenius error is at least that of
  ``NKP(Sigma)``.

``format_table`` and ``plot`` are the full-matrix experiment's (re-exported here).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from .._threads import torch_threads
from ..baselines import KroneckerCholeskyCurvature, KroneckerProjection, nearest_kronecker
from ..gaussian import GOP, Gaussian
from ..linalg import haar_orthogonal, orthogonality_error
from ..manifolds import KroneckerSpectralSPD
from .curvature_plot import plot
from .curvature_problem import (
    _check_int,
    _check_run_args,
    _generators,
    default_step,
    default_steps,
    gradient_stream,
    ground_truth,
)
from .curvature_report import format_table
from .curvature_track import CurvatureResult, Scheme, _relative_frobenius, log_checkpoints, track

__all__ = [
    "KroneckerCurvatureResult",
    "MAX_DEFAULT_STEPS",
    "kronecker_default_steps",
    "initial_kronecker",
    "flip_flop",
    "kronecker_schemes",
    "run_kronecker",
    "format_table",
    "plot",
]

#: Cap of the default number of steps: ten time constants ``10 / beta2`` up to this many (the
#: two spectral steps and the SVD of the projection baseline dominate a step), so
#: ``beta2 = 0.001`` runs five time constants instead of ten.
MAX_DEFAULT_STEPS = 5000


def kronecker_default_steps(beta2: float) -> int:
    """``min(10 / beta2, MAX_DEFAULT_STEPS)`` (see ``MAX_DEFAULT_STEPS``)."""
    return min(default_steps(beta2), MAX_DEFAULT_STEPS)


@dataclasses.dataclass
class KroneckerCurvatureResult(CurvatureResult):
    """``CurvatureResult`` of a Kronecker run (``n = a b``), with the two reference floors.

    ``nkp_error``: ``||NKP(Sigma) - Sigma||_F / ||Sigma||_F``, the best Kronecker fixed-point
    error; ``fisher_projection_error``: the same for the flip-flop point ``S*`` (module
    docstring), the fixed point of the natural-gradient schemes.
    ``orthogonality_error``: the largest ``||B_l^T B_l - I||_F`` of both spectral schemes.
    """

    a: int
    b: int
    nkp_error: float
    fisher_projection_error: float

    @property
    def size_label(self) -> str:
        return f"n={self.n} ({self.a} x {self.b})"

    def fixed_point_floors(self) -> dict[str, float]:
        return {"NKP($\\Sigma$)": self.nkp_error}

    def notes(self) -> list[str]:
        return [
            f"floors: nearest Kronecker product of Sigma {self.nkp_error:.4g}; "
            f"Fisher projection (flip-flop) of Sigma {self.fisher_projection_error:.4g}"
        ]


def initial_kronecker(
    init: str, a: int, b: int, Q: Tensor, lam: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The common Kronecker-structured ``S0 = S_L kron S_R`` as its two factors (float64).

    ``"random"``: each factor is a Haar rotation with eigenvalues log-uniform over half a
    decade (so the product spans about one decade, like the full case's ``S0``), normalised
    to determinant one, and ``S_L`` is scaled by the geometric mean of ``Sigma``'s spectrum.
    Eigenvalues are distinct, which the spectral chart needs (its rotation metric vanishes at
    repeated eigenvalues). ``"sample"``: the nearest Kronecker product of the sample
    covariance of ``4 a b`` extra draws from ``N(0, Sigma)`` plus a ridge
    ``1e-3 tr(Sigma) / (a b)`` (a warm start).
    """
    if init == "random":
        factors = []
        for size in (a, b):
            U = haar_orthogonal(size, generator=generator)
            logd = 0.5 * torch.rand(size, generator=generator, dtype=torch.float64)
            d = 10.0 ** (logd - logd.mean())
            factors.append((U * d[None, :]) @ U.T)
        S_L, S_R = factors
        S_L = torch.exp(torch.log(lam).mean()) * S_L
    elif init == "sample":
        n = a * b
        Z = torch.randn(4 * n, n, generator=generator, dtype=torch.float64)
        X = (Z * lam.sqrt()[None, :]) @ Q.T
        S = X.T @ X / X.shape[0] + 1e-3 * lam.mean() * torch.eye(n, dtype=torch.float64)
        S_L, S_R = nearest_kronecker(0.5 * (S + S.T), a, b)
    else:
        raise ValueError(f"init: expected 'random' or 'sample', got {init!r}")
    return 0.5 * (S_L + S_L.T), 0.5 * (S_R + S_R.T)


def flip_flop(Sigma: Tensor, a: int, b: int, iterations: int = 100) -> Tensor:
    """The Kronecker ``S* = S_L kron S_R`` solving ``S_L = E_L / b``, ``S_R = E_R / a`` with
    ``E_L[i,l] = sum_jk Sigma[(i,j),(l,k)] S_R^-1[j,k]`` and
    ``E_R[j,k] = sum_il Sigma[(i,j),(l,k)] S_L^-1[i,l]`` (alternating; evaluation only).

    These are the stationarity conditions ``E[H_K] = b I``, ``E[H_C] = a I`` of the
    Kronecker natural-gradient schemes for ``E[g g^T] = Sigma``.
    """
    S4 = Sigma.reshape(a, b, a, b)
    S_R = torch.eye(b, dtype=Sigma.dtype)
    for _ in range(iterations):
        # Evaluation only: the ground-truth Kronecker fixed point, computed once per run.
        S_L = torch.einsum("ijlk,jk->il", S4, torch.linalg.inv(S_R)) / b  # evaluation only
        S_R = torch.einsum("ijlk,il->jk", S4, torch.linalg.inv(S_L)) / a  # evaluation only
    return torch.kron(0.5 * (S_L + S_L.T), 0.5 * (S_R + S_R.T))


def kronecker_schemes(
    a: int, b: int, beta2: float, dtype: torch.dtype, device: Any = None
) -> list[Scheme]:
    """The five schemes of the experiment (module docstring), each initialised from a dense
    Kronecker-structured ``S0`` (by a nearest Kronecker product, exact up to rounding), with
    their states on ``device`` (default CPU)."""
    manifold = KroneckerSpectralSPD(a, b, dtype=dtype, device=device)
    exact, practical = (
        Gaussian(manifold, beta2=beta2, gamma=1.0, exponential=e, cayley="exact")
        for e in ("exact", "truncated")
    )
    chol = KroneckerCholeskyCurvature(a, b, dtype=dtype, device=device)
    proj = KroneckerProjection(a, b, dtype=dtype, device=device)
    schemes = [
        Scheme(
            "default", lambda S: S.to(dtype), lambda S, g: default_step(S, g, beta2), lambda S: S
        ),
        Scheme(
            "spectral",
            manifold.from_matrix,
            lambda x, g: exact.precision_step(x, GOP(g, damping=0.0)),
            manifold.to_matrix,
        ),
        Scheme(
            "spectral practical",
            manifold.from_matrix,
            lambda x, g: practical.precision_step(x, GOP(g, damping=0.0)),
            manifold.to_matrix,
        ),
        Scheme("cholesky", chol.from_matrix, lambda s, g: chol.step(s, g, beta2), chol.to_matrix),
        Scheme("projection", proj.from_matrix, lambda s, g: proj.step(s, g, beta2), proj.to_matrix),
    ]
    return schemes


def _orthogonality(x: Any) -> float:
    """The larger ``||B_l^T B_l - I||_F`` of a Kronecker spectral point's two factors."""
    return float(max(orthogonality_error(p.B.to(torch.float64)) for p in (x.left, x.right)))


def run_kronecker(
    a: int = 9,
    b: int = 11,
    steps: int | None = None,
    beta2: float = 1e-2,
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
) -> KroneckerCurvatureResult:
    """Kronecker fixed-point and iterate matching (paper Sec. 4.1, Fig. 2 right, Fig. 8).

    Args:
        a, b: factor sizes; ``S`` is (ab x ab) (paper: 9 and 11, ``S`` 99 x 99).
        steps: number of gradients; default ``kronecker_default_steps(beta2)``
            (``10 / beta2``, capped at ``MAX_DEFAULT_STEPS``).
        beta2: step size of every scheme, in (0, 1).
        seed: seeds ``Sigma``, ``S0`` and the stream through independent generators.
        dtype: dtype of the schemes' states and updates (evaluation is in float64).
        progress: tqdm progress bar (stderr).
        init: ``"random"`` or ``"sample"`` (``initial_kronecker``).
        decades: spread of ``Sigma``'s log-uniform spectrum.
        num_checkpoints: about this many log-spaced evaluation points.
        w2: also record the Bures-Wasserstein distance.
        num_threads: torch intra-op threads during the run (restored afterwards).
        device: where the schemes run (default CPU); ``Sigma``, ``S0``, the stream and the
            reference floors are computed on the CPU and moved (the same numbers anywhere).
    """
    a, b = _check_int(a, "a"), _check_int(b, "b")
    beta2, seed, num_checkpoints = _check_run_args(beta2, seed, num_checkpoints, decades, dtype)
    steps = kronecker_default_steps(beta2) if steps is None else _check_int(steps, "steps")
    if init not in ("random", "sample"):
        raise ValueError(f"init: expected 'random' or 'sample', got {init!r}")

    start = time.perf_counter()
    with torch_threads(num_threads):
        gen_sigma, gen_init, gen_stream = _generators(seed, 3)
        Q, lam = ground_truth(a * b, float(decades), gen_sigma)
        Sigma = (Q * lam[None, :]) @ Q.T
        S_L, S_R = initial_kronecker(init, a, b, Q, lam, gen_init)
        S0 = torch.kron(S_L, S_R)
        nkp_error = _relative_frobenius(torch.kron(*nearest_kronecker(Sigma, a, b)), Sigma)
        fisher_error = _relative_frobenius(flip_flop(Sigma, a, b), Sigma)

        schemes = kronecker_schemes(a, b, beta2, dtype, device)
        checkpoints = log_checkpoints(steps, num_checkpoints)
        h = track(
            schemes,
            "default",
            Sigma.to(device),
            S0.to(device),
            gradient_stream(Q, lam, steps, gen_stream, dtype, device=device),
            steps,
            checkpoints,
            w2=w2,
            progress=progress,
            desc=f"kronecker {a}x{b} beta2={beta2:g}",
        )
        spectral = ("spectral", "spectral practical")
        if h.diverged.keys() & set(spectral):
            ortho = float("nan")
        else:
            ortho = max(_orthogonality(h.states[nm]) for nm in spectral)

    return KroneckerCurvatureResult(
        structure="Kronecker-factored",
        n=a * b,
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
        a=a,
        b=b,
        nkp_error=nkp_error,
        fisher_projection_error=fisher_error,
    )
