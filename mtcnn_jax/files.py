"""Writing results so that nothing half-written is ever left behind, and reporting what was skipped.

Every file this package writes for a user (JSON results, annotated images,
weights, sample caches, metrics logs, sweep tables) goes through
:func:`write_atomically` or :func:`atomic_path`: the bytes go to a temporary
file in the same folder, which is then renamed over the target. A crash, a kill
or a full disk leaves either the old file or the new one, never a mix.

:class:`OutputPolicy` says where a command may write: never onto an input, inside
an input folder or over an existing file unless the user passes ``--overwrite``.

Inputs that a long job cannot use (an unreadable image, a malformed line of a
list) are skipped and reported by :func:`report_skipped`, one line each on
stderr, so that the job finishes with what it could read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from mtcnn_jax.errors import FormatError, UserError

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
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FormatError(path, line, f"not UTF-8 text (byte {data[err.start]:#04x})") from None


def sha256_file(path: PathLike) -> str:
    """SHA-256 of a file's bytes, hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


class OutputPolicy:
    """Where a command may write, given its inputs (files and folders) and ``--overwrite``.

    Without ``overwrite``: an output file may not exist yet, may not be an input file,
    and may not lie inside an input folder; an output folder may not be an input
    folder, lie inside one, or hold an input. With ``overwrite`` all of these are
    allowed (an output folder inside an input folder is then not searched for inputs:
    see :func:`collect_images`). Refusals are one-line :class:`~mtcnn_jax.errors.UserError` s
    naming the option, the path and how to proceed.
    """

    def __init__(self, inputs: Sequence[str], overwrite: bool = False):
        self.overwrite = bool(overwrite)
        real = [(os.path.realpath(p), os.path.isdir(p)) for p in inputs if p is not None and os.path.exists(p)]
        self.input_files = {r for r, is_dir in real if not is_dir}
        self.input_folders = [r for r, is_dir in real if is_dir]

    def conflict(self, path: str) -> Optional[str]:
        """Why writing the file ``path`` would touch the user's data, or None (ignores ``overwrite``)."""
        real = os.path.realpath(path)
        if real in self.input_files:
            return "is an input file"
        for folder in self.input_folders:
            if real == folder or real.startswith(folder.rstrip(os.sep) + os.sep):
                return f"lies inside the input folder {folder}"
        if os.path.lexists(path) and not is_special(path):  # writing into /dev/null replaces nothing
            return "exists"
        return None

    def check_file(self, option: str, path: str) -> str:
        """Validate an output file given by ``option``; returns ``path``."""
        if os.path.isdir(path):
            raise UserError(f"{option}: {path} is a folder")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UserError(f"{option}: folder {folder} does not exist")
        why = None if self.overwrite else self.conflict(path)
        if why is not None:
            raise UserError(f"{option}: {path} {why}: choose another path, or pass --overwrite")
        return path

    def check_folder(self, option: str, path: str) -> str:
        """Validate (and create) an output folder given by ``option``; returns ``path``."""
        if os.path.lexists(path) and not os.path.isdir(path):
            raise UserError(f"{option}: {path} exists and is not a folder")
        if not self.overwrite:
            real = os.path.realpath(path)
            for folder in self.input_folders:
                if real == folder:
                    raise UserError(f"{option}: {path} is an input folder: choose another folder, "
                                    "or pass --overwrite")
                if real.startswith(folder.rstrip(os.sep) + os.sep):
                    raise UserError(f"{option}: {path} lies inside the input folder {folder}: choose a folder "
                                    "outside the inputs, or pass --overwrite")
            for item in sorted(self.input_files) + self.input_folders:
                if item.startswith(real.rstrip(os.sep) + os.sep):
                    raise UserError(f"{option}: {path} holds the input {item}: choose another folder, "
                                    "or pass --overwrite")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise UserError(f"{option}: cannot create {path} ({err.strerror or err})") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option}: cannot write into {path} (permission denied)")
        return path

    def refuse_existing(self, option: str, folder: str, names: Sequence[str]) -> None:
        """Refuse (one line) when one of ``folder/names`` exists, unless ``overwrite``."""
        if self.overwrite:
            return
        taken = [n for n in names if os.path.lexists(os.path.join(folder, n))]
        if taken:
            raise UserError(f"{option}: {folder} already holds {', '.join(taken)}: choose another folder, "
                            "or pass --overwrite")
