"""FDDB (Jain & Learned-Miller, 2010): ellipse annotations, the detection-list format, and
the discrete and continuous ROC of its ``evaluate`` program.

Formats (one record per image, repeated)::

    FDDB-fold-XX-ellipseList.txt             detections (FDDB's rectangle format)
    2002/08/11/big/img_591                   2002/08/11/big/img_591
    1                                        2
    123.58 85.55 1.265839 269.69 161.78 1    105.2 72.0 160.4 190.1 0.998
                                             10.0 12.0 30.0 30.0 0.71

An ellipse line is ``major_radius minor_radius angle center_x center_y 1``: semi-axes in
pixels, the angle in radians of the major axis from the image x axis, turning towards +y
(image rows grow downwards, so a positive angle turns clockwise on screen, as OpenCV's
``ellipse``). A detection line is ``left top width height score``. Paths have no extension
(the image is ``<path>.jpg``).

Scoring, as FDDB's ``evaluate``:

* Regions are sets of pixels: pixel ``(col, row)`` (the unit square ``[col, col + 1) x
  [row, row + 1)``) belongs to a region when its centre ``(col + 0.5, row + 0.5)`` lies
  inside it (on the boundary counts as inside). The overlap of a detection and a face is
  ``|D & F| / |D | F|`` over those pixels. When the image size is known, pixels outside the
  image are left out, as FDDB draws both regions into an image-sized mask.
* At a score threshold, each image's detections with ``score >= threshold`` are matched
  one-to-one to its faces by maximum-weight bipartite matching (Hungarian algorithm) on
  the overlaps, with overlaps ``<= 0.5`` set to 0. A matched pair with overlap ``> 0.5`` is
  a true positive; every other detection above the threshold is a false positive.
* Discrete score: each true positive counts 1. Continuous score: it counts its overlap.
* The ROC gives, for every distinct detection score as threshold (descending), the number
  of false positives and the true positive rate (true positives / annotated faces), summed
  over all images. The matching is redone at every threshold, as ``evaluate`` does.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from mtcnn_jax.errors import FormatError
from mtcnn_jax.files import read_text

#: Overlap a match must exceed.
MATCH_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class FddbImage:
    """The faces of one image.

    Attributes:
      path: image path as listed (no extension).
      ellipses: float64[N, 5] ``major_radius, minor_radius, angle, center_x, center_y``
        (pixels, radians; see the module docstring).
    """

    path: str
    ellipses: np.ndarray

    def __len__(self) -> int:
        return int(self.ellipses.shape[0])


class FddbDetections(NamedTuple):
    """Detections of one image: ``boxes`` float64[N, 4] ``left, top, width, height`` in
    pixels and ``scores`` float64[N]."""

    boxes: np.ndarray
    scores: np.ndarray


# --------------------------------------------------------------------------- reading


def _records(lines: Sequence[str], filename: str, n_fields: Tuple[int, ...], what: str):
    """Yield ``(path, float64[N, k], first line number)`` records of an FDDB list."""
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines)]
    k, n = 0, len(numbered)
    while k < n:
        lineno, path = numbered[k]
        k += 1
        if not path:
            continue
        if k >= n:
            raise FormatError(filename, lineno, f"file ends after the image path {path!r}")
        count_no, count = numbered[k]
        k += 1
        try:
            m = int(count)
            if m < 0:
                raise ValueError
        except ValueError:
            raise FormatError(filename, count_no, f"expected the number of {what} of {path!r}, "
                              f"got {count!r}") from None
        rows = []
        for _ in range(m):
            if k >= n:
                raise FormatError(filename, count_no, f"{path!r} announces {m} {what} but the "
                                  f"file ends after {len(rows)}")
            row_no, text = numbered[k]
            k += 1
            fields = text.split()
            if len(fields) not in n_fields:
                raise FormatError(filename, row_no, f"expected {' or '.join(map(str, n_fields))} "
                                  f"numbers, got {len(fields)} fields")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise FormatError(filename, row_no, f"not a number in {text!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise FormatError(filename, row_no, "a value is not finite")
            rows.append(values)
        yield path, np.asarray(rows, np.float64).reshape(m, n_fields[0] if m == 0 else -1), lineno


def parse_ellipses(lines: Iterable[str], filename: str = "<ellipses>") -> list[FddbImage]:
    """Parse an FDDB ellipse fold (``FDDB-fold-XX-ellipseList.txt``); see module docstring.

    Raises:
      FormatError: on a malformed line, or a non-positive radius.
    """
    out = []
    for path, rows, lineno in _records(list(lines), filename, (6,), "faces"):
        if rows.size and np.any(rows[:, :2] <= 0):
            raise FormatError(filename, lineno, f"{path!r}: an ellipse radius is not positive")
        out.append(FddbImage(path, rows[:, :5].reshape(-1, 5)))
    return out


def read_ellipses(filenames: str | os.PathLike | Sequence[str | os.PathLike]) -> list[FddbImage]:
    """Read one or several ellipse folds (concatenated in the order given)."""
    if isinstance(filenames, (str, os.PathLike)):
        filenames = [filenames]
    out = []
    for name in filenames:
        out.extend(parse_ellipses(read_text(name).splitlines(), os.fspath(name)))
    return out


def parse_detections(lines: Iterable[str], filename: str = "<detections>") -> dict[str, FddbDetections]:
    """Parse FDDB's rectangle detection format: ``{path: FddbDetections}``.

    Raises:
      FormatError: on a malformed line, a negative width or height, or a path listed twice.
    """
    out: dict[str, FddbDetections] = {}
    for path, rows, lineno in _records(list(lines), filename, (5,), "detections"):
        if path in out:
            raise FormatError(filename, lineno, f"{path!r} is listed twice")
        if rows.size and np.any(rows[:, 2:4] < 0):
            raise FormatError(filename, lineno, f"{path!r}: negative width or height")
        out[path] = FddbDetections(rows[:, :4].reshape(-1, 4), rows[:, 4].reshape(-1))
    return out


def read_detections(filename: str | os.PathLike) -> dict[str, FddbDetections]:
    """Read a detection list file; see :func:`parse_detections`."""
    return parse_detections(read_text(filename).splitlines(), os.fspath(filename))


def format_detections(detections: Mapping[str, FddbDetections]) -> str:
    """The FDDB rectangle-format text of ``{path: FddbDetections}`` (inverse of
    :func:`parse_detections`, 2 decimals for coordinates, 6 for scores)."""
    lines = []
    for path, det in detections.items():
        lines.append(path)
        lines.append(str(len(det.scores)))
        for (x, y, w, h), s in zip(np.asarray(det.boxes).reshape(-1, 4), np.asarray(det.scores).reshape(-1)):
            lines.append(f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def from_corners(boxes: np.ndarray, scores: np.ndarray) -> FddbDetections:
    """Detections from ``x1, y1, x2, y2`` boxes (float[N, 4], as :class:`mtcnn_jax.Faces`)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return FddbDetections(np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1),
                          np.asarray(scores, np.float64).reshape(-1))


# --------------------------------------------------------------------------- regions


def ellipse_bounds(ellipse: np.ndarray) -> np.ndarray:
    """float64[4] ``x1, y1, x2, y2``: the tight axis-aligned box around an ellipse
    ``(major_radius, minor_radius, angle, center_x, center_y)``."""
    a, b, t, cx, cy = (float(v) for v in ellipse)
    hx = math.hypot(a * math.cos(t), b * math.sin(t))
    hy = math.hypot(a * math.sin(t), b * math.cos(t))
    return np.array([cx - hx, cy - hy, cx + hx, cy + hy])


def ellipse_mask(ellipse: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """bool[height, width]: pixels ``(x0 + col, y0 + row)`` whose centre lies in the ellipse."""
    a, b, t, cx, cy = (float(v) for v in ellipse)
    xs = x0 + np.arange(width) + 0.5 - cx
    ys = y0 + np.arange(height) + 0.5 - cy
    dx, dy = xs[None, :], ys[:, None]
    u = dx * math.cos(t) + dy * math.sin(t)  # along the major axis
    v = -dx * math.sin(t) + dy * math.cos(t)  # along the minor axis
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def box_mask(box: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """bool[height, width]: pixels ``(x0 + col, y0 + row)`` whose centre lies in the box
    ``left, top, width, height``."""
    left, top, w, h = (float(v) for v in box)
    xs = x0 + np.arange(width) + 0.5
    ys = y0 + np.arange(height) + 0.5
    inside_x = (xs >= left) & (xs <= left + w)
    inside_y = (ys >= top) & (ys <= top + h)
    return inside_y[:, None] & inside_x[None, :]


def overlaps(
    boxes: np.ndarray, ellipses: np.ndarray, image_size: Optional[Tuple[int, int]] = None
) -> np.ndarray:
    """float64[D, F]: overlap (pixel IoU) of each detection box with each face ellipse.

    Args:
      boxes: float[D, 4] ``left, top, width, height``.
      ellipses: float[F, 5] ``major_radius, minor_radius, angle, center_x, center_y``.
      image_size: ``(height, width)`` to leave out pixels outside the image, or None.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ellipses = np.asarray(ellipses, np.float64).reshape(-1, 5)
    out = np.zeros((len(boxes), len(ellipses)))
    for j, e in enumerate(ellipses):
        ex1, ey1, ex2, ey2 = ellipse_bounds(e)
        for i, bx in enumerate(boxes):
            bx1, by1, bx2, by2 = bx[0], bx[1], bx[0] + bx[2], bx[1] + bx[3]
            if bx2 < ex1 or ex2 < bx1 or by2 < ey1 or ey2 < by1:
                continue  # disjoint bounding boxes: overlap 0
            x0 = math.floor(min(ex1, bx1)) - 1
            y0 = math.floor(min(ey1, by1)) - 1
            x1 = math.ceil(max(ex2, bx2)) + 1
            y1 = math.ceil(max(ey2, by2)) + 1
            if image_size is not None:
                x0, y0 = max(x0, 0), max(y0, 0)
                x1, y1 = min(x1, int(image_size[1])), min(y1, int(image_size[0]))
            if x1 <= x0 or y1 <= y0:
                continue
            em = ellipse_mask(e, x0, y0, x1 - x0, y1 - y0)
            bm = box_mask(bx, x0, y0, x1 - x0, y1 - y0)
            union = np.count_nonzero(em | bm)
            if union:
                out[i, j] = np.count_nonzero(em & bm) / union
    return out


# --------------------------------------------------------------------------- matching and ROC


def match(overlap: np.ndarray) -> np.ndarray:
    """One-to-one matching of detections to faces maximising the total overlap.

    Args:
      overlap: float[D, F] overlaps.

    Returns:
      float64[K] the overlaps of the matched pairs that exceed :data:`MATCH_THRESHOLD`
      (the true positives), in no particular order.
    """
    w = np.where(np.asarray(overlap, np.float64) > MATCH_THRESHOLD, overlap, 0.0)
    if w.size == 0 or not np.any(w):
        return np.zeros(0)
    rows, cols = linear_sum_assignment(w, maximize=True)
    v = w[rows, cols]
    return v[v > MATCH_THRESHOLD]


class Roc(NamedTuple):
    """FDDB ROC points, one per distinct detection score (descending).

    thresholds: float64[T]; false_positives: int64[T];
    tp_discrete, tp_continuous: float64[T] true positives (counted 1 / by overlap);
    n_faces: annotated faces. Rates are ``tp_* / n_faces``.
    """

    thresholds: np.ndarray
    false_positives: np.ndarray
    tp_discrete: np.ndarray
    tp_continuous: np.ndarray
    n_faces: int

    @property
    def tpr_discrete(self) -> np.ndarray:
        return self.tp_discrete / max(self.n_faces, 1)

    @property
    def tpr_continuous(self) -> np.ndarray:
        return self.tp_continuous / max(self.n_faces, 1)


def image_steps(
    det: FddbDetections, ellipses: np.ndarray, image_size: Optional[Tuple[int, int]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """One image's results at each of its distinct scores.

    Returns:
      ``(scores, table)``: float64[S] its distinct scores, descending, and float64[S, 3]
      ``(false positives, discrete TP, continuous TP)`` with the detections scoring at
      least ``scores[s]``, matching redone for each.
    """
    scores = np.asarray(det.scores, np.float64).reshape(-1)
    if scores.size == 0:
        return np.zeros(0), np.zeros((0, 3))
    ov = overlaps(det.boxes, ellipses, image_size)
    order = np.argsort(-scores, kind="stable")
    ov, sorted_scores = ov[order], scores[order]
    distinct = np.unique(sorted_scores)[::-1]
    table = np.zeros((distinct.size, 3))
    for s, t in enumerate(distinct):
        k = int(np.searchsorted(-sorted_scores, -t, side="right"))
        tp = match(ov[:k])
        table[s] = (k - tp.size, tp.size, tp.sum())
    return distinct, table


def roc(
    detections: Mapping[str, FddbDetections],
    annotations: Sequence[FddbImage],
    image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None,
) -> Roc:
    """FDDB discrete and continuous ROC (module docstring).

    Args:
      detections: ``{path: FddbDetections}``; paths as in the annotations (detections of
        images not annotated are ignored; annotated images without an entry have none).
      annotations: the faces (:func:`read_ellipses`), the images evaluated.
      image_sizes: optional ``{path: (height, width)}`` to clip regions to the image.

    Returns:
      a :class:`Roc` over every distinct score of the evaluated detections.
    """
    n_faces = sum(len(a) for a in annotations)
    all_scores, all_deltas = [], []
    for ann in annotations:
        det = detections.get(ann.path)
        if det is None:
            continue
        size = None if image_sizes is None else image_sizes.get(ann.path)
        scores, table = image_steps(det, ann.ellipses, size)
        if scores.size:
            all_scores.append(scores)
            all_deltas.append(np.diff(table, axis=0, prepend=np.zeros((1, 3))))
    if not all_scores:
        z = np.zeros(0)
        return Roc(z, z.astype(np.int64), z, z, n_faces)
    scores = np.concatenate(all_scores)
    deltas = np.concatenate(all_deltas)
    thresholds = np.unique(scores)[::-1]
    # sum the deltas of each image step whose score is >= each threshold
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(deltas[order], axis=0)
    upto = np.searchsorted(-scores[order], -thresholds, side="right") - 1
    at = cum[upto]
    return Roc(thresholds, np.rint(at[:, 0]).astype(np.int64), at[:, 1], at[:, 2], n_faces)


def tpr_at(curve: Roc, max_false_positives: float, continuous: bool = False) -> float:
    """True positive rate at the lowest threshold with at most ``max_false_positives`` false
    positives (e.g. the often-quoted TPR at 1,000 false positives); 0 if there is none."""
    ok = curve.false_positives <= max_false_positives
    if not np.any(ok):
        return 0.0
    rates = curve.tpr_continuous if continuous else curve.tpr_discrete
    return float(np.max(rates[ok]))
