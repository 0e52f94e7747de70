"""Finding input images under files and folders, the output policy, and writing annotated copies safely.

The output policy (:class:`OutputPolicy`), applied by every command that writes:
never write onto an input file or inside an input folder, and never replace a file
that exists, unless the user passes ``--overwrite``; every file is written
atomically (:mod:`mtcnn_jax.files`).

What ``mtcnn-jax detect`` does around the detector, as importable functions:
:func:`collect_images` lists the images of the paths given (files, folders searched
recursively) with the name each gets in an output folder; :func:`output_name` turns
that name into a safe, unique relative path (never outside the output folder, never
twice the same name); :func:`write_annotated` draws the detections and writes the
copy atomically; :func:`printable` makes a path safe to print on one line.
"""

from __future__ import annotations

import os
import re
from typing import List, NamedTuple, Optional, Sequence, Set

import cv2
import numpy as np

from mtcnn_jax import files, images
from mtcnn_jax.draw import annotate
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.files import write_atomically

_SEPARATORS = re.compile(r"[\\/]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` safe to print as one line: control characters and undecodable bytes escaped."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, symbolic links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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
        if os.path.lexists(path) and not files.is_special(path):  # writing into /dev/null replaces nothing
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


class InputImage(NamedTuple):
    """An image to process.

    display: the path as the user gave it (a folder as given joined with the relative path).
    path: the path to open.
    relative: its name in an output folder: the file name for a file given directly, the
      path relative to the folder for a file found in a folder.
    """

    display: str
    path: str
    relative: str


def collect_images(
    paths: Sequence[str], errors: List[ImageError], skip_under: Optional[str] = None
) -> List[InputImage]:
    """The images of ``paths`` (image files, or folders searched recursively), in order.

    Paths that are not usable images are appended to ``errors``
    (:func:`mtcnn_jax.images.find_images`). Files under ``skip_under`` (an output
    folder inside an input folder: earlier output) are left out.
    """
    items = []
    for given in paths:
        is_dir = os.path.isdir(given)
        skip = is_dir and skip_under is not None and inside(skip_under, given)
        for display, path in images.find_images([given], errors):
            if is_dir:
                if skip and inside(path, skip_under):
                    continue
                relative = os.path.relpath(display, given)
            else:
                relative = os.path.basename(display)
            items.append(InputImage(display, path, relative))
    return items


def output_name(relative: str, used: Set[str]) -> str:
    """A safe relative output path for ``relative``, unique among ``used`` (updated).

    Splits on / and \\, drops empty, ``.`` and ``..`` parts (so the result never
    leaves the output folder), keeps an image extension (else adds ``.png``), and
    adds ``-1``, ``-2``, ... before the extension when the name (compared
    case-insensitively) is taken. Returns the path joined with ``os.sep``.
    """
    drive_free = _SEPARATORS.sub("/", relative)
    parts = [p for p in drive_free.split("/") if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]  # a Windows drive
    if not parts:
        parts = ["image"]
    stem, ext = os.path.splitext(parts[-1])
    if not images.is_image_name(parts[-1]):
        stem, ext = parts[-1], ".png"
    k = 0
    while True:
        name = stem + (f"-{k}" if k else "") + ext
        candidate = os.path.join(*parts[:-1], name)
        if candidate.lower() not in used:
            used.add(candidate.lower())
            return candidate
        k += 1


def write_annotated(out_dir: str, name: str, image: np.ndarray, faces) -> str:
    """Draw ``faces`` on ``image`` (RGB) and write it to ``out_dir/name`` atomically; returns the path.

    The format follows the extension of ``name``. Raises OSError if the file cannot be
    written or would land outside ``out_dir`` (e.g. through a symbolic link inside it).
    """
    path = os.path.join(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not inside(os.path.dirname(path), out_dir):
        raise OSError(f"{path} would be outside {out_dir} (symbolic link?)")
    drawn = annotate(image, faces[0], faces[1], faces[2])
    ok, encoded = cv2.imencode(os.path.splitext(name)[1].lower(), drawn[:, :, ::-1])
    if not ok:
        raise OSError(f"cannot encode {name}")
    write_atomically(path, encoded.tobytes())
    return path
