"""Shared pieces of the SPD solver tests (``test_solvers_spd*.py``): one torch thread per
module (an autouse fixture each file imports) and small seeded problems."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.linalg import random_spd

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Matrices here are tiny: one intra-op thread is fastest and immune to a loaded machine
    (two OpenMP threads on two busy cores stall at every parallel region)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_problem(d: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``Q`` with condition number 10 and an independent start ``S0`` (condition number 10)."""
    g = gen(seed)
    return random_spd(d, 1.0, g), random_spd(d, 1.0, g)


def sym(n: int, seed: int) -> torch.Tensor:
    A = torch.randn(n, n, generator=gen(seed), dtype=DT)
    return A + A.T
