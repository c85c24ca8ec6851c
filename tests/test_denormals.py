"""Subnormal numbers flushed to zero inside SpectralKron's step (``_denormals``): the mode is
set for the step only and restored, a gradient's subnormal entries act as zeros, and no
subnormal value is kept in the state (where it would slow every later step's products)."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral._denormals import flush_denormals, flushing
from manifold_spectral.optim import SpectralKron


def _supported() -> bool:
    ok = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    return ok


pytestmark = pytest.mark.skipif(not _supported(), reason="this CPU cannot flush subnormals")

TINY = torch.finfo(torch.float32).tiny


def _subnormals(t: torch.Tensor) -> int:
    a = t.abs()
    return int(((a > 0) & (a < torch.finfo(t.dtype).tiny)).sum())


def test_block_sets_and_restores_the_mode():
    assert not flushing()
    with flush_denormals():
        assert flushing()
        assert torch.tensor([TINY / 4]).mul(1.0).item() == 0.0
    assert not flushing()
    assert torch.tensor([TINY / 4]).mul(1.0).item() > 0.0
    with pytest.raises(KeyError), flush_denormals():
        raise KeyError("boom")
    assert not flushing()


def test_block_keeps_a_callers_mode():
    torch.set_flush_denormal(True)
    try:
        with flush_denormals():
            assert flushing()
        assert flushing()  # the caller set it: still set
    finally:
        torch.set_flush_denormal(False)


def _lm_head(seed: int) -> tuple[torch.nn.Linear, torch.Tensor]:
    """A 64 x 16 output layer and a gradient whose rows of 'unseen tokens' are subnormal."""
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(16, 64, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(64, 16, generator=g) / 4)
    grad = torch.randn(64, 16, generator=g)
    grad[40:] *= 1e-42  # softmax probabilities of tokens the data never contains
    assert _subnormals(grad) > 0
    return layer, grad


def _train(grad: torch.Tensor, seed: int, steps: int = 4) -> tuple[torch.Tensor, SpectralKron]:
    layer, _ = _lm_head(seed)
    opt = SpectralKron(layer.parameters(), lr=1e-2)
    for _ in range(steps):
        layer.weight.grad = grad.clone()
        opt.step()
    return layer.weight.detach().clone(), opt


def test_subnormal_gradient_entries_act_as_zeros_and_never_enter_the_state():
    _, grad = _lm_head(0)
    w, opt = _train(grad, 0)
    zeroed = torch.where(grad.abs() < TINY, torch.zeros_like(grad), grad)
    w0, _ = _train(zeroed, 0)
    assert torch.equal(w, w0)
    state = opt.state[next(iter(opt.state))]
    floats = [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    assert len(floats) >= 6  # momentum, both factors' B and d, the eigenbasis second moment
    assert [_subnormals(t) for t in floats] == [0] * len(floats)
    assert not flushing()  # the step restored the mode


def test_closure_runs_in_the_callers_mode():
    layer, grad = _lm_head(1)
    opt = SpectralKron(layer.parameters(), lr=1e-2)
    seen = []

    def closure():
        seen.append(flushing())
        layer.weight.grad = grad.clone()
        return torch.zeros(())

    opt.step(closure)
    assert seen == [False] and not flushing()
