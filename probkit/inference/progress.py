"""Progress bars for compiled loops: the compiled code emits step counts through host callbacks,
and one tqdm bar on the host advances (the HMC and SG-MCMC engines and the fBNN sampler use it).

Examples
--------
>>> import jax
>>> from probkit.inference.progress import ProgressBar, progress_tick
>>> ProgressBar.open(10, "demo")
>>> _ = jax.lax.fori_loop(0, 10, lambda i, c: (progress_tick(i, 5, 0), c)[1], 0)
>>> ProgressBar.close()
"""

from __future__ import annotations

import jax

__all__ = ["ProgressBar", "progress_tick"]


class ProgressBar:
    """A tqdm bar advanced by host callbacks; the compiled code only emits step counts."""

    bar = None

    @classmethod
    def advance(cls, step):
        if cls.bar is not None:
            step = int(step)
            if step > cls.bar.n:
                cls.bar.update(step - cls.bar.n)

    @classmethod
    def open(cls, total: int, desc: str):
        from tqdm.auto import tqdm

        cls.bar = tqdm(total=total, desc=desc, leave=True)

    @classmethod
    def close(cls):
        if cls.bar is not None:
            cls.bar.n = cls.bar.total
            cls.bar.refresh()
            cls.bar.close()
        cls.bar = None


def progress_tick(i, rate: int, offset: int):
    """Emit a host callback every ``rate`` steps (used to drive the tqdm bar)."""

    def emit(step):
        jax.debug.callback(ProgressBar.advance, step)

    jax.lax.cond((i + 1) % rate == 0, emit, lambda _: None, i + 1 + offset)
