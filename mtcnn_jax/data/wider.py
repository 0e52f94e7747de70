"""Reader for the WIDER FACE ground-truth text format (``wider_face_*_bbx_gt.txt``).

The format, per image::

    <path relative to images/>
    <N>
    x1 y1 w h blur expression illumination invalid occlusion pose     (N lines)

An image with N = 0 is followed by one dummy line of ten zeros. Images with no face are
also stored (in the official val file) as N = 1 with one all-zero box; such boxes are
dropped here, so those images come back with no faces.

Attribute legend (from the dataset's readme): blur clear=0/normal=1/heavy=2;
expression typical=0/exaggerate=1; illumination normal=0/extreme=1;
occlusion no=0/partial=1/heavy=2; pose typical=0/atypical=1; invalid false=0/true=1.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from mtcnn_jax.errors import FormatError, FormatWarning, UserError
from mtcnn_jax.files import read_text

#: Attribute columns after the four box numbers, in file order.
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_N_FIELDS = 4 + len(ATTRIBUTES)


@dataclasses.dataclass(frozen=True, eq=False)
class WiderRecord:
    """Ground truth of one image.

    Attributes:
      path: image path relative to the ``images/`` folder, with ``/`` separators.
      boxes: float32[N, 4], ``x1, y1, x2, y2`` in image pixels with ``x2 = x1 + w`` and
        ``y2 = y1 + h`` (the official evaluation's convention; its IoU counts ``+1`` pixel
        on each side, i.e. treats ``x2``/``y2`` as inclusive).
      invalid: bool[N], faces the dataset marks invalid (ignored by the evaluation).
      blur, expression, illumination, occlusion, pose: int32[N] attributes (legend above).
    """

    path: str
    boxes: np.ndarray
    invalid: np.ndarray
    blur: np.ndarray
    expression: np.ndarray
    illumination: np.ndarray
    occlusion: np.ndarray
    pose: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def widths(self) -> np.ndarray:
        """float32[N]: ``w`` as annotated (``x2 - x1``)."""
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        """float32[N]: ``h`` as annotated (``y2 - y1``)."""
        return self.boxes[:, 3] - self.boxes[:, 1]


def _parse_face(fields: list[str]) -> list[float] | str:
    """The ten numbers of a face line, or the reason it is malformed."""
    if len(fields) != _N_FIELDS:
        layout = "x1 y1 w h " + " ".join(ATTRIBUTES)
        return f"expected {_N_FIELDS} numbers '{layout}', got {len(fields)} fields"
    try:
        box = [float(v) for v in fields[:4]]
        attrs = [int(v) for v in fields[4:]]
    except ValueError:
        return f"not a number in face line {' '.join(fields)!r}"
    if not all(np.isfinite(box)):
        return "box is not finite"
    if box[2] < 0 or box[3] < 0:
        return f"negative width or height ({box[2]:g}, {box[3]:g})"
    return box + attrs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_path(text: str) -> bool:
    """One field that is not a number: the start of the next record."""
    fields = text.split()
    return len(fields) == 1 and not _is_number(fields[0])


def _record(path: str, faces: list[list[float]]) -> WiderRecord:
    table = np.asarray(faces, dtype=np.float64).reshape(-1, _N_FIELDS)
    table = table[np.any(table[:, :4] != 0, axis=1)]  # drop the all-zero "no face" box
    x, y, w, h = table[:, 0], table[:, 1], table[:, 2], table[:, 3]
    boxes = np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)
    attrs = {name: table[:, 4 + i].astype(np.int32) for i, name in enumerate(ATTRIBUTES)}
    invalid = attrs.pop("invalid") != 0
    return WiderRecord(path=path, boxes=boxes, invalid=invalid, **attrs)


def parse_wider_gt(
    lines: Iterable[str], filename: str = "<annotations>", strict: bool = True
) -> list[WiderRecord]:
    """Parse the lines of a ``wider_face_*_bbx_gt.txt`` file (see module docstring).

    Args:
      lines: the file's lines (trailing whitespace and newlines are ignored).
      filename: named in error messages.
      strict: if True, the first malformed line raises :class:`~mtcnn_jax.errors.FormatError`;
        if False, each one is reported as a :class:`~mtcnn_jax.errors.FormatWarning` and
        skipped (a bad face line drops that face; a bad count line drops that image's
        record, and parsing resumes at the next line that is not a face line).

    Returns:
      One :class:`WiderRecord` per image, in file order.

    Raises:
      FormatError: ``"<filename>:<line>: <reason>"``, the line number 1-based.
    """
    records: list[WiderRecord] = []

    def problem(lineno: int, reason: str) -> None:
        err = FormatError(filename, lineno, reason)
        if strict:
            raise err
        warnings.warn(str(err), FormatWarning, stacklevel=3)

    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines)]
    k, n_lines = 0, len(numbered)
    while k < n_lines:
        lineno, path = numbered[k]
        k += 1
        if not path:
            continue  # blank lines between records (e.g. at the end of the file)
        if all(_is_number(f) for f in path.split()):
            problem(lineno, f"expected an image path, got {path!r}")
            continue
        if k >= n_lines:
            problem(lineno, f"file ends after the image path {path!r}, before its face count")
            break
        count_no, count = numbered[k]
        k += 1
        try:
            n = int(count)
            if n < 0:
                raise ValueError
        except ValueError:
            problem(count_no, f"expected the face count of {path!r}, got {count!r}")
            while k < n_lines and not _looks_like_path(numbered[k][1]):
                k += 1  # resynchronise at the next path line
            continue
        faces: list[list[float]] = []
        if n == 0:
            # The official format follows N = 0 with one dummy line of zeros; accept files
            # that leave it out (next line is a path, or end of file).
            if k < n_lines and not _looks_like_path(numbered[k][1]):
                dummy_no, dummy = numbered[k]
                if dummy and any(float(v) != 0 for v in dummy.split() if _is_number(v)):
                    reason = f"{path!r} has 0 faces: expected a dummy line of zeros, got {dummy!r}"
                    problem(dummy_no, reason)
                k += 1
        for _ in range(n):
            if k >= n_lines:
                got = len(faces)
                problem(count_no, f"{path!r} announces {n} faces but the file ends after {got}")
                break
            face_no, text = numbered[k]
            parsed = _parse_face(text.split())
            if isinstance(parsed, str):
                # A line that is not numbers at all may be the next record's path: the count
                # was too large. Report it and do not consume it.
                if _looks_like_path(text):
                    problem(face_no, f"{path!r} announces {n} faces but only {len(faces)} follow")
                    break
                problem(face_no, parsed)
                k += 1
                continue
            faces.append(parsed)
            k += 1
        records.append(_record(path.replace("\\", "/"), faces))
    return records


def read_wider_gt(filename: str | os.PathLike, strict: bool = True) -> list[WiderRecord]:
    """Read a ``wider_face_*_bbx_gt.txt`` file; see :func:`parse_wider_gt`.

    Returns:
      One :class:`WiderRecord` per image, in file order. Boxes are ``x1, y1, x2, y2`` with
      ``x2 = x1 + w``, ``y2 = y1 + h`` (float32, image pixels); all-zero boxes are dropped.
    """
    return parse_wider_gt(read_text(filename).splitlines(), filename=os.fspath(filename), strict=strict)


def read_wider_gt_skipping(filename: str | os.PathLike, skipped: list) -> tuple[list[WiderRecord], dict[str, int]]:
    """:func:`read_wider_gt` with ``strict=False``, each malformed line's ``"file:line: reason"`` added to ``skipped``.

    Also returns ``{image path as in the file: its 1-based line number}``, so a
    caller can name the gt line of an image it cannot read. Other warnings pass on.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FormatWarning)
        records = read_wider_gt(filename, strict=False)
    for w in caught:
        if issubclass(w.category, FormatWarning):
            skipped.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    line_of: dict[str, int] = {}
    for i, line in enumerate(Path(filename).read_text(encoding="utf-8", errors="replace").splitlines()):
        line_of.setdefault(line.strip().replace("\\", "/"), i + 1)
    return records, line_of


def count_faces(records: Iterable[WiderRecord], min_size: float = 1) -> int:
    """Number of valid faces (``invalid == 0``) with ``min(w, h) >= min_size`` pixels."""
    total = 0
    for r in records:
        total += int(np.sum(~r.invalid & (np.minimum(r.widths, r.heights) >= min_size)))
    return total


def find_gt(wider_dir: str | os.PathLike) -> Path:
    """The gt file of a WIDER-format image folder ``wider_dir`` (whose ``images/`` holds the pictures).

    Looked for, in order: a ``*_bbx_gt*.txt`` inside ``wider_dir`` (the layout of
    ``../shared/data``); the official release's layout, where ``wider_dir`` is
    ``WIDER_<split>`` and the file is ``../wider_face_split/wider_face_<split>_bbx_gt.txt``
    beside it; a ``wider_face_split/`` folder inside ``wider_dir``. Raises
    :class:`UserError` naming the places tried.
    """
    wider_dir = Path(wider_dir)
    tried = [wider_dir / "*_bbx_gt*.txt"]
    found = sorted(wider_dir.glob("*_bbx_gt*.txt"))
    if found:
        return found[0]
    name = wider_dir.name
    if name.upper().startswith("WIDER_"):
        split = name[len("WIDER_"):].lower()
        official = wider_dir.parent / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        tried.append(official)
        if official.is_file():
            return official
    inside = sorted((wider_dir / "wider_face_split").glob("*_bbx_gt*.txt"))
    tried.append(wider_dir / "wider_face_split" / "*_bbx_gt*.txt")
    if inside:
        return inside[0]
    raise UserError(f"{wider_dir}: no WIDER gt file (looked for {', '.join(str(t) for t in tried)})")
