"""The authors' released P-Net, R-Net and O-Net weights, as plain params pytrees.

Origin: the MTCNN models released by K. Zhang with the paper (Caffe), as
redistributed under the MIT licence in the PyPI package ``mtcnn`` 1.0.0 by
Iván de Paz Centeno (``mtcnn/assets/weights/*.lz4``; bit-identical to the set in
facenet-pytorch). ``scripts/convert_weights.py`` converts them into
``mtcnn_jax/weights/mtcnn_authors.msgpack``, which ships inside this package so
detection works offline. The file is read with ``flax.serialization``
(msgpack), never with pickle, so a weights file cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping

import flax.serialization
import jax
import numpy as np

from mtcnn_jax import models

STAGES = ("pnet", "rnet", "onet")
WEIGHTS_FILE = Path(__file__).parent / "weights" / "mtcnn_authors.msgpack"


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the networks."""


def save_params(path: os.PathLike, params: Mapping[str, object]) -> None:
    """Write ``{"pnet": ..., "rnet": ..., "onet": ...}`` params to ``path`` (msgpack), atomically."""
    from mtcnn_jax.files import write_atomically  # noqa: PLC0415

    tree = jax.tree_util.tree_map(np.asarray, dict(params))
    write_atomically(path, flax.serialization.msgpack_serialize(tree))


def _check_stage(stage: str, params: Any) -> None:
    """Raise WeightsError unless ``params`` has exactly the shapes of ``stage``'s network."""
    if not isinstance(params, dict):
        raise WeightsError(f"{stage}: expected a mapping of layers, got {type(params).__name__}")
    has_landmarks = "landmarks" in params
    # eval_shape traces the initialisers without running them: no compilation,
    # where an eager init costs about 15 s on a cold 2-core CPU.
    expected = jax.eval_shape(lambda: models.init_params(stage, jax.random.key(0), landmarks=has_landmarks))
    exp_shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), expected)
    try:
        got_shapes = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), params)
    except Exception as err:  # malformed tree
        raise WeightsError(f"{stage}: malformed parameter tree ({err})") from None
    if got_shapes != exp_shapes:
        raise WeightsError(f"{stage}: parameter shapes do not match the {stage} network")


def load_params(path: os.PathLike) -> Dict[str, dict]:
    """Read a msgpack params file written by :func:`save_params` and check its shapes.

    Returns a dict with some of the keys "pnet", "rnet", "onet", each a params
    pytree of float32 numpy arrays. Raises :class:`WeightsError` with a one-line
    reason when the file is missing, not msgpack, or does not fit the networks.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        tree = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception:
        raise WeightsError(f"{path}: not a msgpack weights file") from None
    if not isinstance(tree, dict) or not set(tree) & set(STAGES):
        raise WeightsError(f"{path}: expected a mapping with keys among {', '.join(STAGES)}")
    out = {}
    for stage in STAGES:
        if stage in tree:
            try:
                _check_stage(stage, tree[stage])
            except WeightsError as err:
                raise WeightsError(f"{path}: {err}") from None
            out[stage] = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), tree[stage])
    return out


def load_pretrained() -> Dict[str, dict]:
    """The authors' weights: ``{"pnet": params, "rnet": params, "onet": params}``.

    Each value is a plain pytree for the module from :func:`mtcnn_jax.models.create`
    with the released layout (P-Net and R-Net without a landmark head).
    """
    return load_params(WEIGHTS_FILE)
