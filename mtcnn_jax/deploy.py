"""Run an exported detector: :func:`load_model` reads a folder written by ``mtcnn-jax export``.

The folder holds the three networks and ``manifest.json`` (:func:`read_manifest`), written
last by :mod:`mtcnn_jax.export`::

    {"format": "mtcnn-jax-export", "format_version": 1, "kind": "stablehlo" | "onnx",
     "package": {"name": "mtcnn-jax", "version": "0.1.0"},
     "weights": {"source": "authors", "sha256": "…"},          # weights_digest of the params
     "networks": {"pnet": {"file": "pnet.onnx", "sha256": "…",
                           "inputs": [{"name": "images", "shape": ["batch", "height", "width", 3],
                                       "dtype": "uint8"}],
                           "outputs": [{"name": "prob", ...}, {"name": "box", ...}]},
                  "rnet": {...}, "onet": {...}},
     "cascade": {...},              # the shapes the detector feeds them (tiles, crop batches)
     "created_with": {"jax": "…", ...}, ...}

``kind`` says which runtime runs the networks; the cascade around them (pyramid, NMS,
box regression, crops, landmarks: :mod:`mtcnn_jax.detector`) is the same NumPy and
OpenCV code as ``MTCNN()``'s:

* ``"stablehlo"``: each network serialized by ``jax.export`` (params as an argument,
  stored in ``params.npz``; batch dimensions symbolic), run by
  :class:`mtcnn_jax.networks.ExportedNetworks` — JAX only: no Flax, Optax, Orbax or TFDS
  is imported. The detections are those of ``MTCNN()``, bit for bit.
* ``"onnx"``: three ONNX models (dynamic batch; P-Net also dynamic height and width),
  run by :class:`mtcnn_jax.onnx_runtime.OnnxNetworks` on ONNX Runtime with NumPy and
  OpenCV — JAX is not imported. P-Net runs on whole pyramid levels; the detections
  equal ``MTCNN()``'s up to float rounding (boxes within 1e-3 px).

A folder whose manifest is missing, not JSON, of another format version or whose files
do not match their recorded SHA-256 is refused with one :class:`~mtcnn_jax.errors.UserError`
line. This module imports neither JAX nor ONNX Runtime: the runtime of the folder's kind loads
in :func:`load_networks`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Sequence, Union

import numpy as np

from mtcnn_jax.errors import UserError
from mtcnn_jax.files import sha256_file

if TYPE_CHECKING:
    from mtcnn_jax.detector import MTCNN, Networks

#: The manifest's file name, its ``format`` and the ``format_version`` this package reads and writes.
MANIFEST = "manifest.json"
FORMAT = "mtcnn-jax-export"
FORMAT_VERSION = 1
#: The runtimes an exported folder can be made for.
KINDS = ("stablehlo", "onnx")
STAGES = ("pnet", "rnet", "onet")
#: The params of a StableHLO export, beside its programs.
PARAMS_FILE = "params.npz"

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- digests and params files


#: SHA-256 of a file's bytes, hex (the manifest's ``sha256`` of each file).
file_digest = sha256_file


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> Dict[str, np.ndarray]:
    """A nested params mapping → ``{"pnet/conv1/kernel": array, ...}`` (float32 NumPy arrays)."""
    flat: Dict[str, np.ndarray] = {}
    for key in sorted(params):
        value = params[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name + "/"))
        else:
            flat[name] = np.asarray(value, np.float32)
    return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """The inverse of :func:`flatten_params`: nested dicts of arrays."""
    out: Dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *path, leaf = name.split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def weights_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 of a params tree: every array's name, dtype, shape and float32 bytes, in name order.

    The same weights give the same digest whatever file they came from (msgpack,
    ``params.npz``, a training run); the manifest records it as ``weights.sha256``.
    """
    h = hashlib.sha256()
    for name, value in sorted(flatten_params(params).items()):
        value = np.ascontiguousarray(value, "<f4")
        h.update(f"{name}:{value.dtype.str}:{list(value.shape)}\n".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def params_to_npz(params: Mapping[str, Any]) -> bytes:
    """The bytes of an ``.npz`` holding :func:`flatten_params` of ``params`` (read without pickle)."""
    buf = io.BytesIO()
    # (NumPy's stubs take the arrays' names for its allow_pickle keyword)
    np.savez(buf, **flatten_params(params))  # type: ignore[arg-type]
    return buf.getvalue()


def params_from_npz(path: PathLike) -> Dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        return unflatten_params({name: np.asarray(data[name], np.float32) for name in data.files})


# --------------------------------------------------------------------------- the manifest


def read_manifest(folder: PathLike, check_files: bool = True) -> Dict[str, Any]:
    """The manifest of an exported ``folder``, checked; raises a one-line :class:`UserError` otherwise.

    Checks the format and its version, the kind, the three networks' entries and,
    with ``check_files``, that every file it names exists and has its recorded SHA-256.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (expected a folder written by mtcnn-jax export)")
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder}: no {MANIFEST}: not a folder written by mtcnn-jax export")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: not a valid manifest ({reason})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not an mtcnn-jax export manifest (expected \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: export format version {version!r}; this mtcnn-jax reads version {FORMAT_VERSION}: "
                        "export the model again with this version (mtcnn-jax export)")
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise UserError(f"{path}: unknown model kind {kind!r} (expected one of {', '.join(KINDS)})")
    nets, cascade, weights = manifest.get("networks"), manifest.get("cascade"), manifest.get("weights")
    sizes = ("rnet_batch", "onet_batch") + (("pnet_tile", "pnet_tiles_per_call") if kind == "stablehlo" else ())
    if not isinstance(nets, dict) or not all(isinstance(nets.get(s), dict) for s in STAGES) or \
            not isinstance(cascade, dict) or not all(type(cascade.get(k)) is int and cascade[k] > 0 for k in sizes) or \
            not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str) or \
            (kind == "stablehlo" and not isinstance(manifest.get("platforms"), list)):
        raise UserError(f"{path}: incomplete manifest (expected \"networks\" with pnet, rnet and onet, \"weights\" "
                        f"with its sha256, \"cascade\" with {', '.join(sizes)}"
                        + (", \"platforms\")" if kind == "stablehlo" else ")"))
    entries = [nets[s] for s in STAGES] + ([manifest.get("params")] if kind == "stablehlo" else [])
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or \
                not isinstance(entry.get("sha256"), str):
            raise UserError(f"{path}: incomplete manifest (a file entry lacks \"file\" or \"sha256\")")
        name = entry["file"]
        if Path(name).name != name or name in ("", ".", ".."):
            raise UserError(f"{path}: file {name!r} is not a plain name inside the folder")
        if check_files:
            target = folder / name
            if not target.is_file():
                raise UserError(f"{target}: missing (the manifest names it)")
            if file_digest(target) != entry["sha256"]:
                raise UserError(f"{target}: does not match the manifest's SHA-256 (damaged or replaced): "
                                "export the model again")
    return manifest


# --------------------------------------------------------------------------- loading


def load_networks(folder: PathLike, manifest: Union[Mapping[str, Any], None] = None,
                  compilation_cache: bool = True, providers: Union[Sequence[str], None] = None) -> "Networks":
    """The networks of an exported folder, as the detector's backend (:class:`mtcnn_jax.detector.Networks`).

    ``"stablehlo"``: :class:`mtcnn_jax.networks.ExportedNetworks` (imports JAX; with
    ``compilation_cache``, JAX's persistent cache as ``MTCNN`` turns it on);
    ``"onnx"``: :class:`mtcnn_jax.onnx_runtime.OnnxNetworks` (imports ONNX Runtime;
    ``providers``: its execution providers, default all available).
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    nets, cascade = manifest["networks"], manifest["cascade"]
    if manifest["kind"] == "onnx":
        from mtcnn_jax.onnx_runtime import OnnxNetworks  # noqa: PLC0415

        return OnnxNetworks({s: str(folder / nets[s]["file"]) for s in STAGES},
                            rnet_batch=int(cascade["rnet_batch"]), onet_batch=int(cascade["onet_batch"]),
                            providers=providers)
    try:
        import jax  # noqa: PLC0415
    except ModuleNotFoundError:
        raise UserError(f"{folder}: a StableHLO model runs on JAX: pip install jax") from None
    backend = jax.default_backend()
    platforms = [str(p) for p in manifest["platforms"]]
    if backend not in platforms:
        raise UserError(f"{folder}: exported for {', '.join(platforms) or 'no platform'}, not for {backend}")
    from mtcnn_jax import compilation  # noqa: PLC0415
    from mtcnn_jax.networks import ExportedNetworks  # noqa: PLC0415

    if compilation_cache:
        compilation.enable_persistent_cache()
    programs = {s: (folder / nets[s]["file"]).read_bytes() for s in STAGES}
    params = params_from_npz(folder / manifest["params"]["file"])
    if weights_digest(params) != manifest["weights"]["sha256"]:
        where = folder / manifest["params"]["file"]
        raise UserError(f"{where}: its weights do not match the manifest's weights.sha256")
    try:
        return ExportedNetworks(programs, params, tile=int(cascade["pnet_tile"]),
                                tiles_per_call=int(cascade["pnet_tiles_per_call"]),
                                rnet_batch=int(cascade["rnet_batch"]), onet_batch=int(cascade["onet_batch"]))
    except Exception as err:  # noqa: BLE001  (a serialization this JAX cannot read: one line)
        made = manifest["created_with"].get("jax", "?") if isinstance(manifest.get("created_with"), dict) else "?"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{folder}: cannot load its StableHLO programs with JAX {jax.__version__} (exported with "
                        f"JAX {made}): {first}") from None


def load_model(
    folder: PathLike,
    *,
    min_face_size: float = 20.0,
    factor: float = 0.709,
    thresholds: Sequence[float] = (0.6, 0.7, 0.7),
    nms_thresholds: Sequence[float] = (0.5, 0.7, 0.7, 0.7),
    flip_landmarks: bool = True,
    refine_landmarks: bool = True,
    resize: str = "antialiased",
    pyramid: str = "summed",
    compilation_cache: bool = True,
    providers: Union[Sequence[str], None] = None,
) -> "MTCNN":
    """The detector on the networks exported to ``folder``, whichever kind its manifest says.

    Returns a :class:`mtcnn_jax.detector.MTCNN` (``.detect(image or list)`` → :class:`~mtcnn_jax.faces.Faces`)
    with the given settings (as ``MTCNN``'s; the weights are the folder's). ``compilation_cache``
    applies to StableHLO, ``providers`` (ONNX Runtime execution providers) to ONNX.
    Raises a one-line :class:`UserError` for a folder that cannot be used.
    """
    from mtcnn_jax.detector import MTCNN  # noqa: PLC0415, F811

    manifest = read_manifest(folder)
    networks = load_networks(folder, manifest, compilation_cache=compilation_cache, providers=providers)
    return MTCNN(min_face_size=min_face_size, factor=factor, thresholds=thresholds, nms_thresholds=nms_thresholds,
                 flip_landmarks=flip_landmarks, refine_landmarks=refine_landmarks, resize=resize, pyramid=pyramid,
                 compilation_cache=False,
                 networks=networks)
