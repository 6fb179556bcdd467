"""Opt-in persistent compilation cache: a fresh process reuses the XLA programs of the last one.

Most of a first fit's time is spent compiling (warm-up, sampling and the map to constrained
space are one XLA program per model and data shape; see :mod:`probkit.inference.hmc`). JAX can
store compiled programs on disk and load them in later processes whose program, jaxlib version,
backend and flags are the same; :func:`enable_compilation_cache` switches that on with settings
that suit probkit (every program that took at least ``min_compile_time_secs`` to compile is
kept). The same is done without probkit by setting the environment variable
``JAX_COMPILATION_CACHE_DIR`` (and ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``) before JAX
starts; both ways cache NumPyro's own programs too.

Examples
--------
>>> import tempfile, jax, jax.numpy as jnp
>>> import probkit
>>> folder = probkit.enable_compilation_cache(tempfile.mkdtemp(), min_compile_time_secs=0.0)
>>> float(jax.jit(lambda x: jnp.sin(x) ** 2)(1.0)) > 0
True
>>> any(folder.iterdir())                     # the program is on disk now
True
>>> probkit.disable_compilation_cache()
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_cache_dir", "disable_compilation_cache", "enable_compilation_cache"]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/probkit/jax`` (``~/.cache/probkit/jax`` when the variable is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "probkit" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             min_compile_time_secs: float = 0.2) -> Path:
    """Store compiled XLA programs in ``path`` and load them from there in later processes.

    Parameters
    ----------
    path : path-like, optional
        The cache folder (created if missing); :func:`default_cache_dir` by default.
    min_compile_time_secs : float
        Programs that compiled faster than this are not written (JAX's default is 1 s, which
        leaves out many of the programs a short fit compiles).

    Returns
    -------
    Path
        The folder in use.

    Notes
    -----
    Call it before the first fit of the process: a program compiled earlier is not written
    back. The folder is not pruned; delete it to reclaim the space.
    """
    if not min_compile_time_secs >= 0:
        raise ValueError(f"min_compile_time_secs must be >= 0, got {min_compile_time_secs}")
    folder = Path(path) if path is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"path: cannot create the cache folder {str(folder)!r}: {err}") from err
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _reset_jax_cache()
    return folder


def disable_compilation_cache() -> None:
    """Stop reading and writing the persistent cache (programs in memory stay compiled)."""
    jax.config.update("jax_compilation_cache_dir", None)
    _reset_jax_cache()


def _reset_jax_cache() -> None:
    # JAX opens its cache object once, at the first compile after start-up; a folder set later
    # is only seen after this reset (a public function of jax's compilation_cache module).
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
