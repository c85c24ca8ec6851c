"""Fixtures shared by several test files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

# The property tests draw the same examples on every run (derandomize): a CI run passes or
# fails by the code, not by the draw (an unseeded draw once found an overflowing start of a
# test objective, not a defect of the package). HYPOTHESIS_PROFILE=explore searches new
# draws (and keeps hypothesis's example database).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def reproductions() -> Iterator[dict[str, Any]]:
    """``cli.REPRODUCTIONS`` to edit in a test, restored with its order afterwards.

    ``monkeypatch.delitem`` would restore a removed entry at the end of the dict, and the
    README test checks that order: a test that ran before it would make it fail."""
    from manifold_spectral import cli

    saved = dict(cli.REPRODUCTIONS)
    try:
        yield cli.REPRODUCTIONS
    finally:
        cli.REPRODUCTIONS.clear()
        cli.REPRODUCTIONS.update(saved)


@pytest.fixture(params=["SpectralSPD", "DiagonalSPD", "KroneckerSpectralSPD"], ids=str)
def manifold(request) -> Any:
    """Each of the three spectral manifolds at ``n = 3`` in float64 (the rejected-call tests,
    ``test_bad_input*.py``; built by ``_bad_input.MANIFOLDS``). A test file that defines or
    parametrizes its own ``manifold`` overrides this one."""
    from _bad_input import MANIFOLDS

    return MANIFOLDS[request.param]()
