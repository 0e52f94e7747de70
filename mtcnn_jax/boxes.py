"""Box arithmetic of the cascade, on the host in NumPy: conventions, IoU, NMS, calibrate, square, crop.

Four box conventions meet in this package; :class:`BoxMode` names them and
:func:`convert` maps between them, so that no caller shifts by ``±1`` by hand.
Rows are ``float[N, 4]``:

* ``BoxMode.AUTHORS`` — the authors' Matlab code: ``x1, y1, x2, y2`` are the first
  and last pixel column / row inside the box, counted from 1 (width
  ``x2 - x1 + 1``). The cascade runs in this convention, so that every truncation
  and ``+1`` lands where theirs does.
* ``BoxMode.INCLUSIVE`` — the same, counted from 0 (what :func:`crop` takes).
* ``BoxMode.HALF_OPEN`` — ``x1, y1`` the first pixel inside, ``x2, y2`` one past
  the last, counted from 0 (width ``x2 - x1``). What the detector returns
  (:class:`mtcnn_jax.faces.Faces`), WIDER FACE's ``x2 = x + w`` and the training
  windows use it.
* ``BoxMode.XYWH`` — ``x, y, w, h`` with a 0-based corner (the WIDER FACE and FDDB
  text files).

IoU takes the convention as ``inclusive``: True counts ``x2 - x1 + 1`` pixels
(the authors' NMS; also the official WIDER FACE evaluation, which applies it to
half-open boxes), False counts ``x2 - x1``.
"""

from __future__ import annotations

import enum
from typing import Sequence

import cv2
import numpy as np


class BoxMode(enum.Enum):
    """The box conventions of the module docstring."""

    AUTHORS = "authors"  # x1, y1, x2, y2; 1-based, inclusive
    INCLUSIVE = "inclusive"  # x1, y1, x2, y2; 0-based, inclusive
    HALF_OPEN = "half_open"  # x1, y1, x2, y2; 0-based, x2 / y2 one past the last pixel
    XYWH = "xywh"  # x, y, w, h; 0-based corner


def _to_half_open(b: np.ndarray, mode: BoxMode) -> np.ndarray:
    if mode is BoxMode.HALF_OPEN:
        return b
    if mode is BoxMode.AUTHORS:
        return b - np.array([1.0, 1.0, 0.0, 0.0])
    if mode is BoxMode.INCLUSIVE:
        return b + np.array([0.0, 0.0, 1.0, 1.0])
    if mode is BoxMode.XYWH:
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    raise ValueError(f"unknown box mode {mode!r}")


def _from_half_open(b: np.ndarray, mode: BoxMode) -> np.ndarray:
    if mode is BoxMode.HALF_OPEN:
        return b
    if mode is BoxMode.AUTHORS:
        return b + np.array([1.0, 1.0, 0.0, 0.0])
    if mode is BoxMode.INCLUSIVE:
        return b - np.array([0.0, 0.0, 1.0, 1.0])
    if mode is BoxMode.XYWH:
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    raise ValueError(f"unknown box mode {mode!r}")


def convert(boxes: np.ndarray, src: BoxMode, dst: BoxMode) -> np.ndarray:
    """``boxes`` float[N, 4] in convention ``src`` → float64[N, 4] in ``dst`` (see :class:`BoxMode`).

    E.g. the authors' ``(1, 1, 10, 10)`` (pixels 1..10) is ``(0, 0, 9, 9)``
    INCLUSIVE, ``(0, 0, 10, 10)`` HALF_OPEN and ``(0, 0, 10, 10)`` XYWH.
    """
    b = np.array(boxes, np.float64).reshape(-1, 4)
    return _from_half_open(_to_half_open(b, BoxMode(src)), BoxMode(dst))


def area(boxes: np.ndarray) -> np.ndarray:
    """Areas of inclusive boxes ``float[N, 4]``: ``(x2 - x1 + 1) * (y2 - y1 + 1)`` → ``float[N]``."""
    boxes = np.asarray(boxes, np.float64)
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def iou_matrix(a: np.ndarray, b: np.ndarray, mode: str = "union", inclusive: bool = True) -> np.ndarray:
    """Overlap of every box of ``a`` float[N, 4] with every box of ``b`` float[M, 4] → float64[N, M].

    ``inclusive=True``: widths ``x2 - x1 + 1`` (the authors' boxes; the official
    WIDER FACE evaluation); ``inclusive=False``: widths ``x2 - x1`` (half-open
    boxes). ``mode="union"``: intersection / union (IoU); ``mode="min"``:
    intersection / the smaller area (the authors' "Min", used after O-Net).
    Boxes that do not touch give 0. E.g. half-open ``(0, 0, 10, 10)`` and
    ``(5, 0, 15, 10)``: 50 / 150 = 1/3; inclusive: 60 / 160 = 0.375.
    """
    extra = 1.0 if inclusive else 0.0
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    iw = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + extra)
    ih = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + extra)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + extra) * (a[..., 3] - a[..., 1] + extra)
    area_b = (b[..., 2] - b[..., 0] + extra) * (b[..., 3] - b[..., 1] + extra)
    if mode == "union":
        denom = area_a + area_b - inter
    elif mode == "min":
        denom = np.minimum(area_a, area_b)
    else:
        raise ValueError(f"unknown overlap mode {mode!r} (expected 'union' or 'min')")
    return np.where(inter > 0, inter / np.maximum(denom, 1e-12), 0.0)


def iou(box: np.ndarray, boxes: np.ndarray, mode: str = "union", inclusive: bool = True) -> np.ndarray:
    """Overlap of one ``box`` float[4] with each of ``boxes`` float[N, 4] → float64[N] (:func:`iou_matrix`)."""
    return iou_matrix(np.asarray(box).reshape(1, 4), boxes, mode, inclusive)[0]


#: Above this many candidate pairs :func:`nms` falls back to the reference loop (memory bound).
_NMS_MAX_PAIRS = 2_000_000


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression of inclusive boxes, as the authors' ``nms.m``.

    Repeatedly keeps the highest-scoring remaining box and drops every other box
    whose overlap with it (:func:`iou` in ``mode``) is **greater** than
    ``threshold``. Among equal scores the box that comes later in the input is
    taken first (the authors' ascending sort, read from the end).

    boxes: ``float[N, 4]``; scores: ``float[N]``. Returns ``int64[K]``, indices into
    the input, in the order they were kept (descending score).

    Computed without the authors' loop over kept boxes × all boxes: only pairs of
    boxes that intersect are compared (found by sweeping along x), with the same
    float64 formula, so the result is the same (see :func:`nms_reference`).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"unknown overlap mode {mode!r} (expected 'union' or 'min')")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    widths, heights = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    if not (threshold >= 0 and np.isfinite(boxes).all() and (widths > 0).all() and (heights > 0).all()):
        # Boxes that do not touch have overlap 0 only for proper boxes and a threshold >= 0.
        return nms_reference(boxes, scores, threshold, mode)
    order = np.argsort(scores, kind="stable")[::-1]  # processing order: best first, later input first on ties
    b = boxes[order]
    x1, y1, x2, y2 = b.T
    areas = area(b)
    # Pairs (p, q), p < q in processing order, whose boxes intersect: sweep over x1.
    by_x = np.argsort(x1, kind="stable")
    xs = x1[by_x]
    reach = x2[by_x] + 1  # inclusive boxes touch while the other's x1 < my x2 + 1; a margin for rounding:
    hi = np.searchsorted(xs, reach + 1e-9 * (np.abs(reach) + 1), side="right")
    counts = np.maximum(hi - np.arange(n) - 1, 0)
    total = int(counts.sum())
    if total > _NMS_MAX_PAIRS:  # bounded memory: many large overlapping boxes
        return nms_reference(boxes, scores, threshold, mode)
    if total == 0:
        return order.astype(np.int64)
    first = np.repeat(np.arange(n), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    second = first + 1 + offsets
    i, j = by_x[first], by_x[second]
    iw = np.maximum(0.0, np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]) + 1)
    ih = np.maximum(0.0, np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]) + 1)
    inter = iw * ih
    if mode == "union":
        overlap = inter / (areas[i] + areas[j] - inter)
    else:
        overlap = inter / np.minimum(areas[i], areas[j])
    hit = overlap > threshold
    p, q = np.minimum(i[hit], j[hit]), np.maximum(i[hit], j[hit])
    # Greedy pass in processing order: a kept box removes its later neighbours.
    srt = np.argsort(p, kind="stable")
    p, q = p[srt], q[srt]
    starts = np.searchsorted(p, np.arange(n + 1))
    rem = np.zeros(n, bool)
    keep = []
    has = (starts[1:] > starts[:-1]).tolist()
    for k in range(n):
        if rem[k]:
            continue
        keep.append(k)
        if has[k]:
            rem[q[starts[k] : starts[k + 1]]] = True
    return order[np.asarray(keep, np.int64)].astype(np.int64)


def nms_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """:func:`nms` as the authors' loop: keep the best, compare it with all the rest, repeat (slow; for tests)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes.T
    areas = area(boxes)
    order = np.argsort(scores, kind="stable")  # ascending; best is last
    keep = []
    while order.size:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        if mode == "union":
            overlap = inter / (areas[i] + areas[rest] - inter)
        elif mode == "min":
            overlap = inter / np.minimum(areas[i], areas[rest])
        else:
            raise ValueError(f"unknown overlap mode {mode!r} (expected 'union' or 'min')")
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def calibrate(boxes: np.ndarray, reg: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Apply the networks' box regression (the paper's "calibration"; ``bbreg.m``).

    boxes: ``float[N, 4]`` inclusive ``x1, y1, x2, y2``; reg: ``float[N, 4]``
    ``(dx1, dy1, dx2, dy2)`` in units of the box size. Returns
    ``x1 + dx1 * w, y1 + dy1 * h, x2 + dx2 * w, y2 + dy2 * h`` with
    ``w = x2 - x1 + 1`` (``inclusive=True``, R-Net and O-Net) or ``w = x2 - x1``
    (``inclusive=False``: the authors' code uses this after P-Net).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    reg = np.asarray(reg, np.float64).reshape(-1, 4)
    extra = 1.0 if inclusive else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes + reg * np.stack([w, h, w, h], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Make boxes square about their centres (the authors' ``rerec.m``).

    boxes: ``float[N, 4]`` ``x1, y1, x2, y2``. With ``w = x2 - x1``, ``h = y2 - y1``
    and ``l = max(w, h)``: ``x1' = x1 + w/2 - l/2``, ``y1' = y1 + h/2 - l/2``,
    ``x2' = x1' + l``, ``y2' = y1' + l`` (the original measures here without ``+1``).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop(image: np.ndarray, box: Sequence[float] | np.ndarray) -> np.ndarray:
    """The pixels of an inclusive, 0-based integer box, zero-padded where it leaves the image.

    image: ``uint8[H, W, C]``; box: ``x1, y1, x2, y2`` integers, 0-based, inclusive
    (the crop has ``y2 - y1 + 1`` rows and ``x2 - x1 + 1`` columns; the authors'
    ``pad.m``). Returns ``uint8[y2 - y1 + 1, x2 - x1 + 1, C]``; rows and columns
    outside the image are 0.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = image.shape[:2]
    out = np.zeros((y2 - y1 + 1, x2 - x1 + 1) + image.shape[2:], image.dtype)
    sx1, sy1 = max(x1, 0), max(y1, 0)
    sx2, sy2 = min(x2, w - 1), min(y2, h - 1)
    if sx1 <= sx2 and sy1 <= sy2:
        out[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[sy1 : sy2 + 1, sx1 : sx2 + 1]
    return out


#: Resize methods this package accepts (see :func:`resize`).
RESIZE_METHODS = ("antialiased", "area", "bilinear")


def resize(image: np.ndarray, size_hw: Sequence[int], method: str = "antialiased") -> np.ndarray:
    """``image`` uint8[H, W, C] resized to ``size_hw = (h, w)``; returns uint8[h, w, C].

    ``method``:
      * "antialiased": averages over each output pixel's footprint when shrinking
        (OpenCV INTER_AREA) and interpolates bilinearly when enlarging, per axis
        pair, like the authors' ``imResample``;
      * "area": OpenCV INTER_AREA in both directions (facenet-pytorch's choice;
        close to nearest-neighbour when enlarging);
      * "bilinear": OpenCV INTER_LINEAR in both directions (no antialiasing).
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if method == "antialiased":
        interp = cv2.INTER_AREA if (h <= image.shape[0] and w <= image.shape[1]) else cv2.INTER_LINEAR
    elif method == "area":
        interp = cv2.INTER_AREA
    elif method == "bilinear":
        interp = cv2.INTER_LINEAR
    else:
        raise ValueError(f"unknown resize method {method!r} (expected one of {RESIZE_METHODS})")
    return cv2.resize(image, (w, h), interpolation=interp).reshape(h, w, -1)


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int, method: str = "antialiased") -> np.ndarray:
    """Zero-padded crops of inclusive 0-based integer boxes, each resized to ``size × size``.

    image: ``uint8[H, W, 3]``; boxes: ``[N, 4]`` (see :func:`crop`). Returns
    ``uint8[N, size, size, 3]``; ``method`` as in :func:`resize`. Boxes inside the
    image are resized straight from a view of it (no copy); only boxes that leave
    the image are first copied onto zeros.
    """
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, image.shape[2]), np.uint8)
    for k, box in enumerate(np.asarray(boxes).reshape(-1, 4).tolist()):
        x1, y1, x2, y2 = (int(v) for v in box)
        if x1 >= 0 and y1 >= 0 and x2 < w and y2 < h:
            src = image[y1 : y2 + 1, x1 : x2 + 1]
        else:
            src = crop(image, (x1, y1, x2, y2))
        out[k] = resize(src, (size, size), method)
    return out


def to_half_open(boxes_1based: np.ndarray) -> np.ndarray:
    """The authors' inclusive 1-based boxes → half-open 0-based: ``convert(b, AUTHORS, HALF_OPEN)``.

    A box covering 1-based pixels ``x1..x2`` covers 0-based pixels ``x1-1 .. x2-1``,
    i.e. ``[x1 - 1, x2)``: subtract 1 from ``x1`` and ``y1``, keep ``x2`` and ``y2``.
    """
    return convert(boxes_1based, BoxMode.AUTHORS, BoxMode.HALF_OPEN)
