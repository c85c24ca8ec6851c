"""The tensor trees of ``KroneckerSpectralSPD``: its points, chart tangents, reduced
Euclidean gradients and curvatures (``S = alpha (S_L kron S_R)``; shapes gain a leading
``k`` with ``batch=k``).
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from .points import SpectralPoint, SpectralTangent, TensorTree

__all__ = [
    "KroneckerSpectralPoint",
    "KroneckerSpectralTangent",
    "KroneckerEigenGradient",
    "KroneckerGOP",
    "KroneckerGOPSides",
    "KroneckerDenseCurvature",
]


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerSpectralPoint(TensorTree):
    """``S = alpha (S_L kron S_R)``: ``alpha`` a 0-d tensor, ``left``/``right`` spectral points.

    Batched (``KroneckerSpectralSPD(..., batch=k)``): ``alpha`` (k,), ``left.B`` (k, a, a),
    ``left.d`` (k, a), ``right.B`` (k, b, b), ``right.d`` (k, b).
    """

    alpha: Tensor
    left: SpectralPoint
    right: SpectralPoint


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerSpectralTangent(TensorTree):
    """Chart coordinates: ``n`` (0-d, for ``alpha``) and one spectral tangent per factor.

    The factors' ``m`` are sum-zero vectors (the determinant constraint). Batched: ``n`` (k,),
    ``left.m`` (k, a), ``left.M`` (k, a, a), ``right.m`` (k, b), ``right.M`` (k, b, b).
    """

    n: Tensor
    left: SpectralTangent
    right: SpectralTangent


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerEigenGradient(TensorTree):
    """A Euclidean gradient ``E = df/dS`` reduced to what the chart sees.

    ``t = alpha tr((S_L kron S_R) E)`` and ``G_l = Sym(B_l^T E_l B_l)`` with the partial
    contractions ``E_L[i,l] = sum_jk S_R[j,k] E[(i,j),(l,k)]``,
    ``E_R[j,k] = sum_il S_L[i,l] E[(i,j),(l,k)]`` (DESIGN.md section 3). Shapes: ``t``
    (*batch,), ``G_L`` (*batch, a, a), ``G_R`` (*batch, b, b).
    """

    t: Tensor
    G_L: Tensor
    G_R: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerGOP(TensorTree):
    """A GOP curvature in the eigenbasis: ``Z_i = B_L^T Mat(g_i) B_R`` and a 0-d damping.

    ``Z`` is (m, a, b) for ``m`` gradients, (k, m, a, b) on a manifold with ``batch=k``.
    """

    Z: Tensor
    damping: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerGOPSides(TensorTree):
    """A GOP curvature given by what the precision step reads of it at the point ``x`` where
    it was formed: ``W_L = mean_i Z_i D_R^-1 Z_i^T`` (a, a), ``W_R = mean_i Z_i^T D_L^-1 Z_i``
    (b, b) (``KroneckerSpectralSPD.gop_side_sums`` over the ``m`` gradients, divided by
    ``m``) and a 0-d damping; (k, a, a), (k, b, b) with ``batch=k``. The means of gradients
    taken at different times at one point (an optimizer's steps between two curvature
    updates) without keeping their ``Z``: a step at another point would read ``d`` of the
    wrong point."""

    W_L: Tensor
    W_R: Tensor
    damping: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerDenseCurvature(TensorTree):
    """A dense (ab, ab) curvature ``H`` (research sizes); reduced when the gradient is formed."""

    H: Tensor
