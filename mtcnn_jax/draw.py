"""Drawing detections on an image (for looking at results, not for measuring them)."""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

#: RGB colours: the box and its score, then one per landmark
#: (left eye, right eye, nose, left mouth corner, right mouth corner).
BOX_COLOUR = (0, 255, 0)
LANDMARK_COLOURS = ((255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))
_FAR = float(1 << 20)


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
      scores: float[N] or None; written above each box with 2 decimals.
      landmarks: float[N, 5, 2] (x, y) in ``image`` pixels, or None.
    Returns:
      uint8[H, W, 3] RGB. Line width and text size grow with the image size.
      Faces with non-finite coordinates are skipped.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(n)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(n, 5, 2)
    out = np.ascontiguousarray(image).copy()
    # OpenCV takes int32 coordinates: keep wild values (still drawn clipped) in range.
    boxes = np.clip(boxes, -_FAR, _FAR)
    if landmarks is not None:
        landmarks = np.clip(landmarks, -_FAR, _FAR)
    height, width = out.shape[:2]
    thick = max(1, round(min(height, width) / 300))
    font_scale = max(0.4, min(height, width) / 800)
    radius = max(1, thick + 1)
    for i in range(n):
        if not np.isfinite(boxes[i]).all():
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, thick, cv2.LINE_8)
        if scores is not None and np.isfinite(scores[i]):
            text = f"{scores[i]:.2f}"
            (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
            y_text = y1 - 3 if y1 - 3 - text_h >= 0 else y1 + text_h + 3
            cv2.putText(out, text, (x1, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        BOX_COLOUR, thick, cv2.LINE_AA)
        if landmarks is not None and np.isfinite(landmarks[i]).all():
            for (x, y), colour in zip(landmarks[i], LANDMARK_COLOURS):
                cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    return out
