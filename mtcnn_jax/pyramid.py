"""The image pyramid that P-Net scans (the paper, Sec. II-A; the authors' ``detect_face.m``).

A face of ``min_face_size`` pixels must shrink to P-Net's 12-pixel window, so the
first scale is ``m = 12 / min_face_size``; each further level multiplies by
``factor``; levels stop once the shorter image side would fall below 12 pixels.

The authors resize every level from the image itself. :func:`sources` gives the
cheaper order the detector uses by default: each level from a level about twice
its size, so that the work of resizing falls from ``levels × image`` pixels to
about three images' worth (see :func:`sources`).
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

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


#: How each level is made: "chained" (from the level about twice its size, see
#: :func:`sources`) or "original" (from the image, as the authors do).
PYRAMID_MODES = ("chained", "original")


def chain_step(factor: float) -> int:
    """Levels between a level and the one it is resized from: ``max(1, round(log(1/2) / log(factor)))``.

    The level that many steps up is about twice as large: 2 for the default 0.709
    (0.709² = 0.503), 3 for 0.79 (0.493), 1 for 0.5, 7 for 0.9 (0.478).
    """
    return max(1, int(round(math.log(0.5) / math.log(float(factor)))))


def sources(scales_: List[float], factor: float, mode: str = "chained") -> List[int]:
    """For each level, the index of the level it is resized from, or -1 for the image itself.

    ``mode="original"``: every level from the image (-1), as the authors do.
    ``mode="chained"``: level ``k`` from level ``k - n`` (``n`` = :func:`chain_step`),
    about twice its size, provided that level is not larger than the image
    (scale ≤ 1: an enlarged level is never a source); otherwise from the image.
    With the default resize (area averaging when shrinking) a chained level is two
    box averages in a row instead of one: a smoother kernel, closer to the
    authors' antialiased bilinear ``imResample`` (``tests/test_pyramid.py``); on the
    WIDER subset the detections keep their AP (``benchmarks/speed_README.md``).

    E.g. scales 0.6, 0.425, 0.302, 0.214, 0.152 (factor 0.709) → -1, -1, 0, 1, 2;
    scales 1.2, 0.851, 0.603, 0.428 (factor 0.709) → -1, -1, -1, 1 (level 0 is enlarged).
    """
    if mode not in PYRAMID_MODES:
        raise ValueError(f"unknown pyramid mode {mode!r} (expected one of {PYRAMID_MODES})")
    if mode == "original":
        return [-1] * len(scales_)
    n = chain_step(factor)
    return [k - n if k >= n and scales_[k - n] <= 1.0 else -1 for k in range(len(scales_))]


def resize(image: np.ndarray, size_hw: Tuple[int, int], method: str = "antialiased") -> np.ndarray:
    """``image`` uint8[H, W, 3] resized to the level size ``size_hw = (h, w)``; see :func:`mtcnn_jax.boxes.resize`."""
    return boxes.resize(image, size_hw, method)


class Levels:
    """Every pyramid level of a group of images, in order, each made when asked for.

    ``sizes[i]`` is level ``i``'s ``(h, w)`` and ``owner[i]`` its ``(image index,
    scale)``; :meth:`make` resizes level ``i`` from its source (:func:`sources`).
    Only the sizes are needed to plan P-Net's tiles (:func:`mtcnn_jax.tiles.pnet_stream`),
    so the levels can be made while P-Net runs on the earlier ones.
    """

    def __init__(self, images: Sequence[np.ndarray], min_face_size: float, factor: float, mode: str = "chained",
                 method: str = "antialiased") -> None:
        self.images, self.method = images, method
        self.sizes: List[Tuple[int, int]] = []
        self.owner: List[Tuple[int, float]] = []
        self._source: List[int] = []  # index of the level each level is resized from, -1 for its image
        for k, image in enumerate(images):
            h, w = image.shape[:2]
            scales_ = scales(h, w, min_face_size, factor)
            first = len(self.sizes)
            self._source += [first + j if j >= 0 else -1 for j in sources(scales_, factor, mode)]
            for s in scales_:
                self.sizes.append(level_size(h, w, s))
                self.owner.append((k, s))
        self._needed = set(self._source) - {-1}
        self._kept: dict = {}  # levels still to be resized from (each is the source of one later level)

    def make(self, i: int) -> np.ndarray:
        """Level ``i``, uint8[h, w, 3]; levels must be made in order (a source is released once used)."""
        src = self.images[self.owner[i][0]] if self._source[i] < 0 else self._kept.pop(self._source[i])
        level = resize(src, self.sizes[i], self.method)
        if i in self._needed:
            self._kept[i] = level
        return level
