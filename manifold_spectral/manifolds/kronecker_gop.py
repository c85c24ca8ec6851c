"""The precision step of ``KroneckerSpectralSPD`` on a GOP in closed form (paper Fig. 6 right,
App. A.3, Claims 7-8).

``Gaussian.precision_step`` with a GOP curvature is the RGD step (rate ``beta2``) of
``precision_egrad_eigenbasis`` through ``natural_gradient_eigenbasis`` and ``retr``. For the GOP
the three compose into a few lines, because ``alpha G_l`` off the diagonal is
``-W_l / (2 alpha d_i d_j)`` and Claim 7 turns the scalar step into the mean of the factors'
eigenvalue steps. With

    W_L = mean_i Z_i D_R^-1 Z_i^T + lambda tr(S_R^-1) I,
    W_R = mean_i Z_i^T D_L^-1 Z_i + lambda tr(S_L^-1) I,

the step is, per factor ``l`` (``kappa_L = b``, ``kappa_R = a``):

    n_l   = d_l (1 + m_l),   m_l = beta2 (diag(W_l) / (alpha kappa_l d_l) - gamma)
          = (1 - gamma beta2) d_l + beta2 diag(W_l) / (alpha kappa_l)   (``blocks.gop_eig_step``)
    M_l   = -beta2 W_l,ij / (2 alpha kappa_l (d_i - d_j))          (i > j; ``blocks.inverse_gaps``)
    B_l  <- B_l Cayley(Skew(M_l)),  d_l <- n_l / geomean(n_l)
    alpha <- alpha sqrt(geomean(n_L) geomean(n_R))

``n_l = (1 - gamma beta2) d_l + beta2 / (alpha kappa_l) diag(W_l)`` is Fig. 6's; ``d_l (1 + m_l)``
is the truncated map of ``blocks.eig_retract`` (also ``"continued"`` and ``"exact"``:
``d_l exp(m_l)``, whose geometric means carry the exact scalar step). The layered path
computes the same point (equal to rounding; tests/test_closed_form_step.py) with about twice the
tensor operations, which dominate the step of small layers.

``updated_gaps=True`` takes the rotation's gaps after the eigenvalue step, ``n_i - n_j`` for
``d_i - d_j`` (a step of its own, not the RGD step, which the layered path cannot take). With
``jacobi`` each pair then turns by the exact eigenvector angle of its 2 x 2 block of the
updated curvature ``(1 - gamma beta2) D + beta2 W_l / (alpha kappa_l)`` (truncated map):
``atan(2 beta2 W~_ij / (n_j - n_i)) / 2``, the pair's step of a Jacobi eigenvalue sweep. The two
agree to first order in ``beta2``; they differ where ``d`` is nearly repeated but ``W``'s
diagonal is not (a warm start whose identity term evens out a factor's small eigenvalues, or
a factor's coordinates that a new gradient separates): the old gap, damped by
``gap_damping``, turns such a pair barely or not at all, although the new curvature
separates it, and the basis lags the curvature that the eigenvalues already follow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..linalg import matmul, matmul_add, operand
from ..validation import check_exponential, check_flag
from . import blocks
from .base import check_cayley, check_positive
from .kronecker_points import KroneckerGOP, KroneckerGOPSides, KroneckerSpectralPoint
from .points import SpectralPoint

__all__ = ["KroneckerGOPStepMixin"]


class KroneckerGOPStepMixin:
    """``closed_form_step`` of ``KroneckerSpectralSPD`` (see the module docstring); it reads the
    manifold's ``a``, ``b``, ``kappa_L``/``kappa_R``, factor manifolds ``left``/``right`` and
    ``cayley``. Not a manifold by itself."""

    def gop_side_sums(
        self,
        x: KroneckerSpectralPoint,
        Z: Tensor,
        mean: tuple[Tensor, Tensor, float | Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(sum_i Z_i D_R^-1 Z_i^T, sum_i Z_i^T D_L^-1 Z_i)`` over the ``m`` gradients of
        ``Z`` (m, a, b) (batched (k, m, a, b); one gradient also as (a, b), batched
        (k, a, b), without the view of an ``m`` axis) in the eigenbasis of ``x``: the one-sided
        sums that the precision step of a GOP reads (module docstring, without the damping
        term and the division by ``m``). Sums, so that an optimizer can add those of
        gradients taken at one point at different steps (``KroneckerGOPSides``).

        ``mean = (M_L, M_R, n)``: instead the running means ``M + (W - M) / n = (1 - 1/n) M +
        W / n`` of the sums of ``n`` such gradients, ``M`` the means of the first ``n - 1``
        (an optimizer's kept sums; means, not sums, overflow only where one gradient's sums
        do): for a number ``n``, inside the product (``linalg.matmul_add``); for a (k,)
        tensor of counts, one per batch element, after it."""
        bs, a, b = self.batch_shape, self.a, self.b
        one = Z.ndim == len(bs) + 2
        if (
            (Z.ndim != len(bs) + 3 and not one)
            or Z.shape[: len(bs)] != bs
            or tuple(Z.shape[-2:]) != (a, b)
        ):
            raise ValueError(
                f"Ht.Z: expected shape {(*bs, 'm', a, b)} or {(*bs, a, b)}, got {tuple(Z.shape)}"
            )
        dL, dR = x.left.d, x.right.d
        if one or Z.shape[-3] == 1:  # one gradient a step (an optimizer's): fewer views
            Z1 = Z if one else Z.select(-3, 0)
            pairs = ((Z1 / dR.unsqueeze(-2), Z1.mT), ((Z1 / dL.unsqueeze(-1)).mT, Z1))
        else:
            m = Z.shape[-3]
            # Sums over the m gradients and a side in one product each: (a, mb) (mb, a) and
            # (b, ma) (ma, b).
            Zt = Z.transpose(-3, -2)
            Zs = Zt.reshape(*bs, a, m * b)
            ZL = (Z / self._sample_axis(dL)[..., :, None]).reshape(*bs, m * a, b)
            pairs = (
                ((Zt / dR[..., None, None, :]).reshape(*bs, a, m * b), Zs.mT),
                (ZL.mT, Z.reshape(*bs, m * a, b)),
            )
        if mean is None:
            return tuple(matmul(P, Q) for P, Q in pairs)
        *M, n = mean
        if not isinstance(n, Tensor):
            w = 1.0 / float(n)
            return tuple(
                matmul_add(Mi, P, Q, 1.0 - w, w) for Mi, (P, Q) in zip(M, pairs, strict=True)
            )
        # Per element: in the arithmetic of at least float32 (a 16-bit state's products
        # run in it too), the result rounded once.
        wide = torch.promote_types(M[0].dtype, torch.float32)
        w = (1.0 / n.to(wide)).view(-1, 1, 1)
        return tuple(
            (Mi.to(wide) * (1.0 - w) + matmul(P, Q).to(wide) * w).to(Mi.dtype)
            for Mi, (P, Q) in zip(M, pairs, strict=True)
        )

    def check_gop_sides(self, Ht: KroneckerGOPSides) -> tuple[Tensor, Tensor]:
        """``(Ht.W_L, Ht.W_R)`` after a check of their shapes (``ValueError`` naming them)."""
        bs, a, b = self.batch_shape, self.a, self.b
        for name, W, n in (("W_L", Ht.W_L, a), ("W_R", Ht.W_R, b)):
            if tuple(W.shape) != (*bs, n, n):
                raise ValueError(f"Ht.{name}: expected shape {(*bs, n, n)}, got {tuple(W.shape)}")
        return Ht.W_L, Ht.W_R

    def eigen_floor(
        self, x: KroneckerSpectralPoint, Z: Tensor, damping: float, beta2: float
    ) -> KroneckerSpectralPoint:
        """``x`` with each factor's eigenvalues raised to ``max(d_l, beta2 h_l)``, ``h_l =
        (diag(W_l) + lambda tr(S_other^-1)) / (alpha kappa_l)`` of the one gradient ``Z``
        (``B_L^T G B_R``, shaped like a batch of ``x``'s matrices): the least that the
        truncated map of a curvature step at rate ``beta2`` gives them from ``Z``'s GOP
        (module docstring), without the step (no rotation, no normalisation; ``x`` itself
        where the floor does not bind: the same bits).

        Why: between two curvature steps a preconditioner ``S^(-1/p)`` has not seen the
        current gradient, so a gradient ``s`` times the curvature's scale is stepped ``s``
        times as far (a spike moved the weights by ``10^4`` learning rates); under the floor
        ``|Z_ij| / (alpha d_Li d_Rj)^(1/2)`` is bounded by about ``beta2^(-1/2)`` whatever
        ``s``, as after a curvature step. ``W_l``'s diagonal of one gradient is two
        matrix-vector products (``Z^2 d_R^-1``, ``d_L^-1 Z^2``)."""
        self.validate_layout(x)
        pad = self.padding
        dL, dR = x.left.d, x.right.d
        Z2 = Z.square()
        wL = matmul(Z2, dR.reciprocal()[..., :, None])[..., 0]
        wR = matmul(dL.reciprocal()[..., None, :], Z2)[..., 0, :]
        new = []
        for p, w, kappa, other, side in (
            (x.left, wL, self.kappa_L, dR, "R"),
            (x.right, wR, self.kappa_R, dL, "L"),
        ):
            tr = other.reciprocal().sum(-1) if pad is None else pad.trace_inverse(other, side)
            h, _ = _eigen_target(x.alpha, w, damping, tr, kappa)
            new.append(SpectralPoint(p.B, torch.maximum(p.d, h.mul_(operand(beta2, h)))))
        return KroneckerSpectralPoint(x.alpha, *new)

    def closed_form_step(
        self,
        x: KroneckerSpectralPoint,
        Ht: Any,
        beta2: float,
        gamma: float,
        *,
        exponential: str = "exact",
        cayley: str | None = None,
        jacobi: bool = False,
        updated_gaps: bool = False,
        basis_scale: float = 1.0,
    ) -> KroneckerSpectralPoint | None:
        """The RGD step ``retr(x, -F^+ grad L, beta2)`` of the precision for the GOP curvature
        ``Ht`` (a ``KroneckerGOP`` from ``gop_eigenbasis`` / ``gop_from_rotated``, or the
        ``KroneckerGOPSides`` of gradients taken at ``x``) in closed
        form (module docstring); ``None`` for any other curvature, which has no closed form
        here (the caller takes the layered step). ``exponential``, ``cayley`` and ``jacobi``
        as in ``retr``; ``updated_gaps``: the rotation's gaps after the eigenvalue step
        (module docstring); ``basis_scale``: ``c``, the rotation's step ``c beta2`` (``M``
        above times ``c``), the eigenvalues' ``beta2``. The result is not checked
        (``RGD.finish`` checks it); a truncated map that leaves the positive reals
        (``gamma beta2 >= 1``) raises
        ``blocks.TruncationError``. A padded batch (``sizes``) takes only this step:
        ``NotImplementedError`` for another curvature."""
        if not isinstance(Ht, (KroneckerGOP, KroneckerGOPSides)):
            self._unpadded_only("precision_step with a non-GOP curvature")
            return None
        beta2, gamma = check_positive(beta2, "beta2"), float(gamma)
        exponential = check_exponential(exponential)
        method = self.cayley if cayley is None else check_cayley(cayley)
        jacobi = check_flag(jacobi, "jacobi")
        updated_gaps = check_flag(updated_gaps, "updated_gaps")
        # the rotation's factor -beta2 c / 2 of M (c = 1: the same number as -beta2 / 2)
        half_step = -0.5 * beta2 * check_positive(basis_scale, "basis_scale")
        self.validate_layout(x)
        lam = Ht.damping
        if isinstance(Ht, KroneckerGOP):
            W_L, W_R = self.gop_side_sums(x, Ht.Z)
            m = Ht.Z.shape[-3]
            if m > 1:
                W_L, W_R = W_L.div_(m), W_R.div_(m)
        else:
            W_L, W_R = self.check_gop_sides(Ht)
        dL, dR = x.left.d, x.right.d
        pad = self.padding
        man = self.left  # the factors' options (eig_tol, gap_damping, bound) are the same

        def side_step(
            d: Tensor, B: Tensor, W: Tensor, kappa: Any, tr: Tensor
        ) -> tuple[Tensor, Tensor]:
            """One factor's eigenvalues and rotation (module docstring), or both factors'
            stacked on a leading axis: every operation acts per entry or per matrix."""
            # diag(W_l) >= 0 (squares and a non-negative damping): m_l >= -gamma beta2.
            h, ak = _eigen_target(x.alpha, W.diagonal(dim1=-2, dim2=-1), lam, tr, kappa)
            d_new = blocks.gop_eig_step(d, h, beta2, gamma, exponential, nonnegative=True)
            # Tensor.__rdiv__'s operations, the number a cached 0-d tensor (the same bits)
            scale = torch.mul(ak[..., None].reciprocal(), operand(half_step, ak))
            gaps = d_new if updated_gaps else d
            M = blocks.inverse_gaps(gaps, man.eig_tol, man.gap_damping, man.gap_floor)
            M = M.mul_(W).mul_(scale)
            B = blocks.rotation_retract(
                B,
                M.tril_(-1),
                method,
                man.neumann_max_norm,
                jacobi,
                squarings=man.neumann_squarings,
            )
            return B, d_new

        if pad is None and self.a == self.b:
            # A square layer: both factors in one pass (kappa_L = kappa_R), half the tensor
            # calls of the loop below; each entry and matrix is computed as there (same bits).
            # The new B_L and B_R are views of one stacked tensor (never written in place).
            tr = torch.stack([dR, dL]).reciprocal().sum(-1)
            B, d = side_step(
                torch.stack([dL, dR]),
                torch.stack([x.left.B, x.right.B]),
                torch.stack([W_L, W_R]),
                self.kappa_L,
                tr,
            )
            new = [SpectralPoint(B[0], d[0]), SpectralPoint(B[1], d[1])]
            return self.normalize(x.alpha, *new, shared=True, padding=pad)
        new = []
        for p, W, kappa, other, other_side in (
            (x.left, W_L, self.kappa_L, dR, "R"),
            (x.right, W_R, self.kappa_R, dL, "L"),
        ):
            tr = other.reciprocal().sum(-1) if pad is None else pad.trace_inverse(other, other_side)
            new.append(SpectralPoint(*side_step(p.d, p.B, W, kappa, tr)))
        return self.normalize(x.alpha, *new, shared=True, padding=pad)


def _eigen_target(
    alpha: Tensor, w: Tensor, lam: Any, tr: Tensor, kappa: Any
) -> tuple[Tensor, Tensor]:
    """``(h, alpha kappa)``: ``h = (w + lambda tr(S_other^-1)) / (alpha kappa)``, what a factor's
    eigenvalue map takes in from the GOP (module docstring), ``w = diag(W_l)`` without the
    damping; ``lambda tr(S_other^-1) I`` only reaches the diagonal (the rotation reads
    ``i > j``). ``w`` is not written."""
    h = w + (lam * tr)[..., None]
    ak = torch.mul(alpha, operand(kappa, alpha))[..., None]
    return h.div_(ak), ak
