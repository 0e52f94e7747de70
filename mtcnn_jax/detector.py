"""The MTCNN cascade: pyramid → P-Net → NMS → R-Net → NMS → O-Net → boxes, scores, landmarks.

Each step follows the authors' released code (``detect_face.m``); the networks run
jitted on the default JAX device, box arithmetic runs on the host in NumPy
(:mod:`mtcnn_jax.boxes`). Internally the cascade keeps boxes in the authors'
inclusive 1-based convention; what it returns is converted to half-open 0-based
pixels (see :class:`Faces`).

Usage::

    from mtcnn_jax import MTCNN, load_image
    faces = MTCNN().detect(load_image("photo.jpg"))
    faces.boxes, faces.scores, faces.landmarks
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mtcnn_jax import boxes as bx
from mtcnn_jax import models, pretrained, pyramid
from mtcnn_jax.errors import UserError


class Faces(NamedTuple):
    """Detections in one image, sorted by descending score.

    boxes: float32[N, 4], ``x1, y1, x2, y2`` in input-image pixels, 0-based and
    half-open (``x1, y1`` is the first pixel inside the face box, ``x2, y2`` one past
    the last; width = ``x2 - x1``; the WIDER FACE ``x + w`` convention).
    scores: float32[N], O-Net's face probability.
    landmarks: float32[N, 5, 2], ``(x, y)`` in the same pixel frame, in the order
    left eye, right eye, nose, left mouth corner, right mouth corner ("left" = the
    image's left).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def _empty_faces() -> Faces:
    return Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


# ---------------------------------------------------------------------------
# Shapes: P-Net levels and crop batches are padded to a bounded set of sizes so
# that a stream of arbitrary image sizes compiles a bounded number of programs.


def bucket(n: int, minimum: int = 16) -> int:
    """Round a side length up to the next bucket: multiples of 16 up to 128, then 4 sizes an octave.

    E.g. 12 → 16, 100 → 112, 130 → 160, 300 → 320, 614 → 640. Pads by less than
    16 pixels up to 128, by at most 25% above; 28 sizes cover 12..4096.
    """
    n = max(int(n), minimum)
    step = max(16, 2 ** (max(n - 1, 1).bit_length() - 3))
    return -(-n // step) * step


def batch_bucket(n: int) -> int:
    """Round a crop batch size up to a power of two, at least 16."""
    return max(16, 1 << max(int(n) - 1, 0).bit_length())


def pnet_output_size(h: int, w: int) -> Tuple[int, int]:
    """Spatial size of P-Net's output for an ``h × w`` input (both ≥ 12)."""
    return (-(-(h - 2) // 2) - 4, -(-(w - 2) // 2) - 4)


@jax.jit
def _pnet_forward(params, image_u8, valid_hw):
    """uint8[1, H, W, 3] (padded) → face probability float32[H', W'], regression float32[H', W', 4]."""
    out = models.PNet().apply({"params": params}, models.normalize(image_u8), valid_hw)
    return jax.nn.softmax(out.logits[0], axis=-1)[..., 1], out.box[0]


@jax.jit
def _rnet_forward(params, crops_u8):
    """uint8[B, 24, 24, 3] → face probability float32[B], regression float32[B, 4]."""
    out = models.RNet().apply({"params": params}, models.normalize(crops_u8))
    return jax.nn.softmax(out.logits, axis=-1)[:, 1], out.box


@jax.jit
def _onet_forward(params, crops_u8):
    """uint8[B, 48, 48, 3] → probability [B], regression [B, 4], landmarks [B, 10] (x1..x5, y1..y5)."""
    out = models.ONet().apply({"params": params}, models.normalize(crops_u8))
    return jax.nn.softmax(out.logits, axis=-1)[:, 1], out.box, out.landmarks


def _run_batched(fn, params, crops: np.ndarray):
    """Run a crop network on ``crops`` padded to :func:`batch_bucket` size; outputs cut back to N."""
    n = len(crops)
    padded = np.zeros((batch_bucket(n),) + crops.shape[1:], np.uint8)
    padded[:n] = crops
    return [np.asarray(o)[:n] for o in fn(params, padded)]


# ---------------------------------------------------------------------------
# Input checks.


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """Check and convert one image to uint8[H, W, 3] RGB.

    Accepts uint8 arrays [H, W, 3] (RGB), [H, W] or [H, W, 1] (grayscale,
    replicated) and [H, W, 4] (RGBA, composited on black: colour × alpha / 255,
    rounded, as :func:`mtcnn_jax.io.load_image` does). Anything else raises
    :class:`UserError` naming ``name``.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise UserError(f"{name}: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise UserError(f"{name}: expected an array of shape [H, W, 3], got {list(arr.shape)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = np.rint(arr[:, :, :3] * (arr[:, :, 3:] / 255.0)).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _check_settings(min_face_size, factor, thresholds, resize) -> Tuple[float, float, Tuple[float, float, float]]:
    try:
        min_face_size = float(min_face_size)
        factor = float(factor)
        thresholds = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise UserError("min_face_size, factor and thresholds must be numbers") from None
    if not (min_face_size > 0 and math.isfinite(min_face_size)):
        raise UserError(f"min_face_size must be a positive number of pixels, got {min_face_size}")
    if not 0.0 < factor < 1.0:
        raise UserError(f"factor must be in (0, 1), got {factor}")
    if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
        raise UserError(f"thresholds must be three numbers in [0, 1], got {thresholds}")
    if resize not in bx.RESIZE_METHODS:
        raise UserError(f"resize must be one of {', '.join(bx.RESIZE_METHODS)}, got {resize!r}")
    return min_face_size, factor, thresholds


def _load_weights(weights) -> dict:
    """``None`` → the authors' weights; a dict of params; or a msgpack file / a folder holding ``params.msgpack``."""
    if weights is None:
        return pretrained.load_pretrained()
    if isinstance(weights, dict):
        return weights
    path = Path(weights)
    if path.is_dir():
        path = path / "params.msgpack"
    try:
        return pretrained.load_params(path)
    except pretrained.WeightsError as err:
        raise UserError(str(err)) from None


class MTCNN:
    """The three-stage detector with its settings and weights.

    Args:
      min_face_size: smallest face side to look for, in pixels (paper: 20).
      factor: scale step of the image pyramid (0.709).
      thresholds: face-probability thresholds of P-Net, R-Net, O-Net (0.6, 0.7, 0.7).
      nms_thresholds: IoU thresholds of NMS within a pyramid scale, across
        scales, after R-Net, and after O-Net ("min" overlap): (0.5, 0.7, 0.7, 0.7).
      flip_landmarks: also run O-Net on the mirrored crops and average the
        landmarks (left/right swapped), as the authors' code does.
      resize: interpolation for the pyramid and the crops: "antialiased"
        (default: averaging when shrinking, bilinear when enlarging, as the
        authors' ``imResample``), "area" or "bilinear" (see :func:`mtcnn_jax.boxes.resize`).
      weights: ``None`` for the authors' weights, a params dict
        ``{"pnet", "rnet", "onet"}``, or a msgpack file / folder with ``params.msgpack``.
    """

    def __init__(
        self,
        min_face_size: float = 20.0,
        factor: float = 0.709,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        nms_thresholds: Sequence[float] = (0.5, 0.7, 0.7, 0.7),
        flip_landmarks: bool = False,
        resize: str = "antialiased",
        weights: Union[None, str, os.PathLike, dict] = None,
    ):
        self.min_face_size, self.factor, self.thresholds = _check_settings(
            min_face_size, factor, thresholds, resize
        )
        self.nms_thresholds = tuple(float(t) for t in nms_thresholds)
        if len(self.nms_thresholds) != 4:
            raise UserError("nms_thresholds must be four numbers")
        self.flip_landmarks = bool(flip_landmarks)
        self.resize = resize
        params = _load_weights(weights)
        missing = [s for s in pretrained.STAGES if s not in params]
        if missing:
            raise UserError(f"weights lack the {', '.join(missing)} params")
        self.params = jax.device_put({s: params[s] for s in pretrained.STAGES})

    # -- public API ---------------------------------------------------------

    def detect(self, images) -> Union[Faces, List[Faces]]:
        """Detect faces in one image (uint8[H, W, 3] RGB) or a list of images of any sizes.

        Returns :class:`Faces` for one image, a list of them for a list. Images
        smaller than 12 pixels on a side give no faces.
        """
        if isinstance(images, (list, tuple)):
            return [self._detect_one(as_rgb_uint8(im, f"image {i}")) for i, im in enumerate(images)]
        return self._detect_one(as_rgb_uint8(images))

    __call__ = detect

    # -- stages ---------------------------------------------------------------

    def proposals(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid → candidate boxes float64[N, 5] (inclusive 1-based x1..y2, score).

        Returned after per-scale NMS (IoU 0.5) and cross-scale NMS (0.7), the
        regression, squaring and truncation to integers, as the authors do.
        """
        h, w = image.shape[:2]
        found = []
        for s in pyramid.scales(h, w, self.min_face_size, self.factor):
            hs, ws = pyramid.level_size(h, w, s)
            level = pyramid.resize(image, (hs, ws), self.resize)
            canvas = np.zeros((1, bucket(hs), bucket(ws), 3), np.uint8)
            canvas[0, :hs, :ws] = level
            prob, reg = _pnet_forward(self.params["pnet"], canvas, np.array([hs, ws], np.int32))
            oh, ow = pnet_output_size(hs, ws)
            prob = np.asarray(prob)[:oh, :ow]
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            reg = np.asarray(reg)[rows, cols]
            cand = np.stack(
                [
                    np.fix((2 * cols + 1) / s),
                    np.fix((2 * rows + 1) / s),
                    np.fix((2 * cols + pyramid.CELL) / s),
                    np.fix((2 * rows + pyramid.CELL) / s),
                ],
                axis=1,
            )
            score = prob[rows, cols].astype(np.float64)
            keep = bx.nms(cand, score, self.nms_thresholds[0], "union")
            found.append(np.concatenate([cand[keep], score[keep, None], reg[keep]], axis=1))
        if not found:
            return np.zeros((0, 5))
        allc = np.concatenate(found)
        keep = bx.nms(allc[:, :4], allc[:, 4], self.nms_thresholds[1], "union")
        allc = allc[keep]
        boxes = np.fix(bx.square(bx.calibrate(allc[:, :4], allc[:, 5:9], inclusive=False)))
        return np.concatenate([boxes, allc[:, 4:5]], axis=1)

    def refine(self, image: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24×24 crops of ``cand`` → boxes float64[M, 5] (inclusive 1-based, score).

        Keeps crops scoring above the R-Net threshold, NMS (IoU 0.7), then the
        regression and squaring.
        """
        if len(cand) == 0:
            return np.zeros((0, 5))
        crops = bx.crop_and_resize(image, cand[:, :4] - 1, 24, self.resize)
        prob, reg = _run_batched(_rnet_forward, self.params["rnet"], crops)
        ok = prob > self.thresholds[1]
        if not ok.any():
            return np.zeros((0, 5))
        b, p, r = cand[ok, :4], prob[ok].astype(np.float64), reg[ok]
        keep = bx.nms(b, p, self.nms_thresholds[2], "union")
        boxes = bx.square(bx.calibrate(b[keep], r[keep], inclusive=True))
        return np.concatenate([boxes, p[keep, None]], axis=1)

    def output(self, image: np.ndarray, cand: np.ndarray) -> Faces:
        """Stage 3: O-Net on 48×48 crops → final :class:`Faces` (converted to 0-based half-open)."""
        if len(cand) == 0:
            return _empty_faces()
        b = np.fix(cand[:, :4])
        crops = bx.crop_and_resize(image, b - 1, 48, self.resize)
        prob, reg, lms = _run_batched(_onet_forward, self.params["onet"], crops)
        if self.flip_landmarks:
            lms = 0.5 * (lms + _unflip_landmarks(_run_batched(_onet_forward, self.params["onet"], crops[:, :, ::-1])[2]))
        ok = prob > self.thresholds[2]
        if not ok.any():
            return _empty_faces()
        b, p, r, lms = b[ok], prob[ok].astype(np.float64), reg[ok], lms[ok].astype(np.float64)
        # Landmarks are relative to the crop before regression: x = x1 - 1 + w * u with
        # the 1-based x1 and w = x2 - x1 + 1, i.e. 0-based first pixel + w * u.
        w = b[:, 2] - b[:, 0] + 1
        h = b[:, 3] - b[:, 1] + 1
        pts = np.stack([b[:, 0:1] - 1 + w[:, None] * lms[:, :5], b[:, 1:2] - 1 + h[:, None] * lms[:, 5:]], axis=2)
        final = bx.calibrate(b, r, inclusive=True)
        keep = bx.nms(final, p, self.nms_thresholds[3], "min")
        return Faces(
            bx.to_half_open(final[keep]).astype(np.float32),
            p[keep].astype(np.float32),
            pts[keep].astype(np.float32),
        )

    def _detect_one(self, image: np.ndarray) -> Faces:
        if min(image.shape[:2]) < pyramid.CELL:
            return _empty_faces()
        return self.output(image, self.refine(image, self.proposals(image)))


def _unflip_landmarks(lms: np.ndarray) -> np.ndarray:
    """O-Net landmarks [B, 10] of mirrored crops → the unmirrored crops' frame.

    x becomes 1 - x, and the left/right points swap (eyes 0↔1, mouth corners 3↔4).
    """
    x, y = 1.0 - lms[:, :5], lms[:, 5:]
    order = [1, 0, 2, 4, 3]
    return np.concatenate([x[:, order], y[:, order]], axis=1)


def detect(images, **settings) -> Union[Faces, List[Faces]]:
    """Functional form: ``MTCNN(**settings).detect(images)`` (the detector is cached per settings)."""
    key = tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in settings.items() if k != "weights"))
    if "weights" in settings and settings["weights"] is not None:
        return MTCNN(**settings).detect(images)
    det = _DETECTORS.get(key)
    if det is None:
        det = _DETECTORS[key] = MTCNN(**settings)
    return det.detect(images)


_DETECTORS: dict = {}
