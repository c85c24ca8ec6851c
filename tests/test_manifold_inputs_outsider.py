"""An outside tester's findings on the core manifolds' constructors (session 26): a point
that aliased the caller's tensor, and a torch warning from inside the package on an input
that autograd records. Both failed before their fixes."""

from __future__ import annotations

import warnings

import torch

from manifold_spectral.manifolds import DiagonalSPD, KroneckerSpectralSPD, SpectralSPD

F64 = torch.float64


def test_a_diagonal_point_does_not_alias_the_callers_eigenvalues() -> None:
    # the point kept a view of d: d[1] = -5 afterwards made the validated point invalid
    D = DiagonalSPD(3, dtype=F64)
    d = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    x = D.from_eigenvalues(d)
    d[1] = -5.0
    assert torch.equal(x.d, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    assert D.check_point(x) == (True, None)


def test_from_matrix_of_a_tensor_that_requires_grad_is_silent_and_the_same() -> None:
    # float() of the finiteness check's sum warned 'Converting a tensor with requires_grad=True
    # to a scalar' from inside the package
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, dtype=F64, generator=g)
    S = A @ A.T + torch.eye(4, dtype=F64)
    M = SpectralSPD(4, dtype=F64)
    K = KroneckerSpectralSPD(2, 2, dtype=F64)
    SL, SR = S[:2, :2].clone(), S[2:, 2:].clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = M.from_matrix(S.clone().requires_grad_(True))
        k = K.from_kronecker(SL.requires_grad_(True), SR.requires_grad_(True))
    ref = M.from_matrix(S)
    assert torch.equal(x.B, ref.B) and torch.equal(x.d, ref.d)
    assert not x.B.requires_grad and not x.d.requires_grad
    kref = K.from_kronecker(SL.detach(), SR.detach())
    assert torch.equal(k.left.B, kref.left.B) and torch.equal(k.right.d, kref.right.d)
