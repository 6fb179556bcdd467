"""Shared fixtures: float64 for tests that compare with closed forms to tight tolerances.

The suite-wide settings (XLA flags, OpenBLAS threads, releasing compiled programs) live in the
repository's root ``conftest.py``, which also covers the docstring examples."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run a test with 64-bit floats, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield
