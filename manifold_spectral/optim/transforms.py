"""Small update transformations composed by ``SpectralKron`` (optax-style, each testable alone).

Every function takes and returns tensors and never touches optimizer state it was not given.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..linalg import as_dtype, operand

__all__ = [
    "heavy_ball",
    "rms",
    "clip_by_rms",
    "graft_norm",
    "adam_direction",
    "wide_dtype",
    "second_moment",
    "scale_by_second_moment",
    "weight_decay",
    "as_shape",
]


def heavy_ball(
    buf: Tensor, grad: Tensor, momentum: float, nesterov: bool = False
) -> tuple[Tensor, Tensor]:
    """``buf' = momentum buf + grad``; returns ``(buf', direction)`` with direction ``buf'``
    (Nesterov: ``grad + momentum buf'``). Nothing is modified in place."""
    m = operand(momentum, buf)  # a cached 0-d tensor: the same bits, no wrapped number
    # in place on the fresh products: the same sums (addition commutes exactly)
    new = torch.mul(buf, m).add_(grad)
    return new, (torch.mul(new, m).add_(grad) if nesterov else new)


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


@functools.cache
def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for 16-bit types (whose squares and EMAs lose small increments), else ``dtype``."""
    return torch.float32 if torch.finfo(dtype).bits <= 16 else dtype


def second_moment(v: Tensor, z: Tensor, beta: float) -> Tensor:
    """Exponential moving average of squares, ``v' = beta v + (1 - beta) z^2``, in at least
    float32 (16-bit squares would lose the ``(1 - beta)`` increments). Not in place."""
    zf = as_dtype(z, wide_dtype(z.dtype))
    # beta v + ((1 - beta) z) z, the last two steps in place on the fresh products (not one
    # addcmul: its result differs in the last bit from these separate roundings)
    square = torch.mul(zf, operand(1.0 - beta, zf)).mul_(zf)
    return torch.mul(as_dtype(v, zf.dtype), operand(beta, zf)).add_(square)


#: Relative floor of ``scale_by_second_moment``: ``v_hat`` is raised by this fraction of its
#: mean over the matrix. In a rank-deficient layer some eigenbasis coordinates carry only
#: rounding noise, ``z ~ eps |g|``; with an absolute floor alone their step
#: ``z / sqrt(v_hat + lambda)`` is a ratio of two rounding-level numbers, so runs that differ
#: by rounding (DDP vs one process) drift apart. With this floor such a coordinate's step is at
#: most ``1 / sqrt(floor)`` times its relative size: rounding stays rounding-sized, and the
#: scaling stays invariant to the gradient's scale.
RELATIVE_FLOOR = 1e-6


def scale_by_second_moment(
    z: Tensor,
    v: Tensor,
    step: int,
    beta: float,
    root: float,
    damping: float = 0.0,
    eps: float = 1e-8,
    numel: Tensor | None = None,
) -> Tensor:
    """``z / ((v_hat + damping + f mean(v_hat))^(1/p) + eps)`` with ``v_hat = v / (1 - beta^step)``
    and ``f = RELATIVE_FLOOR`` (mean over the last two dimensions): Adam's bias-corrected
    scaling for ``p = 2`` (``damping`` is the ``lambda`` of ``H + lambda I``), computed in at
    least float32 and returned in ``z``'s dtype. ``numel`` (*batch, 1, 1): the number of true
    entries of each matrix of a zero-padded batch, the mean's denominator."""
    vhat = v / (1.0 - beta**step)  # a number that changes every step: not cached
    if numel is None:
        mean = vhat.mean(dim=(-2, -1), keepdim=True)
    else:
        mean = vhat.sum(dim=(-2, -1), keepdim=True) / numel
    # in place on the fresh v_hat and mean: the same operations, fewer temporaries (and the
    # scalars as cached 0-d tensors: linalg.operand)
    floor = mean.mul_(operand(RELATIVE_FLOOR, mean)).add_(operand(damping, mean))
    denominator = vhat.add_(floor).pow_(1.0 / root).add_(operand(eps, vhat))
    zf = as_dtype(z, wide_dtype(z.dtype))
    return as_dtype(torch.div(zf, denominator, out=denominator), z.dtype)


def weight_decay(param: Tensor | list[Tensor], lr: float, decay: float) -> None:
    """Decoupled weight decay (Loshchilov & Hutter): ``param <- param (1 - lr decay)``, in
    place; a list of tensors in one ``torch._foreach_mul_``."""
    if decay:
        if isinstance(param, list):
            torch._foreach_mul_(param, 1.0 - lr * decay)
        else:
            param.mul_(1.0 - lr * decay)


def as_shape(t: Tensor, shape: torch.Size) -> Tensor:
    """``t.reshape(shape)``, or ``t`` itself when it has that shape already: a reshape to the
    same shape still dispatches a view, and a step writes one per parameter and state entry."""
    return t if t.shape == shape else t.reshape(shape)
