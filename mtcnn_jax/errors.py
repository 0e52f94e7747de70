"""Errors that carry a one-line message meant for the user.

* :class:`UserError` — bad input or settings the user can fix; the command line
  prints ``mtcnn-jax: <message>`` and exits non-zero.
* :class:`ImageError` — an image file that cannot be used: ``"<path>: <reason>"``.
* :class:`FormatError` — a malformed line of a text or JSON input (annotations,
  landmark lists, predictions, FDDB folds): ``"<file>:<line>: <reason>"``.
  :class:`FormatWarning` carries the same message for a line a lenient reader
  skipped.
"""

from __future__ import annotations

import os
from typing import Optional, Union


class UserError(Exception):
    """Bad input or settings the user can fix; ``str(err)`` is a single line."""


class ImageError(UserError):
    """An image that cannot be used: ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: Union[str, os.PathLike], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class FormatError(UserError):
    """A malformed input file: ``"<file>:<line>: <reason>"`` (line 1-based), or ``"<file>: <reason>"``.

    ``filename``, ``lineno`` (None when the problem is not on one line) and
    ``reason`` are kept as attributes.
    """

    def __init__(self, filename: Union[str, os.PathLike], lineno: Optional[int], reason: str) -> None:
        self.filename = os.fspath(filename)
        self.lineno = lineno
        self.reason = reason
        where = self.filename if lineno is None else f"{self.filename}:{lineno}"
        super().__init__(f"{where}: {reason}")


class FormatWarning(UserWarning):
    """A malformed line that a lenient reader skipped; the message is :class:`FormatError`'s."""
