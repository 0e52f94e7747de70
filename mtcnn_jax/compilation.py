"""JAX's persistent compilation cache for the detector's programs.

The detector compiles a small fixed set of XLA programs (see
:func:`mtcnn_jax.networks.compiled_programs`); compiling them takes a few seconds
on a 2-core CPU, loading them from JAX's persistent cache a fraction of that. So
:class:`mtcnn_jax.MTCNN` turns the cache on by default (``compilation_cache=True``)
in a folder of its own:

* ``$MTCNN_JAX_CACHE_DIR`` when set; ``off`` (or ``0``, ``none``, empty) disables it;
* otherwise ``$XDG_CACHE_HOME/mtcnn_jax/jax`` (``~/.cache/mtcnn_jax/jax``).

A cache directory the program set itself (``jax.config.update(
"jax_compilation_cache_dir", ...)`` or ``$JAX_COMPILATION_CACHE_DIR``) is left as
it is: the user's choice wins. As JAX warns, the cache is trusted code: a folder owned by another
user or writable by others is refused with one line on stderr and detection runs
without the cache (the folder is created with mode 0700).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Optional, Union

#: Environment variable naming the cache folder (or ``off``).
ENV_VAR = "MTCNN_JAX_CACHE_DIR"
_OFF = {"", "0", "off", "none", "false", "no"}


def default_cache_dir() -> Optional[Path]:
    """The folder the cache uses by default, or ``None`` where ``$MTCNN_JAX_CACHE_DIR`` turns it off."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtcnn_jax" / "jax"


def unsafe_reason(folder: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``folder`` is not safe to load compiled programs from, or None when it is.

    Unsafe: owned by another user, or writable by the group or by everyone (then
    another user could plant a program this process would run). Links are followed.
    """
    try:
        st = os.stat(folder)
    except OSError as err:
        return f"cannot inspect it ({err.strerror or err})"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"it belongs to another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "other users can write to it (mode " + oct(stat.S_IMODE(st.st_mode)) + ")"
    return None


def enable_persistent_cache(path: Union[None, str, os.PathLike] = None) -> Optional[Path]:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`default_cache_dir`).

    Returns the folder in use, or ``None`` when the cache is off (disabled by the
    environment variable, or the folder cannot be created). Programs are cached
    however quickly they compiled (JAX's default skips those under 1 s, which are
    all of ours); like the folder, this is JAX's process-wide setting, so the
    process's other programs are cached there too. Safe to call many times; it
    never replaces a folder already set.
    """
    import jax  # noqa: PLC0415  (JAX loads only when a detector is built)

    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    target = Path(path).expanduser() if path is not None else default_cache_dir()
    if target is None:
        return None
    try:
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None  # read-only home, etc.: run without the cache
    problem = unsafe_reason(target)
    if problem is not None:
        print(f"mtcnn-jax: not using the compilation cache {target}: {problem} (a cache entry is executable "
              f"code; make it yours with 'chmod 700', or set {ENV_VAR} to a folder of your own, or to 'off')",
              file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return target
