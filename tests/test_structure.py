"""The package's structure: one validation module, deprecated aliases for moved names."""

from __future__ import annotations

import pytest

from manifold_spectral import validation


@pytest.mark.parametrize("name", ["resolve_device", "check_flag", "symmetric_matrix"])
def test_moved_helpers_warn_at_their_old_place(name):
    from manifold_spectral.manifolds import spectral

    with pytest.warns(DeprecationWarning, match=f"manifold_spectral.validation.{name}"):
        old = getattr(spectral, name)
    assert old is getattr(validation, name)
    with pytest.raises(AttributeError):
        spectral.no_such_name  # noqa: B018


def test_base_reexports_the_validation_checks():
    from manifold_spectral.manifolds import base

    for name in ("check_tensor", "check_positive", "check_size", "resolve_dtype"):
        assert getattr(base, name) is getattr(validation, name)


@pytest.mark.parametrize("bad", [1.0, 1, -0.1, float("nan"), True])
def test_check_momentum_rejects_outside_0_1(bad):
    with pytest.raises((ValueError, TypeError), match="momentum"):
        validation.check_momentum(bad)


def test_check_momentum_accepts_0_1():
    assert validation.check_momentum(0) == 0.0
    assert validation.check_momentum(0.999) == 0.999
