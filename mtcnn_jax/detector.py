"""The MTCNN cascade: pyramid → P-Net → NMS → R-Net → NMS → O-Net → boxes, scores, landmarks.

Each step follows the authors' released code (``detect_face.m``); the networks run
jitted on the default JAX device, box arithmetic runs on the host in NumPy
(:mod:`mtcnn_jax.boxes`). Internally the cascade keeps boxes in the authors'
inclusive 1-based convention; what it returns is converted to half-open 0-based
pixels (see :class:`Faces`).

How it is shaped for speed (see ``benchmarks/speed_README.md`` for the numbers):
every pyramid level of every image in a group is cut into pieces of at most
128×128 pixels overlapping by 10 (P-Net's window minus its stride) and packed into
128×128 tiles, which P-Net runs 4 at a time, bit-identical to the whole level; R-Net
and O-Net run fixed batches of 32 and 16 crops cut straight into place. So any
stream of image sizes compiles the same three programs (:func:`compiled_programs`),
which JAX's persistent cache keeps across processes (:mod:`mtcnn_jax.compilation`),
and work is dispatched as soon as it is ready, so the host resizes and crops
while XLA computes. NMS compares only boxes that intersect (:func:`mtcnn_jax.boxes.nms`).
On the CPU the networks run as :mod:`mtcnn_jax.inference` formulates them (pooling
as slices, the 3-channel convolutions as matrix products; equal to the modules to
1e-6), and each pyramid level is resized from the level about twice its size
(:func:`mtcnn_jax.pyramid.sources`; ``pyramid="original"`` resizes each from the image).

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
from mtcnn_jax import compilation, inference, models, pretrained, pyramid
from mtcnn_jax.errors import UserError
from mtcnn_jax.pyramid import PYRAMID_MODES


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


#: XLA options for the networks. On CPU, jaxlib 0.10's default sends convolutions
#: and dots through YNNPACK fusions; for these small networks the plain Eigen path
#: is faster (measured on 2 loaded cores, same process, interleaved: P-Net tiles
#: 1.2-1.4x, R-Net and O-Net batches 1.0-1.8x, a whole 480×640 P-Net 1.8x). An
#: empty ``xla_cpu_experimental_ynn_fusion_type`` turns the fusions off for these
#: programs only, with no process-wide ``XLA_FLAGS`` to set before JAX starts; it
#: is a CPU option, so it is passed on CPU only. ``MTCNN_JAX_YNN=1`` keeps XLA's default.
def _xla_options() -> dict:
    if os.environ.get("MTCNN_JAX_YNN", "") == "1" or jax.default_backend() != "cpu":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type": ""}


def _tuned_networks() -> bool:
    """Whether the networks run as :mod:`mtcnn_jax.inference`'s CPU formulations (CPU backend, unless
    ``MTCNN_JAX_NETS=modules``) rather than as the ``flax.linen`` modules."""
    return jax.default_backend() == "cpu" and os.environ.get("MTCNN_JAX_NETS", "") != "modules"


def _jit(fn, tuned=None):
    """``jax.jit`` of ``fn`` (or of ``tuned``, where :func:`_tuned_networks`) with :func:`_xla_options`.

    Both are decided at the first call, once the backend is up.
    """
    compiled = {}

    def call(*args):
        f = compiled.get("f")
        if f is None:
            body = tuned if tuned is not None and _tuned_networks() else fn
            f = compiled["f"] = jax.jit(body, compiler_options=_xla_options() or None)
        return f(*args)

    call.cache_size = lambda: compiled["f"]._cache_size() if "f" in compiled else 0
    call.__wrapped__ = fn
    call.__doc__ = fn.__doc__
    return call


def _pnet_tiles_fn(params, tiles_u8, mask):
    """P-Net on a batch of packed tiles (see :func:`_pack_pieces`).

    tiles_u8: uint8[K, T, T, 3]; mask: bool[K, T - 2, T - 2], True where conv1's
    3×3 window lies inside one piece (:class:`mtcnn_jax.models.PNet`'s
    ``valid_mask``), so a piece's partial last pooling window sees only its own
    pixels, exactly as ``valid_hw`` on the whole level. Returns
    float32[K, T/2 - 5, T/2 - 5, 5]: face probability, then the regression
    ``dx1, dy1, dx2, dy2``.
    """
    out = models.PNet().apply({"params": params}, models.normalize(tiles_u8), valid_mask=mask)
    prob = jax.nn.softmax(out.logits, axis=-1)[..., 1:]
    return jnp.concatenate([prob, out.box], axis=-1)


def _pnet_level_fn(params, image_u8, valid_hw):
    """uint8[1, H, W, 3] (padded) → face probability float32[H', W'], regression float32[H', W', 4]."""
    out = models.PNet().apply({"params": params}, models.normalize(image_u8), valid_hw)
    return jax.nn.softmax(out.logits[0], axis=-1)[..., 1], out.box[0]


def _rnet_fn(params, crops_u8):
    """uint8[B, 24, 24, 3] → face probability float32[B], regression float32[B, 4]."""
    out = models.RNet().apply({"params": params}, models.normalize(crops_u8))
    return jax.nn.softmax(out.logits, axis=-1)[:, 1], out.box


def _onet_fn(params, crops_u8):
    """uint8[B, 48, 48, 3] → probability [B], regression [B, 4], landmarks [B, 10] (x1..x5, y1..y5)."""
    out = models.ONet().apply({"params": params}, models.normalize(crops_u8))
    return jax.nn.softmax(out.logits, axis=-1)[:, 1], out.box, out.landmarks


_pnet_tiles = _jit(_pnet_tiles_fn, inference.pnet)
_pnet_forward = _jit(_pnet_level_fn)  # one whole level, the module (reference path, used by tests)
_rnet_forward = _jit(_rnet_fn, inference.rnet)
_onet_forward = _jit(_onet_fn, inference.onet)

#: P-Net tile side (even) and tiles per call; R-Net and O-Net crops per call.
#: Small fixed shapes: one program per network whatever the image sizes, and
#: working sets that stay in the CPU's caches (per pixel or per crop, small batches
#: ran up to 2x faster than large ones on 2 cores).
PNET_TILE = 128
PNET_TILES_PER_CALL = 4
RNET_BATCH = 32
ONET_BATCH = 16


def compiled_programs() -> int:
    """How many XLA programs the detector's networks hold compiled in this process."""
    return sum(f.cache_size() for f in (_pnet_tiles, _pnet_forward, _rnet_forward, _onet_forward))


def _run_batched(fn, params, crops: np.ndarray, batch: int = 0):
    """Run a crop network on ``crops`` in calls of ``batch`` crops (the last padded); outputs cut back to N.

    All calls are dispatched before any result is read, so the host keeps
    preparing while the device computes.
    """
    n = len(crops)
    batch = batch or batch_bucket(n)
    pending = []
    for s in range(0, n, batch):
        chunk = crops[s : s + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk),) + crops.shape[1:], np.uint8)])
        pending.append(fn(params, chunk))
    if not pending:
        return None
    outs = [np.concatenate([np.asarray(p[i]) for p in pending])[:n] for i in range(len(pending[0]))]
    return outs


# ---------------------------------------------------------------------------
# P-Net on packed tiles. Each pyramid level is cut into pieces of at most T×T
# pixels that overlap by 10 pixels (P-Net's 12-pixel window minus its stride 2),
# starting at even offsets, so that every window of the level lies whole in
# exactly one piece and the pieces' outputs tile the level's output without
# overlap. Pieces of all levels of all images are packed into T×T tiles (shelf
# packing at even offsets, so pooling pairs never straddle two pieces) and run
# PNET_TILES_PER_CALL tiles at a time.


class _Piece(NamedTuple):
    level: int  # index into the list of levels
    y0: int  # top-left corner in the level (even)
    x0: int
    h: int  # size in pixels (≤ T)
    w: int


def _cut_level(index: int, hs: int, ws: int, tile: int) -> List[_Piece]:
    """Pieces of an ``hs × ws`` level, so that each output cell's window lies in exactly one piece.

    Windows start at even offsets up to ``2 * (h' - 1)``, which is ``size - 12``
    for an even size and ``size - 11`` for an odd one (the last, partial pooling
    window reaches one pixel past the level). A piece at offset ``o`` holds the
    windows starting at ``o .. o + tile - 12``; the next piece starts ``tile - 10`` later.
    """
    step = tile - 10
    oh, ow = pnet_output_size(hs, ws)
    return [
        _Piece(index, y, x, min(tile, hs - y), min(tile, ws - x))
        for y in range(0, 2 * (oh - 1) + 1, step)
        for x in range(0, 2 * (ow - 1) + 1, step)
    ]


def _pack_pieces(pieces: Sequence[_Piece], tile: int) -> List[Tuple[int, int, int]]:
    """Shelf packing, first fit by decreasing height: ``(tile index, y, x)`` for each piece, all even.

    Each piece goes on the first shelf (of any tile) tall enough with room left,
    else on a new shelf in the first tile with height left, else in a new tile.
    """
    even = lambda n: n + (n & 1)  # noqa: E731
    order = sorted(range(len(pieces)), key=lambda i: (-pieces[i].h, -pieces[i].w))
    place: list = [None] * len(pieces)
    shelves: List[list] = []  # [tile, y, height, x cursor]
    tile_top: List[int] = []  # height used in each tile
    for i in order:
        h, w = pieces[i].h, pieces[i].w
        for shelf in shelves:
            if shelf[2] >= h and shelf[3] + w <= tile:
                break
        else:
            t = next((k for k, top in enumerate(tile_top) if top + h <= tile), None)
            if t is None:
                t = len(tile_top)
                tile_top.append(0)
            shelf = [t, tile_top[t], min(even(h), tile - tile_top[t]), 0]
            tile_top[t] += even(h)
            shelves.append(shelf)
        place[i] = (shelf[0], shelf[1], shelf[3])
        shelf[3] += even(w)
    return place


def _pnet_levels(params, levels: Sequence[np.ndarray], tile: int = 0, per_call: int = 0):
    """P-Net over whole levels (uint8[h, w, 3] each) → per level (prob float32[h', w'], reg float32[h', w', 4]).

    Equal, up to float rounding, to running :class:`mtcnn_jax.models.PNet` on
    each level alone (tested against :func:`_pnet_forward`).
    """
    return _pnet_stream(params, [lv.shape[:2] for lv in levels], levels.__getitem__, tile, per_call)


def _pnet_stream(params, sizes: Sequence[Tuple[int, int]], make_level, tile: int = 0, per_call: int = 0):
    """:func:`_pnet_levels` for levels made on demand: ``make_level(i)`` → uint8[h_i, w_i, 3], called in order.

    The packing needs only the sizes, so tiles are dispatched as soon as the
    levels they hold exist: the device runs P-Net on the first levels while the
    host is still resizing the next ones.
    """
    tile = tile or PNET_TILE
    per_call = per_call or PNET_TILES_PER_CALL
    pieces = [p for i, (h, w) in enumerate(sizes) for p in _cut_level(i, h, w, tile)]
    place = _pack_pieces(pieces, tile)
    n_tiles = max((t for t, _, _ in place), default=-1) + 1
    need = [-1] * n_tiles  # the last level each tile holds a piece of
    held: List[list] = [[] for _ in range(n_tiles)]
    for p, (t, y, x) in zip(pieces, place):
        need[t] = max(need[t], p.level)
        held[t].append((p, y, x))
    order = sorted(range(n_tiles), key=lambda t: (need[t], t))
    levels: list = [None] * len(sizes)
    pending, done = [], 0

    def dispatch(ids):
        tiles = np.zeros((per_call, tile, tile, 3), np.uint8)
        mask = np.zeros((per_call, tile - 2, tile - 2), bool)
        for j, t in enumerate(ids):
            for p, y, x in held[t]:
                tiles[j, y : y + p.h, x : x + p.w] = levels[p.level][p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w]
                mask[j, y : y + p.h - 2, x : x + p.w - 2] = True
        pending.append((ids, _pnet_tiles(params, tiles, mask)))

    for i in range(len(sizes)):
        levels[i] = make_level(i)
        ready = done
        while ready < n_tiles and need[order[ready]] <= i:
            ready += 1
        while ready - done >= per_call or (i == len(sizes) - 1 and done < ready):
            dispatch(order[done : done + per_call])
            done += len(order[done : done + per_call])
    out: list = [None] * n_tiles
    for ids, result in pending:
        result = np.asarray(result)
        for j, t in enumerate(ids):
            out[t] = result[j]
    maps = []
    for h, w in sizes:
        oh, ow = pnet_output_size(h, w)
        maps.append(np.zeros((max(oh, 0), max(ow, 0), 5), np.float32))
    for p, (t, y, x) in zip(pieces, place):
        oh, ow = pnet_output_size(p.h, p.w)
        maps[p.level][p.y0 // 2 : p.y0 // 2 + oh, p.x0 // 2 : p.x0 // 2 + ow] = out[t][y // 2 : y // 2 + oh, x // 2 : x // 2 + ow]
    return [(m[..., 0], m[..., 1:]) for m in maps]


def _run_crops(fn, params, images, boxes_list, size: int, method: str, batch: int, mirrored: bool = False):
    """Crop network ``fn`` on the ``size × size`` crops of ``boxes_list[k]`` (0-based inclusive) in ``images[k]``.

    Crops are cut straight into fixed batches of ``batch`` (the last zero-padded),
    and each batch is dispatched as soon as it is full, so the device computes
    while the host cuts the next one. Returns the outputs for all boxes in order
    (cut back to their number), or ``None`` when there are none. ``mirrored``:
    also run ``fn`` on the horizontally mirrored crops; returns ``(plain, mirrored)``.
    """
    pending, mirror_pending = [], []
    buf, fill = None, 0
    total = 0
    for image, boxes in zip(images, boxes_list):
        at = 0
        while at < len(boxes):
            if buf is None:
                buf, fill = np.zeros((batch, size, size, 3), np.uint8), 0
            take = min(batch - fill, len(boxes) - at)
            buf[fill : fill + take] = bx.crop_and_resize(image, boxes[at : at + take], size, method)
            fill, at, total = fill + take, at + take, total + take
            if fill == batch:
                pending.append(fn(params, buf))
                if mirrored:
                    mirror_pending.append(fn(params, np.ascontiguousarray(buf[:, :, ::-1])))
                buf = None
    if buf is not None:
        pending.append(fn(params, buf))
        if mirrored:
            mirror_pending.append(fn(params, np.ascontiguousarray(buf[:, :, ::-1])))
    if not pending:
        return None

    def gather(results):
        return [np.concatenate([np.asarray(r[i]) for r in results])[:total] for i in range(len(results[0]))]

    return (gather(pending), gather(mirror_pending)) if mirrored else gather(pending)


# ---------------------------------------------------------------------------
# Input checks.


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
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


def _check_settings(min_face_size, factor, thresholds, resize, pyramid) -> Tuple[float, float, Tuple[float, float, float]]:
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
      compilation_cache: turn on JAX's persistent compilation cache (in
        ``$MTCNN_JAX_CACHE_DIR``, default ``~/.cache/mtcnn_jax/jax``; see
        :mod:`mtcnn_jax.compilation`) so that later processes skip compiling.
      pyramid: how the pyramid levels are made: "chained" (default: each level
        resized from the level about twice its size, :func:`mtcnn_jax.pyramid.sources`;
        about 4x fewer pixels read, the same AP on WIDER FACE) or "original"
        (each level from the image, as the authors do).

    Whatever the image sizes, the networks run in a fixed set of shapes (P-Net on
    packed 128×128 tiles, R-Net and O-Net on fixed crop batches): a process
    compiles at most three programs for detection (:func:`compiled_programs`).
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
        compilation_cache: bool = True,
        pyramid: str = "chained",
    ):
        if compilation_cache:
            compilation.enable_persistent_cache()
        self.min_face_size, self.factor, self.thresholds = _check_settings(
            min_face_size, factor, thresholds, resize, pyramid
        )
        self.nms_thresholds = tuple(float(t) for t in nms_thresholds)
        if len(self.nms_thresholds) != 4:
            raise UserError("nms_thresholds must be four numbers")
        self.flip_landmarks = bool(flip_landmarks)
        self.resize = resize
        self.pyramid = pyramid
        params = _load_weights(weights)
        missing = [s for s in pretrained.STAGES if s not in params]
        if missing:
            raise UserError(f"weights lack the {', '.join(missing)} params")
        self.params = jax.device_put({s: params[s] for s in pretrained.STAGES})

    # -- public API ---------------------------------------------------------

    def detect(self, images) -> Union[Faces, List[Faces]]:
        """Detect faces in one image (uint8[H, W, 3] RGB) or a list of images of any sizes.

        Returns :class:`Faces` for one image, a list of them for a list. Images
        smaller than 12 pixels on a side give no faces. A list is processed
        :attr:`group_size` images at a time: their P-Net tiles, R-Net crops and
        O-Net crops each go through the networks together; the results are those
        of detecting each image alone.
        """
        if isinstance(images, (list, tuple)):
            out: List[Faces] = []
            for s in range(0, len(images), self.group_size):
                group = [as_rgb_uint8(im, f"image {s + i}") for i, im in enumerate(images[s : s + self.group_size])]
                out.extend(self._detect_group(group))
            return out
        return self._detect_group([as_rgb_uint8(images)])[0]

    __call__ = detect

    #: Images of a list that go through the cascade together (bounds memory).
    group_size = 8

    # -- stages ---------------------------------------------------------------

    def proposals(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid → candidate boxes float64[N, 5] (inclusive 1-based x1..y2, score).

        Returned after per-scale NMS (IoU 0.5) and cross-scale NMS (0.7), the
        regression, squaring and truncation to integers, as the authors do.
        """
        return self._proposals([image])[0]

    def refine(self, image: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24×24 crops of ``cand`` → boxes float64[M, 5] (inclusive 1-based, score).

        Keeps crops scoring above the R-Net threshold, NMS (IoU 0.7), then the
        regression and squaring.
        """
        return self._refine([image], [cand])[0]

    def output(self, image: np.ndarray, cand: np.ndarray) -> Faces:
        """Stage 3: O-Net on 48×48 crops → final :class:`Faces` (converted to 0-based half-open)."""
        return self._output([image], [cand])[0]

    # -- the stages over a group of images ------------------------------------

    def _proposals(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        sizes, owner, source = [], [], []  # every pyramid level of every image: size, (image, scale), source
        for k, image in enumerate(images):
            h, w = image.shape[:2]
            scales = pyramid.scales(h, w, self.min_face_size, self.factor)
            first = len(sizes)
            source += [first + j if j >= 0 else -1 for j in pyramid.sources(scales, self.factor, self.pyramid)]
            for s in scales:
                sizes.append(pyramid.level_size(h, w, s))
                owner.append((k, s))
        needed = set(source) - {-1}
        made: dict = {}  # levels still to be resized from (each is the source of one later level)

        def make_level(i):
            src = images[owner[i][0]] if source[i] < 0 else made.pop(source[i])
            level = pyramid.resize(src, sizes[i], self.resize)
            if i in needed:
                made[i] = level
            return level

        found: List[list] = [[] for _ in images]
        for (k, s), (prob, reg) in zip(owner, _pnet_stream(self.params["pnet"], sizes, make_level)):
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            reg = reg[rows, cols]
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
            found[k].append(np.concatenate([cand[keep], score[keep, None], reg[keep]], axis=1))
        out = []
        for f in found:
            if not f:
                out.append(np.zeros((0, 5)))
                continue
            allc = np.concatenate(f)
            keep = bx.nms(allc[:, :4], allc[:, 4], self.nms_thresholds[1], "union")
            allc = allc[keep]
            boxes = np.fix(bx.square(bx.calibrate(allc[:, :4], allc[:, 5:9], inclusive=False)))
            out.append(np.concatenate([boxes, allc[:, 4:5]], axis=1))
        return out

    def _refine(self, images: Sequence[np.ndarray], cands: Sequence[np.ndarray]) -> List[np.ndarray]:
        res = _run_crops(_rnet_forward, self.params["rnet"], images, [c[:, :4] - 1 for c in cands], 24, self.resize, RNET_BATCH)
        out, at = [], 0
        for cand in cands:
            if len(cand) == 0:
                out.append(np.zeros((0, 5)))
                continue
            prob, reg = (r[at : at + len(cand)] for r in res)
            at += len(cand)
            ok = prob > self.thresholds[1]
            if not ok.any():
                out.append(np.zeros((0, 5)))
                continue
            b, p, r = cand[ok, :4], prob[ok].astype(np.float64), reg[ok]
            keep = bx.nms(b, p, self.nms_thresholds[2], "union")
            boxes = bx.square(bx.calibrate(b[keep], r[keep], inclusive=True))
            out.append(np.concatenate([boxes, p[keep, None]], axis=1))
        return out

    def _output(self, images: Sequence[np.ndarray], cands: Sequence[np.ndarray]) -> List[Faces]:
        fixed = [np.fix(c[:, :4]) for c in cands]
        boxes = [b - 1 for b in fixed]
        res = _run_crops(_onet_forward, self.params["onet"], images, boxes, 48, self.resize, ONET_BATCH, self.flip_landmarks)
        if res is not None and self.flip_landmarks:
            res, mirrored = res
            res[2] = 0.5 * (res[2] + models.mirror_landmarks(mirrored[2]))
        out, at = [], 0
        for b in fixed:
            if len(b) == 0:
                out.append(_empty_faces())
                continue
            prob, reg, lms = (r[at : at + len(b)] for r in res)
            at += len(b)
            ok = prob > self.thresholds[2]
            if not ok.any():
                out.append(_empty_faces())
                continue
            b, p, r, lms = b[ok], prob[ok].astype(np.float64), reg[ok], lms[ok].astype(np.float64)
            # Landmarks are relative to the crop before regression: x = x1 - 1 + w * u with
            # the 1-based x1 and w = x2 - x1 + 1, i.e. 0-based first pixel + w * u.
            w = b[:, 2] - b[:, 0] + 1
            h = b[:, 3] - b[:, 1] + 1
            pts = np.stack([b[:, 0:1] - 1 + w[:, None] * lms[:, :5], b[:, 1:2] - 1 + h[:, None] * lms[:, 5:]], axis=2)
            final = bx.calibrate(b, r, inclusive=True)
            keep = bx.nms(final, p, self.nms_thresholds[3], "min")
            out.append(
                Faces(
                    bx.to_half_open(final[keep]).astype(np.float32),
                    p[keep].astype(np.float32),
                    pts[keep].astype(np.float32),
                )
            )
        return out

    def _detect_group(self, images: Sequence[np.ndarray]) -> List[Faces]:
        """The cascade over ``images`` together; images under 12 pixels on a side give no faces."""
        big = [i for i, im in enumerate(images) if min(im.shape[:2]) >= pyramid.CELL]
        out = [_empty_faces() for _ in images]
        if big:
            ims = [images[i] for i in big]
            for i, faces in zip(big, self._output(ims, self._refine(ims, self._proposals(ims)))):
                out[i] = faces
        return out


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
