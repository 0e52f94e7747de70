"""Readers for five-point landmark lists: the CUHK, MTFL and CelebA formats.

Every reader returns :class:`LandmarkFace` records in file order, in one frame:
**0-based, continuous pixel coordinates**, pixel column ``i`` spanning ``[i, i + 1)``
(the frame of :mod:`mtcnn_jax.data.samples`); boxes are **half-open** ``x1, y1, x2, y2``
(``x2 = x1 + width``). The five points are, in order, left eye, right eye, nose,
left mouth corner, right mouth corner, "left" meaning the image's left side.

Formats (one face per line, fields separated by white space):

* ``"cuhk"`` — the CUHK Face Alignment lists (``cuhk_trainImageList_lfw.txt``):
  ``path left right top bottom x1 y1 x2 y2 x3 y3 x4 y4 x5 y5``. The box becomes
  ``(left, top, right, bottom)``; the points are already 0-based.
* ``"mtfl"`` — MTFL's ``training.txt`` / ``testing.txt``: ``path x1..x5 y1..y5
  [gender smile glasses pose]``. MTFL counts pixels from 1 (each coordinate is the
  CUHK one + 1), so 1 is subtracted (``one_based=False`` reads a list already
  0-based). MTFL has no face box: ``box`` is None; the four attributes, when the
  line has them, are kept in ``attributes``. This is the one MTFL parser: the
  landmark evaluation (:mod:`mtcnn_jax.evaluation.nme`) builds its arrays from it.
* ``"celeba"`` — a folder holding CelebA's ``list_landmarks_celeba.txt`` and
  ``list_bbox_celeba.txt``, joined by image id. Both files start with a count line
  and a header line (``lefteye_x lefteye_y … rightmouth_y`` /
  ``image_id x_1 y_1 width height``), then ``<id> <numbers>`` rows. CelebA's
  numbers are integer 0-based pixel indices and are used as they are; the box
  ``x_1 y_1 width height`` becomes ``(x_1, y_1, x_1 + width, y_1 + height)``.
  Image paths are ``img_celeba/<id>`` (the in-the-wild images, the frame of both
  lists). ``aligned=True`` reads ``list_landmarks_align_celeba.txt`` instead, whose
  points are in the 178×218 aligned crops (``img_align_celeba/<id>``); the box file
  does not apply to those crops, so ``box`` is None there.

Malformed lines (wrong field count, a field that is not a finite number, a box of
non-positive size, a CelebA id with no box) are problems of the line
``"<file>:<line>: <reason>"`` (line numbers 1-based): with ``strict=True`` the first
one raises :class:`~mtcnn_jax.errors.FormatError` (a one-line
:class:`~mtcnn_jax.errors.UserError`); with ``strict=False`` each is skipped and
reported — appended to ``skipped`` when a list is given, else as a
:class:`~mtcnn_jax.errors.FormatWarning`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import numpy as np

from mtcnn_jax.errors import FormatError, FormatWarning, UserError

FORMATS = ("cuhk", "mtfl", "celeba")
#: CelebA's landmark header, in file order (x, y per point).
CELEBA_LANDMARK_HEADER = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                          "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
CELEBA_BBOX_HEADER = ("image_id", "x_1", "y_1", "width", "height")


class LandmarkFace(NamedTuple):
    """One annotated face of a landmark list.

    path: image path as written in the list, ``\\`` turned into ``/`` (relative to the data folder).
    box: float64[4] half-open ``x1, y1, x2, y2`` 0-based pixels, or None (no box in the format).
    points: float64[5, 2] 0-based ``(x, y)`` pixels: left eye, right eye, nose, left / right mouth corner.
    where: ``"<list file>:<line>"`` the face was read from ("" when not from a file).
    attributes: int32[4] MTFL's ``gender smile glasses pose`` codes as written (gender 1
      male / 2 female; smile and glasses 1 yes / 2 no; pose 1 left profile … 3 frontal …
      5 right profile), or None where the line has none (other formats, 11-field MTFL lines).
    """

    path: str
    box: Optional[np.ndarray]
    points: np.ndarray
    where: str = ""
    attributes: Optional[np.ndarray] = None


class _Policy:
    """Raise, collect or warn about a malformed line (the module docstring's policy)."""

    def __init__(self, filename, strict: bool, skipped: Optional[list]):
        self.filename, self.strict, self.skipped = os.fspath(filename), strict, skipped

    def __call__(self, lineno: int, reason: str) -> None:
        err = FormatError(self.filename, lineno, reason)
        if self.strict:
            raise err
        if self.skipped is not None:
            self.skipped.append(str(err))
        else:
            warnings.warn(str(err), FormatWarning, stacklevel=4)


def _numbers(fields: list[str]) -> list[float] | str:
    """Finite floats of ``fields``, or the reason they are not."""
    values = []
    for v in fields:
        try:
            values.append(float(v))
        except ValueError:
            return f"not a number: {v!r}"
    if not all(math.isfinite(v) for v in values):
        return "a number is not finite"
    return values


def _text_lines(filename) -> list[str]:
    """The lines of a list file, undecodable bytes replaced; UserError when it cannot be read."""
    try:
        return Path(filename).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise UserError(f"{filename}: cannot read landmark list ({err.strerror or err})") from None


def _lines(filename) -> list[tuple[int, list[str]]]:
    """``(1-based line number, fields)`` of the non-blank lines of a file."""
    return _split(_text_lines(filename))


def _path(text: str) -> str:
    """An image path as listed, with ``/`` separators (the original CUHK and MTFL lists use ``\\``)."""
    return text.replace("\\", "/")


def _split(lines: Iterable[str]) -> list[tuple[int, list[str]]]:
    """``(1-based line number, fields)`` of the non-blank ``lines``."""
    return [(i + 1, line.split()) for i, line in enumerate(lines) if line.strip()]


def _row_values(problem, lineno: int, f: list[str], counts: tuple, expected: str) -> Optional[list]:
    """The numbers after a row's first field, or None (reported) when the count or a number is wrong."""
    if len(f) not in counts:
        problem(lineno, f"expected {expected}, got {len(f)}")
        return None
    v = _numbers(f[1:])
    if isinstance(v, str):
        problem(lineno, v)
        return None
    return v


def _box_problem(box) -> Optional[str]:
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0:
        return f"face box has non-positive size ({w:g} × {h:g})"
    return None


def read_cuhk_list(filename, strict: bool = True, skipped: Optional[list] = None) -> list[LandmarkFace]:
    """CUHK lines ``path left right top bottom x1 y1 … x5 y5`` → records (see the module docstring)."""
    problem = _Policy(filename, strict, skipped)
    out = []
    for lineno, f in _lines(filename):
        v = _row_values(problem, lineno, f, (15,), "15 fields 'path left right top bottom x1 y1 ... x5 y5'")
        if v is None:
            continue
        left, right, top, bottom = v[:4]
        box = np.array([left, top, right, bottom], np.float64)
        if (why := _box_problem(box)) is not None:
            problem(lineno, why)
            continue
        pts = np.array(v[4:], np.float64).reshape(5, 2)
        out.append(LandmarkFace(_path(f[0]), box, pts, f"{os.fspath(filename)}:{lineno}"))
    return out


def parse_mtfl(lines: Iterable[str], filename="<landmarks>", strict: bool = True, skipped: Optional[list] = None,
               one_based: bool = True) -> list[LandmarkFace]:
    """MTFL lines ``path x1..x5 y1..y5 [gender smile glasses pose]`` → records; no box.

    ``one_based``: the coordinates count from 1, as MTFL's do, and 1 is subtracted;
    False keeps them as read. Attributes must be whole numbers. ``filename`` is named
    in the problems (see the module docstring).
    """
    problem = _Policy(filename, strict, skipped)
    shift = 1.0 if one_based else 0.0
    out = []
    for lineno, f in _split(lines):
        v = _row_values(problem, lineno, f, (11, 15), "15 fields 'path x1..x5 y1..y5 gender smile glasses pose' (or 11)")
        if v is None:
            continue
        attributes = None
        if len(v) == 14:
            if not all(a.is_integer() for a in v[10:]):
                problem(lineno, f"attributes must be whole numbers, got {' '.join(f[11:])!r}")
                continue
            attributes = np.array(v[10:], np.int32)
        xy = np.array(v[:10], np.float64) - shift
        out.append(LandmarkFace(_path(f[0]), None, np.stack([xy[:5], xy[5:]], axis=1), f"{os.fspath(filename)}:{lineno}",
                                attributes))
    return out


def read_mtfl(filename, strict: bool = True, skipped: Optional[list] = None,
              one_based: bool = True) -> list[LandmarkFace]:
    """An MTFL list file (e.g. ``training.txt``) → records; see :func:`parse_mtfl`."""
    return parse_mtfl(_text_lines(filename), filename, strict, skipped, one_based)


def _celeba_table(filename, header: tuple, n_values: int, problem: _Policy) -> dict:
    """``{image id: (line number, values)}`` of a CelebA list (count line, header line, rows)."""
    lines = _lines(filename)
    if len(lines) < 2:
        problem(len(lines) or 1, "expected a count line and a header line")
        return {}
    (count_no, count), (header_no, names) = lines[0], lines[1]
    if len(count) != 1 or not count[0].isdigit():
        problem(count_no, f"expected the number of images, got {' '.join(count)!r}")
    # The landmark header names the values only, the box header starts with image_id: accept either.
    if [n for n in names if n != "image_id"] != [n for n in header if n != "image_id"]:
        problem(header_no, f"expected the header {' '.join(header)!r}, got {' '.join(names)!r}")
    rows = {}
    for lineno, f in lines[2:]:
        v = _row_values(problem, lineno, f, (1 + n_values,), f"{1 + n_values} fields (image id and {n_values} numbers)")
        if v is None:
            continue
        rows[f[0]] = (lineno, v)
    return rows


def read_celeba(folder, strict: bool = True, skipped: Optional[list] = None,
                aligned: bool = False) -> list[LandmarkFace]:
    """CelebA's landmark list joined with its box list by image id (see the module docstring).

    Records come in the landmark file's order; ``where`` names the landmark line.
    """
    folder = Path(folder)
    name = "list_landmarks_align_celeba.txt" if aligned else "list_landmarks_celeba.txt"
    lm_file = folder / name
    problem = _Policy(lm_file, strict, skipped)
    landmarks = _celeba_table(lm_file, CELEBA_LANDMARK_HEADER, 10, problem)
    boxes = {}
    if not aligned:
        box_file = folder / "list_bbox_celeba.txt"
        box_problem = _Policy(box_file, strict, skipped)
        for image_id, (lineno, v) in _celeba_table(box_file, CELEBA_BBOX_HEADER, 4, box_problem).items():
            x, y, w, h = v
            box = np.array([x, y, x + w, y + h], np.float64)
            if (why := _box_problem(box)) is not None:
                box_problem(lineno, why)
                continue
            boxes[image_id] = box
    images = "img_align_celeba" if aligned else "img_celeba"
    out = []
    for image_id, (lineno, v) in landmarks.items():
        box = None
        if not aligned:
            box = boxes.get(image_id)
            if box is None:
                problem(lineno, f"no usable box for {image_id} in list_bbox_celeba.txt")
                continue
        pts = np.array(v, np.float64).reshape(5, 2)
        out.append(LandmarkFace(f"{images}/{image_id}", box, pts, f"{os.fspath(lm_file)}:{lineno}"))
    return out


def read_landmark_list(path, format: str = "cuhk", strict: bool = True,  # noqa: A002 (the config's name)
                       skipped: Optional[list] = None) -> list[LandmarkFace]:
    """Records of a landmark list in ``format`` ("cuhk", "mtfl": a file; "celeba": the folder of both lists)."""
    readers = {"cuhk": read_cuhk_list, "mtfl": read_mtfl, "celeba": read_celeba}
    if format not in readers:
        raise UserError(f"unknown landmark list format {format!r} (one of {', '.join(FORMATS)})")
    path = Path(path)
    if format == "celeba" and not path.is_dir():
        raise UserError(f"{path}: the celeba format takes the folder holding list_landmarks_celeba.txt and "
                        "list_bbox_celeba.txt")
    if format != "celeba" and not path.is_file():
        raise UserError(f"landmark list not found: {path}")
    return readers[format](path, strict=strict, skipped=skipped)
