"""Points that ``ask`` did not produce (repaired or injected), told to an evolution strategy.

``tell`` whitens such a point against the current distribution, ``z = S^(1/2) (x - mean)``.
A good point far outside the distribution (an injected optimum, a repaired point at a
bound) then carries a whitened length ``r`` many times ``E||N(0, I)|| ~ sqrt(n)``; the
covariance step's ``z z^T - I`` and the distance weights ``exp(alpha ||z||)`` grow with it,
so one such point multiplies the scale by ``exp(O(r^2))`` in one generation or overflows
the state. As pycma does with injected solutions, their whitened length is clipped to
``sqrt(n) + 2n / (n + 2)`` (Hansen 2011, "Injecting external solutions into CMA-ES"): a
point within it is used as it is, one beyond it pulls from that distance in its direction.
Rows that ``ask`` produced keep their own samples, bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["injection_clip", "whiten_population"]


def injection_clip(n: int) -> float:
    """The largest whitened length of an injected point, ``sqrt(n) + 2n / (n + 2)``."""
    return math.sqrt(n) + 2.0 * n / (n + 2.0)


def whiten_population(
    dist, mean: Tensor, T: Tensor, pending: tuple[Tensor, Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    """``(z, delta)`` of the population ``T``: the asked samples where ``T`` is what ``ask``
    returned, else ``delta = T - mean`` whitened by ``dist``, with the rows that are not
    asked points (by value, in any order) clipped to ``injection_clip(n)``."""
    if pending is not None and torch.equal(T, pending[2]):
        return pending[0], pending[1]
    if not bool(torch.isfinite(T).all()):
        raise ValueError("X: contains NaN or Inf")
    delta = T - mean[None, :]
    z = dist.whiten(delta)
    asked = set() if pending is None else {bytes(r.cpu().numpy()) for r in pending[2]}
    foreign = [i for i, row in enumerate(T) if bytes(row.cpu().numpy()) not in asked]
    if foreign:
        idx = torch.tensor(foreign, device=T.device)
        length = torch.linalg.vector_norm(z[idx], dim=1, keepdim=True)
        scale = torch.clamp(injection_clip(T.shape[1]) / torch.clamp(length, min=1e-300), max=1)
        z, delta = z.clone(), delta.clone()
        z[idx] = z[idx] * scale
        delta[idx] = delta[idx] * scale  # whitening is linear: the pair stays consistent
    return z, delta
