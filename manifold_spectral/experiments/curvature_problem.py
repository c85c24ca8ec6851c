"""The curvature-learning problem that the full-matrix and the Kronecker runs share (paper
Sec. 4.1): the ground truth ``Sigma``, the common start ``S0``, the gradient stream
``g_k ~ N(0, Sigma)``, the default scheme (paper Eq. (3)) whose fixed point ``E[g g^T] =
Sigma`` is the target, and the checks of the arguments every ``run_*`` takes.

Why ``S0`` is not the identity, and what ``init`` draws, is in ``curvature``'s module
docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..linalg import haar_orthogonal
from ..validation import check_dtype

__all__ = ["default_step", "default_steps", "ground_truth", "initial_matrix", "gradient_stream"]


# The default scheme --------------------------------------------------------------------------


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
    """The common ``S0`` of every scheme (float64); see ``curvature``'s module docstring for
    ``init``."""
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


# Run arguments -------------------------------------------------------------------------------


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
