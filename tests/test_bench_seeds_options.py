"""``benchmarks/bench_optim_seeds.py --option``: literal values and torch dtypes."""

from __future__ import annotations

import argparse

import pytest
import torch
from _benchmarks import import_benchmark


@pytest.fixture(scope="module")
def seeds_script():
    yield from import_benchmark("bench_optim_seeds")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("state_dtype=bfloat16", ("state_dtype", torch.bfloat16)),
        ("state_dtype=torch.float64", ("state_dtype", torch.float64)),
        ("nesterov=False", ("nesterov", False)),
        ("beta2=0.03", ("beta2", 0.03)),
        ("graft='adam'", ("graft", "adam")),
    ],
)
def test_option_values(seeds_script, text, expected) -> None:
    """A dtype's name (no Python literal spells one: the bf16-state comparison) gives the
    dtype; every other value is still the Python literal."""
    key, value = seeds_script.parse_option(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["state_dtype=bfloat17", "nesterov", "=1", "lr=e"])
def test_bad_options_are_refused(seeds_script, text) -> None:
    """Neither a literal nor a dtype's name (``torch.e`` is a number, not a dtype), or no
    ``key=``: an error, as before."""
    with pytest.raises((argparse.ArgumentTypeError, ValueError, SyntaxError)):
        seeds_script.parse_option(text)
