"""Rank-based fitness shaping of the evolution strategies (``NESBase``): xNES rank utilities
(Wierstra et al. 2008; Glasmachers et al. 2010) and the DX-NES distance-weighted utilities
(Fukushima et al. 2011).

Ranks make the search invariant to monotone transformations of ``f`` and bound the step.
NaN or Inf values (and ``-inf``) are ranked worst and ties share the mean utility of their
ranks, so a generation of equal (or all non-finite) values gets zero utilities.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["rank_utilities", "utility_weights", "distance_utilities"]


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


def distance_utilities(
    f: np.ndarray, z: Tensor, w_hat: np.ndarray, alpha: float, popsize: int
) -> Tensor:
    """DX-NES distance-weighted utilities (used while the distribution is moving):
    ``w_i = w_hat_(i) exp(alpha ||z_i||)``, normalised, minus ``1/lam``, with ``w_hat`` the
    tie-averaged per-rank weights ``max(0, ln(lam/2 + 1) - ln i)`` of ``utility_weights``."""
    w_hat = rank_utilities(f, w_hat, center=False)  # tie-averaged, per sample
    norms = torch.linalg.vector_norm(z, dim=1).cpu().numpy()
    a = alpha * norms
    w = w_hat * np.exp(a - a.max())
    w = w / w.sum() - 1.0 / popsize
    return torch.as_tensor(w, dtype=z.dtype, device=z.device)
