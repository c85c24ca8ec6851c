"""``neumann_squarings``: the Neumann Cayley map by scaling and squaring, ``C(N / 2^k)^(2^k)``.

The reference is torch's ``matrix_exp`` of ``2N`` (the geodesic rotation that ``Cayley(N)``
approximates to second order), not our own map: a rotation whose spectral norm is above the
plain map's bound is shrunk by it, and passes whole once scaled by ``2^-k``."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.linalg import NEUMANN_MAX_NORM, cayley_neumann
from manifold_spectral.manifolds import KroneckerSpectralSPD, SpectralSPD, blocks
from manifold_spectral.optim import SpectralKron


def _skew(n: int, norm2: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    N = (A - A.T) / 2
    return N * (norm2 / torch.linalg.matrix_norm(N, ord=2))


def test_squarings_let_a_rotation_past_the_bound_whole() -> None:
    """||N||_2 = 0.8: the plain map shrinks it to the bound 0.25 (far from exp(2N)); with
    k = 2 the bound acts on N / 4 (norm 0.2, inactive) and the result is exp(2N) up to the
    third-order term, with a defect within 2^k times the single map's bound."""
    N = _skew(12, 0.8)
    exact = torch.linalg.matrix_exp(2 * N)
    plain = cayley_neumann(N.clone(), max_norm=NEUMANN_MAX_NORM)
    squared = cayley_neumann(N.clone(), max_norm=NEUMANN_MAX_NORM, squarings=2)
    err = lambda C: float(torch.linalg.matrix_norm(C - exact, ord=2))  # noqa: E731
    assert err(plain) > 0.5
    assert err(squared) < 2 * (0.8**3) / 16  # 2 ||N||^3 / 4^2: the powers' third-order term
    rho = NEUMANN_MAX_NORM  # the bound's rho = ||(N/4)^4||_F^(1/4) >= ||N / 4||_2 = 0.2
    defect = float(torch.linalg.matrix_norm(squared.T @ squared - torch.eye(12), ord=2))
    assert defect <= 4 * (2 * rho**6 + rho**12) + 1e-12


@pytest.mark.parametrize("k", [1, 3])
def test_squarings_converge_to_the_geodesic(k: int) -> None:
    """Without a bound, more squarings are closer to exp(2N) (the plain map's error is
    third order in N, the k-th power's about 4^-k of it)."""
    N = _skew(8, 0.3, seed=1)
    exact = torch.linalg.matrix_exp(2 * N)
    errs = [
        float(torch.linalg.matrix_norm(cayley_neumann(N.clone(), squarings=j) - exact))
        for j in (k - 1, k)
    ]
    assert errs[1] < 0.4 * errs[0]


@pytest.mark.parametrize("bad", [-1, True, 1.5, None])
def test_bad_squarings_are_refused(bad) -> None:
    N = _skew(4, 0.1)
    with pytest.raises(ValueError, match="squarings"):
        cayley_neumann(N, squarings=bad)
    with pytest.raises(ValueError, match="neumann_squarings"):
        SpectralSPD(4, neumann_squarings=bad)
    if bad is not None:  # the optimizer's None is its default (next test)
        with pytest.raises(ValueError, match="neumann_squarings"):
            SpectralKron([torch.nn.Parameter(torch.ones(3, 2))], neumann_squarings=bad)


def test_the_optimizer_default_is_one_squaring_with_the_neumann_map() -> None:
    """The default (``None``) is one squaring with the Neumann map, none with the exact map
    (which it must not refuse), and takes the same bits as ``neumann_squarings=1``."""
    default = _bases(None)
    assert all(torch.equal(a, b) for a, b in zip(default, _bases(1), strict=True))
    assert max(float((a - b).abs().max()) for a, b in zip(default, _bases(0), strict=True)) > 1e-3
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5, bias=False)
    for cayley, k in (("neumann", 1), ("exact", 0)):
        opt = SpectralKron(layer.parameters(), lr=1e-2, cayley=cayley)
        layer(torch.randn(4, 6)).square().sum().backward()
        opt.step()
        (pre,) = [pre for _, pre in opt._preconditioners.values() if pre.kind == "kronecker"]
        assert pre.manifold.neumann_squarings == k


def test_the_option_reaches_every_factor_and_turns_further() -> None:
    """SpectralKron(neumann_squarings=2) builds its factors with it (a batched bucket too),
    and its rotation step is the squared map's: the same first update as the plain map's
    where the bound is inactive, a larger turn where it is active."""
    man = KroneckerSpectralSPD(5, 3, torch.float64, cayley="neumann", neumann_squarings=2)
    assert (man.left.neumann_squarings, man.right.neumann_squarings) == (2, 2)
    B = torch.eye(6, dtype=torch.float64)
    M = torch.tril(_skew(6, 0.9, seed=2), -1)
    plain = blocks.rotation_retract(B, M.clone(), "neumann", NEUMANN_MAX_NORM)
    squared = blocks.rotation_retract(B, M.clone(), "neumann", NEUMANN_MAX_NORM, squarings=2)
    turn = lambda C: float(torch.linalg.matrix_norm(C - B))  # noqa: E731
    assert turn(squared) > 1.5 * turn(plain)
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 5))
    opt = SpectralKron(layers.parameters(), lr=1e-2, neumann_squarings=2)
    layers(torch.randn(4, 6)).square().sum().backward()
    opt.step()
    pres = [*opt._preconditioners.values(), *opt._batched.values()]
    kron = [pre for _, pre in pres if pre.kind == "kronecker"]
    assert kron and all(pre.manifold.neumann_squarings == 2 for pre in kron)
    state = opt.state_dict()
    assert state["param_groups"][0]["neumann_squarings"] == 2


def _bases(k: int | None) -> list[torch.Tensor]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 12, bias=False)
    opt = SpectralKron(layer.parameters(), lr=1e-2, neumann_squarings=k, warm_start=False)
    x = torch.randn(3, 16)
    for _ in range(3):  # rank-deficient gradients from the identity: large first rotations
        opt.zero_grad()
        layer(x).square().sum().backward()
        opt.step()
    state = opt.state[layer.weight]
    return [state[key] for key in state if key.endswith(("B_L", "B_R"))]


def test_the_optimizer_steps_with_the_squared_map() -> None:
    """The optimizer's curvature step (the closed-form GOP step) takes the option: its bases
    differ from the plain map's, and each is still orthogonal to the map's defect."""
    plain, squared = _bases(0), _bases(2)
    assert plain and len(plain) == len(squared)
    assert max(float((a - b).abs().max()) for a, b in zip(plain, squared, strict=True)) > 1e-3
    for B in squared:
        eye = torch.eye(B.shape[-1], dtype=B.dtype)
        assert float(torch.linalg.matrix_norm(B.mT @ B - eye)) < 1e-2


def test_squarings_with_the_exact_map_are_refused() -> None:
    """``cayley="exact"`` has no bound for the squarings to lift: the option would be ignored
    silently, so the constructor and a later group change both refuse it, nothing changed."""
    w = torch.nn.Parameter(torch.ones(3, 2))
    with pytest.raises(ValueError, match="neumann_squarings.*cayley"):
        SpectralKron([w], cayley="exact", neumann_squarings=1)
    opt = SpectralKron([w], cayley="exact")
    opt.param_groups[0]["neumann_squarings"] = 2
    w.grad = torch.ones(3, 2)
    with pytest.raises(ValueError, match="neumann_squarings"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(3, 2)) and not opt.state[w]
