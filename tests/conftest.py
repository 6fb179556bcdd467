"""Shared fixtures: float64 for tests that compare with closed forms to tight tolerances."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run a test with 64-bit floats, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield
