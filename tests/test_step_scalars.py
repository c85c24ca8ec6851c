"""The step's per-call savings change no result: ``linalg.operand`` (numbers of elementwise ops
as cached 0-d tensors) gives the bits of the Python number, and a step count cached for a
step is read afresh once its tensor is edited in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from manifold_spectral.linalg import operand
from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)

#: Numbers that round in float32 (0.1, 1/3, 0.9, 1e-16) and one whose float32 rounding lies
#: above it (a comparison in float64 would tell it from its rounding).
VALUES = [0.1, 1.0 / 3.0, 0.9, 1e-16, 2.2e-10, 4.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", VALUES)
def test_operand_gives_the_numbers_bits(dtype, value):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(257, generator=g, dtype=dtype)
    # the number's own rounding and its neighbours, for the comparisons
    r = np.array(value, dtype=np.float32 if dtype == torch.float32 else np.float64)
    near = [np.nextafter(r, -np.inf), r, np.nextafter(r, np.inf)]
    x = torch.cat([x, torch.tensor(np.array(near), dtype=dtype)])
    c = operand(value, x)
    assert isinstance(c, torch.Tensor) and c.ndim == 0 and c.dtype == dtype
    assert torch.equal(torch.mul(x, c), x * value)
    assert torch.equal(x.clone().add_(c), x + value)
    assert torch.equal(torch.div(x, c), x / value)
    assert torch.equal(x <= c, x <= value)
    assert torch.equal(x > c, x > value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_operand_passes_16_bit_numbers(dtype):
    """A 16-bit op computes with the number in float32: a 16-bit 0-d tensor would round it
    again (``x * 0.1`` differs from ``x * bf16(0.1)`` in some entries)."""
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)).to(dtype)
    c = operand(0.1, x)
    assert torch.equal(x * c, x * 0.1)
    assert torch.equal(x.clone().mul_(c), x * 0.1)


def test_operand_keeps_the_sign_of_zero():
    """``-0.0 == 0.0``: a cache keyed by value would hand one zero for both, and the sign of
    ``-0.0 + z`` is that of ``z``."""
    x = torch.tensor([-0.0, -0.0])
    for z in (0.0, -0.0, 0.0):
        assert torch.equal(torch.signbit(x + operand(z, x)), torch.signbit(x + z))


def test_operand_is_cached_per_value_and_dtype():
    x32, x64 = torch.ones(2), torch.ones(2, dtype=torch.float64)
    assert operand(0.5, x32) is operand(0.5, x32)
    assert operand(0.5, x64) is not operand(0.5, x32)
    assert float(operand(0.25, x32)) == 0.25
    assert not operand(0.5, x32).is_inference()
    t = torch.tensor(3.0)
    assert operand(t, x32) is t  # a tensor is its own operand


def test_step_count_is_read_afresh_after_an_in_place_edit():
    """A skipped step keeps the step tensors it read; one edited in place afterwards is read
    again (its version changed), not taken from the skipped step's reads."""
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    opt = SpectralKron(net.parameters(), lr=0.01, nonfinite="skip")
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().sum().backward()
        opt.step()
    w = net.weight
    assert int(opt.state[w]["step"]) == 3
    opt.zero_grad()
    net(x).square().sum().backward()
    w.grad[0, 0] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1 and int(opt.state[w]["step"]) == 3
    w.grad[0, 0] = 0.0
    opt.state[w]["step"].fill_(6)  # the same tensor, a new version
    new, _ = opt.compute_update(opt.param_groups[0], w)
    assert int(new["step"]) == 7
