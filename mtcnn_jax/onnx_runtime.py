"""The detector's networks on ONNX Runtime: NumPy and OpenCV around three ONNX models, no JAX.

:func:`mtcnn_jax.export.export_onnx` writes the models (``mtcnn-jax export --format onnx``);
:func:`mtcnn_jax.deploy.load_model` builds the detector on them. Every model takes
``images``, uint8 RGB pixels ``[batch, height, width, 3]`` (NHWC, as the detector's crops
and pyramid levels are), and returns float32 outputs:

=====  =====================================  ================================================
model  input                                  outputs
=====  =====================================  ================================================
P-Net  ``[batch, height, width, 3]``, ≥ 12    ``prob [batch, h', w']``, ``box [batch, h', w', 4]``
R-Net  ``[batch, 24, 24, 3]``                 ``prob [batch]``, ``box [batch, 4]``
O-Net  ``[batch, 48, 48, 3]``                 ``prob``, ``box``, ``landmarks [batch, 10]``
=====  =====================================  ================================================

``h' = ceil((height - 2) / 2) - 4`` (likewise ``w'``): P-Net's cell ``(i, j)`` is the
12×12 window at pixel ``(2j, 2i)``. ``prob`` is the face probability, ``box`` the
regression ``dx1, dy1, dx2, dy2``, ``landmarks`` ``x1..x5, y1..y5`` relative to the crop.

P-Net runs on each pyramid level whole (ONNX Runtime handles any size), not on the
packed tiles of the JAX networks: the outputs are the same up to float rounding
(``tests/test_onnx.py`` checks the model against the Flax module on whole levels, and
the tiles are checked against whole levels in ``tests/test_speed_invariants.py``).
"""

from __future__ import annotations

import os
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mtcnn_jax.errors import UserError


class OnnxNetworks:
    """P-Net, R-Net and O-Net as ONNX Runtime sessions: a backend of :class:`mtcnn_jax.detector.MTCNN`.

    ``models``: ``{"pnet", "rnet", "onet"}`` → a model file path (or its bytes).
    ``rnet_batch``, ``onet_batch``: crops per call (the last call takes what is left:
    the batch is dynamic). ``providers``: ONNX Runtime execution providers, in order of
    preference (default: those this build of ONNX Runtime has; the CPU one is always there).
    ``threads``: intra-op threads per session (0: one per CPU this process may run on).

    Threads do not spin while they wait for work: ONNX Runtime's default (one
    spinning thread per core of the host, whatever the process's CPU affinity or
    quota) made the cascade 1.5-2x slower on a shared 2-core machine.
    """

    fixed_batches = False

    def __init__(self, models: Mapping[str, object], rnet_batch: int = 32, onet_batch: int = 16,
                 providers: Optional[Sequence[str]] = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415
        except ModuleNotFoundError:
            raise UserError("running an ONNX model needs ONNX Runtime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads) or _usable_cpus()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = list(providers) if providers else ort.get_available_providers()
        self.sessions = {}
        for stage in ("pnet", "rnet", "onet"):
            try:
                self.sessions[stage] = ort.InferenceSession(models[stage], options, providers=providers)
            except Exception as err:  # noqa: BLE001  (ONNX Runtime's own exception types: one line)
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                where = models[stage] if isinstance(models[stage], (str, os.PathLike)) else stage
                raise UserError(f"{where}: ONNX Runtime cannot load the model ({first})") from None
        self.rnet_batch, self.onet_batch = int(rnet_batch), int(onet_batch)

    def pnet(self, sizes: Sequence[Tuple[int, int]],
             make_level: Callable[[int], np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """P-Net on each level whole, in order: per level (prob float32[h', w'], reg float32[h', w', 4])."""
        session = self.sessions["pnet"]
        out = []
        for i in range(len(sizes)):
            prob, box = session.run(["prob", "box"], {"images": np.ascontiguousarray(make_level(i))[None]})
            out.append((prob[0], box[0]))
        return out

    def rnet(self, crops_u8: np.ndarray) -> List[np.ndarray]:
        return self.sessions["rnet"].run(["prob", "box"], {"images": crops_u8})

    def onet(self, crops_u8: np.ndarray) -> List[np.ndarray]:
        return self.sessions["onet"].run(["prob", "box", "landmarks"], {"images": crops_u8})


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)
