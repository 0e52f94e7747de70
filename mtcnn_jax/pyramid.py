"""The image pyramid that P-Net scans (the paper, Sec. II-A; the authors' ``detect_face.m``).

A face of ``min_face_size`` pixels must shrink to P-Net's 12-pixel window, so the
first scale is ``m = 12 / min_face_size``; each further level multiplies by
``factor``; levels stop once the shorter image side would fall below 12 pixels.

The authors resize every level from the image itself, with Piotr Dollár's
``imResample``, which averages over each output pixel's footprint when shrinking
(a box, as OpenCV's INTER_AREA). Three ways to make the levels (:data:`PYRAMID_MODES`):

* ``"summed"`` (the detector's default): the authors' levels, each the area average
  of the image, but every level after the first two averaged from running sums of
  the image's rows (:func:`row_sums`, :func:`area_level`), one pass over the image
  instead of one per level; equal to ``"original"`` to float rounding (a uint8 level
  differs by one grey level on about one WIDER pixel in 100,000, on up to 0.2% of them at
  ratios such as 3/4 where averages fall exactly on .5: ``tests/test_pyramid.py``);
* ``"original"``: every level resized from the image by OpenCV, as the authors do;
* ``"chained"``: each level resized from the level about twice its size
  (:func:`sources`): two box averages in a row, a blur the authors' levels do not
  have, which costs a little AP (``benchmarks/README.md``, "The detector's defaults").
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import cv2
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


#: How each level is made: "summed" (the area average of the image, from running sums of
#: its rows), "original" (resized from the image, as the authors do) or "chained" (from
#: the level about twice its size, see :func:`sources`). The first is the default.
PYRAMID_MODES = ("summed", "original", "chained")

#: Levels ``0 .. SUMMED_FROM - 1`` of a "summed" pyramid are resized from the image itself
#: (the largest levels: running sums would save little there).
SUMMED_FROM = 2


def chain_step(factor: float) -> int:
    """Levels between a level and the one it is resized from: ``max(1, round(log(1/2) / log(factor)))``.

    The level that many steps up is about twice as large: 2 for the default 0.709
    (0.709² = 0.503), 3 for 0.79 (0.493), 1 for 0.5, 7 for 0.9 (0.478).
    """
    return max(1, int(round(math.log(0.5) / math.log(float(factor)))))


def sources(scales_: List[float], factor: float, mode: str = "chained") -> List[int]:
    """For each level, the index of the level it is resized from, or -1 for the image itself.

    ``mode="original"`` or ``"summed"``: every level from the image (-1), as the
    authors do ("summed" averages the image through running sums: :class:`Levels`).
    ``mode="chained"``: level ``k`` from level ``k - n`` (``n`` = :func:`chain_step`),
    about twice its size, provided that level is not larger than the image
    (scale ≤ 1: an enlarged level is never a source); otherwise from the image.
    With the default resize (area averaging when shrinking) a chained level is two
    box averages in a row instead of one: a smoother kernel than the authors'
    ``imResample`` (itself a single box average when shrinking), which costs a
    little AP on WIDER FACE (``benchmarks/README.md``, "The detector's defaults").

    E.g. scales 0.6, 0.425, 0.302, 0.214, 0.152 (factor 0.709) → -1, -1, 0, 1, 2;
    scales 1.2, 0.851, 0.603, 0.428 (factor 0.709) → -1, -1, -1, 1 (level 0 is enlarged).
    """
    if mode not in PYRAMID_MODES:
        raise ValueError(f"unknown pyramid mode {mode!r} (expected one of {PYRAMID_MODES})")
    if mode in ("original", "summed"):
        return [-1] * len(scales_)
    n = chain_step(factor)
    return [k - n if k >= n and scales_[k - n] <= 1.0 else -1 for k in range(len(scales_))]


def resize(image: np.ndarray, size_hw: Tuple[int, int], method: str = "antialiased") -> np.ndarray:
    """``image`` uint8[H, W, 3] resized to the level size ``size_hw = (h, w)``; see :func:`mtcnn_jax.boxes.resize`."""
    return boxes.resize(image, size_hw, method)


def row_sums(image: np.ndarray) -> np.ndarray:
    """Running sums of ``image`` uint8[H, W, C] over its rows, exact: int32[H + 1, W, C], row ``r``
    the sum of image rows ``0 .. r - 1`` (exact for images of up to 8 million rows)."""
    out = np.empty((image.shape[0] + 1,) + image.shape[1:], np.int32)
    out[0] = 0
    for r in range(image.shape[0]):  # a row at a time: faster than np.cumsum over axis 0 here
        np.add(out[r], image[r], out=out[r + 1])
    return out


def area_level(image: np.ndarray, sums: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """The area average of ``image`` uint8[H, W, C] at ``size_hw = (h, w)``, not larger; uint8[h, w, C].

    ``sums``: :func:`row_sums` of the image. Output row ``i`` averages the image rows
    over ``[i H / h, (i + 1) H / h)``, the two rows cut by an edge weighted by their
    overlap: OpenCV's INTER_AREA, and the authors' ``imResample`` when shrinking
    (Piotr's toolbox, ``imResampleMex.cpp``, ``resampleCoef``). The whole rows come
    from the running sums (exact integers), the cut rows are added with their
    fractions; then each band of rows is averaged across by INTER_AREA (the same
    average along x) and rounded once. Cost: about ``h / H`` of a pass over the image.
    """
    big_h = image.shape[0]
    h, w = int(size_hw[0]), int(size_hw[1])
    edges = np.arange(h + 1, dtype=np.float64) * (big_h / h)
    row = np.minimum(edges.astype(np.intp), big_h - 1)  # the image row each edge falls in
    cut = image[row].astype(np.float32)
    cut *= (edges - row).astype(np.float32)[:, None, None]  # the part of that row before the edge
    at = sums[row]  # the sum of the rows before it
    band = (at[1:] - at[:-1]).astype(np.float32)
    band += cut[1:]
    band -= cut[:-1]
    level = cv2.resize(band, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.convertScaleAbs(level, alpha=h / big_h).reshape(h, w, -1)


class Levels:
    """Every pyramid level of a group of images, in order, each made when asked for.

    ``sizes[i]`` is level ``i``'s ``(h, w)`` and ``owner[i]`` its ``(image index,
    scale)``; :meth:`make` resizes level ``i`` from its source (:func:`sources`),
    or, in mode "summed", averages it from the image's running sums (:func:`area_level`:
    levels from :data:`SUMMED_FROM` on that shrink the image, when ``method`` averages).
    Only the sizes are needed to plan P-Net's tiles (:func:`mtcnn_jax.tiles.pnet_stream`),
    so the levels can be made while P-Net runs on the earlier ones.
    """

    def __init__(self, images: Sequence[np.ndarray], min_face_size: float, factor: float, mode: str = "summed",
                 method: str = "antialiased") -> None:
        self.images, self.method = images, method
        self.sizes: List[Tuple[int, int]] = []
        self.owner: List[Tuple[int, float]] = []
        # index of the level each level is resized from; -1: its image; -2: its image's running sums
        self._source: List[int] = []
        summed = mode == "summed" and method in ("antialiased", "area")  # both average when shrinking
        self._last: dict = {}  # image index -> its last level (its running sums are released there)
        for k, image in enumerate(images):
            h, w = image.shape[:2]
            scales_ = scales(h, w, min_face_size, factor)
            first = len(self.sizes)
            self._source += [first + j if j >= 0 else -1 for j in sources(scales_, factor, mode)]
            for j, s in enumerate(scales_):
                self.sizes.append(level_size(h, w, s))
                self.owner.append((k, s))
                if summed and j >= SUMMED_FROM and s <= 1.0:
                    self._source[first + j] = -2
            if scales_:
                self._last[k] = len(self.sizes) - 1
        self._needed = set(self._source) - {-1, -2}
        self._kept: dict = {}  # levels still to be resized from (each is the source of one later level)
        self._sums: dict = {}  # image index -> its row_sums, while levels remain to be averaged from them

    def make(self, i: int) -> np.ndarray:
        """Level ``i``, uint8[h, w, 3]; levels must be made in order (a source is released once used)."""
        k, src = self.owner[i][0], self._source[i]
        if src == -2:
            if k not in self._sums:
                self._sums[k] = row_sums(self.images[k])
            level = area_level(self.images[k], self._sums[k], self.sizes[i])
        else:
            level = resize(self.images[k] if src < 0 else self._kept.pop(src), self.sizes[i], self.method)
        if i in self._needed:
            self._kept[i] = level
        if self._last.get(k) == i:
            self._sums.pop(k, None)
        return level
