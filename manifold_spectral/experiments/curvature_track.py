"""The tracking loop of the curvature-learning runs (paper Sec. 4.1, App. B.1): a ``Scheme``
is three functions of an opaque state, ``track`` runs several on one gradient stream and
records the metrics (relative Frobenius error, Bures-Wasserstein distance) at log-spaced
checkpoints, and ``CurvatureResult`` carries the histories. The full-matrix run
(``curvature``) and the Kronecker run (``curvature_kronecker``) both use it.
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

__all__ = ["CurvatureResult", "Scheme", "bures_wasserstein", "log_checkpoints", "track"]


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


def _arrays(d: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Histories as arrays (empty histories dropped)."""
    return {k: np.asarray(v) for k, v in d.items() if v}


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


# Result --------------------------------------------------------------------------------------


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
