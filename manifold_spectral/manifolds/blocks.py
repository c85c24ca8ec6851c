"""Closed-form chart blocks shared by every spectral manifold (paper Claims 3, 4 and 6).

A spectral factor ``B Diag(d) B^T`` has two kinds of local coordinates at a point:

* eigenvalue coordinates ``m``: ``d(m) = d * exp(m)``;
* rotation coordinates ``M`` (strictly lower triangular): ``B(M) = B Cayley(Skew(M))``.

At the chart origin the Fisher-Rao metric is diagonal in these coordinates (Claim 4):
``F_mm = kappa/2`` and ``F_{M_ij} = kappa * C_ij`` with ``C_ij = 4 (d_i - d_j)^2 / (d_i d_j)``;
``kappa = 1`` for a full matrix and the size of the other factor for a Kronecker factor
(Claim 6). Every formula below is written once here and used by ``SpectralSPD``,
``DiagonalSPD`` and the Kronecker manifold. ``G`` always denotes the Euclidean gradient
rotated into the eigenbasis, ``G = B^T (df/dS) B``.

Batches: every function acts on the last one (``d``, ``m``: (..., n)) or two (``G``, ``M``,
``B``: (..., n, n)) dimensions; leading dimensions are batch dimensions, so a batch of ``k``
points runs the same lines as one point.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..linalg import (
    as_dtype,
    cayley_exact_apply,
    cayley_neumann,
    check_cayley,
    clip_norm,
    default_eig_tol,
    matmul,
    operand,
    records_grad,
    skew,
    tril,
)

__all__ = [
    "default_jacobi",
    "default_eig_tol",
    "equal_eigenvalues",
    "eig_metric",
    "eig_local_grad",
    "eig_natural_grad",
    "eig_retract",
    "gop_eig_step",
    "TruncationError",
    "rotation_metric",
    "rotation_local_grad",
    "inverse_gaps",
    "rotation_natural_grad",
    "rotation_retract",
    "jacobi_angles",
    "second_order_angles",
    "SECOND_ORDER_MAX_ANGLE",
    "log_relative_eigs",
    "fisher_rao_dist",
]

#: Bound (radians) on the second-order correction of each pair's angle in
#: ``second_order_angles``: the three-index term divides by a gap that can vanish, so it is
#: clamped to a fraction of the first-order bound pi/4 (chosen on the log-det problem, whose
#: iteration count varies little with it).
SECOND_ORDER_MAX_ANGLE = 0.05
_MAX2 = SECOND_ORDER_MAX_ANGLE


def equal_eigenvalues(d: Tensor, tol: float) -> Tensor:
    """Boolean (..., n, n) mask of pairs with ``|d_i - d_j| <= tol * max(d_i, d_j)``."""
    gap = (d[..., :, None] - d[..., None, :]).abs()
    return gap <= tol * torch.maximum(d[..., :, None], d[..., None, :])


def eig_metric(d: Tensor, kappa: float = 1.0) -> Tensor:
    """Eigenvalue block of the metric at the origin: ``F_mm = (kappa / 2) I`` (diagonal)."""
    return torch.full_like(d, 0.5 * kappa)


def eig_local_grad(d: Tensor, g_diag: Tensor) -> Tensor:
    """Chart gradient ``df/dm_i = d_i G_ii`` at the origin."""
    return d * g_diag


def eig_natural_grad(d: Tensor, g_diag: Tensor, kappa: float = 1.0) -> Tensor:
    """Natural gradient ``F_mm^-1 df/dm = (2 / kappa) d * diag(G)``."""
    return (2.0 / kappa) * d * g_diag


def log_relative_eigs(B1: Tensor, d1: Tensor, B2: Tensor, d2: Tensor) -> Tensor:
    """``log lambda(S_1^-1 S_2)`` of ``S_k = B_k Diag(d_k) B_k^T`` (descending): ``2 log sigma(W)``
    with ``W = Diag(d_1^-1/2) B_1^T B_2 Diag(d_2^1/2)``.

    ``W W^T = B_1^T S_1^-1/2 S_2 S_1^-1/2 B_1`` is similar to ``S_1^-1 S_2``; the singular values
    of ``W`` instead of the eigenvalues of ``W W^T`` keep the condition number unsquared, and
    their backward needs no eigenvalue gaps (tied eigenvalues are fine). One singular-value
    decomposition: a distance between points, never a step."""
    W = (d1.rsqrt()[..., :, None] * (B1.mT @ B2)) * d2.sqrt()[..., None, :]
    return 2.0 * torch.linalg.svdvals(W).log()  # a distance, never a step


def fisher_rao_dist(log_eigs: Tensor, dims: int = 1) -> Tensor:
    """Geodesic distance of the Fisher-Rao metric ``1/2 tr(S^-1 dS S^-1 dS)`` (Claims 4, 6) from
    the log eigenvalues of ``S_1^-1 S_2`` in the last ``dims`` dimensions:
    ``sqrt(1/2 sum log^2 lambda)``, i.e. ``1/sqrt(2)`` times the affine-invariant distance
    ``||log(S_1^-1/2 S_2 S_1^-1/2)||_F`` (the curve ``S_1^1/2 (S_1^-1/2 S_2 S_1^-1/2)^t
    S_1^1/2`` is the geodesic). A norm, so its gradient at distance 0 is 0, not NaN."""
    return math.sqrt(0.5) * torch.linalg.vector_norm(log_eigs, dim=tuple(range(-dims, 0)))


class TruncationError(ValueError):
    """The truncated eigenvalue map ``d (1 + m)`` left the positive reals (``m <= -1``)."""


_TRUNCATION_MESSAGE = (
    "truncated exponential produced a non-positive eigenvalue (the curvature is not PSD or "
    "the step is too large); use the exact exponential"
)


def eig_retract(d: Tensor, m: Tensor, exponential: str = "exact") -> Tensor:
    """Eigenvalue chart map ``d * exp(m)`` (exact) or its first-order truncation ``d * (1 + m)``.

    The truncation is the decomposition-free RMSprop/AdaGrad form of paper Fig. 5; it keeps
    ``d > 0`` only when ``m > -1``, so a non-positive result raises ``TruncationError`` (a
    ``ValueError``). ``exponential`` is ``"exact"``, ``"truncated"`` or ``"continued"``: the
    truncation where ``m >= -1/2`` (bitwise
    the same there), continued below by ``exp(2 m + 1) / 2`` (value and slope match at
    ``-1/2``): positive for every ``m``, linear (no overflow) for large ``m``, a ``C^1``
    function of ``m``. (The GOP step's eigenvalues: ``gop_eig_step``.)
    """
    if exponential == "exact":
        return d * torch.exp(m)
    if exponential == "continued":
        below = torch.exp(torch.clamp(2.0 * m + 1.0, min=-8.0, max=0.0)).mul_(0.5)
        return d * torch.where(m >= -0.5, 1.0 + m, below)
    if exponential != "truncated":
        raise ValueError(
            f"exponential: expected 'exact', 'truncated' or 'continued', got {exponential!r}"
        )
    out = d * (1.0 + m)
    if not bool((out > 0).all()):
        raise TruncationError(_TRUNCATION_MESSAGE)
    return out


def gop_eig_step(
    d: Tensor,
    h: Tensor,
    beta2: float,
    gamma: float,
    exponential: str = "exact",
    *,
    nonnegative: bool = False,
) -> Tensor:
    """The curvature step of the eigenvalues, ``eig_retract(d, m)`` with
    ``m = beta2 (h / d - gamma)`` (``h``: the curvature's diagonal in the eigenbasis over the
    metric's scale; paper Fig. 6 right, App. A.1).

    The truncated map is formed as ``(1 - gamma beta2) d + beta2 h``, the same number without
    the quotient ``h / d``: that overflows where ``d`` sits at the damping and a large
    gradient arrives (``h / d`` beyond the dtype's range while the result is not), and a
    finite step must not be rejected for an intermediate. ``nonnegative``: the caller knows
    ``h >= 0`` (a GOP: squares and a non-negative damping), so ``m >= -gamma beta2`` and the
    truncation stays positive without its check (a host synchronisation) when
    ``gamma beta2 < 1``; otherwise a non-positive result raises ``TruncationError``. The
    continued map takes this value where ``m >= -1/2`` (an overflowed ``m`` is ``+inf``
    there), the exact one needs ``m``. A NaN is left to the caller's point check."""
    if exponential == "truncated":
        out = torch.add(torch.mul(d, operand(1.0 - gamma * beta2, d)), h, alpha=beta2)
        if (not nonnegative or gamma * beta2 >= 1.0) and not bool((out > 0).all()):
            raise TruncationError(_TRUNCATION_MESSAGE)
        return out
    m = torch.div(h, d).sub_(gamma).mul_(beta2)
    if exponential == "continued":
        out = torch.add(d * (1.0 - gamma * beta2), h, alpha=beta2)
        return torch.where(m >= -0.5, out, eig_retract(d, m, "continued"))
    return eig_retract(d, m, exponential)


def rotation_metric(d: Tensor, kappa: float = 1.0) -> Tensor:
    """Rotation block at the origin: ``kappa C_ij = 4 kappa (d_i - d_j)^2 / (d_i d_j)``, i > j."""
    diff = d[..., :, None] - d[..., None, :]
    return tril(4.0 * kappa * diff * diff / (d[..., :, None] * d[..., None, :]))


def rotation_local_grad(d: Tensor, G: Tensor) -> Tensor:
    """Chart gradient ``df/dM_ij = 4 (d_j - d_i) G_ij`` (i > j) at the origin."""
    return tril(4.0 * (d[..., None, :] - d[..., :, None]) * G)


def inverse_gaps(d: Tensor, tol: float, damping: float = 0.0, floor: float = 0.0) -> Tensor:
    """``1 / (d_i - d_j)`` for every pair (..., n, n), the rotation block's pseudo-inverse.

    Moore-Penrose: 0 where ``|d_i - d_j| <= tol * max(d_i, d_j)`` (there ``C_ij`` vanishes or
    is numerically zero). ``damping`` ``rho > 0``: its Tikhonov (Levenberg-Marquardt) form,
    from the metric ``kappa C_ij`` plus ``mu_ij = 4 kappa rho^2 max(d_i, d_j)^2 / (d_i d_j)``:

        (d_i - d_j) / ((d_i - d_j)^2 + rho^2 max(d_i, d_j)^2),

    equal to ``1 / (d_i - d_j)`` for gaps much larger than ``rho max(d_i, d_j)``, zero at equal
    eigenvalues, and a smooth function of ``d`` everywhere (Lipschitz with a constant
    ``~ 1 / rho``): the hard threshold's jump from 0 to ``1 / (tol d)`` is gone, so an update
    no longer depends discontinuously on rounding-level differences of its input.

    ``floor`` ``f > 0`` (with ``damping``): the scale ``max(d_i, d_j)`` is at least
    ``f max_k d_k``, so pairs whose eigenvalues are both far below the largest turn smoothly
    less. Why: such pairs (a rank-deficient factor's directions without gradient energy) have
    angles of order 1 from ratios of near-zero numbers, and a Neumann Cayley map's norm bound
    scales the whole rotation by them, shortening the turns that carry the curvature.
    """
    di, dj = d[..., :, None], d[..., None, :]
    diff = di - dj
    # In place on two n x n buffers: the out-of-place form makes a dozen n x n temporaries.
    if damping > 0.0:
        scale = torch.maximum(di, dj)
        if floor > 0.0:
            scale = torch.maximum(scale, d.amax(-1)[..., None, None].mul(operand(floor, d)))
        scale = scale.mul_(operand(damping, d))
        return diff.div_(scale.mul_(scale).addcmul_(diff, diff))
    equal = torch.maximum(di, dj).mul_(tol).ge_(diff.abs())
    return diff.reciprocal_().masked_fill_(equal.bool(), 0.0)


def rotation_natural_grad(
    d: Tensor, G: Tensor, tol: float, kappa: float = 1.0, damping: float = 0.0, floor: float = 0.0
) -> Tensor:
    """Natural gradient of the rotation block, Moore-Penrose at (near-)repeated eigenvalues.

    ``(F^+ grad)_ij = -d_i d_j G_ij / (kappa (d_i - d_j))`` for i > j, with ``1 / (d_i - d_j)``
    the pseudo-inverse of ``inverse_gaps`` (0 at equal eigenvalues; with ``damping`` its
    Tikhonov form, a smooth function of ``d`` and ``G``).
    """
    di, dj = d[..., :, None], d[..., None, :]
    return (di * dj).mul_(inverse_gaps(d, tol, damping, floor)).mul_(G).mul_(-1.0 / kappa).tril_(-1)


def jacobi_angles(M: Tensor) -> Tensor:
    """Rotation coordinates with each pair's exact Jacobi angle: ``tan(atan(4 M) / 4)``.

    In rotation coordinates ``M_ij`` the Cayley map turns the (i, j) plane by
    ``phi = 2 atan(M_ij) ~ 2 M_ij``, the linearised eigenvector angle ``c / (d_i - d_j)`` of
    the first-order update (off-diagonal ``c``). The exact eigenvector angle of that 2 x 2
    block is ``theta = atan(2 c / (d_i - d_j)) / 2 = atan(4 M_ij) / 2``, and
    ``tan(theta / 2)`` is the coordinate that turns by it. The map is odd, increasing, equal
    to ``M`` to first order (so ``chart(jacobi_angles(eta))`` is still a retraction with the
    same RGD direction) and bounded by ``tan(pi / 8)``: near-repeated eigenvalues, whose
    linearised angle blows up as ``1 / gap``, turn by at most 45 degrees, not by an arbitrary
    multiple of it. Computed in at least float32.
    """
    Mf = M.float() if M.dtype in (torch.bfloat16, torch.float16) else M
    # tan(atan(t) / 4) by the half-angle identity tan(a / 2) = tan(a) / (1 + sqrt(1 + tan^2 a))
    # applied twice (exact for |a| < pi / 2): square roots, cheaper than atan and tan. |M| is
    # clamped where J equals tan(pi/8) to the last bit, so that (4 M)^2 cannot overflow even
    # in float32. In place on two buffers (half the time of the out-of-place form on a large
    # factor, the same bits); out of place where autograd records the graph.
    u = Mf.clamp(-1e18, 1e18)
    if records_grad(u):
        u = u * 4.0
        for _ in range(2):
            u = u / (1.0 + torch.sqrt(u * u + 1.0))
        return u.to(M.dtype)
    one = operand(1.0, u)  # cached 0-d tensors: the same bits (linalg.operand)
    u.mul_(operand(4.0, u))
    w = u * u  # the second pass reuses this buffer
    u.div_(w.add_(one).sqrt_().add_(one))
    u.div_(torch.mul(u, u, out=w).add_(one).sqrt_().add_(one))
    return as_dtype(u, M.dtype)


def second_order_angles(d: Tensor, d_new: Tensor, M: Tensor) -> Tensor:
    """Rotation coordinates of the eigenvectors of ``D' + E``, to second order (skew, n x n).

    The first-order RGD step moves ``S = B Diag(d) B^T`` to ``B (D' + E) B^T`` with
    ``D' = Diag(d_new)`` (the eigenvalue step) and the symmetric off-diagonal ``E`` that the
    rotation coordinates encode: ``Skew(M) = N``, ``Cayley(N) ~ I + 2 N``, and the first-order
    eigenvector coefficient ``2 N_rc = E_rc / (d_c - d_r)``, so ``E = 2 N o (d_c - d_r)``.
    This function returns the ``N'`` whose Cayley map turns ``B`` to the eigenvectors of
    ``D' + E`` up to third-order terms in ``E``, from the Rayleigh-Schrodinger series with the
    gaps ``g_rc = d'_c - d'_r`` of the new eigenvalues:

    * first order, bounded as in ``jacobi_angles``: each pair's exact 2 x 2 angle
      ``theta_rc = atan(2 E_rc / g_rc) / 2`` (at most pi/4), ``t = tan(theta)``;
    * second order: ``K2 = Skew-part of (E t) / g`` (elementwise division; the coupling of
      the pair through every third eigenvector), clamped to ``SECOND_ORDER_MAX_ANGLE`` (0.05 rad);
    * ``N' = tan((theta + K2) / 2)``, by the tangent addition formula.

    One n x n product (``E t``) on top of ``jacobi_angles``' elementwise work; no
    decomposition. Equal to ``Skew(M)`` to first order in ``M`` (a retraction with the same
    RGD direction). Pairs with equal new eigenvalues get the first-order 45 degrees and no
    second-order term; pairs the Moore-Penrose rule zeroed (``M_rc = 0``) have ``E_rc = 0``.
    Only the strict lower triangle of ``M`` is read (the chart's ``Skew(Tril M)``).
    Gaps in at least float32, the angles in float32.
    """
    low = M.dtype in (torch.bfloat16, torch.float16)
    Mw, dw, dnw = (t.float() for t in (M, d, d_new)) if low else (M, d, d_new)
    if any(records_grad(t) for t in (Mw, dw, dnw)):
        return _second_order_angles_graph(Mw, dw, dnw).to(M.dtype)
    # The gaps and tau are formed in the working dtype (close eigenvalues need float64's
    # digits), everything after in float32: the angles only set the step, whose 1e-7
    # relative rounding moves neither the fixed point (E = 0 gives N = 0 exactly) nor the
    # orthogonality of B (the Cayley map runs in B's dtype), and float32 halves the memory
    # traffic of the ~25 elementwise passes and the product's time. In place on a few
    # n x n buffers; the angles are made on the strict lower triangle and mirrored, so every
    # result is exactly skew (a gap of +0 on both sides of the diagonal would otherwise give
    # both entries the same sign).
    El = tril(Mw).mul_(dw[..., None, :] - dw[..., :, None]).mul_(2.0)
    g = dnw[..., None, :] - dnw[..., :, None]
    t = torch.div(El, g).mul_(2.0).nan_to_num_(0.0).clamp_(-1e18, 1e18).float()
    El, g = El.float(), g.float()
    w = torch.mul(t, t).add_(1.0).sqrt_().add_(1.0)
    t.div_(w)
    h = torch.mul(t, t, out=w).add_(1.0).sqrt_().add_(1.0)
    h = torch.div(t, h, out=w)
    # b = K2 / 2: half the second-order angle, K2 = skew part of (E T) / g with the full
    # symmetric E and skew T = tan(theta); no second-order term where g = 0.
    A = (El + El.mT) @ (t - t.mT)
    A.div_(g).nan_to_num_(0.0, 0.0, 0.0)
    b = tril(A - A.mT).mul_(0.25).clamp_(-0.5 * _MAX2, 0.5 * _MAX2)
    # N = tan(theta / 2 + K2 / 2) by the addition formula (|h| <= tan(pi/8), |b| <= 0.025).
    den = torch.mul(h, b).neg_().add_(1.0)
    N = b.add_(h).div_(den)
    N = N - N.mT
    return N.to(M.dtype)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den != 0``, else 0 (``second_order_angles`` with autograd).

    The in-place path divides by a zero gap and maps the NaN or Inf to 0 (``t`` keeps an Inf
    as +-1e18, which the caller restores); under autograd that division would send
    ``0 / 0`` = NaN into the gradient of every input, so a zero gap is divided by 1 and its
    quotient, which no gradient reaches, is the detached ``num / den`` with NaN and Inf as 0."""
    zero = den == 0
    safe = torch.where(zero, torch.ones_like(den), den)
    return torch.where(zero, torch.div(num, den).detach().nan_to_num(0.0, 0.0, 0.0), num / safe)


def _second_order_angles_graph(Mw: Tensor, dw: Tensor, dnw: Tensor) -> Tensor:
    """``second_order_angles`` out of place, for an autograd graph (``retr`` of the geoopt
    adapter with ``rotation="second_order"`` under ``torch.autograd``): the in-place path's
    ``out=`` products cannot be differentiated and its in-place updates overwrite tensors the
    backward pass reads. The same formulas; the zero gaps through ``_safe_div``; all in the
    working dtype, without the in-place path's float32 angles (a speed choice, whose rounding
    would be all a float64 gradient check sees), so the angles differ from that path's by
    float32 rounding."""
    El = tril(Mw) * (dw[..., None, :] - dw[..., :, None]) * 2.0
    g = dnw[..., None, :] - dnw[..., :, None]
    # A zero gap with E != 0: the in-place path's Inf clamped to 1e18 (a 45-degree angle).
    inf = torch.div(El, g).detach().isinf()
    t = _safe_div(El, g) * 2.0
    t = torch.where(inf, torch.div(El, g).detach().mul(2.0).clamp(-1e18, 1e18), t)
    t = t.clamp(-1e18, 1e18)
    t = t / (torch.sqrt(t * t + 1.0) + 1.0)
    h = t / (torch.sqrt(t * t + 1.0) + 1.0)
    A = _safe_div((El + El.mT) @ (t - t.mT), g).nan_to_num(0.0, 0.0, 0.0)
    b = (tril(A - A.mT) * 0.25).clamp(-0.5 * _MAX2, 0.5 * _MAX2)
    N = (b + h) / (1.0 - h * b)
    return N - N.mT


def default_jacobi(cayley: str) -> bool:
    """Whether the rotation step takes the Jacobi angles by default with the Cayley map
    ``cayley``: with ``"neumann"`` only. At close eigenvalues the linearised angle
    ``~ 1 / gap`` is far too large; the exact Cayley map saturates it (a pair's rotation
    ``2 atan(theta)`` tends to a half turn, which leaves ``S`` unchanged), while the Neumann
    map must rescale it to its trust radius, a fixed rotation that overshoots the same way
    every step: a limit cycle instead of convergence. The exact map keeps the paper's chart
    step."""
    return check_cayley(cayley) == "neumann"


def rotation_retract(
    B: Tensor,
    M: Tensor,
    method: str = "exact",
    max_norm: float | None = None,
    jacobi: bool = False,
    *,
    second_order: tuple[Tensor, Tensor] | None = None,
    squarings: int = 0,
) -> Tensor:
    """Rotation chart map ``B Cayley(Skew(M))`` (``Skew(jacobi_angles(M))`` if ``jacobi``).

    ``second_order=(d, d_new)``: the eigenvalues before and after the step; the rotation is
    then ``Cayley(second_order_angles(d, d_new, M))`` (``jacobi`` is implied).

    ``"exact"``: one right-hand solve, ``2 B (I - N)^(-1) - B`` (``linalg.cayley_exact_apply``).
    ``"neumann"``: the argument is rescaled so that a bound of its spectral norm is at most
    ``max_norm`` (< 1), which keeps the truncated series valid (``linalg.cayley_neumann``).
    A Frobenius clip to ``max_norm sqrt(n)`` comes first: it never shrinks more than the
    spectral bound would (``||N||_2 >= ||N||_F / sqrt(n)``) and keeps ``N^4`` far from overflow.
    ``squarings = k``: the Neumann map by scaling and squaring, ``C(N / 2^k)^(2^k)``
    (``linalg.cayley_neumann``), whose bound lets rotations ``2^k`` times larger pass (the
    clip then ``2^k`` times looser).
    """
    method = check_cayley(method)
    if second_order is not None:
        N = second_order_angles(*second_order, M)
    else:
        N = skew(jacobi_angles(M) if jacobi else M)
    if method == "neumann":
        if max_norm is None or not 0.0 < max_norm < 1.0:
            raise ValueError(f"max_norm: expected a float in (0, 1), got {max_norm!r}")
        loose = max_norm * N.shape[-1] ** 0.5 * 2.0**squarings
        C = cayley_neumann(clip_norm(N, loose, inplace=True), max_norm, squarings)
        return matmul(B, C)
    return cayley_exact_apply(B, N)
