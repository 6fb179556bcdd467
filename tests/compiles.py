"""Count XLA compilations inside a block (for the compile-once-per-capacity tests)."""

import contextlib

import jax


@contextlib.contextmanager
def count_compiles():
    """Collect the durations of XLA compilations that happen inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
