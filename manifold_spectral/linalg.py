"""Small matrix helpers shared by every spectral manifold.

Everything here works on the last two dimensions of a tensor (leading dimensions are batch
dimensions) and keeps the input's dtype and device. Nothing on a step's path calls a matrix
decomposition: the Cayley maps are the only "inverse-like" operations, and the exact one is a
linear solve (paper Claim 9), the Neumann one uses matrix products only. The decompositions
for initialisation and tests (``eigh_canonical``, ``haar_orthogonal``, ``random_spd``,
``nearest_kronecker_factors``) live in ``linalg_init``, the numerical guards (finiteness,
tolerances, operands) in ``linalg_numerics``; both are re-exported here.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .linalg_init import (
    eigh_canonical,
    haar_orthogonal,
    nearest_kronecker_factors,
    random_spd,
    tie_runs,
)
from .linalg_numerics import (
    all_finite,
    all_finite_positive,
    all_true,
    as_dtype,
    check_count,
    default_eig_tol,
    eps,
    finite_with_sum,
    max_abs,
    max_abs_from,
    operand,
)

__all__ = [
    "sym",
    "skew",
    "tril",
    "cayley",
    "cayley_exact",
    "cayley_neumann",
    "cayley_exact_apply",
    "check_cayley",
    "clip_norm",
    "orthogonality_error",
    "newton_schulz_orthogonalize",
    "all_finite",
    "all_finite_positive",
    "all_true",
    "finite_with_sum",
    "as_dtype",
    "records_grad",
    "matmul",
    "max_abs",
    "max_abs_from",
    "eps",
    "default_eig_tol",
    "eigh_canonical",
    "tie_runs",
    "haar_orthogonal",
    "random_spd",
    "nearest_kronecker_factors",
    "NEUMANN_MAX_NORM",
]

#: Default bound on the spectral norm of the argument of the Neumann Cayley map. The truncated map
#: equals ``Cayley(X) (I - X^6)`` exactly (see ``cayley_neumann``), so its orthogonality
#: defect is ``||(I - X^6)^2 - I||_2 <= 2 rho^6 + rho^12``: 4.9e-4 at rho = 0.25.
NEUMANN_MAX_NORM = 0.25


def matmul(A: Tensor, B: Tensor) -> Tensor:
    """``A @ B``; two stacks of one batch size go to ``torch.bmm`` directly: ``@`` on them
    dispatches an expand and a view of each operand and a view of the result around the same
    ``bmm`` (the same bits), which is most of the dispatch work of a small batched product.

    16-bit operands on a CPU are multiplied in float32 and the product rounded back: a CPU
    without 16-bit matrix units runs a bfloat16 GEMM many times slower than a float32 one
    (the conversions are two elementwise passes), and the float32-accumulated product rounded
    once is what the 16-bit kernel computes too, up to the order of its additions (a last-bit
    difference in some entries). Accelerators keep their 16-bit kernels, and so do CPUs with
    AMX tiles (16-bit matrix units) on products of at least ``AMX_MIN_FLOPS`` multiply-adds:
    below that the tile kernel's fixed cost per call exceeds the two conversions."""
    if _widen(A, B):
        return matmul(A.float(), B.float()).to(A.dtype)
    if A.ndim == 3 and B.ndim == 3 and A.shape[0] == B.shape[0]:
        return torch.bmm(A, B)
    return A @ B


_HALF = (torch.bfloat16, torch.float16)

#: Multiply-adds (batch x m x k x n) from which a CPU's AMX tiles take a 16-bit product faster
#: than the float32 kernel with its two conversions: the tile path has a fixed cost per call
#: that the float32 one, growing with the flops, reaches at about this size (a 64 x 64 x 64
#: product four times, or one of 100 x 100 x 100).
AMX_MIN_FLOPS = 1_000_000


def _widen(A: Tensor, B: Tensor) -> bool:
    """Whether ``matmul`` takes the 16-bit CPU product ``A @ B`` in float32."""
    if A.dtype not in _HALF or A.device.type != "cpu" or B.dtype != A.dtype:
        return False
    return not _cpu_amx() or math.prod(A.shape) * B.shape[-1] < AMX_MIN_FLOPS


def matmul_add(C: Tensor, A: Tensor, B: Tensor, beta: float, alpha: float) -> Tensor:
    """``beta C + alpha A @ B`` (2-D operands, or stacks of one batch size) in one product
    call, ``torch.addmm`` / ``torch.baddbmm``: the scaling and the sum ride on the product
    instead of elementwise passes of their own, each a tensor call and a temporary as large
    as the result. ``beta = 0`` ignores ``C`` (a NaN in it too). 16-bit operands on a CPU in
    float32 where ``matmul`` takes them so, the result rounded once."""
    if _widen(A, B):
        return matmul_add(C.float(), A.float(), B.float(), beta, alpha).to(A.dtype)
    if A.ndim == 2:
        return torch.addmm(C, A, B, beta=beta, alpha=alpha)
    return torch.baddbmm(C, A, B, beta=beta, alpha=alpha)


@functools.cache
def _cpu_amx() -> bool:
    """Whether this CPU has AMX tiles, whose 16-bit GEMMs outrun float32 ones (a private
    torch query; ``False`` where this torch lacks it)."""
    query = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    try:
        return bool(query()) if query is not None else False
    except Exception:  # noqa: BLE001 - a capability probe: absent or failing means no AMX
        return False


def records_grad(X: Tensor) -> bool:
    """Whether autograd records operations on ``X``, or a ``torch.func`` transform (``vmap``,
    ``grad``, ``jacfwd``) runs: the in-place fast paths of this package (on temporaries of
    their own) fall back to out-of-place forms there, since a backward pass may read a tensor
    that an in-place update would overwrite, and the transforms have no batching or
    forward-mode rule for ``out=`` calls."""
    return (torch.is_grad_enabled() and X.requires_grad) or _FUNC_ACTIVE()


# torch's own test of an active torch.func transform (private, long-standing; absent: False)
_FUNC_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def sym(X: Tensor) -> Tensor:
    """Symmetric part ``(X + X^T) / 2``."""
    return _transposed(X).add_(X).mul_(0.5)


def skew(M: Tensor) -> Tensor:
    """``Skew(M) = M - M^T`` (DESIGN.md section 2; note: not halved). One subtraction that
    reads ``M^T`` by its strides: for the factor sizes of an optimizer step (up to about 256)
    it is faster than the blocked transpose copy of ``_transposed`` followed by contiguous
    work, which costs three more calls (``b - a`` and ``-a + b`` round alike: the same bits)."""
    return M - M.mT


def _transposed(X: Tensor) -> Tensor:
    """A contiguous copy of ``X^T`` (always a copy, never ``X``'s storage): torch's blocked
    transpose copy, then contiguous elementwise work, is about twice as fast on a CPU as one
    elementwise pass that reads ``X^T`` by its strides (the same bits: ``-a + b`` and
    ``b - a`` round alike)."""
    return X.transpose(-1, -2).clone(memory_format=torch.contiguous_format)


def tril(X: Tensor) -> Tensor:
    """Strictly lower-triangular part ``Tril(X)`` (the diagonal is zeroed)."""
    return torch.tril(X, diagonal=-1)


def _eye_like(X: Tensor) -> Tensor:
    n = X.shape[-1]
    return torch.eye(n, dtype=X.dtype, device=X.device).expand_as(X)


def cayley_exact(N: Tensor) -> Tensor:
    """Exact Cayley map ``Cayley(N) = (I + N)(I - N)^(-1)`` for skew-symmetric ``N``.

    ``(I + N)`` and ``(I - N)^(-1)`` commute, so this is the solution ``Y`` of
    ``(I - N) Y = I + N``: one LU solve, never an explicit inverse. For skew ``N`` the result
    is in SO(n) (paper Claim 9) and ``I - N`` is always invertible (its eigenvalues are
    ``1 - i*theta``). bfloat16 has no LU kernel, so that case is solved in float32.
    """
    eye = _eye_like(N)
    if N.dtype in (torch.bfloat16, torch.float16):
        A = (eye - N).float()
        return torch.linalg.solve(A, (eye + N).float()).to(N.dtype)
    return torch.linalg.solve(eye - N, eye + N)


def cayley_exact_apply(B: Tensor, N: Tensor) -> Tensor:
    """``B Cayley(N)`` for skew ``N`` without forming ``Cayley(N)``: ``2 B (I - N)^(-1) - B``.

    ``Cayley(N) = (I + N)(I - N)^(-1) = (2I - (I - N))(I - N)^(-1) = 2 (I - N)^(-1) - I``, so
    the rotated factor is one right-hand solve ``Y (I - N) = B`` (LU of ``I - N`` plus two
    triangular solves), not a solve followed by the product ``B @ Cayley(N)``: one n x n
    matrix product fewer per rotation step. The rounding error is that of the solve, ``eps``
    relative to ``||B||`` (the subtraction cancels only the identity part, which is exact in
    ``B``). bfloat16/float16 are solved in float32 (no LU kernel).
    """
    low = N.dtype in (torch.bfloat16, torch.float16)
    A = -(N.float() if low else N)
    A.diagonal(dim1=-2, dim2=-1).add_(1.0)  # I - N without an identity temporary
    Bw = B.float() if low else B
    Y = torch.linalg.solve(A, Bw, left=False)
    if Y.requires_grad:  # the solve's backward reads Y: no in-place update (same values)
        return (2.0 * Y - Bw).to(B.dtype)
    return Y.mul_(2.0).sub_(Bw).to(B.dtype)


def cayley_neumann(N: Tensor, max_norm: float | None = None, squarings: int = 0) -> Tensor:
    """Neumann-truncated Cayley map ``(I + N)^2 (I + N^2 + N^4)``.

    Derivation: ``(I - N)^(-1) = sum_k N^k`` for ``||N|| < 1`` and
    ``I + N + ... + N^5 = (I + N)(I + N^2 + N^4)``; hence the truncated map equals
    ``Cayley(N) (I - N^6)`` exactly. For skew ``N`` its orthogonality defect is
    ``(I - N^6)^2 - I = -2 N^6 + N^12``, bounded by ``2 ||N||_2^6 + ||N||_2^12``.
    Valid (convergent, and a good approximation) only while ``||N||_2 < 1``.

    Why six terms: the products ``N^2`` and ``N^4`` serve the truncation and the bound below,
    and one more product forms the map, so the series costs three products (the eight-term
    series ``(I + N)^2 (I + N^2)(I + N^4)`` costs four). Its larger defect (``4.9e-4`` a step
    at ``rho = 0.25``) is far inside what one Newton-Schulz polar step every few updates
    removes (``RGD``'s ``"auto"`` schedule; the drift is additive, the repair quadratic).

    ``max_norm``: first rescale ``N`` so that ``rho = ||N^4||_F^(1/4)`` is at most
    ``max_norm``. ``rho`` bounds the spectral norm (``||N||_2^4 = ||N^4||_2 <= ||N^4||_F``)
    and is read off the products the map needs anyway (rescaling ``N`` by ``s`` rescales
    ``N^2`` and ``N^4`` by ``s^2`` and ``s^4``). It is much tighter than ``||N||_F`` when the
    rotation is spread over many pairs: a skew ``n x n`` matrix with independent entries has
    ``||N||_F ~ sqrt(n / 2) ||N||_2``, and a Frobenius clip would shrink such a step by that
    factor for nothing. Cost: three matrix products, no solve — usable in bfloat16.

    ``squarings = k``: ``C(N / 2^k)^(2^k)`` by ``k`` squarings (``k`` more products). Its
    first-order term is ``Cayley(N)``'s, ``I + 2N`` (both agree with ``exp(2N)`` to second
    order, the powers tend to it), while the bound acts on ``N / 2^k``: a rotation up to
    ``2^k`` times the bound passes whole. The ``2^k`` factors' defects (and rounding) add.
    """
    if max_norm is not None and not (
        isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0
    ):
        raise ValueError(f"max_norm: expected a finite number > 0 or None, got {max_norm!r}")
    check_count(squarings, "squarings")
    if squarings:
        # a power of two: the scaling rounds nothing
        N = N * operand(2.0**-squarings, N)
    N2 = matmul(N, N)
    N4 = matmul(N2, N2)
    # (I + N)^2 = I + 2N + N^2 needs no extra product. Rescaling by s is folded into the
    # two sums (2 elementwise passes each, the identity added on the diagonal only): the
    # map of a large factor is otherwise as much elementwise work as a product.
    # Without autograd the sums overwrite the fresh products (Q first: it reads N^2).
    graph = records_grad(N)
    if max_norm is None:
        Q = torch.add(N4, N2) if graph else N4.add_(N2)
        P = torch.add(N2, N, alpha=2.0) if graph else N2.add_(N, alpha=2.0)
    else:
        N4w = N4.float() if N4.dtype in (torch.bfloat16, torch.float16) else N4
        rho = torch.linalg.matrix_norm(N4w, ord="fro", keepdim=True).pow(0.25)
        s = as_dtype(torch.clamp(_over(max_norm, rho), max=1.0), N.dtype)
        s2 = s * s
        Q = (torch.mul(N4, s2 * s2) if graph else N4.mul_(s2 * s2)).addcmul_(N2, s2)
        P = (torch.mul(N2, s2) if graph else N2.mul_(s2)).addcmul_(N, s, value=2.0)
    one = operand(1.0, P)  # a cached 0-d tensor: the same bits
    P.diagonal(dim1=-2, dim2=-1).add_(one)
    Q.diagonal(dim1=-2, dim2=-1).add_(one)
    C = matmul(P, Q)
    for _ in range(squarings):
        C = matmul(C, C)
    return C


def check_cayley(method: str) -> str:
    """``method`` if it names a Cayley map ("exact" or "neumann"), else ``ValueError``."""
    if method not in ("exact", "neumann"):
        raise ValueError(f"cayley: expected 'exact' or 'neumann', got {method!r}")
    return method


def cayley(N: Tensor, method: str = "exact") -> Tensor:
    """Cayley map of a skew-symmetric matrix, ``method`` in {"exact", "neumann"}."""
    if check_cayley(method) == "exact":
        return cayley_exact(N)
    return cayley_neumann(N)


def clip_norm(X: Tensor, max_norm: float, *, inplace: bool = False) -> Tensor:
    """Rescale ``X <- X * min(1, max_norm / ||X||_F)`` (norm over the last two dimensions).

    Used to keep the argument of ``cayley_neumann`` inside its region of validity.
    ``inplace``: scale ``X`` itself (a temporary of the caller's) unless autograd records it.
    """
    Xf = X.float() if X.dtype in (torch.bfloat16, torch.float16) else X
    norm = torch.linalg.matrix_norm(Xf, ord="fro", keepdim=True)
    scale = as_dtype(torch.clamp(_over(max_norm, norm), max=1.0), X.dtype)
    if inplace and not records_grad(X):
        return X.mul_(scale)
    return X * scale


def _over(c: float, norm: Tensor) -> Tensor:
    """``c / max(norm, 1e-30)`` as ``c / t`` computes it (the reciprocal, then the product),
    without the Python wrapper of ``Tensor.__rdiv__``."""
    return torch.mul(torch.clamp(norm, min=1e-30).reciprocal(), operand(c, norm))


def orthogonality_error(B: Tensor) -> Tensor:
    """``||B^T B - I||_F`` (computed in at least float32), the drift monitored for Neumann steps."""
    Bf = B.float() if B.dtype in (torch.bfloat16, torch.float16) else B
    return torch.linalg.matrix_norm(Bf.transpose(-1, -2) @ Bf - _eye_like(Bf), ord="fro")


def newton_schulz_orthogonalize(B: Tensor, steps: int = 1) -> Tensor:
    """Pull a near-orthogonal ``B`` back to O(n) with Newton-Schulz polar steps.

    ``B <- B (3 I - B^T B) / 2`` converges quadratically to the orthogonal polar factor of
    ``B`` when ``||B^T B - I||_2 < 1``: two matrix products a step, no decomposition. Used to
    correct the slow drift of the Neumann Cayley map.
    """
    eye = _eye_like(B)
    for _ in range(steps):
        B = matmul(B, 1.5 * eye - 0.5 * matmul(B.transpose(-1, -2), B))
    return B
