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
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._threads import torch_threads
from ..baselines import CholeskyCurvature
from ..gaussian import GOP, Gaussian
from ..linalg import haar_orthogonal, orthogonality_error
from ..manifolds import SpectralSPD
from ..validation import check_dtype
from .curvature_plot import SCHEME_STYLE, plot  # noqa: F401 (re-exported)

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


def default_step(S: Tensor, grads: Tensor, beta2: float, gamma: float = 1.0) -> Tensor:
    """Default scheme (paper Eq. (3)): ``S <- (1 - gamma beta2) S + beta2 mean_i g_i g_i^T``.

    ``grads``: one gradient (n,) or a batch (k, n). Its fixed point for ``gamma = 1`` is
    ``E[g g^T]``.
    """
    G = grads[None, :] if grads.ndim == 1 else grads
    return (1.0 - gamma * beta2) * S + (beta2 / G.shape[0]) * (G.T @ G)


# Problem -------------------------------------------------------------------------------------


def _generators(seed: int, count: int) -> list[torch.Generator]:
    """Independent torch generators from one seed (numpy ``SeedSequence`` spawning)."""
    states = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint64)
    return [torch.Generator().manual_seed(int(s) >> 1) for s in states]


def ground_truth(n: int, decades: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(Q, lam)`` of ``Sigma = Q Diag(lam) Q^T``: Haar ``Q``, ``log10 lam ~ U(-decades/2,
    decades/2)`` (float64)."""
    Q = haar_orthogonal(n, generator=generator)
    lam = 10.0 ** (decades * (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5))
    return Q, lam


def initial_matrix(init: str, Q: Tensor, lam: Tensor, generator: torch.Generator) -> Tensor:
    """The common ``S0`` of every scheme (float64); see the module docstring for ``init``."""
    n = lam.shape[0]
    if init == "random":
        Q0 = haar_orthogonal(n, generator=generator)
        geo = torch.exp(torch.log(lam).mean())
        lam0 = geo * 10.0 ** (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5)
        S0 = (Q0 * lam0[None, :]) @ Q0.T
    elif init == "sample":
        Z = torch.randn(4 * n, n, generator=generator, dtype=torch.float64)
        X = (Z * lam.sqrt()[None, :]) @ Q.T
        S0 = X.T @ X / X.shape[0] + 1e-3 * lam.mean() * torch.eye(n, dtype=torch.float64)
    else:
        raise ValueError(f"init: expected 'random' or 'sample', got {init!r}")
    return 0.5 * (S0 + S0.T)


def gradient_stream(
    Q: Tensor,
    lam: Tensor,
    steps: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    chunk: int = 1024,
    device: Any = None,
) -> Iterator[Tensor]:
    """``steps`` gradients ``g_k = Q (sqrt(lam) * z_k) ~ N(0, Sigma)``, generated in chunks
    on the CPU (the same numbers on every device) and moved to ``device``."""
    root = Q * lam.sqrt()[None, :]
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        Z = torch.randn(k, lam.shape[0], generator=generator, dtype=torch.float64)
        yield from (Z @ root.T).to(dtype=dtype, device=device)
        done += k


# Metrics -------------------------------------------------------------------------------------


def _relative_frobenius(A: Tensor, B: Tensor) -> float:
    return float(torch.linalg.matrix_norm(A - B) / torch.linalg.matrix_norm(B))


def _sqrtm_psd(A: Tensor) -> Tensor:
    """Symmetric square root by eigh (evaluation only)."""
    w, V = torch.linalg.eigh(0.5 * (A + A.T))  # evaluation only, not a scheme's step
    return (V * w.clamp(min=0).sqrt()[None, :]) @ V.T


def bures_wasserstein(A: Tensor, B: Tensor, sqrt_b: Tensor | None = None) -> float:
    """``W2(N(0, A), N(0, B))^2 = tr A + tr B - 2 tr (B^1/2 A B^1/2)^1/2`` (evaluation only).

    ``sqrt_b``: a precomputed ``B^1/2`` (the reference matrix is shared by several schemes).
    """
    rb = _sqrtm_psd(B) if sqrt_b is None else sqrt_b
    C = rb @ A @ rb
    ev = torch.linalg.eigvalsh(0.5 * (C + C.T)).clamp(min=0)  # evaluation only
    val = torch.trace(A) + torch.trace(B) - 2.0 * ev.sqrt().sum()
    return float(val.clamp(min=0).sqrt())


def log_checkpoints(steps: int, num: int) -> np.ndarray:
    """About ``num`` log-spaced iterations in ``[1, steps]``, plus 0, the powers of ten and
    ``steps`` (sorted, unique)."""
    pts = np.unique(np.round(np.logspace(0, math.log10(steps), num)).astype(np.int64))
    powers = 10 ** np.arange(int(math.log10(steps)) + 1)
    return np.unique(np.concatenate([[0, steps], pts, powers[powers <= steps]]))


# Generic tracking loop (reused by the Kronecker variant) -------------------------------------


@dataclasses.dataclass
class Scheme:
    """A curvature-learning scheme as three functions of an opaque state.

    ``init(S0) -> state``, ``step(state, g) -> state`` and ``matrix(state) -> S`` (dense,
    float64, for evaluation only).
    """

    name: str
    init: Callable[[Tensor], Any]
    step: Callable[[Any, Tensor], Any]
    matrix: Callable[[Any], Tensor]


@dataclasses.dataclass
class _Histories:
    fixed_point: dict[str, list[float]]
    iterate: dict[str, list[float]]
    fixed_point_w2: dict[str, list[float]]
    iterate_w2: dict[str, list[float]]
    update_seconds: dict[str, float]
    states: dict[str, Any]
    diverged: dict[str, int]

    def result_fields(self) -> dict[str, Any]:
        """The recorded curves and counters as the fields of a ``CurvatureResult``."""
        return dict(
            fixed_point=_arrays(self.fixed_point),
            iterate=_arrays(self.iterate),
            fixed_point_w2=_arrays(self.fixed_point_w2),
            iterate_w2=_arrays(self.iterate_w2),
            update_seconds=dict(self.update_seconds),
            diverged=dict(self.diverged),
        )


def track(
    schemes: Sequence[Scheme],
    reference: str,
    target: Tensor,
    S0: Tensor,
    grads: Iterator[Tensor],
    steps: int,
    checkpoints: np.ndarray,
    *,
    w2: bool = True,
    progress: bool = False,
    desc: str = "curvature",
) -> _Histories:
    """Run every scheme on the same gradient stream and record both matchings at checkpoints.

    ``target``: the fixed point (float64); ``reference``: the name of the scheme whose
    iterates the others are matched against (the default scheme). A scheme whose step raises
    ``FloatingPointError`` (a non-finite or singular state: its step size is too large for
    the gradients) is frozen; its later entries are NaN and ``diverged[name]`` is the
    iteration at which it failed. The reference must not diverge.
    """
    names = [s.name for s in schemes]
    if reference not in names:
        raise ValueError(f"reference: {reference!r} is not one of {names}")
    others = [nm for nm in names if nm != reference]
    h = _Histories(
        {nm: [] for nm in names},
        {nm: [] for nm in others},
        {nm: [] for nm in names},
        {nm: [] for nm in others},
        dict.fromkeys(names, 0.0),
        {s.name: s.init(S0) for s in schemes},
        {},
    )
    sqrt_target = _sqrtm_psd(target) if w2 else None
    marks = set(int(c) for c in checkpoints)

    def record() -> None:
        mats = {
            s.name: s.matrix(h.states[s.name]).to(torch.float64)
            for s in schemes
            if s.name not in h.diverged
        }
        ref = mats[reference]
        sqrt_ref = _sqrtm_psd(ref) if w2 else None
        nan = float("nan")
        for nm in names:
            ok = nm in mats
            h.fixed_point[nm].append(_relative_frobenius(mats[nm], target) if ok else nan)
            if w2:
                h.fixed_point_w2[nm].append(
                    bures_wasserstein(mats[nm], target, sqrt_target) if ok else nan
                )
        for nm in others:
            ok = nm in mats
            h.iterate[nm].append(_relative_frobenius(mats[nm], ref) if ok else nan)
            if w2:
                h.iterate_w2[nm].append(bures_wasserstein(mats[nm], ref, sqrt_ref) if ok else nan)

    from .._compat import progress_bar as tqdm  # tqdm, or silent without it

    record()  # iteration 0
    with tqdm(total=steps, desc=desc, disable=not progress, mininterval=0.5, leave=False) as bar:
        for k, g in enumerate(grads, start=1):
            for s in schemes:
                if s.name in h.diverged:
                    continue
                t = time.perf_counter()
                try:
                    h.states[s.name] = s.step(h.states[s.name], g)
                except FloatingPointError:
                    if s.name == reference:
                        raise
                    h.diverged[s.name] = k
                h.update_seconds[s.name] += time.perf_counter() - t
            if k in marks:
                record()
            bar.update(1)
            if k == steps:
                break
    return h


# The full-matrix experiment ------------------------------------------------------------------


@dataclasses.dataclass
class CurvatureResult:
    """Histories of one curvature-learning run (one ``beta2``).

    ``fixed_point[scheme]`` / ``iterate[scheme]``: relative Frobenius errors at
    ``iterations`` (``iterate`` has no entry for the reference, the default scheme);
    ``*_w2``: the Bures-Wasserstein distances (empty dicts when ``w2=False``).
    ``update_seconds``: time spent in each scheme's updates (evaluation excluded).
    ``diverged``: scheme -> iteration at which its step failed (NaN entries from there on).
    ``orthogonality_error``: ``||B^T B - I||_F`` of the spectral scheme's final ``B``.
    """

    structure: str
    n: int
    steps: int
    beta2: float
    gamma: float
    seed: int
    dtype: str
    init: str
    decades: float
    iterations: np.ndarray
    fixed_point: dict[str, np.ndarray]
    iterate: dict[str, np.ndarray]
    fixed_point_w2: dict[str, np.ndarray]
    iterate_w2: dict[str, np.ndarray]
    update_seconds: dict[str, float]
    diverged: dict[str, int]
    orthogonality_error: float
    wall_time: float

    @property
    def size_label(self) -> str:
        """The problem size in table headers and plot titles."""
        return f"n={self.n}"

    def notes(self) -> list[str]:
        """Extra lines at the end of ``format_table`` (none for the full-matrix run)."""
        return []

    def fixed_point_floors(self) -> dict[str, float]:
        """Reference levels (label -> relative Frobenius error) drawn as dashed lines in the
        fixed-point panel (none for the full-matrix run)."""
        return {}


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def default_steps(beta2: float) -> int:
    """Ten time constants ``1 / beta2`` of the default scheme's moving average."""
    return max(10, math.ceil(10.0 / beta2))


def _check_run_args(
    beta2: Any, seed: Any, num_checkpoints: Any, decades: Any, dtype: Any
) -> tuple[float, int, int]:
    """Validate the arguments every ``run_*`` shares; returns ``(beta2, seed,
    num_checkpoints)`` as plain Python numbers."""
    beta2 = float(beta2)
    if not (math.isfinite(beta2) and 0.0 < beta2 < 1.0):
        raise ValueError(f"beta2: expected a number in (0, 1), got {beta2!r}")
    seed = _check_int(seed, "seed", minimum=0)
    num_checkpoints = _check_int(num_checkpoints, "num_checkpoints", minimum=2)
    if not (isinstance(decades, (int, float)) and math.isfinite(decades) and decades >= 0):
        raise ValueError(f"decades: expected a finite number >= 0, got {decades!r}")
    check_dtype(dtype)
    return beta2, seed, num_checkpoints


def _arrays(d: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Histories as arrays (empty histories dropped)."""
    return {k: np.asarray(v) for k, v in d.items() if v}


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
            ``r = tr(Sigma)^2 / ||Sigma||_F^2``, about 42 for the defaults: 0.15 at
            ``beta2 = 1e-3``, 0.47 at ``1e-2``) and keep every scheme in its first-order
            regime. The Cholesky scheme's fixed point carries a second-order bias: at
            stationarity ``E[K^T g g^T K] - I ~ beta2 E[A A^T]``, whose i-th diagonal entry is
            about ``beta2 i``, i.e. a relative bias ``~ beta2 n / 2``.
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


# Reporting -----------------------------------------------------------------------------------


def _table_rows(result: CurvatureResult) -> list[int]:
    """Indices into ``result.iterations`` of 1, 10, 100, ... and the last iteration."""
    its = result.iterations
    want = [int(p) for p in 10 ** np.arange(int(math.log10(result.steps)) + 1)] + [result.steps]
    return sorted({int(np.searchsorted(its, w)) for w in want if w in set(its.tolist())})


def _block(title: str, result: CurvatureResult, fp: dict, it: dict, fmt: str) -> list[str]:
    cols = [f"fixed-point {k}" for k in fp] + [f"iterate {k}" for k in it]
    series = list(fp.values()) + list(it.values())
    widths = [max(len(c), 8) + 2 for c in cols]
    head = "".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))
    lines = [title, "iteration".rjust(10) + head]
    for i in _table_rows(result):
        vals = "".join(format(s[i], fmt).rjust(w) for s, w in zip(series, widths, strict=True))
        lines.append(str(int(result.iterations[i])).rjust(10) + vals)
    return lines


def csv_tables(result: CurvatureResult) -> list[list[list[Any]]]:
    """``format_table``'s numbers as one CSV table (header first): ``beta2``, the iteration,
    then both matchings of every scheme in relative Frobenius error and, when recorded, W2."""
    r = result
    cols = [(f"fixed-point {k}", v) for k, v in r.fixed_point.items()]
    cols += [(f"iterate {k}", v) for k, v in r.iterate.items()]
    cols += [(f"fixed-point W2 {k}", v) for k, v in r.fixed_point_w2.items()]
    cols += [(f"iterate W2 {k}", v) for k, v in r.iterate_w2.items()]
    rows: list[list[Any]] = [["beta2", "iteration"] + [c for c, _ in cols]]
    for i in _table_rows(r):
        rows.append([r.beta2, int(r.iterations[i])] + [f"{float(v[i]):.6g}" for _, v in cols])
    return [rows]


def format_table(result: CurvatureResult) -> str:
    """Plain-text table of both matchings at iterations 1, 10, 100, ... and the final one."""
    r = result
    head = (
        f"Curvature learning ({r.structure} matrix), {r.size_label}, beta2={r.beta2:g}, "
        f"gamma={r.gamma:g}, steps={r.steps}, seed={r.seed}, dtype={r.dtype}, init={r.init}"
    )
    lines = [head]
    lines += _block("relative Frobenius error", r, r.fixed_point, r.iterate, ".4g")
    if r.fixed_point_w2:
        lines += _block("Wasserstein-2 distance", r, r.fixed_point_w2, r.iterate_w2, ".4g")
    for name, k in r.diverged.items():
        lines.append(f"{name}: diverged at iteration {k} (beta2 too large for this scheme)")
    secs = ", ".join(f"{k} {v:.2f} s" for k, v in r.update_seconds.items())
    lines.append(
        f"update time: {secs}; ||B^T B - I||_F (spectral) = "
        f"{r.orthogonality_error:.1e}; run {r.wall_time:.1f} s"
    )
    lines += r.notes()
    return "\n".join(lines)
