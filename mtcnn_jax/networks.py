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

The detector's steps take their networks as a backend (:class:`mtcnn_jax.detector.Networks`);
two live here, both JAX: :class:`JaxNetworks` (the functions above with a params
pytree: the default) and :class:`ExportedNetworks` (programs serialized by
:func:`mtcnn_jax.export.export_stablehlo`, run without the model code). So that the
second loads no Flax, :mod:`mtcnn_jax.models` and :mod:`mtcnn_jax.inference` are
imported when a network is first traced, not with this module.
"""

from __future__ import annotations

import importlib
import os
from typing import Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mtcnn_jax import tiles

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
    """``jax.jit`` of ``fn`` (or of :mod:`mtcnn_jax.inference`'s function named ``cpu_fn`` where
    :func:`cpu_formulation`) with :func:`xla_options`.

    Both are decided at the first call, once the backend is up.
    """
    compiled = {}

    def call(*args):
        f = compiled.get("f")
        if f is None:
            body = fn
            if cpu_fn is not None and cpu_formulation():
                body = getattr(importlib.import_module("mtcnn_jax.inference"), cpu_fn)
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
    from mtcnn_jax import models  # noqa: PLC0415  (Flax loads with the model code)

    out = models.PNet().apply({"params": params}, models.normalize(tiles_u8), valid_mask=mask)
    prob = jax.nn.softmax(out.logits, axis=-1)[..., 1:]
    return jnp.concatenate([prob, out.box], axis=-1)


def _pnet_level_fn(params, image_u8, valid_hw):
    """uint8[1, H, W, 3] (padded) → face probability float32[H', W'], regression float32[H', W', 4]."""
    from mtcnn_jax import models  # noqa: PLC0415  (Flax loads with the model code)

    out = models.PNet().apply({"params": params}, models.normalize(image_u8), valid_hw)
    return jax.nn.softmax(out.logits[0], axis=-1)[..., 1], out.box[0]


def _rnet_fn(params, crops_u8):
    """uint8[B, 24, 24, 3] → face probability float32[B], regression float32[B, 4]."""
    from mtcnn_jax import models  # noqa: PLC0415  (Flax loads with the model code)

    out = models.RNet().apply({"params": params}, models.normalize(crops_u8))
    return jax.nn.softmax(out.logits, axis=-1)[:, 1], out.box


def _onet_fn(params, crops_u8):
    """uint8[B, 48, 48, 3] → probability [B], regression [B, 4], landmarks [B, 10] (x1..x5, y1..y5)."""
    from mtcnn_jax import models  # noqa: PLC0415  (Flax loads with the model code)

    out = models.ONet().apply({"params": params}, models.normalize(crops_u8))
    return jax.nn.softmax(out.logits, axis=-1)[:, 1], out.box, out.landmarks


pnet_tiles = _jit(_pnet_tiles_fn, "pnet")
pnet_level = _jit(_pnet_level_fn)  # one whole level through the module: the reference the tiles are tested against
rnet = _jit(_rnet_fn, "rnet")
onet = _jit(_onet_fn, "onet")


def compiled_programs() -> int:
    """How many XLA programs the detector's networks hold compiled in this process."""
    return sum(f.cache_size() for f in (pnet_tiles, pnet_level, rnet, onet))


class JaxNetworks:
    """The detector's default networks: :data:`pnet_tiles`, :data:`rnet` and :data:`onet` with ``params``.

    ``params``: ``{"pnet", "rnet", "onet"}`` pytrees, put on the default device
    once. P-Net runs on packed tiles (:func:`mtcnn_jax.tiles.pnet_stream`), R-Net and
    O-Net on fixed batches of :data:`RNET_BATCH` and :data:`ONET_BATCH` crops.
    """

    fixed_batches = True
    rnet_batch = RNET_BATCH
    onet_batch = ONET_BATCH

    def __init__(self, params: Mapping[str, dict]) -> None:
        self.params = jax.device_put({s: params[s] for s in ("pnet", "rnet", "onet")})

    def pnet(self, sizes: Sequence[Tuple[int, int]], make_level) -> list:
        return tiles.pnet_stream(self.params["pnet"], sizes, make_level)

    def rnet(self, crops_u8: np.ndarray):
        return rnet(self.params["rnet"], crops_u8)

    def onet(self, crops_u8: np.ndarray):
        return onet(self.params["onet"], crops_u8)


class ExportedNetworks:
    """The networks as :func:`mtcnn_jax.export.export_stablehlo` serialized them (``jax.export``), with their params.

    ``programs``: ``{"pnet", "rnet", "onet"}`` → the bytes of a serialized
    :class:`jax.export.Exported` taking ``(params, inputs...)`` (P-Net: packed
    tiles and their mask; R-Net, O-Net: crops; the batch dimension symbolic);
    ``params``: their params pytrees. Each program is compiled, with
    :func:`xla_options`, for the shapes the cascade feeds it (``tile`` × ``tiles_per_call``
    tiles, ``rnet_batch`` and ``onet_batch`` crops), so any stream of images
    compiles three programs, as :class:`JaxNetworks`. Needs JAX only: no Flax, no model code.
    """

    fixed_batches = True

    def __init__(self, programs: Mapping[str, bytes], params: Mapping[str, dict], tile: int, tiles_per_call: int,
                 rnet_batch: int, onet_batch: int) -> None:
        from jax import export  # noqa: PLC0415

        options = xla_options() or None
        self._calls = {name: jax.jit(export.deserialize(bytearray(programs[name])).call, compiler_options=options)
                       for name in ("pnet", "rnet", "onet")}
        self.params = jax.device_put({s: params[s] for s in ("pnet", "rnet", "onet")})
        self.tile, self.tiles_per_call = int(tile), int(tiles_per_call)
        self.rnet_batch, self.onet_batch = int(rnet_batch), int(onet_batch)

    def pnet(self, sizes: Sequence[Tuple[int, int]], make_level) -> list:
        call, params = self._calls["pnet"], self.params["pnet"]
        return tiles.pnet_stream(None, sizes, make_level, self.tile, self.tiles_per_call,
                                 run=lambda tiles_u8, mask: call(params, tiles_u8, mask))

    def rnet(self, crops_u8: np.ndarray):
        return self._calls["rnet"](self.params["rnet"], crops_u8)

    def onet(self, crops_u8: np.ndarray):
        return self._calls["onet"](self.params["onet"], crops_u8)

    def compiled_programs(self) -> int:
        """How many XLA programs these networks hold compiled (three once every network has run)."""
        return sum(call._cache_size() for call in self._calls.values())
