"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
