"""Per-parameter preconditioners of ``SpectralKron``: thin wrappers of the spectral manifolds.

A preconditioner owns no formula: its curvature update is
``Gaussian(manifold, ...).precision_step(point, GOP(grad, damping))`` and its direction is
``manifold.apply_power(point, grad, -1/p)``. Its state is a flat dict of tensors so that
``torch.optim.Optimizer.state_dict`` can save it and resume bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..gaussian import GOP, Gaussian
from ..manifolds import (
    DiagonalPoint,
    DiagonalSPD,
    KroneckerSpectralPoint,
    KroneckerSpectralSPD,
    SpectralPoint,
)

__all__ = ["KroneckerPreconditioner", "DiagonalPreconditioner", "make_preconditioner"]


class KroneckerPreconditioner:
    """``S = alpha (S_L kron S_R)`` for a parameter viewed as an (a, b) matrix."""

    kind = "kronecker"

    def __init__(self, a: int, b: int, dtype: torch.dtype, device: Any, opts: dict) -> None:
        self.shape = (a, b)
        self.manifold = KroneckerSpectralSPD(a, b, dtype, device, cayley=opts["cayley"])
        self.gauss = Gaussian(
            self.manifold,
            beta2=opts["beta2"],
            gamma=opts["gamma"],
            root=opts["root"],
            exponential="truncated" if opts["truncated"] else "exact",
        )
        self.damping = opts["damping"]
        self.root = opts["root"]

    def init_state(self, grad: Tensor | None, warm_start: bool) -> dict[str, Tensor]:
        if warm_start and grad is not None:
            # One eigh per factor at the first step (init-only): S_L ~ G G^T, S_R ~ G^T G.
            G = grad.double()
            a, b = self.shape
            eye_a = torch.eye(a, dtype=G.dtype, device=G.device)
            eye_b = torch.eye(b, dtype=G.dtype, device=G.device)
            scale = (G * G).mean() + self.damping
            x = self.manifold.from_kronecker(
                (G @ G.T / b + scale * eye_a).to(self.manifold.dtype),
                (G.T @ G / a + scale * eye_b).to(self.manifold.dtype),
            )
        else:
            x = self.manifold.origin()
        return self.to_state(x)

    @staticmethod
    def to_state(x: KroneckerSpectralPoint) -> dict[str, Tensor]:
        return {
            "alpha": x.alpha,
            "B_L": x.left.B,
            "d_L": x.left.d,
            "B_R": x.right.B,
            "d_R": x.right.d,
        }

    @staticmethod
    def point(state: dict[str, Tensor]) -> KroneckerSpectralPoint:
        return KroneckerSpectralPoint(
            state["alpha"],
            SpectralPoint(state["B_L"], state["d_L"]),
            SpectralPoint(state["B_R"], state["d_R"]),
        )

    def update(self, state: dict[str, Tensor], grad: Tensor) -> dict[str, Tensor]:
        """One curvature step from the gradient matrix (Fig. 6 right when truncated)."""
        G = grad.reshape(-1).to(self.manifold.dtype)
        x = self.gauss.precision_step(self.point(state), GOP(G, damping=self.damping))
        return self.to_state(x)

    def precondition(self, state: dict[str, Tensor], grad: Tensor) -> Tensor:
        """``alpha^(-1/p) S_L^(-1/p) G S_R^(-1/p)`` in the state dtype."""
        G = grad.reshape(self.shape).to(self.manifold.dtype)
        return self.manifold.apply_power_matrix(self.point(state), G, -1.0 / self.root)


class DiagonalPreconditioner:
    """``S = Diag(d)`` over all entries (biases, norms, embeddings, oversized matrices)."""

    kind = "diagonal"

    def __init__(self, numel: int, dtype: torch.dtype, device: Any, opts: dict) -> None:
        self.manifold = DiagonalSPD(numel, dtype, device)
        self.gauss = Gaussian(
            self.manifold,
            beta2=opts["beta2"],
            gamma=opts["gamma"],
            root=opts["root"],
            exponential="truncated" if opts["truncated"] else "exact",
        )
        self.damping = opts["damping"]
        self.root = opts["root"]

    def init_state(self, grad: Tensor | None, warm_start: bool) -> dict[str, Tensor]:
        x = self.manifold.origin()
        if warm_start and grad is not None:
            g = grad.reshape(-1).to(self.manifold.dtype)
            x = DiagonalPoint(g * g + self.damping + torch.finfo(x.d.dtype).tiny)
        return {"d": x.d}

    def update(self, state: dict[str, Tensor], grad: Tensor) -> dict[str, Tensor]:
        g = grad.reshape(-1).to(self.manifold.dtype)
        x = self.gauss.precision_step(DiagonalPoint(state["d"]), GOP(g, damping=self.damping))
        return {"d": x.d}

    def precondition(self, state: dict[str, Tensor], grad: Tensor) -> Tensor:
        g = grad.reshape(-1).to(self.manifold.dtype)
        return self.manifold.apply_power(DiagonalPoint(state["d"]), g, -1.0 / self.root)


def make_preconditioner(param: Tensor, dtype: torch.dtype, opts: dict) -> Any:
    """Kronecker factors for matrices (conv kernels as (out, fan_in)) whose sides are at most
    ``max_factor_dim`` and that are not marked ``diagonal``; the diagonal scheme otherwise."""
    if param.ndim >= 2 and not opts.get("diagonal", False):
        a, b = param.shape[0], param[0].numel()
        if a > 1 and b > 1 and max(a, b) <= opts["max_factor_dim"]:
            return KroneckerPreconditioner(a, b, dtype, param.device, opts)
    return DiagonalPreconditioner(param.numel(), dtype, param.device, opts)
