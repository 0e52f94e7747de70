"""Faces at any rotation: detect in rotated copies of the image, map the detections back, merge.

MTCNN was trained on upright faces and finds faces tilted by up to about 30°. To find
faces lying on their side or upside down, :func:`detect_rotated` runs the detector on
copies of the image rotated by each angle asked for (by default 0, 90, 180 and 270
degrees), maps every box and landmark found back to the input image, and merges the
detections of all copies by non-maximum suppression (the most confident detection of a
face is kept). Each face carries the angle of the copy it was found in
(:class:`RotatedFaces`); the cost is one detection per angle.

**Angles** are degrees **counter-clockwise as the image is displayed** (the sense of
``np.rot90``, ``PIL.Image.rotate`` and ``cv2.getRotationMatrix2D``): rotating by 90
turns the image's top edge to its left. The angle at which a face is found upright is
the one that undoes its tilt: a face whose head points to the image's right (a portrait
turned 90° clockwise) is found at 90.

**Coordinate frames.** Boxes are half-open pixel boxes (``x1, y1`` the first pixel
inside, ``x2, y2`` one past the last), which are exact coordinates in the frame where
the image covers ``[0, W] × [0, H]`` and pixel ``(col j, row i)`` the unit square
``[j, j + 1) × [i, i + 1)``. Landmarks put pixel centres at integer coordinates, so a
landmark ``(x, y)`` is the point ``(x + 0.5, y + 0.5)`` of that frame. A rotation by
``a`` turns the ``W × H`` image about its centre ``c = (W / 2, H / 2)`` onto a canvas of
``W' × H'`` (the sides swap for 90 and 270; any other angle gets the smallest whole-pixel
canvas holding the whole image, the corners black) with centre ``c' = (W' / 2, H' / 2)``::

    p' = R (p - c) + c',    R = [[cos a,  sin a],
                                 [-sin a, cos a]]      (y points down)

and a point found in the rotated copy maps back by ``p = Rᵀ (p' - c') + c``.

**A worked example** (``tests/test_rotations.py`` checks these numbers). A 4 × 3 image
(W = 4, H = 3) rotated by 90: the canvas is 3 × 4, c = (2, 1.5), c' = (1.5, 2),
cos = 0, sin = 1, so ``p' = (y, 4 - x)`` and back ``p = (4 - y', x')``.

* The top-left pixel's centre, landmark (0, 0), is the frame point (0.5, 0.5) → (0.5, 3.5),
  i.e. landmark (0, 3) of the copy: the bottom-left pixel, as ``np.rot90`` puts it
  (``rot90(a)[3, 0] == a[0, 0]``). Back: (0, 3) → frame (0.5, 3.5) → (4 - 3.5, 0.5) =
  (0.5, 0.5) → landmark (0, 0).
* The box (0, 1, 2, 3) of the copy (columns 0-1, rows 1-2) has corners (0, 1), (2, 1),
  (0, 3), (2, 3), which map to (3, 0), (3, 2), (1, 0), (1, 2): the box (1, 0, 3, 2) of the
  input (columns 1-2, rows 0-1), the same four pixels (``rot90(a)[1:3, 0:2]`` holds
  ``a[0:2, 1:3]``).

For 90° multiples the copies are exact (``np.rot90``) and a box maps to a box. For other
angles the copy is resampled (bilinear, ``cv2.warpAffine``) and a box maps to a tilted
square: the box returned is the smallest axis-aligned box holding it (the landmarks, mapped
point by point, stay exact; :attr:`RotatedFaces.angles` says how the face was tilted).

**Landmarks keep the face's own order**: "left eye" is the eye on the left when the face
is upright (in the copy it was found in), wherever it lies in the input. So
:func:`mtcnn_jax.align` gives upright crops of rotated faces.
"""

from __future__ import annotations

import math
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from mtcnn_jax import boxes as bx
from mtcnn_jax import inputs
from mtcnn_jax.boxes import BoxMode
from mtcnn_jax.errors import UserError

#: The angles :func:`detect_rotated` searches by default (degrees, counter-clockwise).
DEFAULT_ANGLES = (0.0, 90.0, 180.0, 270.0)
#: IoU above which two detections of different copies are taken for the same face.
MERGE_OVERLAP = 0.5


class RotatedFaces(NamedTuple):
    """Detections merged over rotated copies, in input-image pixels, descending score.

    boxes: float32[N, 4] half-open ``x1, y1, x2, y2``; scores: float32[N]; landmarks:
    float32[N, 5, 2] ``(x, y)`` in the face's own order (see the module docstring);
    angles: float32[N], the rotation (degrees counter-clockwise) of the copy the face
    was found in. The first three fields are those of :class:`mtcnn_jax.faces.Faces`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    angles: np.ndarray


def parse_angles(text: Union[str, Sequence[float]], option: str = "--rotations") -> Tuple[float, ...]:
    """``"0,90,180,270"`` (or a sequence of numbers) → angles in [0, 360), in the order given,
    duplicates (after taking them modulo 360) dropped. A one-line :class:`UserError` naming
    ``option`` for anything else (not a number, not finite, an empty list)."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out: List[float] = []
    for part in parts:
        try:
            value = float(part)
        except (TypeError, ValueError):
            raise UserError(f"{option}: expected angles in degrees separated by commas (like 0,90,180,270), "
                            f"got {text!r}") from None
        if not math.isfinite(value):
            raise UserError(f"{option}: angles must be finite numbers, got {part!r}")
        value = value % 360.0
        if value not in out:
            out.append(value)
    if not out:
        raise UserError(f"{option}: expected at least one angle (like 0,90,180,270), got {text!r}")
    return tuple(out)


def _quarter_turns(angle: float) -> Optional[int]:
    """``k`` when ``angle`` is k × 90 degrees (mod 360), else None."""
    k = (angle % 360.0) / 90.0
    return int(round(k)) % 4 if abs(k - round(k)) < 1e-9 else None


class Rotation:
    """One rotation of a ``width`` × ``height`` image by ``angle`` degrees (counter-clockwise).

    ``size``: the rotated canvas ``(W', H')``; ``matrix``: float64[2, 3], the frame map
    ``p' = matrix @ [x, y, 1]`` of the module docstring (input → rotated, corner frame).
    """

    def __init__(self, angle: float, width: int, height: int):
        self.angle = float(angle) % 360.0
        self.width, self.height = int(width), int(height)
        self.quarter_turns = _quarter_turns(self.angle)
        if self.quarter_turns is not None:  # exact: no rounding of cos/sin
            cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][self.quarter_turns]
            w2, h2 = (self.width, self.height) if self.quarter_turns % 2 == 0 else (self.height, self.width)
        else:
            a = math.radians(self.angle)
            cos, sin = math.cos(a), math.sin(a)
            w2 = math.ceil(abs(self.width * cos) + abs(self.height * sin) - 1e-9)
            h2 = math.ceil(abs(self.width * sin) + abs(self.height * cos) - 1e-9)
        self.size = (int(w2), int(h2))
        rot = np.array([[cos, sin], [-sin, cos]], np.float64)
        centre = np.array([self.width / 2.0, self.height / 2.0])
        centre2 = np.array([w2 / 2.0, h2 / 2.0])
        self.matrix = np.concatenate([rot, (centre2 - rot @ centre)[:, None]], axis=1)
        self.inverse = np.concatenate([rot.T, (centre - rot.T @ centre2)[:, None]], axis=1)

    # -- the image -----------------------------------------------------------------

    def rotate(self, image: np.ndarray) -> np.ndarray:
        """The rotated copy of ``image`` (``[H, W, ...]`` → ``[H', W', ...]``): ``np.rot90`` for
        quarter turns (exact; a view), else bilinear ``cv2.warpAffine`` with black outside."""
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, this rotation is for "
                             f"{self.width}x{self.height}")
        if self.quarter_turns is not None:
            return np.rot90(image, self.quarter_turns) if self.quarter_turns else image
        # warpAffine works with pixel centres at integers: shift by half a pixel on each side.
        half = np.array([0.5, 0.5])
        centred = self.matrix.copy()
        centred[:, 2] = self.matrix[:, :2] @ half + self.matrix[:, 2] - half
        return cv2.warpAffine(np.ascontiguousarray(image), centred, self.size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    # -- points and boxes ----------------------------------------------------------

    @staticmethod
    def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
        return points @ matrix[:, :2].T + matrix[:, 2]

    def points_to_rotated(self, points: np.ndarray) -> np.ndarray:
        """Landmarks ``float[..., 2]`` (pixel centres at integers) of the input → of the copy."""
        p = np.asarray(points, np.float64)
        return self._apply(self.matrix, p + 0.5) - 0.5

    def points_from_rotated(self, points: np.ndarray) -> np.ndarray:
        """Landmarks ``float[..., 2]`` of the copy → of the input."""
        p = np.asarray(points, np.float64)
        return self._apply(self.inverse, p + 0.5) - 0.5

    def _boxes(self, matrix: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], axis=1)  # [N, 4, 2]
        mapped = self._apply(matrix, corners)
        return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)

    def boxes_to_rotated(self, boxes: np.ndarray) -> np.ndarray:
        """Half-open boxes ``float[N, 4]`` of the input → of the copy (the box holding the
        mapped box: exact for quarter turns)."""
        return self._boxes(self.matrix, boxes)

    def boxes_from_rotated(self, boxes: np.ndarray) -> np.ndarray:
        """Half-open boxes ``float[N, 4]`` of the copy → of the input (the box holding the
        mapped box: exact for quarter turns)."""
        return self._boxes(self.inverse, boxes)


def merge(found: Sequence[Tuple[float, Any]], overlap: float = MERGE_OVERLAP) -> RotatedFaces:
    """Detections of several copies, already mapped to the input (``[(angle, (boxes, scores,
    landmarks)), ...]``) → one :class:`RotatedFaces`: greedy NMS (IoU > ``overlap`` over the
    boxes' pixels, :func:`mtcnn_jax.boxes.nms`) keeps the most confident detection of each face."""
    boxes = np.concatenate([np.asarray(f[0], np.float64).reshape(-1, 4) for _, f in found])
    scores = np.concatenate([np.asarray(f[1], np.float64).reshape(-1) for _, f in found])
    points = np.concatenate([np.asarray(f[2], np.float64).reshape(-1, 5, 2) for _, f in found])
    angles = np.concatenate([np.full(len(np.asarray(f[1]).reshape(-1)), a, np.float64) for a, f in found])
    keep = bx.nms(bx.convert(boxes, BoxMode.HALF_OPEN, BoxMode.INCLUSIVE), scores, overlap, "union")
    return RotatedFaces(boxes[keep].astype(np.float32), scores[keep].astype(np.float32),
                        points[keep].astype(np.float32), angles[keep].astype(np.float32))


def detect_rotated(
    detector: Any,
    images: Any,
    angles: Union[str, Sequence[float]] = DEFAULT_ANGLES,
    keep: str = "all",
    overlap: float = MERGE_OVERLAP,
) -> Union[RotatedFaces, List[RotatedFaces]]:
    """Detect faces at each rotation in ``angles`` and merge them (see the module docstring).

    Args:
      detector: a :class:`mtcnn_jax.MTCNN` (anything whose ``detect`` takes a list of
        uint8[H, W, 3] images and returns one ``(boxes, scores, landmarks)`` per image).
      images: what :meth:`mtcnn_jax.MTCNN.detect` takes: one image (array, path, PIL
        image) or several (list, tuple, 4-D batch) (:mod:`mtcnn_jax.inputs`).
      angles: degrees counter-clockwise, or ``"0,90,180,270"`` (:func:`parse_angles`).
      keep: "all", "largest" or "best" (:func:`mtcnn_jax.inputs.select`), after merging.
      overlap: the NMS IoU above which detections of two copies are one face.
    Returns:
      :class:`RotatedFaces` for one image, a list of them for several. All the copies of
      a group of images go through the detector together.
    """
    angles = parse_angles(angles, "angles")
    inputs.check_keep(keep)
    items, single = inputs.as_batch(images)
    out: List[RotatedFaces] = []
    group = max(1, int(getattr(detector, "group_size", 8)) // len(angles))
    for s in range(0, len(items), group):
        ims = [inputs.to_image(im, "image" if single else f"image {s + i}") for i, im in enumerate(items[s : s + group])]
        turns = [[Rotation(a, im.shape[1], im.shape[0]) for a in angles] for im in ims]
        copies = [r.rotate(im) for im, rs in zip(ims, turns) for r in rs]
        results = iter(detector.detect([np.ascontiguousarray(c) for c in copies]))
        for rs in turns:
            found = []
            for r in rs:
                f = next(results)
                found.append((r.angle, (r.boxes_from_rotated(f[0]), f[1],
                                        r.points_from_rotated(np.asarray(f[2], np.float64).reshape(-1, 5, 2)))))
            out.append(inputs.select(merge(found, overlap), keep))
    return out[0] if single else out


def add_angles(entry: dict, faces: Any) -> dict:
    """Put each face's ``"angle"`` (degrees) into a ``detect --json`` entry made from ``faces``
    (:class:`RotatedFaces`); returns ``entry``."""
    for face, angle in zip(entry["faces"], np.asarray(faces.angles).reshape(-1)):
        face["angle"] = float(angle)
    return entry
