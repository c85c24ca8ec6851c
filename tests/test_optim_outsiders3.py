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
