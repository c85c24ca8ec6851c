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


def _block(tag: str, lr: str) -> str:
    return (
        f"<!-- {tag}:start -->\nMeasured ...\n\ndigits: scikit-learn 8x8 digits\n\n"
        "| method | tuned hyper-parameters | final eval loss (mean) |\n|---|---|---:|\n"
        f"| SOAP | lr={lr}, 1-beta2=0.01 | 0.02 |\n"
        f"| SpectralKron defaults (ours) | lr={lr} | 0.02 |\n<!-- {tag}:end -->\n"
    )


def test_full_digits_reads_its_own_table(seeds_script) -> None:
    """``digits-full`` trains the digits task at issue 13's size (period 2, 300 steps) and
    takes its hyper-parameters from the full-size table, not the small one's row of the same
    task name."""
    text = _block("nn-real-fp32", "0.005") + _block("nn-real-full-digits", "0.001")
    assert seeds_script.tuned_from_readme("digits", "soap", text)["lr"] == 0.005
    assert seeds_script.tuned_from_readme("digits-full", "soap", text)["lr"] == 0.001
    assert seeds_script.tuned_from_readme("digits-full", "spectral-p2", text) == {"lr": 0.001}
    name, kw, precision, period, steps = seeds_script.SETTINGS["digits-full"]
    assert (name, kw["channels"], precision, period, steps) == ("digits", (32, 64), "fp32", 2, 300)


def test_cached_pairs_resume_and_tell_variants_apart(seeds_script, tmp_path, monkeypatch):
    """``--cache``: the second ``compare`` of the same option reads every run (same numbers);
    another option's variant, registered under the same name, trains its runs again, and the
    defaults' are read."""
    from manifold_spectral.experiments.nn_training import training

    tiny = ("mlp", {"d_in": 8, "width": 16, "batch": 8, "eval_size": 64}, "fp32", 1, 5)
    monkeypatch.setitem(seeds_script.SETTINGS, "tiny", tiny)
    real, calls = training.train, [0]

    def counted(*args, **kw):
        calls[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(training, "train", counted)
    first = seeds_script.compare("tiny", {"beta2": 0.05}, [1, 2], 1e-3, tmp_path)
    assert calls[0] == 4
    again = seeds_script.compare("tiny", {"beta2": 0.05}, [1, 2], 1e-3, tmp_path)
    assert calls[0] == 4
    for key in ("base", "var"):
        assert (again[key] == first[key]).all()
    other = seeds_script.compare("tiny", {"beta2": 0.2}, [1, 2], 1e-3, tmp_path)
    assert calls[0] == 6  # the variant's two seeds; the defaults' two were read
    assert (other["base"] == first["base"]).all() and (other["var"] != first["var"]).any()
