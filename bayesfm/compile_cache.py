"""JAX's persistent compilation cache, switched on for bayesfm's programs.

A fit compiles its sampler once per process. With the cache on, a later process (a restarted
notebook, the next ``bayesfm fit``) that fits the same model on data of the same shapes loads
the compiled programs from disk instead of compiling them again.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "BAYESFM_CACHE_DIR"
# programs shorter than this to compile are not worth a round trip through the disk
_SHARED_MIN_COMPILE_S = 1.0


def default_cache_dir() -> Path:
    """``$BAYESFM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesfm/jax``, else ``~/.cache/...``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "bayesfm" / "jax"


def enable_compilation_cache(
    path: str | os.PathLike[str] | None = None, *, min_compile_time_s: float = 0.0
) -> Path:
    """Store compiled JAX programs in ``path`` and load them from there when they recur.

    The cache key is the compiled program itself (its HLO, the compiler options and the
    device), so a hit gives exactly the executable a fresh compilation would: results do not
    change, only the time to the first draw. Tracing and lowering still run in every process.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The cache folder, created if missing. Default :func:`default_cache_dir`.
    min_compile_time_s : float, default 0.0
        Cache only programs that took at least this long to compile. JAX's own default is
        1 s; bayesfm's samplers are made of many smaller programs, so the default caches all.

    Returns
    -------
    pathlib.Path
        The cache folder in use.

    Raises
    ------
    ValueError
        If ``path`` cannot be created or written, or ``min_compile_time_s`` is not a number
        >= 0.

    Examples
    --------
    >>> import tempfile
    >>> import bayesfm as bfm
    >>> folder = bfm.enable_compilation_cache(tempfile.mkdtemp())
    >>> folder.is_dir()
    True
    """
    is_number = isinstance(min_compile_time_s, numbers.Real) and not isinstance(
        min_compile_time_s, bool
    )
    if not (is_number and min_compile_time_s >= 0):
        raise ValueError(
            f"min_compile_time_s: got {min_compile_time_s!r}; allowed: a number >= 0 (seconds)"
        )
    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a uniquely named probe: processes may switch on the same folder at once
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(
            f"path: got {str(folder)!r}, which cannot be used as a cache folder ({exc}); "
            "allowed: a folder this process can create and write"
        ) from None
    _configure(str(folder), float(min_compile_time_s))
    return folder


def disable_compilation_cache() -> None:
    """Stop storing and loading compiled programs (the folder and its files are kept).

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.disable_compilation_cache()
    """
    _configure(None, 1.0)


@contextlib.contextmanager
def shared_within_block() -> Iterator[None]:
    """Compile each distinct large program once inside the block.

    numpyro builds the sampling loop of every sequential chain as a new closure, so JAX
    traces and compiles the same program once per chain (7-14 s each on the 2-core CPU).
    Inside the block a temporary persistent cache turns the repeats into loads. Nothing
    changes when the user has switched on a cache of their own, which does the same.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        yield
        return
    saved = (
        jax.config.jax_persistent_cache_min_compile_time_secs,
        jax.config.jax_persistent_cache_min_entry_size_bytes,
    )
    with tempfile.TemporaryDirectory(prefix="bayesfm-chains-") as folder:
        _configure(folder, _SHARED_MIN_COMPILE_S)
        try:
            yield
        finally:
            _configure(None, saved[0])
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", saved[1])


def _configure(folder: str | None, min_compile_time_s: float) -> None:
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX reads the folder once, at its first compilation; make it read it again
    compilation_cache.reset_cache()
