"""The same gradient values in another memory layout give the same bits (an outside tester's
finding: a parameter stored transposed, as a checkpoint loaded with ``.T`` leaves it, moved
2e-6 away from the contiguous one's trajectory within five steps).

A product or a reduction over a transposed tensor adds in another order; ``_compute_many``
makes each gradient contiguous first. Failed before that (the transposed rows)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from manifold_spectral.optim import SpectralKron

CONFIGS = {
    "defaults": {},
    "update_every=2": {"update_every": 2},
    "graft+clip": {"graft": "adam", "clip_rms": 1.0},
    "root=1": {"root": 1.0},
    "float64 state": {"state_dtype": torch.float64},
}


def _layout(t: torch.Tensor, how: str) -> torch.Tensor:
    """``t``'s values in the layout ``how``: contiguous, transposed (column-major) or
    channels_last (4-D)."""
    if how == "transposed":
        return t.t().contiguous().t()
    if how == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def _train(
    shapes: list[tuple[int, ...]], layouts: list[str], options: dict[str, Any], steps: int = 6
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Parameters and tensor state entries after ``steps`` steps on fixed gradients, each
    parameter and its gradients in its layout."""
    gen = torch.Generator().manual_seed(0)
    ps = [
        torch.nn.Parameter(_layout(torch.randn(s, generator=gen), how))
        for s, how in zip(shapes, layouts, strict=True)
    ]
    opt = SpectralKron(ps, lr=1e-2, **options)
    for _ in range(steps):
        for p, how in zip(ps, layouts, strict=True):
            p.grad = _layout(torch.randn(p.shape, generator=gen), how)
            assert p.grad.is_contiguous() == (how == "contiguous")  # the case is exercised
        opt.step()
    states = [
        {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)} for p in ps
    ]
    return [p.detach().clone() for p in ps], states


def _assert_same_bits(a: Any, b: Any) -> None:
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y), (x - y).abs().max()
    for x, y in zip(sa, sb, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_transposed_parameter_takes_the_contiguous_ones_steps_bit_for_bit(config: str) -> None:
    options = CONFIGS[config]
    shapes = [(5, 7)]
    ref = _train(shapes, ["contiguous"], options)
    _assert_same_bits(_train(shapes, ["transposed"], options), ref)


def test_a_bucket_with_a_transposed_member_takes_the_contiguous_bits() -> None:
    """Two same-shaped matrices share a bucket (``batched=True``); one stored transposed."""
    shapes = [(6, 4), (6, 4), (6,)]
    ref = _train(shapes, ["contiguous"] * 3, {"graft": "adam"})
    _assert_same_bits(
        _train(shapes, ["transposed", "contiguous", "contiguous"], {"graft": "adam"}), ref
    )


def test_channels_last_conv_kernels_take_the_contiguous_bits() -> None:
    shapes = [(4, 3, 3, 3)]
    ref = _train(shapes, ["contiguous"], {})
    _assert_same_bits(_train(shapes, ["channels_last"], {}), ref)


def test_the_state_of_a_transposed_parameter_is_contiguous() -> None:
    _, (state,) = _train([(5, 7)], ["transposed"], {"update_every": 2}, steps=3)
    assert all(v.is_contiguous() for v in state.values())
