"""Finding input images under files and folders, the output policy, and writing annotated copies safely.

The output policy (:class:`mtcnn_jax.files.OutputPolicy`, re-exported here), applied by every command that writes:
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

from mtcnn_jax import images
from mtcnn_jax.draw import annotate
from mtcnn_jax.errors import ImageError
from mtcnn_jax.files import OutputPolicy, write_atomically  # noqa: F401  (OutputPolicy: re-exported)

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


def output_name(relative: str, used: Set[str], extension: Optional[str] = None) -> str:
    """A safe relative output path for ``relative``, unique among ``used`` (updated).

    Splits on / and \\, drops empty, ``.`` and ``..`` parts (so the result never
    leaves the output folder), keeps an image extension (else adds ``.png``), and
    adds ``-1``, ``-2``, ... before the extension when the name (compared
    case-insensitively) is taken. Returns the path joined with ``os.sep``.

    ``extension`` (e.g. ``".mp4"``, or ``""`` for a bare stem such as a folder of
    crops) replaces the name's own extension instead.
    """
    drive_free = _SEPARATORS.sub("/", relative)
    parts = [p for p in drive_free.split("/") if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]  # a Windows drive
    if not parts:
        parts = ["image"]
    stem, ext = os.path.splitext(parts[-1])
    if extension is not None:
        stem, ext = (stem or parts[-1]), extension
    elif not images.is_image_name(parts[-1]):
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


def crop_names(stem: str, count: int) -> List[str]:
    """The names of the aligned crops of one image or frame: ``<stem>_0.png``, ``<stem>_1.png``, ...
    (face k of the detections, in their order: descending score)."""
    return [f"{stem}_{k}.png" for k in range(count)]


def write_crops(out_dir: str, stem: str, image: np.ndarray, faces, size: int = 112,
                overwrite: bool = False) -> List[str]:
    """Write the aligned ``size`` × ``size`` crop of each face to ``out_dir/<stem>_<k>.png``; returns the paths.

    ``faces``: the detections of ``image`` (RGB), with landmarks; each crop is
    :func:`mtcnn_jax.align.align` of its face (the default, ArcFace convention), written
    atomically as PNG. ``stem``: a safe relative name (:func:`output_name` with
    ``extension=""``). Without ``overwrite`` nothing is written when one of the files
    exists (``FileExistsError`` naming it); ``OSError`` too when a file cannot be
    written or would land outside ``out_dir`` (a symbolic link inside it).
    """
    from mtcnn_jax.align import align  # noqa: PLC0415

    paths = [os.path.join(out_dir, name) for name in crop_names(stem, len(faces[1]))]
    if not paths:
        return []
    if not overwrite:
        for path in paths:
            if os.path.lexists(path):
                raise FileExistsError(f"{path} exists (pass --overwrite to replace it)")
    folder = os.path.dirname(paths[0])
    os.makedirs(folder, exist_ok=True)
    if not inside(folder, out_dir):
        raise OSError(f"{folder} would be outside {out_dir} (symbolic link?)")
    crops = align(image, faces, size)
    for crop, path in zip(crops, paths):
        ok, encoded = cv2.imencode(".png", crop[:, :, ::-1])
        if not ok:
            raise OSError(f"cannot encode {path}")
        write_atomically(path, encoded.tobytes())
    return paths
