"""Natural evolution strategies on the spectral manifold (paper Sec. 4.3, App. C, Fig. 9).

Gradient-free minimisation of ``l(w)`` with a Gaussian search distribution
``q = N(mu, S^-1)`` whose precision ``S = B Diag(d) B^T`` lives on ``SpectralSPD`` and is
learned by the generic Gaussian layer (``manifold_spectral.Gaussian``, ``gamma = 0``, root
``p = 1``, exact exponential) from a curvature estimate that uses function values only.

One generation (``NES.ask`` / ``NES.tell``):

    z_i ~ N(0, I)                      (mirrored pairs z, -z by default)
    w_i = mu + delta_i,  delta_i = B Diag(d^-1/2) z_i        (= S^-1/2 z_i in eigen-coordinates)
    u_i = rank utilities of l(w_i)     (best largest, sum u = 0; NaN/Inf ranked worst)
    H   = sum_i f_i (S delta_i delta_i^T S - S),  g = sum_i f_i S delta_i,  f_i = -u_i
    S  <- RGD step of the Gaussian layer with curvature H and beta2 = eta_B
    mu <- mu - beta1 S^-1 g = mu + eta_mu sum_i u_i delta_i     (beta1 = eta_mu, old S)

``H`` and ``g`` are the REINFORCE (Stein / Bonnet-Price) estimates of ``E_q[hess l]`` and
``E_q[grad l]`` with the shaped values ``f_i`` in place of ``l(w_i)`` (``REINFORCE``). In the
eigenbasis ``B^T H B = Diag(d^1/2) K Diag(d^1/2)`` with ``K = sum_i f_i (z_i z_i^T - I)``: no
dense ``S``, no inverse, no eigendecomposition, no matrix exponential per generation; the
precision moves by one chart step (``d <- d exp(.)``, ``B <- B Cayley(.)``).

Learning-rate mapping to xNES (Glasmachers et al. 2010). xNES keeps ``Sigma = A A^T`` and, for
the same ``z_i`` and utilities, with ``G = sum_i u_i (z_i z_i^T - I) = -K``,
``G_sigma = tr(G)/n``, ``G_B = G - G_sigma I``, updates
``A <- A expm(eta_sigma/2 G_sigma I + eta_B/2 G_B)``, so
``S_new = Sigma_new^-1 = A^-T (I - eta_sigma G_sigma I - eta_B G_B) A^-1 + O(eta^2)``.
The Gaussian layer's step is ``S_new = S + beta2 H + O(beta2^2)`` (DESIGN.md, Claim 2 with
``gamma = 0``), and with ``A = B Diag(d^-1/2)``, ``H = A^-T K A^-1``. Hence the two agree to
first order when

    beta1 = eta_mu,   beta2 = eta_B,   and the trace part of K is weighted by eta_sigma/eta_B,

i.e. ``REINFORCE(..., scale_weight=eta_sigma / eta_B)`` uses
``K' = K_B + (eta_sigma / eta_B) tr(K)/n I`` (coordinate-free:
``H' = H_B + r tr(S^-1 H)/n S``). The mean steps agree exactly (``mu + eta_mu A sum u z``).
``tests/test_solvers_nes.py`` checks the O(eta^2) agreement on one generation.

Techniques to save function evaluations (paper: "the techniques of Wierstra et al. (2008) and
Fukushima et al. (2011)"), and their defaults:

* rank-based fitness shaping (Wierstra et al. 2008; xNES utilities
  ``max(0, ln(lam/2 + 1) - ln i)``, normalised, minus ``1/lam``): **on** (always). It makes the
  search invariant to monotone transformations of ``l`` and bounds the step.
* mirrored sampling (``z, -z``; Brockhoff et al. 2010, used by DX-NES): **on**. It removes
  the odd-moment noise of the estimates at no cost.
* DX-NES distance-weighted utilities (Fukushima et al. 2011; the DX-NES-IC constants of
  Nomura & Ono 2021): while the evolution path says the distribution is *moving*, the
  positive utilities are multiplied by ``exp(alpha ||z_i||)`` (far good samples count more),
  which lets the mean travel and the distribution widen along the way: **on**.
* DX-NES movement-dependent learning rates: ``eta_sigma`` and ``eta_B`` depend on whether the
  evolution path ``p`` (in the symmetric whitened frame ``B z``, invariant to rotations of
  ``B`` inside near-repeated eigenvalues) is long (moving: ``eta_sigma = 1``), medium
  (stagnating) or short (converging): **on**. The xNES rates (``eta_sigma = eta_B =
  0.6 (3 + ln n) / (n sqrt(n))``) adapt the step size ~n times slower; with the DX-NES rates
  the step size adapts at CMA-ES speed (``manifold-spectral reproduce nes`` runs xNES with
  both).
* rank-one evolution-path term (CMA-ES's cumulation path ``p_c`` of the mean shift, in units
  of the geometric-mean standard deviation, applied while moving as in CR-FM-NES, Nomura &
  Ono 2022): **on**. It enters the same precision step as one more REINFORCE "sample"
  ``delta = s p_c`` (``s = det(Sigma)^(1/2n)``) with weight ``c1 / eta_B``
  (``c1 = 2 / ((n + 1.3)^2 + mu_eff)``, CMA-ES's value) and no trace part
  (``scale_weight = 0``: it shapes, it does not scale), summed with the sample estimate
  (``CurvatureSum``). It learns the direction of travel.
* importance mixing (Wierstra et al. 2008): **not implemented**. It reuses samples when
  consecutive distributions overlap, i.e. with small rates; with the DX-NES rates the
  distribution moves too far per generation for the reuse to pay.

With ``adaptive_rates=False, distance_weights=False, mirrored=False, rank_one=False`` the
driver is plain xNES in spectral coordinates.

NaN or Inf function values (and ``-inf``) are ranked worst, ties share the mean utility of
their ranks; such values never enter the state (the best point, the history and the
termination tests only see finite values), and if every value of a generation is non-finite
the utilities are all zero and the distribution does not move.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..gaussian import Curvature, Gaussian
from ..manifolds import SpectralManifold, SpectralPoint, SpectralSPD
from ..validation import check_dtype, check_tensor
from . import nes_step
from .nes_eval import _as_values, _check_flag, _check_mapper, _check_vectorized, run_optimizer
from .nes_stop import convergence_stops
from .result import OptimizeResult

__all__ = [
    "REINFORCE",
    "CurvatureSum",
    "rank_utilities",
    "utility_weights",
    "DXSchedule",
    "xnes_rate",
    "SearchDistribution",
    "SpectralSearch",
    "NESBase",
    "NES",
    "NESResult",
    "minimize",
]


# Curvature from function values ---------------------------------------------------------


class REINFORCE(Curvature):
    """REINFORCE / Stein estimate of ``E_q[hess l]`` for ``q = N(mu, S^-1)`` from values only.

    ``H = sum_i f_i (S delta_i delta_i^T S - S)`` and ``g = sum_i f_i S delta_i`` for samples
    ``w_i = mu + delta_i`` and values (or shaped values, e.g. minus rank utilities) ``f_i``;
    with ``sum f_i = 0`` the ``- S`` term is a control variate. ``H`` is indefinite in general
    (the exact exponential of the Gaussian layer handles it).

    ``eigenbasis`` returns ``B^T H B = Diag(d^1/2) K Diag(d^1/2)``, ``K = sum_i f_i (z_i z_i^T
    - I)``, ``z_i = Diag(d^1/2) B^T delta_i``: O(n^2 k) for k samples; no dense ``S``, no
    inverse. ``scale_weight`` r reweights the scale (trace) part:
    ``K' = K - tr(K)/n I + r tr(K)/n I`` (r = 1: the plain estimate; r = eta_sigma / eta_B:
    xNES's separate step-size learning rate, see the module docstring).

    Args:
        deltas: (k, n) displacements ``w_i - mu``.
        values: (k,) values ``f_i`` (lower is better).
        scale_weight: r >= 0.
    """

    def __init__(self, deltas: Tensor, values: Tensor, scale_weight: float = 1.0) -> None:
        check_tensor(deltas, "deltas")
        if deltas.ndim != 2:
            raise ValueError(f"deltas: expected shape (k, n), got {tuple(deltas.shape)}")
        check_tensor(values, "values", shape=(deltas.shape[0],), dtype=deltas.dtype)
        if not (math.isfinite(scale_weight) and scale_weight >= 0):
            raise ValueError(f"scale_weight: expected a finite number >= 0, got {scale_weight!r}")
        self.deltas = deltas
        self.values = values
        self.scale_weight = float(scale_weight)

    def _point(self, manifold: SpectralManifold, x: Any) -> SpectralPoint:
        if not isinstance(x, SpectralPoint):
            raise TypeError(
                "REINFORCE: expected a full-matrix SpectralPoint (SpectralSPD), "
                f"got {type(x).__name__}"
            )
        n = manifold.egrad_shape[0]
        check_tensor(
            self.deltas,
            "deltas",
            shape=(self.deltas.shape[0], n),
            dtype=manifold.dtype,
            device=manifold.device,
        )
        return x

    def whitened(self, manifold: SpectralManifold, x: Any) -> Tensor:
        """``z_i = Diag(d^1/2) B^T delta_i`` as a (k, n) tensor (eigen-coordinates of ``x``)."""
        x = self._point(manifold, x)
        return (self.deltas @ x.B) * x.d.sqrt()

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        z = self.whitened(manifold, x)
        f = self.values
        K = (z * f[:, None]).T @ z
        sq = (z * z).sum(1)
        n = z.shape[1]
        # tr(K) = sum f (|z|^2 - n); K - (sum f) I, then the trace part reweighted.
        tr = float((f * (sq - n)).sum())
        shift = -float(f.sum()) + (self.scale_weight - 1.0) * tr / n
        K = K + shift * torch.eye(n, dtype=K.dtype, device=K.device)
        sd = x.d.sqrt()
        return sd[:, None] * K * sd[None, :]

    def gradient(self, manifold: SpectralManifold, x: Any) -> Tensor:
        """``g = S sum_i f_i delta_i`` (the REINFORCE estimate of ``E_q[grad l]``), (n,)."""
        x = self._point(manifold, x)
        return manifold.apply_power(x, self.values @ self.deltas, 1.0)


class CurvatureSum(Curvature):
    """The sum of several curvature estimates (in the eigenbasis)."""

    def __init__(self, parts: list[Curvature]) -> None:
        self.parts = list(parts)

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        out = self.parts[0].eigenbasis(manifold, x)
        for part in self.parts[1:]:
            out = out + part.eigenbasis(manifold, x)
        return out


def rank_utilities(
    values: Any, base: np.ndarray | None = None, *, center: bool = True
) -> np.ndarray:
    """xNES rank utilities of ``values`` (minimisation): best largest, summing to zero.

    ``u_(i) = max(0, ln(k/2 + 1) - ln i) / sum - 1/k`` for rank i (1 = best). Non-finite values
    (NaN, +inf, -inf) are ranked worst; tied values (including all non-finite ones) share the
    mean utility of their ranks, so a generation of equal values gets zero utilities.
    ``base`` overrides the per-rank utilities (length k, sorted best first); ``center=False``
    skips the final mean subtraction (for non-centred weights such as DX-NES's ``w_hat``).
    """
    v = np.asarray(values, dtype=np.float64)
    k = v.shape[0]
    if base is None:
        base = utility_weights(k)[1]
    order = np.argsort(v, kind="stable")
    sv = v[order].tolist()  # Python floats: cheaper than numpy calls on ~10 values
    u = np.empty(k)
    # Finite ends of a strictly increasing sequence: all finite (NaN sorts last), no ties
    # (the common case; the same order as after mapping non-finite values to +inf).
    if math.isfinite(sv[0]) and math.isfinite(sv[-1]) and all(map(float.__lt__, sv, sv[1:])):
        u[order] = base
    else:
        v = v.copy()
        v[~np.isfinite(v)] = np.inf
        order = np.argsort(v, kind="stable")
        sv = v[order]
        _, inverse, counts = np.unique(sv, return_inverse=True, return_counts=True)
        u[order] = (np.bincount(inverse, weights=base) / counts)[inverse]
    # u.sum() / k is np.mean (add.reduce, then one division) without its Python overhead.
    return u - u.sum() / k if center else u  # exact zero sum; exact zeros for all-tied values


def utility_weights(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(w_hat, u)`` per rank: ``w_hat_i = max(0, ln(k/2 + 1) - ln i)`` and the utilities
    ``u = w_hat / sum(w_hat) - 1/k``."""
    w_hat = np.maximum(0.0, math.log(k / 2 + 1) - np.log(np.arange(1, k + 1)))
    return w_hat, w_hat / w_hat.sum() - 1.0 / k


# Learning-rate schedules ------------------------------------------------------------------


def xnes_rate(n: int) -> float:
    """xNES default ``eta_sigma = eta_B = 0.6 (3 + ln n) / (n sqrt(n))`` (Glasmachers 2010)."""
    return 0.6 * (3.0 + math.log(n)) / (n * math.sqrt(n))


def _h_inv(n: int) -> float:
    """Root ``a > 0`` of ``(1 + a^2) exp(a^2/2) / 0.24 - 10 - n`` (DX-NES-IC distance scale)."""
    a = 1.0
    for _ in range(100):
        e = math.exp(a * a / 2)
        fa = (1 + a * a) * e / 0.24 - 10 - n
        a_new = a - fa / (a * e * (3 + a * a) / 0.24)
        if abs(a_new - a) < 1e-12:
            return a_new
        a = a_new
    return a


@dataclasses.dataclass(frozen=True)
class DXSchedule:
    """DX-NES movement detection and rates (Fukushima et al. 2011; the DX-NES-IC constants of
    Nomura & Ono 2021, without its eigendecomposition-based "emphasis of expansion").

    The evolution path ``p <- (1 - c) p + sqrt(c (2 - c) mu_eff) sum_i u_i y_i`` (rank
    utilities, whitened samples ``y``) is compared with ``chi = E||N(0, I)||``: *moving*
    when ``||p|| >= chi``, *stagnating* when ``||p|| >= 0.1 chi``, else *converging*.

    * ``eta_sigma``: 1 (moving), ``tanh((0.024 lam + 0.7 n + 20)/(n + 12))`` (stagnating),
      ``2 tanh((0.025 lam + 0.75 n + 10)/(n + 4))`` (converging);
    * ``eta_B``: ``(1.5, s, 0.1) x 120 n / (47 n^2 + 6400) x tanh(0.02 lam)`` with the
      stagnating factor ``s = 1.4`` (DX-NES-IC; the baselines) or, for spectral NES,
      ``s = 4.2`` (``NES.STAGNATING_SHAPE``: the shape is learned faster on ill-conditioned
      and ridge-like problems, where the path stagnates for most of the run; see
      docs/nes.md);
    * distance weights (moving only): ``w_hat_i exp(alpha ||z_i||)``, normalised, ``- 1/lam``,
      ``alpha = h^-1(n) min(1, sqrt(lam / n))``.
    """

    n: int
    popsize: int
    mu_eff: float
    c_sigma: float
    chi: float
    alpha: float
    eta_sigma: tuple[float, float, float]
    eta_B: tuple[float, float, float]

    STATES = ("moving", "stagnating", "converging")

    @classmethod
    def make(cls, n: int, popsize: int, stagnating_shape: float = 1.4) -> DXSchedule:
        w_hat, _ = utility_weights(popsize)
        p = w_hat / w_hat.sum()
        mu_eff = 1.0 / float((p * p).sum())
        c_sigma = (mu_eff + 2.0) / (n + mu_eff + 5.0) / (2.0 * math.log(n + 1.0))
        chi = math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))
        alpha = _h_inv(n) * min(1.0, math.sqrt(popsize / n))
        lam = popsize
        eta_sigma = (
            1.0,
            math.tanh((0.024 * lam + 0.7 * n + 20.0) / (n + 12.0)),
            2.0 * math.tanh((0.025 * lam + 0.75 * n + 10.0) / (n + 4.0)),
        )
        base = 120.0 * n / (47.0 * n * n + 6400.0) * math.tanh(0.02 * lam)
        eta_B = (1.5 * base, stagnating_shape * base, 0.1 * base)
        return cls(n, popsize, mu_eff, c_sigma, chi, alpha, eta_sigma, eta_B)

    def state(self, path_norm: float) -> int:
        """0 moving, 1 stagnating, 2 converging."""
        if path_norm >= self.chi:
            return 0
        return 1 if path_norm >= 0.1 * self.chi else 2


# Search distributions ---------------------------------------------------------------------


class SearchDistribution(abc.ABC):
    """Covariance representation updated by the NES driver: ``Sigma = A A^T`` for a factor ``A``.

    Subclasses: ``SpectralSearch`` (ours), and in ``manifold_spectral.baselines`` the xNES
    matrix exponential and the Cholesky factor. The driver draws ``z``, asks for
    ``delta = A z`` and hands back ``(z, delta, u)`` with utilities ``u``.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    @abc.abstractmethod
    def transform(self, z: Tensor) -> Tensor:
        """``delta_i = A z_i`` for (k, n) ``z``."""

    @abc.abstractmethod
    def whiten(self, delta: Tensor) -> Tensor:
        """``z_i = A^-1 delta_i`` for (k, n) ``delta`` (for points not drawn by ``ask``)."""

    def path_coordinates(self, v: Tensor) -> Tensor:
        """Coordinates of a whitened vector for the evolution path (default: ``v`` itself)."""
        return v

    @abc.abstractmethod
    def update(
        self,
        mu: Tensor,
        z: Tensor,
        delta: Tensor,
        u: Tensor,
        eta_mu: float,
        eta_sigma: float,
        eta_B: float,
        path: Tensor | None = None,
        c1: float = 0.0,
    ) -> Tensor:
        """Update the covariance in place; return the new mean.

        ``path`` (n,): a whitened direction ``z_c`` that gets the traceless rank-one update
        ``c1 (z_c z_c^T - |z_c|^2/n I)`` on top of the sample estimate (the evolution-path
        term of CMA-ES; ``None`` or ``c1 = 0``: none).
        """

    @abc.abstractmethod
    def scale(self) -> float:
        """``det(Sigma)^(1/(2n))``: the geometric-mean standard deviation."""

    @abc.abstractmethod
    def stds(self) -> Tensor:
        """``sqrt(diag(Sigma))``."""

    @abc.abstractmethod
    def covariance(self) -> Tensor:
        """Dense ``Sigma`` (for inspection and tests)."""

    def condition(self) -> float | None:
        """Condition number of ``Sigma`` when it is free to read (else ``None``)."""
        return None

    def precision_range(self) -> tuple[float, float] | None:
        """Smallest and largest eigenvalue of ``S = Sigma^-1`` when free to read (else ``None``)."""
        return None


class SpectralSearch(SearchDistribution):
    """``Sigma = S^-1``, ``S = B Diag(d) B^T`` on ``SpectralSPD``, learned by ``Gaussian``.

    ``A = B Diag(d^-1/2)``; the update is one ``Gaussian.precision_step`` with the
    ``REINFORCE`` curvature (``gamma = 0``, ``beta2 = eta_B``, ``scale_weight =
    eta_sigma / eta_B``) and ``Gaussian.mean_step`` (root 1, ``beta1 = eta_mu``) at the old
    precision. Starts at ``B = I``, ``d = 1 / sigma0^2``.
    """

    def __init__(
        self,
        stds: Tensor,
        *,
        cayley: str = "exact",
    ) -> None:
        n = stds.shape[0]
        self.n = n
        self.dtype = stds.dtype
        self.device = stds.device
        self.manifold = SpectralSPD(n, dtype=stds.dtype, device=stds.device, cayley=cayley)
        eye = torch.eye(n, dtype=stds.dtype, device=stds.device)
        self._gaussians: dict[tuple[float, float], Gaussian] = {}
        #: Use ``nes_step.SpectralStep`` (the layered Gaussian/RGD step in closed form, in
        #: numpy on views of the CPU float64 state).
        self.fast = nes_step.applies(self.manifold)
        self._step = nes_step.SpectralStep(self.manifold) if self.fast else None
        self.point = SpectralPoint(eye, 1.0 / (stds * stds))

    @property
    def point(self) -> SpectralPoint:
        """The precision ``S = B Diag(d) B^T``."""
        return self._point

    @point.setter
    def point(self, x: SpectralPoint) -> None:
        self._point = x
        # numpy views of B and d for the fast path (shared memory, made once per point)
        self._np = (x.B.numpy(), x.d.numpy()) if self.fast else None

    def gaussian(self, eta_mu: float, eta_B: float) -> Gaussian:
        """The Gaussian layer for these rates (``gamma = 0``, root 1, exact exponential)."""
        key = (eta_mu, eta_B)
        if key not in self._gaussians:
            self._gaussians[key] = Gaussian(
                self.manifold, beta1=eta_mu, beta2=eta_B, gamma=0.0, root=1.0, exponential="exact"
            )
        return self._gaussians[key]

    def transform(self, z: Tensor) -> Tensor:
        if self.fast:  # CPU float64: numpy on views costs less than torch on small tensors
            B, d = self._np
            return torch.from_numpy((z.numpy() / np.sqrt(d)) @ B.T)
        return (z * self.point.d.rsqrt()) @ self.point.B.T

    def whiten(self, delta: Tensor) -> Tensor:
        return (delta @ self.point.B) * self.point.d.sqrt()

    def path_coordinates(self, v: Tensor) -> Tensor:
        # B z is S^{1/2} delta with the symmetric root: unchanged when B rotates inside a
        # (near-)repeated eigenvalue, where the chart step may turn B by a large angle.
        return self.point.B @ v

    def update(self, mu, z, delta, u, eta_mu, eta_sigma, eta_B, path=None, c1=0.0):  # type: ignore[override]
        x = self.point
        if self.fast:  # the same step in closed form, checked once (nes_step)
            z_c = path.numpy() if path is not None and c1 > 0 else None
            B, d = self._np
            mu_new, B_new, d_new = self._step(
                B, d, mu.numpy(), z.numpy(), delta.numpy(), u.numpy(), eta_mu,
                eta_sigma / eta_B, eta_B, z_c, -c1 / eta_B,
            )  # fmt: skip
            self.point = SpectralPoint(torch.from_numpy(B_new), torch.from_numpy(d_new))
            return torch.from_numpy(mu_new)
        samples = REINFORCE(delta, -u, scale_weight=eta_sigma / eta_B)
        gauss = self.gaussian(eta_mu, eta_B)
        mu_new = gauss.mean_step(mu, x, samples.gradient(self.manifold, x))
        curvature: Curvature = samples
        if path is not None and c1 > 0:
            value = torch.full((1,), -c1 / eta_B, dtype=self.dtype, device=self.device)
            rank_one = REINFORCE(self.transform(path[None, :]), value, scale_weight=0.0)
            curvature = CurvatureSum([samples, rank_one])
        # x is the checked output of the previous step (RGD checks every result).
        self.point = gauss.precision_step(x, curvature, check_input=False)
        return mu_new

    def scale(self) -> float:
        if self.fast:
            d = self._np[1]
            return math.exp(-0.5 * float(np.log(d).sum()) / d.shape[0])
        return float(torch.exp(-0.5 * torch.log(self.point.d).mean()))

    def stds(self) -> Tensor:
        B, d = self.point.B, self.point.d
        return ((B * B) @ d.reciprocal()).sqrt()

    def covariance(self) -> Tensor:
        return self.manifold.power(self.point, -1.0)

    def condition(self) -> float | None:
        d = self.point.d
        return float(d.max() / d.min())

    def precision_range(self) -> tuple[float, float] | None:
        return float(self.point.d.min()), float(self.point.d.max())


# Results ----------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, repr=False)
class NESResult(OptimizeResult):
    """``OptimizeResult`` of the NES solvers (scipy style: attributes and ``result["x"]``).

    Shared fields (``manifold_spectral.solvers.result``): ``x`` the best point seen (numpy,
    or torch when ``x0`` was a tensor), ``fun`` its value, ``nit`` generations, ``nfev``
    function evaluations (``popsize`` per generation, every call of ``f``), ``success`` (a
    value below ``target`` was found), ``message`` (the stop reasons), ``method``, ``time``
    (wall seconds since the optimizer was created) and ``history``: one record per
    generation (records start after the first generation: NES never evaluates the starting
    point) with the keys ``"nit"``,
    ``"nfev"``, ``"fun"`` (best value so far, for best-f-versus-evaluations plots) and
    ``"time"`` (cumulative seconds spent in ``ask``/``tell``, function evaluations excluded).

    NES fields: ``stop`` (the termination criteria that fired, pycma style), ``xmean`` (final
    mean), ``stds`` (final ``sqrt(diag(Sigma))``), ``evals_best`` (evaluation index of ``x``),
    ``popsize`` and ``seed``.
    """

    stop: dict[str, Any] = dataclasses.field(default_factory=dict)
    xmean: Any = None
    stds: Any = None
    evals_best: int = 0
    popsize: int = 0
    seed: int = 0


# Driver -----------------------------------------------------------------------------------


def _check_x0(x0: Any) -> tuple[Tensor, bool]:
    is_torch = isinstance(x0, Tensor)
    if is_torch:
        if x0.dtype.is_complex or x0.dtype == torch.bool:
            raise TypeError(f"x0: expected a real vector, got dtype {x0.dtype}")
        t = x0.detach()
    else:
        try:
            arr = np.asarray(x0)
        except (TypeError, ValueError) as e:
            raise TypeError(f"x0: expected a real vector, got {type(x0).__name__}") from e
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"x0: expected a real vector, got dtype {arr.dtype}")
        t = torch.as_tensor(arr.astype(np.float64))
    if t.ndim != 1 or t.shape[0] < 1:
        raise ValueError(f"x0: expected a non-empty 1-d vector, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x0: contains NaN or Inf")
    return t, is_torch


def _check_sigma0(sigma0: Any, n: int) -> Tensor:
    if isinstance(sigma0, bool):
        raise TypeError("sigma0: expected a positive number or a vector of them, got a bool")
    if isinstance(sigma0, numbers.Real):
        s = torch.full((n,), float(sigma0), dtype=torch.float64)
    else:
        try:
            s = torch.as_tensor(
                sigma0.detach().cpu().numpy() if isinstance(sigma0, Tensor) else sigma0,
                dtype=torch.float64,
            )
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"sigma0: expected a positive number or a vector of them, got {sigma0!r}"
            ) from e
        if s.ndim == 0:
            s = s.expand(n).clone()
        if tuple(s.shape) != (n,):
            raise ValueError(f"sigma0: expected a scalar or shape ({n},), got {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"sigma0: expected finite values > 0, got {sigma0!r}")
    return s


def _check_rate(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number or None, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return v


def _check_nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


class NESBase:
    """The ask/tell driver shared by spectral NES and the NES baselines (pycma-style API).

    Subclasses choose the covariance representation (``_make_distribution``) and the
    defaults of the four switches. See ``NES`` for the arguments.
    """

    #: Defaults of the switches ``mirrored``, ``distance_weights``, ``adaptive_rates`` and
    #: ``rank_one`` for this class.
    DEFAULTS = {
        "mirrored": True,
        "distance_weights": True,
        "adaptive_rates": True,
        "rank_one": True,
    }
    name = "NES"
    #: Factor of the DX-NES shape rate while the path stagnates (``DXSchedule``).
    STAGNATING_SHAPE = 1.4

    def __init__(
        self,
        x0: Any,
        sigma0: Any,
        popsize: int | None = None,
        seed: int | None = None,
        *,
        eta_mu: float = 1.0,
        eta_sigma: float | None = None,
        eta_B: float | None = None,
        mirrored: bool | None = None,
        distance_weights: bool | None = None,
        adaptive_rates: bool | None = None,
        rank_one: bool | None = None,
        max_evals: int | None = None,
        target: float | None = None,
        tolx: float = 1e-11,
        tolfun: float = 1e-11,
        max_condition: float = 1e14,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
        **distribution_options: Any,
    ) -> None:
        self._start = time.perf_counter()
        x0_t, self._torch_io = _check_x0(x0)
        n = x0_t.shape[0]
        self.n = n
        check_dtype(dtype)
        sigma = _check_sigma0(sigma0, n)
        self.mirrored = _check_flag(
            self.DEFAULTS["mirrored"] if mirrored is None else mirrored, "mirrored"
        )
        self.distance_weights = _check_flag(
            self.DEFAULTS["distance_weights"] if distance_weights is None else distance_weights,
            "distance_weights",
        )
        self.adaptive_rates = _check_flag(
            self.DEFAULTS["adaptive_rates"] if adaptive_rates is None else adaptive_rates,
            "adaptive_rates",
        )
        self.rank_one = _check_flag(
            self.DEFAULTS["rank_one"] if rank_one is None else rank_one, "rank_one"
        )
        if popsize is None:
            popsize = 4 + int(math.floor(3 * math.log(n)))
            if self.mirrored and popsize % 2:
                popsize += 1
        elif isinstance(popsize, bool) or not isinstance(popsize, numbers.Integral):
            raise TypeError(f"popsize: expected an int >= 2, got {popsize!r}")
        popsize = int(popsize)
        if popsize < 2:
            raise ValueError(f"popsize: expected an int >= 2, got {popsize}")
        if self.mirrored and popsize % 2:
            raise ValueError(f"popsize: mirrored sampling needs an even popsize, got {popsize}")
        self.popsize = popsize
        eta_mu_checked = _check_rate(eta_mu, "eta_mu")
        if eta_mu_checked is None:
            raise TypeError("eta_mu: expected a positive number, got None")
        self.eta_mu = eta_mu_checked
        self._eta_sigma = _check_rate(eta_sigma, "eta_sigma")
        self._eta_B = _check_rate(eta_B, "eta_B")
        if max_evals is not None and (
            isinstance(max_evals, bool)
            or not isinstance(max_evals, numbers.Integral)
            or max_evals < 1
        ):
            raise ValueError(f"max_evals: expected a positive int or None, got {max_evals!r}")
        self.max_evals = None if max_evals is None else int(max_evals)
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, numbers.Real) or math.isnan(target)
        ):
            raise ValueError(f"target: expected a number or None, got {target!r}")
        self.target = None if target is None else float(target)
        self.tolx = _check_nonneg(tolx, "tolx")
        self.tolfun = _check_nonneg(tolfun, "tolfun")
        self.max_condition = _check_nonneg(max_condition, "max_condition")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0 or None, got {seed!r}")
        self.seed = int(seed)
        device = torch.device("cpu") if device is None else torch.device(device)
        self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self.dtype = dtype
        self.device = device
        self.mean = x0_t.to(dtype=dtype, device=device).clone()
        self.dist = self._make_distribution(
            sigma.to(dtype=dtype, device=device), **distribution_options
        )
        self.schedule = DXSchedule.make(n, popsize, self.STAGNATING_SHAPE)
        self._w_hat, self._u_rank = utility_weights(popsize)
        self.path = torch.zeros(n, dtype=dtype, device=device)
        self.path_c = torch.zeros(n, dtype=dtype, device=device)
        mu_eff = self.schedule.mu_eff
        self.c_c = (4.0 + mu_eff / n) / (n + 4.0 + 2.0 * mu_eff / n)
        self.c1 = 2.0 / ((n + 1.3) ** 2 + mu_eff) if self.rank_one else 0.0
        self.phase = "converging"
        self.rates = (self.eta_mu, 0.0, 0.0)
        self.countiter = 0
        self.countevals = 0
        self.xbest: Tensor | None = None
        self.fbest = math.inf
        self.evals_best = 0
        self._gen_best: list[float] = []
        self._gen_range = math.inf
        self._hist_nfev: list[int] = []
        self._hist_fun: list[float] = []
        self._hist_time: list[float] = []
        self._busy = 0.0  # seconds spent in ask/tell
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None
        self._stop_extra: dict[str, Any] = {}

    # Hooks ----------------------------------------------------------------------------

    def _make_distribution(self, stds: Tensor, **options: Any) -> SearchDistribution:
        return SpectralSearch(stds, **options)

    def _fixed_rates(self) -> tuple[float, float]:
        r = xnes_rate(self.n)
        return (
            r if self._eta_sigma is None else self._eta_sigma,
            r if self._eta_B is None else self._eta_B,
        )

    # ask / tell -----------------------------------------------------------------------

    def ask(self) -> Any:
        """A new population, shape (popsize, n): numpy, or torch when ``x0`` was a tensor.

        With mirrored sampling rows ``i`` and ``i + popsize/2`` are ``mu + delta`` and
        ``mu - delta``. Asking again replaces the pending population.
        """
        start = time.perf_counter()
        lam, n = self.popsize, self.n
        k = lam // 2 if self.mirrored else lam
        z = torch.randn(k, n, generator=self._generator, dtype=self.dtype, device=self.device)
        if self.mirrored:
            z = torch.cat([z, -z])
        delta = self.dist.transform(z)
        X = self.mean[None, :] + delta
        self._pending = (z, delta, X)
        out = self._output(X)
        self._busy += time.perf_counter() - start
        return out

    def _output(self, X: Tensor) -> Any:
        if self._torch_io:
            return X.clone()
        return X.detach().cpu().numpy().astype(np.float64, copy=True)

    def _as_population(self, X: Any) -> Tensor:
        if isinstance(X, Tensor):
            T = X.detach().to(dtype=self.dtype, device=self.device)
        else:
            try:
                arr = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise TypeError(f"X: expected a (popsize, n) array, got {type(X).__name__}") from e
            T = torch.as_tensor(arr, dtype=self.dtype, device=self.device)
        if tuple(T.shape) != (self.popsize, self.n):
            raise ValueError(f"X: expected shape ({self.popsize}, {self.n}), got {tuple(T.shape)}")
        return T

    def tell(self, X: Any, fvals: Any) -> None:
        """Update the distribution from the population ``X`` and its values ``fvals``.

        ``X`` is normally what ``ask`` returned; other points of the same shape (repaired or
        injected) are accepted and whitened against the current distribution. ``fvals``:
        shape (popsize,), real; NaN/Inf are ranked worst (see the module docstring).
        """
        start = time.perf_counter()
        T = self._as_population(X)
        f = _as_values(fvals, self.popsize)
        pending = self._pending
        if pending is not None and torch.equal(T, pending[2]):
            z, delta = pending[0], pending[1]
        else:
            if not bool(torch.isfinite(T).all()):
                raise ValueError("X: contains NaN or Inf")
            delta = T - self.mean[None, :]
            z = self.dist.whiten(delta)
        self._pending = None
        u_rank = rank_utilities(f, self._u_rank)
        if np.any(u_rank != 0):
            try:
                self._update(z, delta, f, u_rank)
            except FloatingPointError as exc:  # _update commits nothing when it fails
                self._stop_extra["numerical"] = str(exc)
        self._busy += time.perf_counter() - start
        self._record(T, f)

    def _update(self, z: Tensor, delta: Tensor, f: np.ndarray, u_rank: np.ndarray) -> None:
        """One DX-NES generation; the state is committed only when every step succeeded."""
        sched = self.schedule
        u_rank_t = torch.as_tensor(u_rank, dtype=self.dtype, device=self.device)
        c = sched.c_sigma
        step = self.dist.path_coordinates(u_rank_t @ z)
        path = (1 - c) * self.path + math.sqrt(c * (2 - c) * sched.mu_eff) * step
        state = sched.state(float(torch.linalg.vector_norm(path)))
        u = u_rank_t
        if self.distance_weights and state == 0:
            u = self._distance_utilities(f, z)
        if self.adaptive_rates:
            eta_sigma = sched.eta_sigma[state] if self._eta_sigma is None else self._eta_sigma
            eta_B = sched.eta_B[state] if self._eta_B is None else self._eta_B
        else:
            eta_sigma, eta_B = self._fixed_rates()
        path_c, whitened_c, c1 = self.path_c, None, 0.0
        if self.c1 > 0:
            # Cumulation path of the mean shift in units of the geometric-mean std (CMA-ES's
            # p_c); its rank-one term is applied while moving (CR-FM-NES).
            scale = self.dist.scale()
            cc = self.c_c
            shift = (u @ delta) / scale
            path_c = (1 - cc) * path_c + math.sqrt(cc * (2 - cc) * sched.mu_eff) * shift
            if state == 0:
                whitened_c = self.dist.whiten(path_c[None, :])[0] * scale
                c1 = self.c1
        mean = self.dist.update(
            self.mean, z, delta, u, self.eta_mu, eta_sigma, eta_B, path=whitened_c, c1=c1
        )
        # (the fast spectral step has checked the mean with the new point)
        if not getattr(self.dist, "fast", False) and not bool(torch.isfinite(mean).all()):
            raise FloatingPointError("NES.tell: the mean became non-finite")
        self.mean, self.path, self.path_c = mean, path, path_c
        self.phase = DXSchedule.STATES[state]
        self.rates = (self.eta_mu, eta_sigma, eta_B)

    def _distance_utilities(self, f: np.ndarray, z: Tensor) -> Tensor:
        w_hat = rank_utilities(f, self._w_hat, center=False)  # tie-averaged, per sample
        norms = torch.linalg.vector_norm(z, dim=1).cpu().numpy()
        a = self.schedule.alpha * norms
        w = w_hat * np.exp(a - a.max())
        w = w / w.sum() - 1.0 / self.popsize
        return torch.as_tensor(w, dtype=self.dtype, device=self.device)

    def _record(self, T: Tensor, f: np.ndarray) -> None:
        self.countiter += 1
        self.countevals += self.popsize
        # Python floats: on ~10 values cheaper than numpy reductions (the same values).
        fl = f.tolist()
        finite = [v for v in fl if math.isfinite(v)]
        if finite:
            lo = min(finite)
            i = fl.index(lo)  # the first minimum, as np.argmin over the finite values
            if lo < self.fbest:
                self.fbest, self.xbest = lo, T[i].clone()
                self.evals_best = self.countevals - self.popsize + i + 1
            self._gen_best.append(lo)
            self._gen_range = max(finite) - lo if len(finite) == len(fl) else math.inf
        else:
            self._gen_best.append(math.inf)
            self._gen_range = math.inf
        self._hist_nfev.append(self.countevals)
        self._hist_fun.append(self.fbest)
        self._hist_time.append(self._busy)

    # Termination and results ----------------------------------------------------------

    def stop(self) -> dict[str, Any]:
        """Termination criteria that hold now (empty dict: continue), pycma style.

        ``ftarget`` (a value below ``target``), ``maxfevals``, ``callback`` (set by
        ``optimize``), ``numerical`` (a step failed in floating point: the state was left
        unchanged), and the tests of ``nes_stop``: ``tolx``, ``tolfun``, ``condition`` and,
        always on, ``noeffectcoord``, ``flatfitness``, ``scalerange`` (a run continued past
        convergence stops cleanly instead of overflowing).
        """
        out: dict[str, Any] = dict(self._stop_extra)
        if self.target is not None and self.fbest < self.target:
            out["ftarget"] = self.target
        if self.max_evals is not None and self.countevals >= self.max_evals:
            out["maxfevals"] = self.max_evals
        if self.countiter == 0:
            return out
        out.update(convergence_stops(self))
        return out

    @property
    def result(self) -> NESResult:
        """The current ``NESResult`` (best point, counts, history, time)."""
        stop = self.stop()
        x = self.xbest if self.xbest is not None else self.mean
        k = len(self._hist_nfev)
        return NESResult(
            x=self._output(x),
            fun=self.fbest,
            nfev=self.countevals,
            nit=self.countiter,
            success="ftarget" in stop,
            stop=stop,
            message=", ".join(stop) if stop else "running",
            method=self.name,
            history={
                "nit": np.arange(1, k + 1, dtype=np.int64),
                "nfev": np.asarray(self._hist_nfev, dtype=np.int64),
                "fun": np.asarray(self._hist_fun, dtype=np.float64),
                "time": np.asarray(self._hist_time, dtype=np.float64),
            },
            time=time.perf_counter() - self._start,
            xmean=self._output(self.mean),
            stds=self._output(self.dist.stds()),
            evals_best=self.evals_best,
            popsize=self.popsize,
            seed=self.seed,
        )

    def optimize(
        self,
        f: Callable[[Any], Any],
        *,
        callback: Callable[[NESBase], Any] | None = None,
        vectorized: bool | None = False,
        executor: Any = None,
        map: Callable[..., Any] | None = None,
    ) -> NESResult:
        """Run ask/evaluate/tell until ``stop()``; return ``result``.

        The contract of ``f`` is declared, never guessed: ``vectorized=False`` (default)
        calls ``f`` once per point (n,) and each call must return a real scalar;
        ``vectorized=True`` calls it on a batch (k, n) that must return shape (k,) (the first
        generation is evaluated as two batches, its first row and the rest, so that a
        per-point ``f`` declared vectorised fails the shape test even when n == popsize; no
        extra evaluation). A wrong declaration raises ``ValueError`` naming ``vectorized``.
        ``vectorized=None`` (the former probing default) is deprecated and means ``False``
        with a ``FutureWarning``. ``f`` gets numpy arrays, or torch tensors when ``x0`` was one.
        ``callback(self)`` runs after every generation; returning ``True`` (or raising
        ``StopIteration``) stops the run with reason ``callback``.

        Parallel fitness evaluation: ``executor`` (any object with a
        ``concurrent.futures.Executor``-like ``.map(fn, iterable)``: ``ThreadPoolExecutor``,
        ``ProcessPoolExecutor``, Dask's ``client.get_executor()``, ``mpi4py.futures``, ...) or
        ``map`` (any callable with the builtin ``map`` signature, e.g.
        ``multiprocessing.Pool(...).map``), not both. Then the ``popsize`` candidates of a
        generation are evaluated concurrently, one call ``f(x)`` per candidate row (a vectorised
        ``f`` is never called on the batch: ``vectorized`` must be ``False``). Each
        call gets its own copy of its row, of the type the serial per-row path passes (a numpy
        (n,) array, or a torch tensor when ``x0`` was one), and the worker reduces the value to
        a float. Results are taken in the order of the candidates, so for a fixed seed the run
        is bitwise the serial one (same ``x``, ``fun``, ``nfev``, ``history`` except its
        ``"time"``); NaN/Inf values are ranked worst as in serial mode. An exception raised by
        ``f`` in a worker reaches the caller with its original type (as the executor re-raises
        it). With a process pool, ``f`` must be picklable (a module-level function or an
        instance of a module-level class). The executor is used, never shut down: its owner
        manages its lifetime. One generation is one ``map`` call, so the speed-up is at most
        ``popsize``-fold and pays only when ``f`` costs much more than a task dispatch.

        Raises ``ValueError`` if both ``executor`` and ``map`` are given or ``vectorized=True``
        is combined with one of them, ``TypeError`` (naming the argument) if ``executor`` lacks
        a callable ``.map`` or ``map`` is not callable; nothing is evaluated or changed then.
        """
        vectorized = _check_vectorized(vectorized)
        return run_optimizer(
            self, f, callback=callback, vectorized=vectorized, executor=executor, map=map
        )

    def covariance(self) -> Tensor:
        """Dense covariance ``Sigma`` of the search distribution (for inspection)."""
        return self.dist.covariance()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, popsize={self.popsize}, "
            f"evals={self.countevals}, fbest={self.fbest:.3e})"
        )


class NES(NESBase):
    """Spectral NES (paper Sec. 4.3): ask/tell in pycma's style.

    ``es = NES(x0, sigma0)``; ``while not es.stop(): X = es.ask(); es.tell(X, f(X))``;
    ``es.result``. The search distribution is ``N(mean, S^-1)`` with ``S = B Diag(d) B^T`` on
    ``SpectralSPD``, updated by ``Gaussian`` with the ``REINFORCE`` curvature (module
    docstring).

    Args:
        x0: initial mean, shape (n,), numpy/list (then ``ask`` returns numpy) or torch.
        sigma0: initial standard deviation (> 0), a scalar or one per coordinate.
        popsize: samples per generation; default ``4 + floor(3 ln n)``, rounded up to even
            with mirrored sampling.
        seed: seed of the sampler (default: fresh entropy; stored in ``result.seed``).
        eta_mu: mean learning rate ``beta1`` (default 1).
        eta_sigma, eta_B: scale and shape learning rates; ``None`` (default): the DX-NES
            schedule (``adaptive_rates=True``) or the xNES value
            ``0.6 (3 + ln n)/(n sqrt n)``. A number fixes that rate.
        mirrored: mirrored sampling ``z, -z`` (default on).
        distance_weights: DX-NES distance-weighted utilities while moving (default on).
        adaptive_rates: DX-NES movement-dependent ``eta_sigma``, ``eta_B`` (default on).
        rank_one: the rank-one evolution-path term while moving (default on).
        max_evals, target, tolx, tolfun, max_condition: termination (see ``stop``).
        dtype, device: of the state (default float64, CPU).
        cayley: ``"exact"`` (default) or ``"neumann"`` Cayley map of the precision step.
    """

    name = "spectral NES"
    STAGNATING_SHAPE = 4.2


def minimize(
    f: Callable[[Any], Any],
    x0: Any,
    sigma0: Any,
    *,
    max_evals: int | None = None,
    target: float | None = None,
    seed: int | None = None,
    callback: Callable[[NESBase], Any] | None = None,
    popsize: int | None = None,
    vectorized: bool | None = False,
    executor: Any = None,
    map: Callable[..., Any] | None = None,
    restarts: int = 0,
    bipop: bool = False,
    incpopsize: float = 2.0,
    **options: Any,
) -> NESResult:
    """Minimise ``f`` with spectral NES; returns a ``NESResult`` (x, fun, nfev, nit, history,
    time, ...).

    ``f`` takes one point (``vectorized=False``, default) or a batch (``vectorized=True``),
    declared, never guessed; a wrong declaration is a ``ValueError`` (see
    ``NESBase.optimize``), so ``result.fun`` is always ``f(result.x)``. Numpy or torch
    following ``x0``. ``max_evals`` defaults to ``popsize (100 + 150 (n + 3)^2 / sqrt(popsize))``
    (pycma's default iteration budget); ``target`` stops at the first value below it.
    ``options`` go to ``NES`` (rates, switches, ``tolx``, ``tolfun``, dtype, ...).
    ``executor`` / ``map`` evaluate each generation's candidates in parallel, one call per
    candidate, with results bitwise equal to the serial run (see ``NESBase.optimize``).

    Restarts (``manifold_spectral.solvers.restarts.RestartNES``): ``restarts=k`` runs up to
    ``k`` more NES runs after a run stops on its own (``tolx``, ``tolfun``, ``condition``),
    IPOP (popsize times ``incpopsize`` each restart) or, with ``bipop=True``, BIPOP (IPOP
    runs interleaved with small-population, small-step runs); ``max_evals`` is the budget of
    all runs together. ``x0`` may then be a callable returning a fresh start per run.
    """
    vectorized = _check_vectorized(vectorized)
    _check_mapper(executor, map, vectorized)  # before anything is built
    es: Any
    if restarts or bipop or callable(x0):
        from .restarts import RestartNES

        es = RestartNES(
            x0,
            sigma0,
            popsize,
            seed,
            restarts=restarts,
            bipop=bipop,
            incpopsize=incpopsize,
            max_evals=max_evals,
            target=target,
            **options,
        )
    else:
        es = NES(x0, sigma0, popsize, seed, max_evals=max_evals, target=target, **options)
        if es.max_evals is None:
            lam, n = es.popsize, es.n
            es.max_evals = int(lam * (100 + 150 * (n + 3) ** 2 / math.sqrt(lam)))
    return es.optimize(f, callback=callback, vectorized=vectorized, executor=executor, map=map)
