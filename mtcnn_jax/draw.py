"""Drawing detections on an image (for looking at results, not for measuring them).

Each face gets its box, its five points and, when scores are given, a label with its
score: the text in black or white (whichever contrasts with the box colour) on a filled
rectangle in the box colour, so that it reads on any photo. The text is sized to the face
(the text is about 0.4 of the box wide), within bounds set by the image size; lines and
points are sized to the face too.

Labels never overlap each other. Faces are labelled in descending score order, each at the
first free place of: above its box, below it, inside its top-left corner (where that hides
less than a third of the box); a place that also keeps clear of the other faces' boxes is
preferred. In a dense crowd a label that has no free place is tried smaller, and left out
when it fits nowhere even at the smallest legible size (the box and points are still drawn).
:func:`layout_labels` says where each label went.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import cv2
import numpy as np

#: RGB colours: the box and its score label, then one per landmark
#: (left eye, right eye, nose, left mouth corner, right mouth corner).
BOX_COLOUR = (0, 255, 0)
LANDMARK_COLOURS = ((255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))
_FAR = float(1 << 20)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Smallest text scale used (Hershey simplex: digits about 10 px tall), and the label width
#: aimed at, as a fraction of the box width.
MIN_TEXT_SCALE = 0.4
LABEL_WIDTH = 0.4


class Label(NamedTuple):
    """A score label as drawn: its text, its filled rectangle ``x1, y1, x2, y2`` (pixels,
    half-open: ``x2 - x1`` columns wide) and the OpenCV text scale and thickness."""

    text: str
    rect: tuple
    scale: float
    thickness: int


def text_colour(background: tuple) -> tuple:
    """Black or white, whichever contrasts more with the RGB ``background``."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 128 else (255, 255, 255)


def _line_width(box_width: float, image_shape) -> int:
    """Box line thickness: grows with the face (1 px per 50 px of width), at most 1 px per
    300 px of the image's shorter side (at least 1)."""
    cap = max(1, round(min(image_shape[:2]) / 300))
    return int(max(1, min(cap, round(box_width / 50))))


def _pixel_boxes(boxes: np.ndarray) -> np.ndarray:
    """int64[N, 4] rounded boxes, wild values clipped (OpenCV takes int32); rows with a
    non-finite coordinate are -1 (the callers skip them)."""
    finite = np.isfinite(boxes).all(axis=1)
    out = np.full(boxes.shape, -1, np.int64)
    out[finite] = np.round(np.clip(boxes[finite], -_FAR, _FAR)).astype(np.int64)
    return out


def _overlaps(rect: tuple, others: np.ndarray) -> bool:
    """True when ``rect`` shares pixels with any row of ``others`` (int[K, 4], half-open)."""
    if len(others) == 0:
        return False
    x1, y1, x2, y2 = rect
    return bool(np.any((others[:, 0] < x2) & (x1 < others[:, 2]) & (others[:, 1] < y2) & (y1 < others[:, 3])))


def _candidates(box, line: int, w: int, h: int, width: int, height: int) -> List[tuple]:
    """Label rectangles of size ``w`` x ``h`` for a box, in order of preference: on the box's top
    edge, under its bottom edge, inside its top-left corner. Each is moved sideways into the
    image; those that do not fit in the image are left out."""
    x1, y1, x2, y2 = (int(v) for v in box)
    out = []
    left = x1 - line // 2
    top_edge, bottom_edge = y1 - line // 2, y2 + (line + 1) // 2
    places = [(left, top_edge - h), (left, bottom_edge)]
    if w <= (x2 - x1) - line and 3 * h <= (y2 - y1):
        places.append((x1 + (line + 1) // 2, y1 + (line + 1) // 2))
    for x, y in places:
        x = min(max(x, 0), width - w)
        if x >= 0 and y >= 0 and y + h <= height:
            out.append((x, y, x + w, y + h))
    return out


def layout_labels(boxes: np.ndarray, scores: np.ndarray, image_shape) -> List[Optional[Label]]:
    """Where :func:`annotate` writes each face's score (see the module docstring).

    Args:
      boxes: float[N, 4], x1, y1, x2, y2 in image pixels.
      scores: float[N].
      image_shape: the image's shape, ``(H, W, ...)``.
    Returns:
      one :class:`Label` per face, or None where there is none (a non-finite box or
      score, or no room). The rectangles of the labels lie inside the image and do not
      overlap one another.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(boxes))
    height, width = int(image_shape[0]), int(image_shape[1])
    pixel = _pixel_boxes(boxes)
    finite = np.isfinite(boxes).all(axis=1)
    usable = finite & np.isfinite(scores)
    max_scale = max(0.5, min(height, width) / 600)
    labels: List[Optional[Label]] = [None] * len(boxes)
    taken = np.zeros((0, 4), np.int64)
    for i in sorted(np.flatnonzero(usable), key=lambda k: -scores[k]):
        text = f"{scores[i]:.2f}"
        box_width = max(1, int(pixel[i, 2] - pixel[i, 0]))
        unit = cv2.getTextSize(text, _FONT, 1.0, 1)[0][0]
        scale = float(np.clip(LABEL_WIDTH * box_width / unit, MIN_TEXT_SCALE, max_scale))
        others = pixel[finite & (np.arange(len(boxes)) != i)]
        line = _line_width(box_width, image_shape)
        while labels[i] is None:
            thick = max(1, round(scale * 1.6))
            (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
            pad = max(2, round(th * 0.3))
            places = [r for r in _candidates(pixel[i], line, tw + 2 * pad, th + 2 * pad, width, height)
                      if not _overlaps(r, taken)]
            clear = [r for r in places if not _overlaps(r, others)]
            if clear or places:
                label = Label(text, (clear or places)[0], scale, thick)
                labels[i] = label
                taken = np.vstack([taken, np.array([label.rect], np.int64)])
            elif scale <= MIN_TEXT_SCALE:
                break  # no room even at the smallest size: this face goes without a label
            else:
                scale = max(MIN_TEXT_SCALE, scale * 0.75)
    return labels


def annotate(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: Optional[np.ndarray] = None,
    landmarks: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Return a copy of ``image`` with the boxes, their scores and the five points drawn.

    Args:
      image: uint8[H, W, 3] RGB (not modified).
      boxes: float[N, 4], x1, y1, x2, y2 in ``image`` pixels.
      scores: float[N] or None; each written with 2 decimals on a label by its box
        (:func:`layout_labels`).
      landmarks: float[N, 5, 2] (x, y) in ``image`` pixels, or None.
    Returns:
      uint8[H, W, 3] RGB. Faces with non-finite coordinates are skipped.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if landmarks is not None:
        landmarks = np.clip(np.asarray(landmarks, dtype=np.float64).reshape(n, 5, 2), -_FAR, _FAR)
    out = np.ascontiguousarray(image).copy()
    pixel = _pixel_boxes(boxes)
    for i in range(n):
        if not np.isfinite(boxes[i]).all():
            continue
        x1, y1, x2, y2 = (int(v) for v in pixel[i])
        line = _line_width(max(1, x2 - x1), out.shape)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, line, cv2.LINE_8)
        if landmarks is not None and np.isfinite(landmarks[i]).all():
            for (x, y), colour in zip(landmarks[i], LANDMARK_COLOURS):
                cv2.circle(out, (int(round(x)), int(round(y))), line + 1, colour, -1, cv2.LINE_AA)
    if scores is not None:
        ink = text_colour(BOX_COLOUR)
        for label in layout_labels(boxes, scores, out.shape):
            if label is None:
                continue
            x1, y1, x2, y2 = label.rect
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), BOX_COLOUR, -1, cv2.LINE_8)
            (tw, th), _ = cv2.getTextSize(label.text, _FONT, label.scale, label.thickness)
            origin = (x1 + (x2 - x1 - tw) // 2, y1 + (y2 - y1 + th) // 2)
            cv2.putText(out, label.text, origin, _FONT, label.scale, ink, label.thickness, cv2.LINE_AA)
    return out
