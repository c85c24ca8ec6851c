"""``SpectralSPD`` (and ``KroneckerSpectralSPD``) as ``geoopt.Manifold``s: train spectral
factors with geoopt's optimizers.

A point is the pair of spectral factors ``(B, d)`` of ``S = B Diag(d) B^T`` packed in one
tensor of shape ``(*batch, n + 1, n)``::

    x[..., :n, :] = B   (orthogonal, n x n)
    x[..., n, :]  = d   (positive eigenvalues, the last row)

so that ``geoopt.ManifoldParameter(x, manifold=SpectralSPD(n))`` trains it with
``geoopt.optim.RiemannianSGD`` / ``RiemannianAdam`` next to any geoopt manifold (Stiefel,
Sphere, ...), in one optimizer. The loss is usually a function of ``S = to_matrix(x)``;
autograd then gives the Euclidean gradient of the packed tensor,
``(dL/dB, dL/dd) = (2 Sym(E) B Diag(d), diag(B^T E B))`` with ``E = dL/dS``, and any other
function of ``(B, d)`` works too.

Tangent vectors are ambient, of the point's shape: ``u = (U, u_d)`` with ``B^T U`` skew
(the tangent space of O(n) x R^n). They correspond to the chart coordinates of DESIGN.md
section 2 at ``x`` by ``m = u_d / d`` and ``M = Tril(Omega) / 2`` with ``Omega = B^T U``
(the chart's differential is ``dB = 2 B Skew(M)``, ``dd = d * m``). Every method goes through
these coordinates and the closed forms of ``manifolds.blocks``:

* ``inner``: the Fisher-Rao metric at the chart origin (Claim 4),
  ``<u, v>_x = sum(F_mm m_u m_v) + sum_{i>j} C_ij M_u,ij M_v,ij``, which equals
  ``1/2 tr(S^-1 dS_u S^-1 dS_v)`` for the induced ``dS``;
* ``egrad2rgrad``: the chart gradient ``df/dm = d * g_d``, ``df/dM_ij = 2 (A_ij - A_ji)``
  (``A = B^T dL/dB``), times the Moore-Penrose inverse of the diagonal metric (entries with
  ``|d_i - d_j| <= eig_tol * max(d_i, d_j)`` are 0, as in ``SpectralSPD.natural_gradient``),
  mapped back to an ambient tangent. For a loss of ``S`` this is exactly the library's
  ``natural_gradient``, so ``RiemannianSGD(lr)`` takes the library's RGD step;
* ``retr`` (and ``expmap``, which is the same map): the chart map at ``u``,
  ``(B Cayley(Skew(M)), d exp(m))`` — no decomposition, one solve (``cayley="exact"``) or
  six products (``"neumann"``: three for the map, one for ``B C``, two for the Newton-Schulz
  step that keeps ``B`` orthogonal over many calls; the exact map below float64 takes that
  step too, ``factor._rotate``). It is a retraction,
  not the exponential map of the metric;
* ``transp``: transport by left translation in the group O(n) x R^n_{>0}: the chart
  coordinates are kept, ``(U, u_d) at x -> (B_y B_x^T U, d_y * u_d / d_x) at y``;
  linear, the identity when ``y = x``, tangent to tangent (not an isometry: the metric
  depends on ``d``).

``projx`` (an SVD polar factor and a positive floor on ``d``) and ``from_matrix`` (one
``eigh``) are for initialisation and geoopt's occasional ``stabilize``; no training step
calls a decomposition. geoopt's ``weight_decay=w`` adds the packed point to its gradient:
its ``B`` part is projected away, its ``d`` part is the gradient of ``w/2 ||S||_F^2``, a
Frobenius penalty on ``S`` rather than a decay of it (docs/geoopt.md); leave it at 0 unless
that penalty is wanted.

``KroneckerSpectralSPD(a, b)`` does the same for ``S = alpha (S_L kron S_R)`` (DESIGN.md
section 3), packed flat; see its docstring.

The package: ``factor`` (the packing, ``ROTATIONS`` and the factor-level formulas both
adapters share), ``spectral`` (``SpectralSPD``) and ``kronecker`` (``KroneckerSpectralSPD``).
"""

from __future__ import annotations

from .._compat import import_geoopt
from .factor import ROTATIONS, pack, unpack
from .kronecker import KroneckerSpectralSPD
from .spectral import SpectralSPD

geoopt = import_geoopt()

__all__ = ["SpectralSPD", "KroneckerSpectralSPD", "pack", "unpack", "ROTATIONS"]
