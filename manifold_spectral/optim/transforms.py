"""Small update transformations composed by ``SpectralKron`` (optax-style, each testable alone).

Every function takes and returns tensors and never touches optimizer state it was not given.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["heavy_ball", "rms", "clip_by_rms", "graft_norm", "adam_direction", "weight_decay"]


def heavy_ball(
    buf: Tensor, grad: Tensor, momentum: float, nesterov: bool = False
) -> tuple[Tensor, Tensor]:
    """``buf' = momentum buf + grad``; returns ``(buf', direction)`` with direction ``buf'``
    (Nesterov: ``grad + momentum buf'``). Nothing is modified in place."""
    new = buf * momentum + grad
    return new, (grad + momentum * new if nesterov else new)


def rms(u: Tensor) -> Tensor:
    """Root mean square of all entries (computed in at least float32)."""
    uf = u.float() if u.dtype in (torch.bfloat16, torch.float16) else u
    return torch.sqrt(torch.mean(uf * uf))


def clip_by_rms(u: Tensor, max_rms: float) -> Tensor:
    """Layer-wise preconditioned-update clipping (Sec. 3.4): ``u min(1, max_rms / rms(u))``."""
    scale = torch.clamp(max_rms / torch.clamp(rms(u), min=1e-30), max=1.0)
    return u * scale.to(u.dtype)


def graft_norm(u: Tensor, reference: Tensor) -> Tensor:
    """Grafting (Agarwal et al.): the direction of ``u`` with the norm of ``reference``."""
    nu = torch.linalg.vector_norm(u.float())
    nr = torch.linalg.vector_norm(reference.float())
    return u * (nr / torch.clamp(nu, min=1e-30)).to(u.dtype)


def adam_direction(
    exp_avg_sq: Tensor, grad: Tensor, step: int, beta2: float = 0.999, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Adam's second moment ``v' = beta2 v + (1 - beta2) g^2``; returns
    ``(v', g / (sqrt(v' / (1 - beta2^step)) + eps))``. Nothing is modified in place."""
    new = exp_avg_sq * beta2 + (1.0 - beta2) * grad * grad
    return new, grad / ((new / (1.0 - beta2**step)).sqrt() + eps)


def weight_decay(param: Tensor, lr: float, decay: float) -> None:
    """Decoupled weight decay (Loshchilov & Hutter): ``param <- param (1 - lr decay)``."""
    if decay:
        param.mul_(1.0 - lr * decay)
