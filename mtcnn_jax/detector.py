"""The MTCNN cascade, step by step as the authors' ``detect_face.m``.

Stage 1, P-Net (:meth:`MTCNN.proposals`):
  1. the image pyramid: scales ``12 / min_face_size × factor^k`` (:mod:`mtcnn_jax.pyramid`);
  2. P-Net on every scale; each window scoring at least the first threshold is a box;
  3. NMS (IoU 0.5) within each scale;
  4. NMS (0.7) across the scales;
  5. calibrate (the box regression), square, truncate to integers.
Stage 2, R-Net (:meth:`MTCNN.refine`):
  6. R-Net on the boxes' 24×24 crops (zero-padded where a box leaves the image);
  7. keep those above the second threshold; NMS (0.7); calibrate; square.
Stage 3, O-Net (:meth:`MTCNN.output`):
  8. truncate; O-Net on the 48×48 crops;
  9. keep those above the third threshold; landmarks relative to the box before its regression;
  10. calibrate; NMS (0.7, intersection over the smaller box: "min");
  11. with ``flip_landmarks`` (the default): O-Net on the mirrored crops of the faces kept, and
      the landmarks averaged with the mirrored ones, as the authors' first release
      (MTCNNv1 ``detect_face.m``) does;
  12. with ``refine_landmarks`` (the default; not the authors'): O-Net again (and mirrored) on
      the square around each face's final box, and the landmarks averaged with that pass's.

Boxes stay in the authors' 1-based inclusive convention
(:attr:`mtcnn_jax.boxes.BoxMode.AUTHORS`) throughout, so that every truncation
lands where theirs does; crops are cut from 0-based inclusive boxes
(``INCLUSIVE``), and what the detector returns is half-open (``HALF_OPEN``,
:class:`mtcnn_jax.faces.Faces`), each by :func:`mtcnn_jax.boxes.convert`.

What makes it fast without changing a result lives beside it:
:mod:`mtcnn_jax.tiles` runs P-Net on every level of every image of a group as
packed fixed-size tiles; :mod:`mtcnn_jax.networks` holds the compiled networks
(which formulation runs where, fixed crop batches); :func:`mtcnn_jax.boxes.nms`
compares only boxes that intersect; :class:`mtcnn_jax.pyramid.Levels` averages
the authors' levels from running sums of the image's rows by default
(``pyramid="summed"``; ``"original"`` resizes each from the image).

Usage::

    from mtcnn_jax import MTCNN, load_image
    faces = MTCNN().detect(load_image("photo.jpg"))
    faces.boxes, faces.scores, faces.landmarks
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union, overload

import numpy as np
from numpy.typing import ArrayLike

from mtcnn_jax import boxes as bx
from mtcnn_jax import compilation, inputs, pyramid, tiles
from mtcnn_jax.boxes import BoxMode
from mtcnn_jax.errors import UserError
from mtcnn_jax.faces import Faces, no_faces
from mtcnn_jax.pyramid import PYRAMID_MODES

AUTHORS, INCLUSIVE, HALF_OPEN = BoxMode.AUTHORS, BoxMode.INCLUSIVE, BoxMode.HALF_OPEN

#: What ``MTCNN(weights=...)`` takes: None (the authors'), a params dict, or a msgpack file / folder.
Weights = Union[None, str, "os.PathLike[str]", Dict[str, Any]]


class Networks(Protocol):
    """What the cascade needs of its networks. The steps below are NumPy and OpenCV; the networks are a backend:

    :class:`mtcnn_jax.networks.JaxNetworks` (the default, from weights),
    :class:`mtcnn_jax.networks.ExportedNetworks` (``jax.export`` programs, no model code) and
    :class:`mtcnn_jax.onnx_runtime.OnnxNetworks` (ONNX Runtime, no JAX); :func:`mtcnn_jax.deploy.load_model`
    builds the detector on an exported folder. This module imports neither JAX nor Flax.
    """

    rnet_batch: int  # crops per R-Net call
    onet_batch: int  # crops per O-Net call
    fixed_batches: bool  # whether a last, partial batch is zero-padded to the full size (one program shape)

    def pnet(self, sizes: Sequence[Tuple[int, int]],
             make_level: Callable[[int], np.ndarray]) -> Iterable[Tuple[np.ndarray, np.ndarray]]:
        """P-Net on each level (``make_level(i)``, in order) → per level prob float32[h', w'], reg [h', w', 4]."""

    def rnet(self, crops_u8: np.ndarray) -> Any:
        """uint8[B, 24, 24, 3] → face probability [B], regression [B, 4]."""

    def onet(self, crops_u8: np.ndarray) -> Any:
        """uint8[B, 48, 48, 3] → probability [B], regression [B, 4], landmarks [B, 10] (x1..x5, y1..y5)."""


def compiled_programs() -> int:
    """How many XLA programs the JAX networks hold compiled: :func:`mtcnn_jax.networks.compiled_programs`."""
    from mtcnn_jax import networks  # noqa: PLC0415  (JAX loads only for the JAX networks)

    return networks.compiled_programs()


# ---------------------------------------------------------------------------
# Input checks.


def as_rgb_uint8(image: ArrayLike, name: str = "image") -> np.ndarray:
    """Check and convert one image to uint8[H, W, 3] RGB.

    Accepts uint8 arrays [H, W, 3] (RGB), [H, W] or [H, W, 1] (grayscale,
    replicated) and [H, W, 4] (RGBA, composited on black: colour × alpha / 255,
    rounded, as :func:`mtcnn_jax.images.load_image` does). Anything else raises
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


def _check_settings(min_face_size: Any, factor: Any, thresholds: Any, resize: str,
                    pyramid: str) -> Tuple[float, float, Tuple[float, float, float]]:
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
    if pyramid not in PYRAMID_MODES:
        raise UserError(f"pyramid must be one of {', '.join(PYRAMID_MODES)}, got {pyramid!r}")
    return min_face_size, factor, thresholds


def _check_overlaps(nms_thresholds: Any) -> Tuple[float, float, float, float]:
    """Four NMS overlap thresholds in [0, 1] (NaN or inf would keep or drop every box silently)."""
    try:
        values = tuple(float(t) for t in nms_thresholds)
    except (TypeError, ValueError):
        raise UserError(f"nms_thresholds must be four numbers in [0, 1], got {nms_thresholds!r}") from None
    if len(values) != 4 or not all(0.0 <= t <= 1.0 for t in values):  # also refuses nan
        raise UserError(f"nms_thresholds must be four numbers in [0, 1], got {values}")
    return values  # type: ignore[return-value]


def _load_weights(weights: Weights) -> dict:
    """``None`` → the authors' weights; a dict of params; or a msgpack file / a folder holding ``params.msgpack``."""
    from mtcnn_jax import pretrained  # noqa: PLC0415  (Flax loads only for the JAX networks)

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
      flip_landmarks: also run O-Net on the mirrored crops of the faces kept
        and average the landmarks (x → 1 − x, left/right swapped), as the authors'
        first release does (MTCNNv1 ``detect_face.m``; their v2 code does not).
        On by default: on the MTFL-AFLW crops NME 0.0676 → 0.0654 and failures
        11.0% → 9.4%, for one more O-Net batch per group of images.
      refine_landmarks: also run O-Net (mirrored too, with ``flip_landmarks``) on
        the square around each face's final box, truncated, and average the
        landmarks with that pass's, in pixels. Not the authors'; on by default:
        AFLW NME 0.0654 → 0.0628, failures 9.4% → 7.9% (chosen on the LFW
        validation faces: benchmarks/README.md). Its crops share the flip's
        O-Net batch, so both cost what the flip alone did.
      resize: interpolation for the pyramid and the crops: "antialiased"
        (default: averaging when shrinking, bilinear when enlarging, as the
        authors' ``imResample``), "area" or "bilinear" (see :func:`mtcnn_jax.boxes.resize`).
      weights: ``None`` for the authors' weights, a params dict
        ``{"pnet", "rnet", "onet"}``, or a msgpack file / folder with ``params.msgpack``.
      compilation_cache: turn on JAX's persistent compilation cache (in
        ``$MTCNN_JAX_CACHE_DIR``, default ``~/.cache/mtcnn_jax/jax``; see
        :mod:`mtcnn_jax.compilation`) so that later processes skip compiling.
      pyramid: how the pyramid levels are made (:mod:`mtcnn_jax.pyramid`): "summed"
        (default: the authors' levels, each the area average of the image, averaged
        from running sums of its rows: one pass over the image), "original" (each
        level resized from the image, as the authors do; the same levels to float
        rounding) or "chained" (each from the level about twice its size: fewer
        pixels read than "original", a little AP lost on WIDER FACE).
      networks: the networks to run (:class:`Networks`); ``None`` builds the JAX
        networks from ``weights``. Exported ones hold their weights (``weights``
        must then be None, and ``compilation_cache`` is their loader's business):
        :func:`mtcnn_jax.deploy.load_model`.

    Whatever the image sizes, the networks run in a fixed set of shapes (P-Net on
    packed 128×128 tiles, R-Net and O-Net on fixed crop batches): a process
    compiles at most three programs for detection (:func:`mtcnn_jax.networks.compiled_programs`).
    """

    def __init__(
        self,
        min_face_size: float = 20.0,
        factor: float = 0.709,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        nms_thresholds: Sequence[float] = (0.5, 0.7, 0.7, 0.7),
        flip_landmarks: bool = True,
        refine_landmarks: bool = True,
        resize: str = "antialiased",
        weights: Weights = None,
        compilation_cache: bool = True,
        pyramid: str = "summed",
        networks: Optional[Networks] = None,
    ) -> None:
        if compilation_cache and networks is None:
            compilation.enable_persistent_cache()
        self.min_face_size, self.factor, self.thresholds = _check_settings(
            min_face_size, factor, thresholds, resize, pyramid
        )
        self.nms_thresholds = _check_overlaps(nms_thresholds)
        self.flip_landmarks = bool(flip_landmarks)
        self.refine_landmarks = bool(refine_landmarks)
        self.resize = resize
        self.pyramid = pyramid
        self.params: Optional[Dict[str, Any]] = None  # the JAX networks' params (on the device)
        if networks is None:
            from mtcnn_jax.networks import JaxNetworks  # noqa: PLC0415  (JAX loads here)

            params = _load_weights(weights)
            missing = [s for s in ("pnet", "rnet", "onet") if s not in params]
            if missing:
                raise UserError(f"weights lack the {', '.join(missing)} params")
            networks = JaxNetworks(params)
            self.params = networks.params
        elif weights is not None:
            raise UserError("weights: exported networks hold their own weights; pass weights=None")
        self.networks: Networks = networks

    # -- public API ---------------------------------------------------------

    @overload
    def detect(self, images: inputs.ImageLike, keep: str = ...) -> Faces: ...

    @overload
    def detect(self, images: Union[List[Any], Tuple[Any, ...]], keep: str = ...) -> List[Faces]: ...

    def detect(self, images: Any, keep: str = "all") -> Union[Faces, List[Faces]]:
        """Detect faces in one image or in several images of any sizes.

        ``images``: one image (a uint8[H, W, 3] RGB array, grayscale [H, W] or RGBA
        [H, W, 4]; a file path, read by :func:`mtcnn_jax.images.load_image`; or a PIL
        image), or several (a list or tuple of those, or a uint8[B, H, W, 3] batch):
        :mod:`mtcnn_jax.inputs`. Returns :class:`Faces` for one image, a list of them
        for several (a 4-D batch gives a list). ``keep``: "all" (default), "largest"
        (only the face with the largest box) or "best" (only the most confident face):
        :func:`mtcnn_jax.inputs.select`.

        Images smaller than 12 pixels on a side give no faces. Several images are
        processed :attr:`group_size` at a time: their P-Net tiles, R-Net crops and
        O-Net crops each go through the networks together; the results are those
        of detecting each image alone.
        """
        items, single = inputs.as_batch(images)
        inputs.check_keep(keep)
        out: List[Faces] = []
        for s in range(0, len(items), self.group_size):
            group = [inputs.to_image(im, "image" if single else f"image {s + i}")
                     for i, im in enumerate(items[s : s + self.group_size])]
            out.extend(inputs.select(f, keep) for f in self._detect_group(group))
        return out[0] if single else out

    __call__ = detect

    #: Images of a list that go through the cascade together (bounds memory).
    group_size = 8

    # -- stages ---------------------------------------------------------------

    def proposals(self, image: np.ndarray) -> np.ndarray:
        """Stage 1, steps 1-5: P-Net over the pyramid → boxes float64[N, 5] (``AUTHORS`` x1..y2, score).

        Returned after per-scale NMS (IoU 0.5) and cross-scale NMS (0.7), the
        regression, squaring and truncation to integers, as the authors do.
        """
        return self._proposals([image])[0]

    def refine(self, image: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Stage 2, steps 6-7: R-Net on 24×24 crops of ``cand`` → boxes float64[M, 5] (``AUTHORS``, score).

        Keeps crops scoring above the R-Net threshold, NMS (IoU 0.7), then the
        regression and squaring.
        """
        return self._refine([image], [cand])[0]

    def output(self, image: np.ndarray, cand: np.ndarray) -> Faces:
        """Stage 3, steps 8-10: O-Net on 48×48 crops of ``cand`` → the final :class:`Faces` (``HALF_OPEN``)."""
        return self._output([image], [cand])[0]

    # -- the stages over a group of images ------------------------------------

    def _proposals(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        # 1. The image pyramid of every image; each level is made as P-Net's tiles need it.
        levels = pyramid.Levels(images, self.min_face_size, self.factor, self.pyramid, self.resize)
        # 2. P-Net on every scale (the JAX networks pack all levels into tiles) → windows above threshold 1.
        found: List[list] = [[] for _ in images]
        for (k, scale), (prob, reg) in zip(levels.owner, self.networks.pnet(levels.sizes, levels.make)):
            cand = _windows(prob, reg, scale, self.thresholds[0])
            # 3. NMS 0.5 within the scale.
            if len(cand):
                found[k].append(cand[bx.nms(cand[:, :4], cand[:, 4], self.nms_thresholds[0], "union")])
        out = []
        for f in found:
            if not f:
                out.append(np.zeros((0, 5)))
                continue
            cand = np.concatenate(f)
            # 4. NMS 0.7 across the scales.
            cand = cand[bx.nms(cand[:, :4], cand[:, 4], self.nms_thresholds[1], "union")]
            # 5. Calibrate (widths x2 - x1 here, as the authors' code after P-Net), square, truncate.
            boxes = np.fix(bx.square(bx.calibrate(cand[:, :4], cand[:, 5:9], inclusive=False)))
            out.append(np.concatenate([boxes, cand[:, 4:5]], axis=1))
        return out

    def _refine(self, images: Sequence[np.ndarray], cands: Sequence[np.ndarray]) -> List[np.ndarray]:
        # 6. R-Net on the 24×24 crops of every box (zero-padded outside the image).
        crops = [bx.convert(c[:, :4], AUTHORS, INCLUSIVE) for c in cands]
        nets = self.networks
        res = tiles.run_crops(nets.rnet, images, crops, 24, self.resize, nets.rnet_batch, fixed=nets.fixed_batches)
        if res is None:  # no boxes in any image
            return [np.zeros((0, 5)) for _ in cands]
        out = []
        for cand, (prob, reg) in zip(cands, _per_image(res, cands)):
            # 7. Keep scores above threshold 2; NMS 0.7; calibrate; square.
            ok = prob > self.thresholds[1]
            b, p, r = cand[ok, :4], prob[ok].astype(np.float64), reg[ok]
            keep = bx.nms(b, p, self.nms_thresholds[2], "union")
            boxes = bx.square(bx.calibrate(b[keep], r[keep], inclusive=True))
            out.append(np.concatenate([boxes, p[keep, None]], axis=1))
        return out

    def _output(self, images: Sequence[np.ndarray], cands: Sequence[np.ndarray]) -> List[Faces]:
        # 8. Truncate; O-Net on the 48×48 crops.
        fixed = [np.fix(c[:, :4]) for c in cands]
        crops = [bx.convert(b, AUTHORS, INCLUSIVE) for b in fixed]
        nets = self.networks
        res = tiles.run_crops(nets.onet, images, crops, 48, self.resize, nets.onet_batch, fixed=nets.fixed_batches)
        if res is None:  # no boxes in any image
            return [no_faces() for _ in cands]
        kept = []
        for b, (prob, reg, lms) in zip(fixed, _per_image(res, fixed)):
            # 9. Keep scores above threshold 3; landmarks relative to the box before its regression.
            ok = prob > self.thresholds[2]
            b, p, r, u = b[ok], prob[ok].astype(np.float64), reg[ok], lms[ok].astype(np.float64)
            # 10. Calibrate; NMS 0.7 "min".
            final = bx.calibrate(b, r, inclusive=True)
            keep = bx.nms(final, p, self.nms_thresholds[3], "min")
            kept.append((final[keep], p[keep], b[keep], u[keep]))
        # 11. With flip_landmarks: O-Net on the mirrored crops of the faces kept, and the landmarks
        # averaged with the mirrored ones (x → 1 − x, left and right swapped), as MTCNNv1's detect_face.m.
        # 12. With refine_landmarks: O-Net again (and mirrored) on the square around each face's
        # final box, truncated as in step 8, and the landmarks averaged with that pass's.
        # Every extra crop of 11 and 12 goes through O-Net in one run.
        seen = [k[2] for k in kept]
        again = [np.fix(bx.square(k[0])) for k in kept]
        passes = [(seen, True)] if self.flip_landmarks else []
        if self.refine_landmarks:
            passes += [(again, False)] + ([(again, True)] if self.flip_landmarks else [])
        extra = self._onet_passes(images, passes)
        points = []
        for i, (_, _, b, u) in enumerate(kept):
            if self.flip_landmarks:
                u = 0.5 * (u + tiles.mirror_landmarks(extra[0][i]))
            pts = _landmarks(b, u)
            if self.refine_landmarks:
                u2 = extra[-2][i] if self.flip_landmarks else extra[-1][i]
                if self.flip_landmarks:
                    u2 = 0.5 * (u2 + tiles.mirror_landmarks(extra[-1][i]))
                pts = 0.5 * (pts + _landmarks(again[i], u2))
            points.append(pts)
        return [Faces(bx.convert(f, AUTHORS, HALF_OPEN).astype(np.float32), p.astype(np.float32),
                      pts.astype(np.float32)) for (f, p, _, _), pts in zip(kept, points)]

    def _onet_passes(self, images: Sequence[np.ndarray], passes: Sequence[Tuple[Sequence[np.ndarray], bool]]
                     ) -> List[List[np.ndarray]]:
        """O-Net's landmark outputs for extra passes over the faces kept, in one run of crops.

        ``passes``: ``(boxes, mirrored)`` pairs, ``boxes`` one AUTHORS float[N, 4] per image (the
        same N in every pass), ``mirrored`` whether the crops are mirrored. Returns, per pass and
        image, float64[N, 10].
        """
        if not passes:
            return []
        nets = self.networks
        boxes = [np.concatenate([p[0][i] for p in passes]) for i in range(len(images))]
        flags = [np.concatenate([np.full(len(p[0][i]), p[1]) for p in passes]) for i in range(len(images))]
        res = tiles.run_crops(nets.onet, images, [bx.convert(b, AUTHORS, INCLUSIVE) for b in boxes], 48,
                              self.resize, nets.onet_batch, fixed=nets.fixed_batches, mirrored=flags)
        n = [len(b) for b in passes[0][0]]
        if res is None:
            return [[np.zeros((0, 10)) for _ in images] for _ in passes]
        per_image = [np.asarray(r[2], np.float64) for r in _per_image(res, boxes)]
        return [[per_image[i][j * n[i] : (j + 1) * n[i]] for i in range(len(images))] for j in range(len(passes))]

    def _detect_group(self, images: Sequence[np.ndarray]) -> List[Faces]:
        """The cascade over ``images`` together; images under 12 pixels on a side give no faces."""
        big = [i for i, im in enumerate(images) if min(im.shape[:2]) >= pyramid.CELL]
        out = [no_faces() for _ in images]
        if big:
            ims = [images[i] for i in big]
            for i, faces in zip(big, self._output(ims, self._refine(ims, self._proposals(ims)))):
                out[i] = faces
        return out


def _windows(prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net's cells scoring at least ``threshold`` → float64[N, 9]: box (AUTHORS), score, regression.

    Cell ``(row, col)`` of a level is the 12×12 window at level pixel
    ``(2 col, 2 row)``; as the authors' ``generateBoundingBox``, its box in the
    image is ``x1 = fix((2 col + 1) / scale)``, ``x2 = fix((2 col + 12) / scale)``
    (1-based, inclusive), and likewise in y.
    """
    rows, cols = np.nonzero(prob >= threshold)
    box = np.stack(
        [
            np.fix((2 * cols + 1) / scale),
            np.fix((2 * rows + 1) / scale),
            np.fix((2 * cols + pyramid.CELL) / scale),
            np.fix((2 * rows + pyramid.CELL) / scale),
        ],
        axis=1,
    )
    score = prob[rows, cols].astype(np.float64)
    return np.concatenate([box, score[:, None], reg[rows, cols]], axis=1)


def _landmarks(boxes: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """O-Net's landmarks in image pixels: float64[N, 5, 2] ``(x, y)``.

    boxes: the AUTHORS boxes O-Net saw (before their regression); fractions:
    float64[N, 10], ``x1..x5, y1..y5`` as fractions of the box's width and height.
    A point is the box's first pixel (0-based) plus size × fraction: the authors'
    ``x1 - 1 + w u`` with their 1-based ``x1`` and ``w = x2 - x1 + 1``.

    O-Net's mirror symmetry (its answer on a mirrored crop is close to ``1 - u``)
    suggests ``u`` is measured from the box's outer edge, i.e. ``x1 - 1/2 + w u``:
    that fits the LFW validation labels (mean error x -0.06, y +0.10 px instead of
    +0.44, +0.60 with the flip) but not the MTFL-AFLW labels, which sit about 1 px
    further left and up (NME 0.0707 instead of 0.0654); the half pixel depends on
    the annotation convention, so the authors' formula stays (``benchmarks/README.md``).
    """
    b = bx.convert(boxes, AUTHORS, INCLUSIVE)
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    return np.stack([b[:, 0:1] + w[:, None] * fractions[:, :5], b[:, 1:2] + h[:, None] * fractions[:, 5:]], axis=2)


def _per_image(outputs: Sequence[np.ndarray], boxes_per_image: Sequence[np.ndarray]) -> list:
    """A crop network's outputs for the boxes of all images, in order → one tuple of outputs per image."""
    ends = np.cumsum([len(b) for b in boxes_per_image])
    return [tuple(o[end - len(b) : end] for o in outputs) for b, end in zip(boxes_per_image, ends)]


@overload
def detect(images: inputs.ImageLike, keep: str = ..., **settings: Any) -> Faces: ...


@overload
def detect(images: Union[List[Any], Tuple[Any, ...]], keep: str = ..., **settings: Any) -> List[Faces]: ...


def detect(images: Any, keep: str = "all", **settings: Any) -> Union[Faces, List[Faces]]:
    """Functional form: ``MTCNN(**settings).detect(images, keep)`` (the detector is cached per settings)."""
    key = tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in settings.items() if k != "weights"))
    if "weights" in settings and settings["weights"] is not None:
        return MTCNN(**settings).detect(images, keep)
    det = _DETECTORS.get(key)
    if det is None:
        det = _DETECTORS[key] = MTCNN(**settings)
    return det.detect(images, keep)


_DETECTORS: Dict[tuple, MTCNN] = {}
