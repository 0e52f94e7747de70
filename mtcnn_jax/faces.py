""":class:`Faces`: the detections of one image, as the detector returns them and evaluation reads them.

Kept apart from :mod:`mtcnn_jax.detector` so that code which only reads or
scores detections (the evaluators, a predictions file) needs neither JAX nor Flax.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np


class Faces(NamedTuple):
    """Detections in one image, sorted by descending score.

    boxes: float32[N, 4], ``x1, y1, x2, y2`` in input-image pixels, 0-based and
    half-open (``x1, y1`` is the first pixel inside the face box, ``x2, y2`` one past
    the last; width = ``x2 - x1``; the WIDER FACE ``x + w`` convention,
    :attr:`mtcnn_jax.boxes.BoxMode.HALF_OPEN`).
    scores: float[N], the face probability of the last stage (O-Net). float32 from
    the detector; float64 when read back from a file (MTCNN scores crowd just
    below 1.0, and the official WIDER FACE sampling compares them with ``1 - k/1000``).
    landmarks: float32[N, 5, 2], ``(x, y)`` in the same pixel frame, in the order
    left eye, right eye, nose, left mouth corner, right mouth corner ("left" = the
    image's left); None for detections read from a detector that gives no
    landmarks (e.g. an OpenCV Haar cascade's predictions file).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: Optional[np.ndarray]


def no_faces() -> Faces:
    """An image's :class:`Faces` when nothing was found: float32[0, 4], [0], [0, 5, 2]."""
    return Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
