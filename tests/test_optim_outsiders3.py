"""An outside tester's findings on ``SpectralKron`` (session 20): a step called inside the
caller's ``torch.autocast`` block.

Each test failed on the code before its fix (see the commit messages)."""

from __future__ import annotations

import pytest
import torch
from test_optim_outsiders2 import _params, _set_grads

from manifold_spectral.optim import SpectralKron

# A padded bucket (three small Kronecker layers of different shapes), a same-shaped bucket,
# a larger layer and a vector.
SHAPES = [[(6, 5), (4, 3), (7, 2)], [(6, 5), (6, 5), (6, 5)], [(40, 24), (9,)]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shapes", SHAPES)
def test_a_step_inside_an_autocast_block_gives_the_bits_of_one_outside_it(dtype, shapes) -> None:
    # A training loop that calls opt.step() inside its `with torch.autocast(...)` block ran
    # the step's matrix products (rotations, Cayley maps) in 16 bits over a float32 state:
    # the curvature steps failed their checks and every step here was skipped, with only a
    # warning. AdamW, whose step is elementwise, gives the same bits inside and outside.
    inside, outside = _params(shapes), _params(shapes)
    opt_in, opt_out = SpectralKron(inside, lr=1e-2), SpectralKron(outside, lr=1e-2)
    for i in range(4):
        _set_grads(inside, i)
        _set_grads(outside, i)
        with torch.autocast("cpu", dtype=dtype):
            opt_in.step()
            assert torch.is_autocast_enabled("cpu")  # the caller's region is restored
        opt_out.step()
    assert opt_in.skipped_steps == opt_out.skipped_steps == 0
    for a, b in zip(inside, outside, strict=True):
        assert torch.equal(a, b)
        state_in, state_out = opt_in.state[a], opt_out.state[b]
        assert state_in.keys() == state_out.keys()
        for key, value in state_in.items():
            assert torch.equal(value, state_out[key]), key


def _lower_float32_matmuls(how: str) -> None:
    if how == "legacy":
        torch.set_float32_matmul_precision("medium")
    else:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"


def _float32_matmul_error() -> float:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    return float((a @ b - (a.double() @ b.double()).float()).abs().max())


@pytest.fixture
def restore_matmul_precision():
    legacy = torch.get_float32_matmul_precision()
    backend = getattr(torch.backends.mkldnn.matmul, "fp32_precision", None)
    yield
    torch.set_float32_matmul_precision(legacy)
    if backend is not None:
        torch.backends.mkldnn.matmul.fp32_precision = backend


@pytest.mark.parametrize("how", ["legacy", "backend"])
@pytest.mark.parametrize("shapes", [[(40, 24), (9,)], [(64, 48), (64, 48)]])  # oneDNN's sizes
def test_a_lowered_float32_matmul_precision_does_not_reach_the_step(
    how, shapes, restore_matmul_precision
) -> None:
    # torch.set_float32_matmul_precision("medium") (TF32 or bfloat16 products, a common
    # setting for the model on GPUs; on CPUs with AMX or AVX512-BF16 it makes them bfloat16)
    # lowered the step's products too: skipped steps and a different trajectory.
    if how == "backend" and not hasattr(torch.backends.mkldnn.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has no per-backend float32 precision")
    exact = _float32_matmul_error()
    _lower_float32_matmuls(how)
    lowered = _float32_matmul_error()
    torch.set_float32_matmul_precision("highest")
    if lowered <= 10 * exact:
        pytest.skip("this CPU computes float32 products in float32 at every setting")
    reference, lowered_ps = _params(shapes), _params(shapes)
    opt_ref, opt_low = SpectralKron(reference, lr=1e-2), SpectralKron(lowered_ps, lr=1e-2)
    for i in range(4):
        _set_grads(reference, i)
        _set_grads(lowered_ps, i)
        opt_ref.step()
        _lower_float32_matmuls(how)
        opt_low.step()
        assert _float32_matmul_error() == lowered  # the caller's setting is restored
        torch.set_float32_matmul_precision("highest")
    assert opt_low.skipped_steps == opt_ref.skipped_steps == 0
    for a, b in zip(lowered_ps, reference, strict=True):
        assert torch.equal(a, b)
