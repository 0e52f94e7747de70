"""Writing results so that nothing half-written is ever left behind, and reporting what was skipped.

Every file this package writes for a user (JSON results, annotated images,
weights, sample caches, metrics logs, sweep tables) goes through
:func:`write_atomically` or :func:`atomic_path`: the bytes go to a temporary
file in the same folder, which is then renamed over the target. A crash, a kill
or a full disk leaves either the old file or the new one, never a mix.

Inputs that a long job cannot use (an unreadable image, a malformed line of a
list) are skipped and reported by :func:`report_skipped`, one line each on
stderr, so that the job finishes with what it could read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def _temp_name(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name beside ``path`` (pid and random token: concurrent writers never collide)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally it replaces ``path``.

    For writers that want a file name rather than bytes (``np.savez``, OpenCV,
    TensorBoard): write to the yielded path, which ends with ``suffix`` (some
    writers add an extension otherwise). If the block raises, the temporary file
    is removed and ``path`` is untouched. A symbolic link at ``path`` is replaced,
    not followed.
    """
    path = Path(path)
    tmp = _temp_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_special(path: PathLike) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (a device, a pipe, a socket).

    Such a target is written into directly: replacing it by a rename would remove
    the device (``/dev/null``) or the pipe the user gave.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_atomically(path: PathLike, data: Union[bytes, str]) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through a temporary file and a rename.

    The temporary file is created exclusively (never through an existing file or
    link) and flushed to disk before the rename. A device or pipe at ``path``
    (:func:`is_special`) is written into instead. Raises ``OSError``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if is_special(path):  # a device or a pipe (/dev/null, /dev/stdout): renaming would replace it
        with open(path, "wb") as f:
            f.write(data)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def json_ready(obj: Any) -> Any:
    """``obj`` with NumPy scalars and arrays turned into Python values and NaN / inf into None.

    Strict JSON has no NaN; mappings get string keys, tuples become lists.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: PathLike, obj: Any, indent: Optional[int] = 2, sort_keys: bool = False) -> None:
    """``obj`` (through :func:`json_ready`) as JSON text with a final newline, written atomically."""
    text = json.dumps(json_ready(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    write_atomically(path, text + "\n")


def read_text(path: PathLike) -> str:
    """The UTF-8 text of a file; a file that is not UTF-8 is a :class:`~mtcnn_jax.errors.FormatError`.

    (``OSError`` — a missing or unreadable file — passes through for the caller to name.)
    """
    from mtcnn_jax.errors import FormatError  # noqa: PLC0415

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FormatError(path, line, f"not UTF-8 text (byte {data[err.start]:#04x})") from None


def report_skipped(messages: Iterable[str], into: Optional[List[str]] = None) -> List[str]:
    """Print ``skipped: <message>`` on stderr for each message; append them to ``into`` when given.

    Messages name the input and the reason in one line (``"file:line: reason"``
    for a list line, ``"path (list:line): reason"`` for an image). Returns the
    messages as a list.
    """
    messages = list(messages)
    for msg in messages:
        print(f"skipped: {msg}", file=sys.stderr)
    if into is not None:
        into.extend(messages)
    return messages
