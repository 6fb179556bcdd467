"""Shared fixtures: float64 for tests that compare with closed forms to tight tolerances."""

import os

# One OpenBLAS thread: on 2 cores shared with XLA's own threads, a threaded OpenBLAS
# oversubscribes and small Cholesky/eigh calls slow down 100-fold (measured here).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Run a test with 64-bit floats, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield
