"""The compiled networks the detector calls: P-Net on tiles, R-Net and O-Net on fixed crop batches.

Which formulation of the networks runs is decided here, and only here, at the
first call (once JAX's backend is up):

* **CPU backend: :mod:`mtcnn_jax.inference`'s formulation**, because XLA's CPU
  convolutions and pooling are slow for these small networks, and the same
  functions written as strided slices and matrix products run about 1.5x
  faster (equal to the modules to 1e-6).
* **GPU / TPU, or ``MTCNN_JAX_NETS=modules``: the ``flax.linen`` modules of
  :mod:`mtcnn_jax.models`**, because there the vendor libraries implement the
  convolutions well; the variable makes the CPU run them too (for comparison).
* **YNNPACK fusions off on the CPU, unless ``MTCNN_JAX_YNN=1``**, because
  XLA's default CPU path through YNNPACK is slower for these small convolutions
  than its plain Eigen path (up to 1.8x). The option is passed per program
  (``compiler_options``), so no process-wide ``XLA_FLAGS`` has to be set before
  JAX starts.

The measurements behind these choices are in ``benchmarks/speed_README.md``.

Every network runs in a fixed shape (:data:`mtcnn_jax.tiles.PNET_TILE` tiles,
:data:`RNET_BATCH` and :data:`ONET_BATCH` crops), so a stream of images of any
sizes compiles at most three programs (:func:`compiled_programs`), which JAX's
persistent cache keeps across processes (:mod:`mtcnn_jax.compilation`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from mtcnn_jax import boxes as bx
from mtcnn_jax import inference, models

#: R-Net and O-Net crops per call: small fixed batches keep the working set in
#: the CPU's caches and compile one program per network.
RNET_BATCH = 32
ONET_BATCH = 16


def cpu_formulation() -> bool:
    """Whether the networks run as :mod:`mtcnn_jax.inference` formulates them (see the module docstring)."""
    return jax.default_backend() == "cpu" and os.environ.get("MTCNN_JAX_NETS", "") != "modules"


def xla_options() -> dict:
    """XLA compiler options for the networks: YNNPACK fusions off on the CPU (see the module docstring)."""
    if os.environ.get("MTCNN_JAX_YNN", "") == "1" or jax.default_backend() != "cpu":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type": ""}


def _jit(fn, cpu_fn=None):
    """``jax.jit`` of ``fn`` (or of ``cpu_fn`` where :func:`cpu_formulation`) with :func:`xla_options`.

    Both are decided at the first call, once the backend is up.
    """
    compiled = {}

    def call(*args):
        f = compiled.get("f")
        if f is None:
            body = cpu_fn if cpu_fn is not None and cpu_formulation() else fn
            f = compiled["f"] = jax.jit(body, compiler_options=xla_options() or None)
        return f(*args)

    call.cache_size = lambda: compiled["f"]._cache_size() if "f" in compiled else 0
    call.__wrapped__ = fn
    call.__doc__ = fn.__doc__
    return call


def _pnet_tiles_fn(params, tiles_u8, mask):
    """P-Net on a batch of packed tiles (see :func:`mtcnn_jax.tiles.pack_pieces`).

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


pnet_tiles = _jit(_pnet_tiles_fn, inference.pnet)
pnet_level = _jit(_pnet_level_fn)  # one whole level through the module: the reference the tiles are tested against
rnet = _jit(_rnet_fn, inference.rnet)
onet = _jit(_onet_fn, inference.onet)


def compiled_programs() -> int:
    """How many XLA programs the detector's networks hold compiled in this process."""
    return sum(f.cache_size() for f in (pnet_tiles, pnet_level, rnet, onet))


def run_crops(fn, params, images, boxes_list, size: int, method: str, batch: int, mirrored: bool = False):
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
