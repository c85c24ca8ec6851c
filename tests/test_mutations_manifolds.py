"""Manifold rules that a mutation audit found unguarded: each test fails under the mutation
named in its docstring and checks a value computed without the code under test."""

from __future__ import annotations

import math

import torch

import manifold_spectral as ms
from manifold_spectral.manifolds import blocks

torch.set_num_threads(1)


def test_tied_eigenvalues_with_zero_tolerance_give_the_moore_penrose_zero():
    """``eig_tol = 0`` (allowed): a pair with exactly equal eigenvalues has ``C_ij = 0``, whose
    Moore-Penrose pseudo-inverse is 0, so the natural gradient's rotation part is exactly 0
    at the origin (``d = 1``), not ``G_ij / 0``. The guard ``gap <= tol max(d_i, d_j)`` must
    include equality (``<`` made it NaN and passed every other test)."""
    M = ms.SpectralSPD(3, dtype=torch.float64, eig_tol=0.0)
    G = torch.tensor([[1.0, 2.0, 3.0], [2.0, -1.0, 4.0], [3.0, 4.0, 0.5]], dtype=torch.float64)
    nat = M.natural_gradient_eigenbasis(M.origin(), G)
    assert torch.equal(nat.M, torch.zeros(3, 3, dtype=torch.float64))
    assert torch.equal(nat.m, 2.0 * G.diagonal())  # (2 / kappa) d G_ii with d = 1


def test_continued_map_is_the_truncation_down_to_minus_one_half():
    """``exponential="continued"``: ``d (1 + m)`` for ``m >= -1/2``, ``d exp(2 m + 1) / 2``
    below (value and slope match at -1/2), in both the chart map and the GOP step
    ``m = beta2 (h / d - gamma)``. Values by hand at m = -0.4, -0.5, -0.9, -3 (a switch at
    -1/4, or the exponent's floor raised from -8 to -4, passed every other test)."""
    d = torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    m = torch.tensor([-0.4, -0.5, -0.9, -3.0], dtype=torch.float64)
    want = torch.tensor([1.2, 1.0, math.exp(-0.8), math.exp(-5.0)], dtype=torch.float64)
    torch.testing.assert_close(blocks.eig_retract(d, m, "continued"), want, rtol=1e-14, atol=0)
    # the GOP step with gamma = 1, beta2 = 1: m = h / d - 1, so h = d (1 + m)
    h = d * (1.0 + m)
    got = blocks.gop_eig_step(d, h, 1.0, 1.0, "continued")
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)


def test_continued_gop_step_is_bitwise_the_truncated_one_above_minus_one_half():
    """Where ``m = beta2 (h / d - gamma) >= -1/2`` the continued GOP step is bitwise the
    truncated one, ``(1 - gamma beta2) d + beta2 h`` (no quotient ``h / d``), so switching the
    default map changes no run that never needed the continuation. Taking ``d (1 + m)`` on
    part of that range (a switch at -1/4) differs in the last bits of many of these entries
    and passed every other test."""
    g = torch.Generator().manual_seed(0)
    d = torch.exp(torch.randn(1000, generator=g, dtype=torch.float64))
    beta2, gamma = 0.6, 1.0
    # h / d in [1 - 0.5 / beta2, 1): m in [-1/2, 0)
    h = d * (torch.rand(1000, generator=g, dtype=torch.float64) * (0.5 / beta2) + 1 - 0.5 / beta2)
    continued = blocks.gop_eig_step(d, h, beta2, gamma, "continued")
    assert torch.equal(continued, blocks.gop_eig_step(d, h, beta2, gamma, "truncated"))


def test_rgd_heavy_ball_by_hand():
    """``RGD(momentum=mu)``: ``v <- mu v + F^+ grad``, ``x <- chart_x(-lr v)``. On
    ``DiagonalSPD`` (``F^+ grad = 2 d * egrad``, chart ``d exp(m)``) three steps by hand. The
    momentum left out, taken as ``(1 - mu) v + mu F^+ grad``, or its buffer never committed
    passed every other test (the batched-vs-loop tests run the same rule on both sides)."""
    M = ms.DiagonalSPD(3, dtype=torch.float64)
    x = M.from_eigenvalues(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    e = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    lr, mu = 0.1, 0.5
    opt = ms.RGD(M, lr, momentum=mu)
    d, v = x.d.clone(), torch.zeros(3, dtype=torch.float64)
    for _ in range(3):
        x = opt.step(x, e)
        v = mu * v + 2.0 * d * e
        d = d * torch.exp(-lr * v)
        torch.testing.assert_close(x.d, d, rtol=1e-14, atol=0)
