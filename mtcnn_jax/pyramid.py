"""The image pyramid that P-Net scans (the paper, Sec. II-A; the authors' ``detect_face.m``).

A face of ``min_face_size`` pixels must shrink to P-Net's 12-pixel window, so the
first scale is ``m = 12 / min_face_size``; each further level multiplies by
``factor``; levels stop once the shorter image side would fall below 12 pixels.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from mtcnn_jax import boxes

#: P-Net's window, in pixels.
CELL = 12


def scales(height: int, width: int, min_face_size: float = 20.0, factor: float = 0.709) -> List[float]:
    """Scales ``m * factor**k`` with ``m = 12 / min_face_size``, while ``min(h, w) * scale >= 12``.

    E.g. 100×100 with the defaults: 0.6, 0.4254, 0.3016, 0.2138, 0.1516 (60, 42.5,
    30.2, 21.4, 15.2 px on the short side; the next would be 10.7 < 12).
    """
    m = CELL / float(min_face_size)
    side = min(height, width) * m
    out, s = [], m
    while side >= CELL:
        out.append(s)
        s *= factor
        side *= factor
    return out


def level_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """Size ``(ceil(h * s), ceil(w * s))`` of the pyramid level at ``scale``."""
    return int(math.ceil(height * scale)), int(math.ceil(width * scale))


def resize(image: np.ndarray, size_hw: Tuple[int, int], method: str = "antialiased") -> np.ndarray:
    """``image`` uint8[H, W, 3] resized to the level size ``size_hw = (h, w)``; see :func:`mtcnn_jax.boxes.resize`."""
    return boxes.resize(image, size_hw, method)
