"""The packed point of ``geoopt.SpectralSPD`` and the factor-level pieces both adapters share.

One spectral factor ``B Diag(d) B^T``, whose metric blocks carry the weight ``kappa``: 1 for
a full matrix, the other factor's size for a Kronecker factor (Claim 6). The formulas are
those of the package docstring.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..linalg import all_finite, check_cayley, newton_schulz_orthogonalize, skew, tril
from ..manifolds import blocks
from ..manifolds.base import check_positive
from ..manifolds.checks import orthogonality_tol
from ..validation import NonFiniteError

__all__ = ["ROTATIONS", "pack", "unpack"]

#: Rotation steps of ``retr``: the chart map itself (``"linear"``), each pair turned by its
#: exact 2 x 2 Jacobi angle (``"jacobi"``, ``blocks.jacobi_angles``) or by the second-order
#: angles (``"second_order"``, ``blocks.second_order_angles``). All three agree to first
#: order (each is a retraction with the same differential); see ``SpectralSPD.retr``.
ROTATIONS = ("linear", "jacobi", "second_order")


def _check_factors(fn: str, **factors: Any) -> None:
    """``TypeError`` naming ``fn`` and the argument unless every factor is a floating torch
    tensor: the packing functions build the one tensor a geoopt parameter holds, and a numpy
    array or a list would fail inside ``torch.cat`` (or on a missing ``.ndim``) naming
    neither, an integer tensor inside a later product."""
    for name, t in factors.items():
        if not isinstance(t, Tensor):
            raise TypeError(
                f"{fn}: {name}: expected a torch tensor, got {type(t).__name__} "
                "(torch.as_tensor converts an array)"
            )
        if not t.is_floating_point():  # an integer point fails later inside torch products
            raise TypeError(f"{fn}: {name}: expected a floating dtype, got {t.dtype}")


def pack(B: Tensor, d: Tensor) -> Tensor:
    """The packed point ``[B; d^T]`` of shape ``(*batch, n + 1, n)``; ``TypeError`` naming
    ``B`` or ``d`` unless both are tensors, ``ValueError`` naming both shapes unless ``B`` is
    ``(*batch, n, n)`` and ``d`` ``(*batch, n)`` (metadata only)."""
    _check_factors("pack", B=B, d=d)
    if B.ndim < 2 or B.shape[-2] != B.shape[-1] or tuple(d.shape) != tuple(B.shape[:-1]):
        raise ValueError(
            f"pack: expected B of shape (*batch, n, n) and d of shape (*batch, n), got "
            f"{tuple(B.shape)} and {tuple(d.shape)}"
        )
    return torch.cat([B, d[..., None, :]], dim=-2)


def unpack(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, d)`` views of a packed point (or ``(U, u_d)`` of a packed tangent);
    ``ValueError`` unless ``x`` has shape ``(*batch, n + 1, n)`` (metadata only)."""
    if x.ndim < 2 or x.shape[-2] != x.shape[-1] + 1:
        raise ValueError(f"unpack: expected shape (*batch, n + 1, n), got {tuple(x.shape)}")
    return x[..., :-1, :], x[..., -1, :]


def _check_packed(
    t: Any, name: str, tail: tuple[int, ...], what: str, like: Tensor | None = None
) -> None:
    """Check that ``t`` is a packed tensor of shape ``(*batch, *tail)`` and, for a vector at
    the point ``like``, of its dtype and device.

    Without the shape check a packed tensor of another size is cut into "factors" and the
    formulas return numbers for the wrong manifold, or fail inside torch with a message that
    names no argument; without the dtype check a float32 tangent at a float64 point fails in a
    matmul. Metadata only: no reduction, no host synchronisation, so it costs a step nothing.
    ``TypeError`` for a non-tensor, a non-floating dtype (an integer point returns integer
    matrices or fails inside a product) or a dtype/device other than the point's (the core
    drivers' rule, ``validation.check_tensor``), ``ValueError`` for a shape; each names ``name``.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {t.dtype}")
    k = len(tail)
    if t.ndim < k or tuple(t.shape[t.ndim - k :]) != tail:
        dims = ", ".join(map(str, tail))
        raise ValueError(f"{name}: expected shape (*batch, {dims}) ({what}), got {tuple(t.shape)}")
    if like is None:
        return
    try:  # batch shapes that broadcast (a product would fail on others, naming nothing)
        torch.broadcast_shapes(t.shape[: t.ndim - k], like.shape[: like.ndim - k])
    except RuntimeError:
        raise ValueError(
            f"{name}: batch shape {tuple(t.shape[: t.ndim - k])} does not broadcast with the "
            f"point's {tuple(like.shape[: like.ndim - k])}"
        ) from None
    if t.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (the point's), got {t.dtype}")
    if t.device != like.device:
        raise TypeError(f"{name}: expected device {like.device} (the point's), got {t.device}")


def _transformed(t: Tensor) -> bool:
    """Whether ``t`` is a ``torch.func`` transform's wrapper (``vmap``'s batched tensor,
    ``grad``'s tracking one), whose values a host synchronisation cannot read."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(wrapped is not None and wrapped(t))


def _floor_positive(d: Tensor) -> Tensor:
    """``d`` with every entry below ``eps * max(max|d|, 1)`` raised to that floor (``projx``).

    The nearest positive-semidefinite matrix clips negative eigenvalues to 0; ``projx`` needs
    positive ones, and a floor relative to the largest eigenvalue keeps the condition number
    at most ``1 / eps``, so the metric (which divides by ``d``) stays finite. An absolute floor
    (the smallest normal number) would leave a condition number near the overflow threshold.
    """
    floor = torch.finfo(d.dtype).eps * d.abs().amax(-1, keepdim=True).clamp_min(1.0)
    return torch.maximum(d, floor)


def _set_options(
    manifold: Any,
    eig_tol: float | None,
    cayley: str,
    neumann_max_norm: float,
    rotation: str | None,
) -> None:
    """Validate the options both adapters take and set them on ``manifold``. ``rotation``
    ``None``: ``"jacobi"`` with the Neumann map, ``"linear"`` with the exact one
    (``blocks.default_jacobi``, as ``RGD``'s ``jacobi``)."""
    manifold.eig_tol = (
        None if eig_tol is None else check_positive(eig_tol, "eig_tol", allow_zero=True)
    )
    manifold.cayley = check_cayley(cayley)
    manifold.neumann_max_norm = check_positive(neumann_max_norm, "neumann_max_norm")
    if rotation is None:
        rotation = "jacobi" if blocks.default_jacobi(manifold.cayley) else "linear"
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
    manifold.rotation = rotation


def _coords(B: Tensor, d: Tensor, U: Tensor, ud: Tensor) -> tuple[Tensor, Tensor]:
    """Chart coordinates of an ambient tangent: ``m = u_d / d``, ``M = Tril(A - A^T) / 4``
    with ``A = B^T U`` (``Tril(Omega) / 2`` of the skew part ``Omega = (A - A^T) / 2``)."""
    A = B.mT @ U
    return ud / d, tril(A - A.mT) * 0.25


def _ambient(B: Tensor, d: Tensor, m: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
    """Ambient tangent ``(2 B Skew(M), d * m)`` of chart coordinates ``(m, M)``."""
    return 2.0 * (B @ skew(tril(M))), d * m


def _metric(d: Tensor, mu: Tensor, Mu: Tensor, mv: Tensor, Mv: Tensor, kappa: float) -> Tensor:
    """``sum(F_mm m_u m_v) + sum_{i>j} kappa C_ij M_u,ij M_v,ij`` (``blocks`` metric)."""
    eig = (blocks.eig_metric(d, kappa) * mu * mv).sum(-1)
    return eig + (blocks.rotation_metric(d, kappa) * Mu * Mv).sum((-2, -1))


def _rotation_rgrad(B: Tensor, d: Tensor, GB: Tensor, tol: float, kappa: float) -> Tensor:
    """Ambient rotation part ``B Omega`` of ``F^+ grad_eta f``: chart gradient
    ``df/dM_ij = 2 (A_ij - A_ji)``, ``A = B^T G_B``, over ``kappa C_ij`` (0 where
    ``|d_i - d_j| <= tol max(d_i, d_j)``, Moore-Penrose); both triangles at once, since
    ``Omega = 2 Skew(M) = 4 (A - A^T) / (kappa (C + C^T))`` off the diagonal."""
    A = B.mT @ GB
    C = blocks.rotation_metric(d, kappa)
    C = C + C.mT
    # The mask holds the diagonal and every exactly equal pair, where C = 0.
    zero = blocks.equal_eigenvalues(d, tol)
    Omega = (A - A.mT).mul_(4.0).div_(C.masked_fill_(zero, 1.0)).masked_fill_(zero, 0.0)
    return B @ Omega


def _rotate(
    B: Tensor, d: Tensor, d_new: Tensor, M: Tensor, cayley: str, max_norm: float, rotation: str
) -> Tensor:
    """``B Cayley(Skew(M))`` with the chosen rotation angles (``blocks.rotation_retract``).

    ``"neumann"``, and the exact map below float64: then one Newton-Schulz polar step. The
    truncated map is orthogonal only up to ``2 rho^6`` a step, the exact one to the dtype's
    rounding, and a stateless retraction cannot schedule the library's periodic
    re-orthogonalisation (``RGD``'s ``reorthogonalize_every="auto"``), so without it the defect
    adds up over a geoopt run (Neumann: ``||B^T B - I||`` 0.5 after 2000 steps at the clip;
    exact in float32: a rounding drift that grows with the steps until
    ``check_point_on_manifold`` rejects the point) and the formulas, which assume orthogonal
    ``B``, turn silently wrong. The step
    contracts the drift quadratically every call (two products); exact float64 steps drift
    only at rounding level and are left as they are.
    """
    B_new = blocks.rotation_retract(
        B,
        M,
        cayley,
        max_norm,
        jacobi=rotation == "jacobi",
        second_order=(d, d_new) if rotation == "second_order" else None,
    )
    drifts = cayley == "neumann" or B_new.dtype != torch.float64
    return newton_schulz_orthogonalize(B_new) if drifts else B_new


def _skew_part(B: Tensor, U: Tensor) -> Tensor:
    """Euclidean projection of ``U`` onto the tangent space of O(n) at ``B``."""
    A = B.mT @ U
    return B @ (0.5 * (A - A.mT))


def _orthogonal(B: Tensor, atol: float, rtol: float) -> bool:
    """``B^T B = I`` entrywise to ``atol``/``rtol``, with ``atol`` floored at the core
    manifolds' ``orthogonality_tol`` (``100 n eps``, a bound on the Frobenius error, so on
    every entry): a basis orthogonal to its dtype's rounding, as ``random``, ``from_matrix``
    and ``retr`` make it in bfloat16 or float16, passes; geoopt's default ``1e-5`` is below
    what those types can hold. The product runs in float32 at least (16-bit sums drift)."""
    Bw = B.float() if B.dtype in (torch.float16, torch.bfloat16) else B
    eye = torch.eye(B.shape[-1], dtype=Bw.dtype, device=B.device)
    atol = max(atol, orthogonality_tol(B.dtype, B.shape[-1]))
    return torch.allclose(Bw.mT @ Bw, eye.expand_as(Bw), atol=atol, rtol=rtol)


def _polar(B: Tensor) -> Tensor:
    """Nearest orthogonal matrix (SVD polar factor; init-only / ``stabilize``)."""
    P, _, Qt = torch.linalg.svd(B)  # init-only
    return P @ Qt


def _projected_factor(B: Tensor, d: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """``projx`` of one spectral factor: ``(_polar(B), _floor_positive(d))``, after a
    ``NonFiniteError`` (a ``ValueError``) naming ``x`` and the factor if ``B`` or ``d`` holds
    NaN or Inf (one reduction each; ``projx`` runs at initialisation and in geoopt's
    ``stabilize``, never in a step).

    A non-finite factor carries no basis or spectrum to project: the SVD of a NaN ``B`` fails
    inside torch (``linalg.svd: The algorithm failed to converge``, naming nothing), an Inf
    ``B`` or any non-finite ``d`` came back as NaN, and geoopt's ``stabilize`` would write
    that into the parameter and train on. Such a point comes from a diverged run or a bad
    ``copy_``; the error says so where it is first seen.
    """
    for name, t in zip(names, (B, d), strict=True):
        if not all_finite(t):
            raise NonFiniteError(
                f"x: {name} contains NaN or Inf (a diverged run or a bad copy_?); projx "
                "cannot project a non-finite factor: restart from a finite point"
            )
    return _polar(B), _floor_positive(d)


def _size(manifold: Any, size: tuple[Any, ...], default: tuple[int, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    size = tuple(size) or default
    manifold._assert_check_shape(size, "x")
    return size


class _ChartTransport:
    """What both adapters share: the chart retraction stands for the exponential map, and
    vectors are transported by keeping their chart coordinates (left translation).

    An adapter provides ``_parts(t, name, like=None)`` (its factors of a packed tensor, after
    ``_check_packed``) and ``_chart(x, u, name)`` (the chart coordinates of the vector ``u``
    at ``x``, with ``u`` checked under ``name``)."""

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """The chart retraction ``retr`` (a first-order approximation of the exponential map)."""
        return self.retr(x, u)

    def _finite_step(self, x: Tensor, y: Tensor) -> Tensor:
        """``y``, the retraction's new point from ``x``, or a ``ValueError`` when it has a NaN
        or Inf (one host synchronisation), which geoopt's optimizers would otherwise carry on
        with silently: ``projx``'s, naming ``x`` and the factor, for a non-finite ``x`` (a
        diverged parameter), else ``NonFiniteError`` naming ``u`` (a NaN or Inf in ``u``, or
        a step whose eigenvalues ``d exp(m)`` overflow). Inside a ``torch.func`` transform
        (``vmap``, ``grad``), which cannot read a value on the host, ``y`` is returned as it is."""
        if _transformed(y) or all_finite(y):
            return y
        if not all_finite(x):
            self.projx(x)  # raises, naming x and its non-finite factor
        raise NonFiniteError(
            "u: the step leaves the representable points (a NaN or Inf in u, or d exp(m) "
            "overflowing); the point was not moved"
        )

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Left-translation transport: chart coordinates of ``v`` at ``x`` kept at ``y``.

        ``y`` must be a point of the same dtype and device as ``x`` (``TypeError`` naming it):
        the coordinates, computed at ``x``, are mapped back with ``y``'s factors."""
        coords = self._chart(x, v, "v")
        self._parts(y, "y", like=x)
        return self.from_chart_coordinates(y, *coords)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``y = retr(x, u)`` and ``transp(x, y, v)``."""
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.retr_transp(x, u, v)

    def transp_follow_retr(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return self.retr_transp(x, u, v)[1]

    def transp_follow_expmap(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return self.retr_transp(x, u, v)[1]
