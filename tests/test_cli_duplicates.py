"""A repeated value of a list option (``--functions griewank griewank``, ``--instances 1 1``)
is a usage error naming the option: run, it would count copies of the same cell (the
tables said "1 seeds" over "0/2" cells and printed the row twice)."""

from __future__ import annotations

import argparse

import pytest

from manifold_spectral import cli
from manifold_spectral.cli.parser import build_parser


def _list_options():
    """``(subcommand, option, a valid value)`` of every ``nargs="+"`` option."""
    out = []
    for name, rep in cli.REPRODUCTIONS.items():
        sub = argparse.ArgumentParser()
        rep.add_arguments(sub)
        for action in sub._actions:
            if action.nargs == "+":
                value = action.choices[0] if action.choices else action.default[0]
                out.append((name, action.option_strings[0], str(value)))
    return out


OPTIONS = _list_options()


def test_every_list_option_is_covered():
    assert {(n, o) for n, o, _ in OPTIONS} >= {
        ("nes", "--functions"),
        ("nes", "--methods"),
        ("bbob", "--functions"),
        ("bbob", "--instances"),
        ("bbob", "--dims"),
        ("bbob", "--methods"),
        ("nn", "--task"),
        ("nn", "--methods"),
        ("curvature", "--beta2"),
    }


@pytest.mark.parametrize(("name", "option", "value"), OPTIONS)
def test_repeated_value_is_a_usage_error(name, option, value, capsys):
    # The command line's own parser: the error comes before anything runs (the old code ran
    # the duplicated cells, so parse only).
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["reproduce", name, option, value, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: each value at most once, repeated: {value}" in err


def test_distinct_values_parse_as_a_list():
    rep = cli.REPRODUCTIONS["bbob"]
    sub = argparse.ArgumentParser()
    rep.add_arguments(sub)
    args = sub.parse_args(["--functions", "2", "1", "--instances", "3"])
    assert args.functions == [2, 1] and args.instances == [3]
    assert sub.parse_args([]).instances == [1, 2, 3]  # defaults untouched
