"""``geoopt.SpectralSPD`` refuses a packed point of another size (or a malformed tensor) in
every method that splits it into ``(B, d)``, with an error naming the argument, instead of
computing numbers for the wrong manifold."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("geoopt")

from manifold_spectral.geoopt import SpectralSPD  # noqa: E402

F64 = torch.float64


def _points():
    g = torch.Generator().manual_seed(0)
    M5, M6 = SpectralSPD(5), SpectralSPD(6)
    x5 = M5.random(dtype=F64, generator=g).as_subclass(torch.Tensor)
    x6 = M6.random(dtype=F64, generator=g).as_subclass(torch.Tensor)
    u5 = M5.proju(x5, torch.randn(6, 5, dtype=F64, generator=g))
    u6 = M6.proju(x6, torch.randn(7, 6, dtype=F64, generator=g))
    return M5, x5, u5, x6, u6


CALLS = {
    "retr": lambda M, x, u: M.retr(x, u),
    "inner": lambda M, x, u: M.inner(x, u),
    "inner_v": lambda M, x, u: M.inner(x, u, u),
    "egrad2rgrad": lambda M, x, u: M.egrad2rgrad(x, u),
    "proju": lambda M, x, u: M.proju(x, u),
    "projx": lambda M, x, u: M.projx(x),
    "to_matrix": lambda M, x, u: M.to_matrix(x),
    "power": lambda M, x, u: M.power(x, 0.5),
    "transp": lambda M, x, u: M.transp(x, x, u),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_point_of_another_size_is_refused(call):
    M5, _, _, x6, u6 = _points()
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*batch, 6, 5\).*got \(7, 6\)"):
        CALLS[call](M5, x6, u6)


@pytest.mark.parametrize("call", ["retr", "inner", "egrad2rgrad", "to_matrix"])
def test_malformed_point_is_refused(call):
    M5, x5, _, _, _ = _points()
    bad = x5[:, :4]
    with pytest.raises(ValueError, match=r"^x: .*got \(6, 4\)"):
        CALLS[call](M5, bad, torch.ones_like(bad))


@pytest.mark.parametrize("call", ["retr", "inner", "egrad2rgrad", "proju"])
def test_tangent_of_another_size_is_refused(call):
    M5, x5, _, _, u6 = _points()
    with pytest.raises(ValueError, match=r"^u: expected shape"):
        CALLS[call](M5, x5, u6)


def test_right_shapes_still_work_batched():
    M5, x5, u5, _, _ = _points()
    xb, ub = x5.expand(2, 3, 6, 5), u5.expand(2, 3, 6, 5)
    assert M5.retr(xb, ub).shape == (2, 3, 6, 5)
    assert M5.inner(xb, ub).shape == (2, 3)


@pytest.mark.parametrize("call", sorted(CALLS) + ["check_point", "check_vector"])
def test_an_integer_point_or_vector_is_refused_naming_it(call):
    """An outside tester's finding: an integer packed point passed every check (shape only),
    ``to_matrix`` returned an int64 matrix and the other methods failed inside torch
    (``linalg.solve``, ``torch.finfo``, integer powers) naming no argument."""
    from manifold_spectral.geoopt import KroneckerSpectralSPD, pack

    M5, x5, u5, _, _ = _points()
    checks = {
        "check_point": lambda M, x, u: M.check_point_on_manifold(x),
        "check_vector": lambda M, x, u: M.check_vector_on_tangent(x, u),
    }
    f = {**CALLS, **checks}[call]
    with pytest.raises(TypeError, match=r"^x: expected a floating dtype, got torch.int64"):
        f(M5, x5.round().long(), u5)
    if call not in ("projx", "to_matrix", "power", "check_point"):  # these take no vector
        with pytest.raises(TypeError, match=r"^[uv]: expected a floating dtype, got torch.int64"):
            f(M5, x5, u5.round().long())
    with pytest.raises(TypeError, match=r"^pack: B: expected a floating dtype"):
        pack(torch.eye(2, dtype=torch.int64), torch.tensor([2.0, 3.0]))
    K = KroneckerSpectralSPD(2, 3)
    with pytest.raises(TypeError, match=r"^x: expected a floating dtype"):
        K.to_matrix(torch.ones(K.numel, dtype=torch.int64))
