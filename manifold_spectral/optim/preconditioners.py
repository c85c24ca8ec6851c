"""Per-parameter preconditioners of ``SpectralKron``: thin wrappers of the spectral manifolds.

A preconditioner owns no formula: its curvature update is
``Gaussian(manifold, ...).precision_step(point, Rotated(manifold.gop_eigenbasis(point, grad,
damping)))`` (the GOP of the gradient, in the eigenbasis) and its direction is
``manifold.apply_power(point, grad, -1/p)``. Its state is a flat dict of tensors so that
``torch.optim.Optimizer.state_dict`` can save it and resume bit for bit.

Re-orthogonalisation of the Kronecker factors (``RGD``'s ``"auto"`` period) follows the
optimizer's curvature-update count, which is saved in the state and handed to
``Gaussian.precision_step(count=...)``, not a counter inside ``RGD``, which is not saved: a
resumed or rejected step must not shift the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..gaussian import Gaussian, Rotated
from ..linalg import as_dtype
from ..manifolds import (
    DiagonalPoint,
    DiagonalSPD,
    KroneckerSpectralPoint,
    KroneckerSpectralSPD,
    SpectralPoint,
)
from . import option_defaults, transforms

__all__ = [
    "KroneckerPreconditioner",
    "DiagonalPreconditioner",
    "kronecker_shape",
    "param_cost",
    "kronecker_cost",
    "make_preconditioner",
]


class KroneckerPreconditioner:
    """``S = alpha (S_L kron S_R)`` for a parameter viewed as an (a, b) matrix."""

    kind = "kronecker"

    def __init__(
        self,
        a: int,
        b: int,
        dtype: torch.dtype,
        device: Any,
        opts: dict,
        batch: int | None = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.shape = (a, b)
        #: ``()`` or ``(k,)``: with ``batch=k`` the state, gradients and directions of k
        #: parameters carry a leading dimension (``SpectralKron``'s buckets).
        self.batch_shape: tuple[int, ...] = () if batch is None else (batch,)
        self.manifold = KroneckerSpectralSPD(
            a,
            b,
            dtype,
            device,
            gap_damping=opts.get("gap_damping", 0.0),
            gap_floor=opts.get("gap_floor", 0.0),
            cayley=opts["cayley"],
            neumann_squarings=option_defaults.squarings(opts),
            batch=batch,
            sizes=sizes,
        )
        #: ``None``, or the true shapes of a padded bucket (``manifolds.kronecker_padding``).
        self.padding = self.manifold.padding
        self.gauss = _gaussian(self.manifold, opts, self.kind)
        self.gauss_continued = _gaussian(self.manifold, opts, self.kind, continued=True)
        self.damping = damping_floor(opts["damping"], self.manifold.dtype)
        self.root = opts["root"]

    def init_state(self, grad: Tensor | None, warm_start: bool) -> dict[str, Tensor]:
        """The identity, or (``warm_start``) the Kronecker estimate of ``g g^T + damping I``
        from the first gradient: ``S_L ~ G G^T / b + c I``, ``S_R ~ G^T G / a + c I``
        (``c = mean(G^2) + damping``), scaled so that ``tr(S) / (ab) = mean(G^2) + damping``.

        One ``eigh`` per factor, in float64 and at initialisation only; the factors are then
        rounded to the state dtype.
        """
        if warm_start and grad is not None:
            a, b = self.shape
            G = grad.reshape(a, b).double()  # conv kernels: (out, fan_in)
            c = (G * G).mean() + self.damping
            S_L = G @ G.T / b + c * torch.eye(a, dtype=G.dtype, device=G.device)
            S_R = G.T @ G / a + c * torch.eye(b, dtype=G.dtype, device=G.device)
            # Both factors ~ c, so from_kronecker's alpha = det(S_L)^(1/a) det(S_R)^(1/b) ~ c^2
            # would overflow the state dtype long before the final alpha ~ c does (float32:
            # at |g| ~ 4e9, not at the documented 1.8e19): the factors are scaled by
            # t = 2^-round(log2 c) first (a power of two: the scaling rounds nothing).
            t = 2.0 ** -round(math.log2(float(c))) if 0.0 < float(c) < math.inf else 1.0
            try:
                # init-only: from_kronecker runs one eigh per factor (float64: no bf16 PD floor)
                x = self.manifold.from_kronecker(S_L * t, S_R * t)
            except ValueError:  # the gradient's scale does not fit the state dtype
                return self.to_state(self.manifold.origin())
            # from_kronecker returns det-1 factors with alpha = t^2 det(S_L)^(1/a) det(S_R)^(1/b);
            # rescale alpha so the trace matches the GOP's (S_L kron S_R alone is ~ c^2).
            scale = c * a * b / (torch.trace(S_L) * torch.trace(S_R)) / (t * t)
            alpha = (x.alpha.double() * scale).to(x.alpha.dtype)
            x = KroneckerSpectralPoint(alpha, x.left, x.right)
            if not self.manifold.check_point(x, fast=True)[0]:
                x = self.manifold.origin()  # the scale does not fit the state dtype
        else:
            x = self.manifold.origin()
        return self.to_state(x)

    def pack(self, tensors: Sequence[Tensor], key: str | None = None) -> Tensor:
        """The tensors of a bucket's k parameters as one batched tensor (a leading axis):
        state entries ``key`` ("alpha", "B_L", "d_L", "B_R", "d_R") or, for ``key=None``,
        tensors shaped like the parameters (gradients, directions, second moments); a padded
        bucket embeds them in its shape (``KroneckerPadding.embed``)."""
        if self.padding is None or key == "alpha":
            return torch.stack(list(tensors))
        return self.padding.embed(tensors, key or "matrix")

    def unpack(self, t: Tensor, key: str | None = None) -> tuple[Tensor, ...]:
        """The inverse of ``pack``: k tensors (``KroneckerPadding.extract`` when padded)."""
        if self.padding is None or key == "alpha":
            return t.unbind(0)
        return self.padding.extract(t, key or "matrix")

    def refill(self, packed: Tensor, flat: Tensor, key: str | None = None) -> Tensor:
        """A padded bucket's ``pack`` into a kept padded tensor (``KroneckerPadding.fill``):
        ``flat`` holds the members' true blocks in order (the one copy that ``unpack``
        returned views of). Equal to ``pack`` where ``packed``'s padding is the embedding's
        (identity, ones, zeros), which every update keeps exactly (module docstring of
        ``manifolds.kronecker_padding``)."""
        return self.padding.fill(packed, flat, key or "matrix")

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

    def update(
        self,
        state: dict[str, Tensor],
        grad: Tensor,
        count: int,
        continued: bool = False,
        rotated: Tensor | None = None,
        sides: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Curvature step number ``count`` (1, 2, ...) from the gradient matrix (Fig. 6 right
        when truncated; ``continued``: the truncated map continued positively), with the
        Newton-Schulz polar step of both factors on ``RGD``'s schedule of ``count``.

        ``rotated``: ``B_L^T G B_R`` at ``state``, when the caller has it already
        (``precondition_corrected``): the GOP in the eigenbasis is then not recomputed.
        ``sides``: the means ``(W_L, W_R)`` of several gradients at ``state``
        (``side_sums``; ``KroneckerGOPSides``), the curvature instead of ``grad``'s GOP."""
        x = self.point(state)
        if sides is not None:
            Ht = self.manifold.gop_sides(*sides, self.damping)
        elif rotated is None:  # one gradient column per element; the optimizer checked it
            V = as_dtype(grad.reshape(*self.batch_shape, -1, 1), self.manifold.dtype)
            Ht = self.manifold.gop_eigenbasis(x, V, self.damping)
        else:  # one gradient per element: the GOP's m axis is 1
            Ht = self.manifold.gop_from_rotated(rotated, self.damping)
        # The state is the checked result of the previous update (or of init_state), so only
        # the new point is checked (inside RGD): half the per-update point checks.
        gauss = self.gauss_continued if continued else self.gauss
        x = gauss.precision_step(x, Rotated(Ht), check_input=False, count=count)
        return self.to_state(x)

    def side_sums(
        self,
        state: dict[str, Tensor],
        grad: Tensor,
        rotated: Tensor | None = None,
        mean: tuple[Tensor, Tensor, float | Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(Z D_R^-1 Z^T, Z^T D_L^-1 Z)`` of the gradient matrix in the eigenbasis of
        ``state``, ``Z = B_L^T G B_R`` (``rotated``, when the caller has it): what the GOP
        step reads of one gradient (``manifold.gop_side_sums``), to be added up over the
        steps between two curvature updates (``accumulate_gop``); ``mean = (M_L, M_R, n)``:
        the running means of ``n`` gradients' sums instead (``gop_side_sums``)."""
        x = self.point(state)
        if rotated is None:
            G = as_dtype(grad.reshape(*self.batch_shape, *self.shape), self.manifold.dtype)
            rotated = self.manifold.to_eigenbasis(x, G)
        return self.manifold.gop_side_sums(x, rotated, mean)

    def precondition(
        self, state: dict[str, Tensor], grad: Tensor, floor: tuple[float, float] | None = None
    ) -> Tensor:
        """``alpha^(-1/p) S_L^(-1/p) G S_R^(-1/p)`` in the state dtype; ``floor = (c, beta2)``:
        the eigenvalues floored by the GOP of ``c G`` (``KroneckerSpectralSPD.eigen_floor``;
        ``c = 1 - momentum``: the gradient a momentum direction stands for), read off the
        rotated ``G`` that the power takes anyway (no more products)."""
        G = as_dtype(grad.reshape(*self.batch_shape, *self.shape), self.manifold.dtype)
        man, x, r = self.manifold, self.point(state), -1.0 / self.root
        if floor is None:
            return man.apply_power_matrix(x, G, r)
        Z = man.to_eigenbasis(x, G)
        x = man.eigen_floor(x, Z * floor[0], self.damping, floor[1])
        return man.apply_power_eigenbasis(x, Z, r)

    def precondition_corrected(
        self,
        state: dict[str, Tensor],
        direction: Tensor,
        grad: Tensor,
        v: Tensor,
        step: int,
        beta: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Eigenvalue-corrected direction (EKFAC, George et al. 2018; SOAP runs Adam in the
        same place, Vyas et al. 2024), in the eigenbasis learned by the spectral RGD:

            Z_g = B_L^T g B_R,  v <- beta v + (1 - beta) Z_g^2,
            u = B_L [(B_L^T m B_R) / ((v / (1 - beta^t) + lambda)^(1/p) + eps)] B_R^T.

        ``v + lambda`` (``v`` in at least float32, shaped like the parameter matrix) is the
        diagonal of the damped gradient outer product in the Kronecker eigenbasis, the
        Frobenius-best diagonal for that basis;
        it replaces the product ``alpha d_L d_R^T`` of the factors' eigenvalues, which still
        drive the learning of the basis. Returns ``(u, v', Z_g)``; no decomposition.

        ``Z_g`` is the gradient in the eigenbasis of ``state``, which the GOP of the curvature
        step at ``state`` needs too (``update(..., rotated=Z_g)``): preconditioning in the
        basis before this step's curvature update, as SOAP does with its eigenbasis, saves
        those two products."""
        x = self.point(state)
        shape = (*self.batch_shape, *self.shape)
        dt = self.manifold.dtype
        g = as_dtype(transforms.as_shape(grad, shape), dt)
        m = as_dtype(transforms.as_shape(direction, shape), dt)
        # Two calls, not one on torch.stack([g, m]): a batched factor broadcast over the pair
        # is materialised (a copy of the expanded, transposed B per call) before the products.
        Zg, Zm = self.manifold.to_eigenbasis(x, g), self.manifold.to_eigenbasis(x, m)
        v = transforms.second_moment(transforms.as_shape(v, shape), Zg, beta)
        numel = None if self.padding is None else self.padding.numel
        Z = transforms.scale_by_second_moment(
            Zm, v, step, beta, self.root, self.damping, numel=numel
        )
        return self.manifold.from_eigenbasis(x, Z), v, Zg


class DiagonalPreconditioner:
    """``S = Diag(d)`` over all entries (biases, norms, embeddings, oversized matrices)."""

    kind = "diagonal"
    shape = None

    def __init__(
        self,
        numel: int,
        dtype: torch.dtype,
        device: Any,
        opts: dict,
        sizes: tuple[int, ...] | None = None,
    ) -> None:
        #: the entries of each parameter of a bucket, concatenated (``pack``); ``None``: one.
        self.sizes = sizes
        self.manifold = DiagonalSPD(numel, dtype, device)
        self.gauss = _gaussian(self.manifold, opts, self.kind)
        self.gauss_continued = _gaussian(self.manifold, opts, self.kind, continued=True)
        self.damping = damping_floor(opts["damping"], self.manifold.dtype)
        self.root = opts["root"]

    @staticmethod
    def pack(tensors: Sequence[Tensor], key: str | None = None) -> Tensor:
        """The entries of a bucket's parameters, flattened and concatenated: the scheme is
        elementwise, so one step on the concatenation is the separate steps. Vectors (biases,
        norm scales: most of a bucket) go in as they are: their ``reshape`` would be a view
        call each, which costs several times what ``cat`` spends on them."""
        return torch.cat([t if t.ndim == 1 else t.reshape(-1) for t in tensors])

    def unpack(self, t: Tensor, key: str | None = None) -> tuple[Tensor, ...]:
        """The inverse of ``pack``: one flat view per parameter."""
        return t.split_with_sizes(self.sizes)  # Tensor.split's Python wrapper, skipped

    @staticmethod
    def point(state: dict[str, Tensor]) -> DiagonalPoint:
        return DiagonalPoint(state["d"])

    def init_state(self, grad: Tensor | None, warm_start: bool) -> dict[str, Tensor]:
        x = self.manifold.origin()
        if warm_start and grad is not None:
            g = grad.reshape(-1).to(self.manifold.dtype)
            warm = DiagonalPoint(g * g + self.damping + torch.finfo(x.d.dtype).tiny)
            if self.manifold.check_point(warm, fast=True)[0]:  # else: g^2 overflows
                x = warm
        return {"d": x.d}

    def update(
        self,
        state: dict[str, Tensor],
        grad: Tensor,
        count: int,
        continued: bool = False,
        rotated: None = None,
        sides: None = None,
    ) -> dict[str, Tensor]:
        x = DiagonalPoint(state["d"])
        V = as_dtype(grad.reshape(-1, 1), self.manifold.dtype)  # the optimizer checked it
        gauss = self.gauss_continued if continued else self.gauss
        # Gaussian.precision_step's closed form through the manifold's unchecked cores: the
        # state is the checked result of the previous update (or of init_state), the gradient
        # passed the step's checks, the options the group's validation, and the layouts hold
        # by construction; their checks cost more than the elementwise step of a few vectors.
        # The GOP diagonal is non-negative (squares and damping). The result is checked as
        # every RGD step's (``Gaussian.finish_step``).
        Ht = self.manifold.gop_eigenbasis_unchecked(V, self.damping)
        x = self.manifold.closed_form_step_unchecked(
            x, Ht, gauss.beta2, gauss.gamma, gauss.exponential, nonnegative=True
        )
        return {"d": gauss.finish_step(x).d}

    def precondition(
        self, state: dict[str, Tensor], grad: Tensor, floor: tuple[float, float] | None = None
    ) -> Tensor:
        """``d^(-1/p) * g``; ``floor = (c, beta2)``: with ``d`` floored by the GOP of ``c g``
        (``DiagonalSPD.eigen_floor``), as the Kronecker scheme's ``precondition``."""
        g = as_dtype(grad.reshape(-1), self.manifold.dtype)
        d = state["d"]
        if floor is not None:
            d = self.manifold.eigen_floor(d, g * floor[0], self.damping, floor[1])
        return self.manifold.apply_power_unchecked(d, g, -1.0 / self.root)


def damping_floor(damping: float, dtype: torch.dtype) -> float:
    """``max(damping, sqrt(tiny(dtype)))``: the curvature step divides by ``d_i d_j``, which
    must not underflow to 0 where a gradient entry is exactly zero and ``d = damping``."""
    return max(float(damping), float(torch.finfo(dtype).tiny) ** 0.5)


def _gaussian(manifold: Any, opts: dict, kind: str, continued: bool = False) -> Gaussian:
    """The curvature update of a ``kind`` preconditioner with ``opts``' eigenvalue map and
    rate (``option_defaults.beta2`` at the kind's period), or (``continued``) the truncated
    map continued positively (``blocks.eig_retract``)."""
    exponential = opts["exponential"]
    return Gaussian(
        manifold,
        beta2=option_defaults.beta2(opts, kind),
        gamma=opts["gamma"],
        root=opts["root"],
        exponential="continued" if continued else exponential,
        jacobi=opts.get("jacobi", False),
        updated_gaps=opts.get("updated_gaps", False),
        basis_scale=opts.get("basis_scale", 1.0),
    )


def kronecker_shape(shape: tuple[int, ...], opts: dict) -> tuple[int, int] | None:
    """``(a, b)`` when a parameter of this (global) shape gets Kronecker factors: a matrix
    (conv kernels as (out, fan_in)) whose sides are at most ``max_factor_dim``, whose long
    side is at most ``max_aspect`` times its short one (where set) and that is not marked
    ``diagonal``; ``None`` when it gets the diagonal scheme."""
    if len(shape) >= 2 and not opts.get("diagonal", False):
        a, b = shape[0], math.prod(shape[1:])
        aspect = opts.get("max_aspect")
        if a > 1 and b > 1 and max(a, b) <= opts["max_factor_dim"]:
            if aspect is None or max(a, b) <= aspect * min(a, b):
                return a, b
    return None


def param_cost(shape: Sequence[int], opts: dict[str, Any]) -> int:
    """FLOP-like cost of one step of a parameter's preconditioner: ``a^3 + b^3 + ab(a + b)``
    for Kronecker factors (the products of both factors and the two-sided preconditioning
    product), the number of entries for the diagonal scheme."""
    ab = kronecker_shape(tuple(shape), opts)
    return math.prod(shape) if ab is None else kronecker_cost(*ab)


def kronecker_cost(a: int, b: int) -> int:
    """``a^3 + b^3 + ab(a + b)``: the cost of a Kronecker preconditioner step (``param_cost``)."""
    return a**3 + b**3 + a * b * (a + b)


def make_preconditioner(
    param: Tensor,
    dtype: torch.dtype,
    opts: dict,
    batch: int | None = None,
    sizes: Any = None,
) -> Any:
    """Kronecker factors or the diagonal scheme, as ``kronecker_shape`` decides. Only the
    shape and device of ``param`` are read (a sharded ``DTensor`` gives its global shape).
    A bucket: ``batch=k``, one Kronecker preconditioner for k parameters, with ``sizes``
    their Kronecker shapes ``(a_i, b_i)`` (padded to the largest sides; ``None``: all shaped
    like ``param``); for the diagonal scheme, ``sizes``, the entries of each parameter (one
    diagonal preconditioner over their concatenation)."""
    ab = kronecker_shape(tuple(param.shape), opts)
    if ab is not None:
        if sizes is not None:
            ab = (max(s[0] for s in sizes), max(s[1] for s in sizes))
        return KroneckerPreconditioner(*ab, dtype, param.device, opts, batch=batch, sizes=sizes)
    if batch is None or batch == 1:
        return DiagonalPreconditioner(math.prod(param.shape), dtype, param.device, opts)
    return DiagonalPreconditioner(sum(sizes), dtype, param.device, opts, sizes=tuple(sizes))
