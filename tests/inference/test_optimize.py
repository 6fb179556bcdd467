"""probkit.inference.optimize.run: the one training loop (more in the engines' and families'
tests, which train through it)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np

from probkit.inference import optimize


def _quadratic(theta, key):
    # minimiser theta* = (1, -2): a closed form to land on
    return jnp.sum((theta - jnp.array([1.0, -2.0])) ** 2)


def test_reaches_the_minimiser_and_compiles_the_chunk_once_from_weak_types(caplog):
    # jnp.full(..., 0.0) is weakly typed; the compiled chunk returns strong types, which used
    # to make the second dispatch compile the chunk again.
    start = jnp.full((2,), 0.0)
    assert start.weak_type
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            out = optimize.run(_quadratic, start, key=jax.random.key(0), num_steps=300,
                               steps_per_dispatch=50, learning_rate=0.05, progress_bar=False)
    finally:
        jax.config.update("jax_log_compiles", False)
    np.testing.assert_allclose(out.params, [1.0, -2.0], atol=1e-3)
    chunk_compiles = [r for r in caplog.records
                      if "Finished XLA compilation" in r.getMessage()
                      and "_chunk" in r.getMessage()]
    assert len(chunk_compiles) == 1, [r.getMessage() for r in chunk_compiles]
    assert out.losses.shape == (6,)
