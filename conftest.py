"""Settings for the whole suite: the tests under ``tests/`` and the docstring examples in
``probkit/`` (collected by ``--doctest-modules``)."""

import os

# One OpenBLAS thread: on 2 cores shared with XLA's own threads, a threaded OpenBLAS
# oversubscribes and small Cholesky/eigh calls slow down 100-fold (measured here).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The suite is dominated by XLA compiles of small programs, not by running them: LLVM's
# optimisation passes at level 0 halve it (measured here: tests/models/mpnp/test_family.py 78 s
# -> 40 s CPU, tests/inference/test_hmc.py 157 s -> 112 s). Numerics are unchanged (no fast-math
# either way); benchmarks and users keep XLA's default level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA:CPU executable holds a few memory mappings; one process that compiles the whole
    suite's programs passes Linux's default ``vm.max_map_count`` (65,530) and the next compile
    segfaults (measured: ~19,000 mappings at 18% of the suite). Clearing per module keeps a
    module's own programs cached while bounding the total.
    """
    yield
    jax.clear_caches()
