"""Export the detector's networks for deployment: StableHLO (``jax.export``) or ONNX (through jax2onnx).

``mtcnn-jax export --format stablehlo|onnx --out DIR`` calls :func:`export`; the folder
is read back by :func:`mtcnn_jax.deploy.load_model` (its manifest is described there).
Only the networks are exported: the cascade around them (pyramid, NMS, box regression,
crops, landmarks) is :mod:`mtcnn_jax.detector`'s NumPy and OpenCV code, which runs with
either kind.

* **StableHLO** (:func:`stablehlo_programs`): each network is the function the detector
  runs, serialized by ``jax.export`` with its params as the first argument (stored in
  ``params.npz``), so the programs compute what ``MTCNN()`` computes, bit for bit. On the
  CPU that is :mod:`mtcnn_jax.inference`'s formulation, elsewhere the ``flax.linen``
  modules, as :mod:`mtcnn_jax.networks` decides; both are lowered, one per platform
  (``jax.lax.platform_dependent``), for CPU, CUDA, ROCm and TPU
  (:data:`STABLEHLO_PLATFORMS`). The batch dimension is symbolic (as fast: each program is
  compiled for the shapes the cascade feeds it, P-Net's packed 128×128 tiles four at a
  time, R-Net's 32 crops, O-Net's 16).
* **ONNX** (:func:`onnx_models`, needs the ``onnx`` extra): the networks written for
  ONNX in plain ops (:func:`onnx_pnet`, :func:`onnx_rnet`, :func:`onnx_onet`, equal to
  the modules to 1e-6: ``tests/test_onnx.py``), converted by jax2onnx with a dynamic batch,
  and P-Net also a dynamic height and width (it runs on whole pyramid levels), checked
  with ``onnx.checker``; their weights are the models' initializers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mtcnn_jax import __version__, files, inference, models, networks, tiles
from mtcnn_jax.deploy import (FORMAT, FORMAT_VERSION, MANIFEST, PARAMS_FILE, STAGES, file_digest, params_to_npz,
                              weights_digest)
from mtcnn_jax.errors import UserError

#: The kinds :func:`export` writes.
FORMATS = ("stablehlo", "onnx")
#: Platforms the StableHLO programs are lowered for.
STABLEHLO_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
#: ONNX opset of the models: 17 runs on ONNX Runtime 1.14 and later.
ONNX_OPSET = 17

PathLike = Union[str, "os.PathLike[str]"]


def output_files(fmt: str) -> List[str]:
    """The files :func:`export` writes for ``fmt`` (the manifest last)."""
    if fmt not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "stablehlo":
        return [f"{s}.stablehlo" for s in STAGES] + [PARAMS_FILE, MANIFEST]
    return [f"{s}.onnx" for s in STAGES] + [MANIFEST]


def export(out: PathLike, fmt: str, weights: Any = None, overwrite: bool = False) -> Dict[str, Any]:
    """Write the networks with ``weights`` (as ``MTCNN(weights=...)`` takes them) to the folder ``out``.

    ``fmt``: "stablehlo" or "onnx". Everything is converted in memory first, then each
    file is written atomically and ``manifest.json`` last, so a folder with a manifest is
    complete. Files that exist are refused (one-line :class:`UserError`) unless
    ``overwrite``. Returns the manifest.
    """
    from mtcnn_jax.detector import _load_weights  # noqa: PLC0415

    names = output_files(fmt)
    out = Path(out)
    taken = [n for n in names if os.path.lexists(out / n)]
    if taken and not overwrite:
        raise UserError(f"{out} already holds {', '.join(taken)}: choose another folder, or pass --overwrite")
    loaded = _load_weights(weights)
    missing = [s for s in STAGES if s not in loaded]
    if missing:
        raise UserError(f"weights lack the {', '.join(missing)} params")
    params = {s: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), loaded[s]) for s in STAGES}
    source = "authors" if weights is None else "params dict" if isinstance(weights, dict) else os.fspath(weights)
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": fmt,
        "package": {"name": "mtcnn-jax", "version": __version__},
        "weights": {"source": source, "sha256": weights_digest(params)},
    }
    if fmt == "stablehlo":
        blobs, entries = _stablehlo_files(params)
        manifest.update(
            platforms=list(STABLEHLO_PLATFORMS),
            networks=entries,
            params={"file": PARAMS_FILE},
            cascade={"pnet": "packed tiles", "pnet_tile": tiles.PNET_TILE,
                     "pnet_tiles_per_call": tiles.PNET_TILES_PER_CALL,
                     "rnet_batch": networks.RNET_BATCH, "onet_batch": networks.ONET_BATCH},
            created_with={"jax": jax.__version__, "jaxlib": _version("jaxlib")},
        )
        blobs[PARAMS_FILE] = params_to_npz(params)
    else:
        blobs, entries = _onnx_files(params, manifest["weights"]["sha256"])
        manifest.update(
            opset=ONNX_OPSET,
            networks=entries,
            # crops per call as the JAX networks take them: also ONNX Runtime's fastest per crop on the CPU
            cascade={"pnet": "whole levels", "rnet_batch": networks.RNET_BATCH, "onet_batch": networks.ONET_BATCH},
            created_with={"jax": jax.__version__, "jax2onnx": _version("jax2onnx"), "onnx": _version("onnx")},
        )
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out / MANIFEST)  # the folder is incomplete until the new manifest is written
    for name, data in blobs.items():
        files.write_atomically(out / name, data)
    for entry in [*manifest["networks"].values(), manifest.get("params")]:
        if entry is not None:
            entry["sha256"] = file_digest(out / entry["file"])
    files.write_json(out / MANIFEST, manifest)
    return manifest


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _aval_entry(name: str, aval: Any) -> Dict[str, Any]:
    return {"name": name, "shape": [d if isinstance(d, int) else str(d) for d in aval.shape], "dtype": str(aval.dtype)}


# --------------------------------------------------------------------------- StableHLO


def stablehlo_programs(params: Mapping[str, Any], platforms: Sequence[str] = STABLEHLO_PLATFORMS) -> Dict[str, Any]:
    """``{"pnet", "rnet", "onet"}`` → each network's :class:`jax.export.Exported`, taking ``(params, inputs...)``.

    P-Net: ``(params, tiles uint8[batch, T, T, 3], mask bool[batch, T - 2, T - 2])`` →
    float32[batch, T/2 - 5, T/2 - 5, 5] (:func:`mtcnn_jax.networks.pnet_tiles`, ``T`` =
    :data:`mtcnn_jax.tiles.PNET_TILE`); R-Net: ``(params, uint8[batch, 24, 24, 3])`` → prob,
    box; O-Net: ``(params, uint8[batch, 48, 48, 3])`` → prob, box, landmarks. The CPU runs
    :mod:`mtcnn_jax.inference`'s formulation, other platforms the modules.
    """
    from jax import export as jexport  # noqa: PLC0415

    (batch,) = jexport.symbolic_shape("batch")
    t = tiles.PNET_TILE
    u8 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.uint8)  # noqa: E731
    inputs = {
        "pnet": [u8(batch, t, t, 3), jax.ShapeDtypeStruct((batch, t - 2, t - 2), jnp.bool_)],
        "rnet": [u8(batch, 24, 24, 3)],
        "onet": [u8(batch, 48, 48, 3)],
    }
    bodies = {
        "pnet": (inference.pnet, networks._pnet_tiles_fn),
        "rnet": (inference.rnet, networks._rnet_fn),
        "onet": (inference.onet, networks._onet_fn),
    }
    out = {}
    limit = getattr(jax.config, "jax_traceback_in_locations_limit")
    jax.config.update("jax_traceback_in_locations_limit", 0)  # no source paths in the programs: same bytes each time
    try:
        for stage in STAGES:
            cpu_fn, default_fn = bodies[stage]

            def body(p, *x, cpu_fn=cpu_fn, default_fn=default_fn):
                return jax.lax.platform_dependent(p, *x, cpu=cpu_fn, default=default_fn)

            body.__name__ = body.__qualname__ = stage
            spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.float32), params[stage])
            out[stage] = jexport.export(jax.jit(body), platforms=tuple(platforms))(spec, *inputs[stage])
    finally:
        jax.config.update("jax_traceback_in_locations_limit", limit)
    return out


def _stablehlo_files(params: Mapping[str, Any]) -> Tuple[Dict[str, bytes], Dict[str, Any]]:
    names = {"pnet": ["tiles", "mask"], "rnet": ["crops"], "onet": ["crops"]}
    outs = {"pnet": ["prob_and_box"], "rnet": ["prob", "box"], "onet": ["prob", "box", "landmarks"]}
    blobs, entries = {}, {}
    for stage, exported in stablehlo_programs(params).items():
        name = f"{stage}.stablehlo"
        blobs[name] = bytes(exported.serialize())
        entries[stage] = {
            "file": name,
            "inputs": [{"name": "params", "file": PARAMS_FILE, "prefix": f"{stage}/"}]
            + [_aval_entry(n, a) for n, a in zip(names[stage], exported.in_avals[-len(names[stage]):])],
            "outputs": [_aval_entry(n, a) for n, a in zip(outs[stage], exported.out_avals)],
        }
    return blobs, entries


# --------------------------------------------------------------------------- ONNX


def _prelu(params: Mapping[str, Any], x: jax.Array) -> jax.Array:
    """PReLU as ``max(x, 0) + alpha min(x, 0)``: the modules' ``where(x >= 0, x, alpha x)`` bit for bit,
    and elementwise kernels ONNX Runtime runs fast (its Where, with broadcasting, took half the time)."""
    return jnp.maximum(x, 0.0) + params["alpha"] * jnp.minimum(x, 0.0)


def _max_pool(x: jax.Array, window: int, stride: int, pads: Sequence[int]) -> jax.Array:
    """Max pooling of NHWC ``x`` with ``pads`` (bottom, right) cells of -inf: Caffe's ceil rounding.

    Padding, then ``flax.linen.max_pool`` with VALID windows (jax2onnx converts that to an
    ONNX MaxPool; its converter for ``lax.reduce_window`` makes a MaxPool of four spatial
    dimensions, which ONNX Runtime cannot run).
    """
    import flax.linen as nn  # noqa: PLC0415  (jax2onnx patches flax.linen.max_pool while converting)

    if any(pads):
        x = jnp.pad(x, ((0, 0), (0, pads[0]), (0, pads[1]), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, window_shape=(window, window), strides=(stride, stride), padding="VALID")


def _ceil_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    pads = [models.ceil_pool_geometry(int(n), window, stride)[1] for n in x.shape[1:3]]
    return _max_pool(x, window, stride, pads)


def onnx_pnet(params: Mapping[str, Any], images_u8: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """P-Net on whole images uint8[N, H, W, 3] of any size ≥ 12 → prob float32[N, H', W'], box [N, H', W', 4].

    As :class:`mtcnn_jax.models.PNet` without a mask, for symbolic ``H`` and ``W``: the
    2×2/2 ceil pooling of conv1's ``n = H - 2`` rows is one row of -inf below them and
    VALID windows, ``floor((n + 1 - 2) / 2) + 1 = ceil(n / 2)`` of them whatever the
    parity of ``n`` (for even ``n`` the -inf row is in no window). The probability is
    ``sigmoid(l1 - l0)``, as :func:`mtcnn_jax.inference.pnet`.
    """
    p = params
    x = models.normalize(images_u8)
    x = _prelu(p["prelu1"], inference.conv(p["conv1"], x))
    x = _max_pool(x, 2, 2, (1, 1))
    x = _prelu(p["prelu2"], inference.conv(p["conv2"], x))
    x = _prelu(p["prelu3"], inference.conv(p["conv3"], x))
    heads = {"kernel": jnp.concatenate([p["face"]["kernel"], p["box"]["kernel"]], axis=-1),
             "bias": jnp.concatenate([p["face"]["bias"], p["box"]["bias"]])}
    out = inference.conv(heads, x)  # [N, H', W', 6]: logits (2), box (4)
    return jax.nn.sigmoid(out[..., 1] - out[..., 0]), out[..., 2:]


def onnx_rnet(params: Mapping[str, Any], crops_u8: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """R-Net on uint8[N, 24, 24, 3] → prob float32[N], box float32[N, 4] (:class:`mtcnn_jax.models.RNet`)."""
    p = params
    x = models.normalize(crops_u8)
    x = _ceil_pool(_prelu(p["prelu1"], inference.conv(p["conv1"], x)), 3, 2)
    x = _ceil_pool(_prelu(p["prelu2"], inference.conv(p["conv2"], x)), 3, 2)
    x = _prelu(p["prelu3"], inference.conv(p["conv3"], x))
    x = _prelu(p["prelu4"], inference.dense(p["dense4"], models._flatten_whc(x)))
    return jax.nn.softmax(inference.dense(p["face"], x), axis=-1)[:, 1], inference.dense(p["box"], x)


def onnx_onet(params: Mapping[str, Any], crops_u8: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """O-Net on uint8[N, 48, 48, 3] → prob [N], box [N, 4], landmarks [N, 10] (:class:`mtcnn_jax.models.ONet`)."""
    p = params
    x = models.normalize(crops_u8)
    x = _ceil_pool(_prelu(p["prelu1"], inference.conv(p["conv1"], x)), 3, 2)
    x = _ceil_pool(_prelu(p["prelu2"], inference.conv(p["conv2"], x)), 3, 2)
    x = _ceil_pool(_prelu(p["prelu3"], inference.conv(p["conv3"], x)), 2, 2)
    x = _prelu(p["prelu4"], inference.conv(p["conv4"], x))
    x = _prelu(p["prelu5"], inference.dense(p["dense5"], models._flatten_whc(x)))
    prob = jax.nn.softmax(inference.dense(p["face"], x), axis=-1)[:, 1]
    return prob, inference.dense(p["box"], x), inference.dense(p["landmarks"], x)


#: Per network: the formulation, its input shape (symbolic names) and its output names.
ONNX_NETWORKS = {
    "pnet": (onnx_pnet, "batch, height, width, 3", ("prob", "box")),
    "rnet": (onnx_rnet, "batch, 24, 24, 3", ("prob", "box")),
    "onet": (onnx_onet, "batch, 48, 48, 3", ("prob", "box", "landmarks")),
}


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """jax2onnx logs a warning for each optional plugin whose package is absent, onnx_ir one per untyped shape."""
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_models(params: Mapping[str, Any], opset: int = ONNX_OPSET, weights_sha256: str = "") -> Dict[str, Any]:
    """``{"pnet", "rnet", "onet"}`` → an ``onnx.ModelProto`` of each network, checked by ``onnx.checker``.

    Input ``images`` uint8 NHWC with a dynamic ``batch`` (P-Net: also ``height``,
    ``width``); outputs as :mod:`mtcnn_jax.onnx_runtime` lists them. Raises a one-line
    :class:`UserError` when jax2onnx or onnx is not installed (the ``onnx`` extra).
    """
    try:
        import onnx  # noqa: PLC0415
        from jax2onnx import to_onnx  # noqa: PLC0415
    except ModuleNotFoundError as err:
        raise UserError(f"ONNX export needs the onnx extra: pip install 'mtcnn-jax[onnx]' (missing: {err.name})") \
            from None
    from jax import export as jexport  # noqa: PLC0415

    out = {}
    for stage, (fn, shape, outputs) in ONNX_NETWORKS.items():
        spec = jax.ShapeDtypeStruct(jexport.symbolic_shape(shape), jnp.uint8)
        stage_params = jax.tree_util.tree_map(jnp.asarray, params[stage])
        with _quiet_converter():
            model = to_onnx(functools.partial(fn, stage_params), [spec], model_name=f"mtcnn_{stage}", opset=opset,
                            input_names=["images"], output_names=list(outputs))
        if stage == "pnet":  # name P-Net's output size (the converter labels it with its own arithmetic)
            for value in model.graph.output:
                dims = value.type.tensor_type.shape.dim
                dims[1].dim_param, dims[2].dim_param = "out_height", "out_width"
        model.doc_string = (f"MTCNN {stage} (Zhang et al. 2016), exported by mtcnn-jax {__version__}: "
                            "input uint8 RGB pixels NHWC; see mtcnn_jax.onnx_runtime")
        onnx.helper.set_model_props(model, {"mtcnn_jax_version": __version__, "network": stage,
                                            "weights_sha256": weights_sha256})
        onnx.checker.check_model(model, full_check=True)
        out[stage] = model
    return out


def _onnx_files(params: Mapping[str, Any], weights_sha256: str) -> Tuple[Dict[str, bytes], Dict[str, Any]]:
    import onnx  # noqa: PLC0415

    def entry(value: Any) -> Dict[str, Any]:
        t = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return {"name": value.name, "shape": shape, "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))}

    blobs, entries = {}, {}
    for stage, model in onnx_models(params, weights_sha256=weights_sha256).items():
        name = f"{stage}.onnx"
        blobs[name] = model.SerializeToString()
        entries[stage] = {"file": name, "inputs": [entry(v) for v in model.graph.input],
                          "outputs": [entry(v) for v in model.graph.output]}
    return blobs, entries
