"""MTCNN's multi-task loss (Zhang et al. 2016, Sec. II-C, Eq. 1–5) and OHEM.

Sample types and the β table (which task each type feeds, paper Eq. 4):

==========  =====  =====  =========  ===========================================
type        code   det    box        landmarks
==========  =====  =====  =========  ===========================================
negative    0      1      0          0      IoU < 0.3 with every face
positive    1      1      1          0      IoU > 0.65
part        2      0      1          0      0.4 ≤ IoU ≤ 0.65
landmark    3      0      0          1      face with five annotated points
==========  =====  =====  =========  ===========================================

Per-sample losses (``N`` samples):

* det (Eq. 1): cross-entropy of the 2 face/non-face logits against
  ``y = 1`` for positives, ``0`` for negatives: ``-log softmax(logits)[y]``.
* box (Eq. 2): squared L2 over the 4 offsets, ``Σ_k (ŷ_k − y_k)²``.
* landmarks (Eq. 3): squared L2 over the 10 coordinates ``(x1..x5, y1..y5)``.

Normalisation (the exact formula; Eq. 4 with a per-task mean): for task ``j``
with per-sample mask ``m_i^j = β_i^j · w_i^j`` (``w`` = OHEM keep mask for det,
1 otherwise)::

    L_j   = Σ_i m_i^j · L_i^j / max(1, Σ_i m_i^j)
    total = Σ_j α_j · L_j

so each task is a mean over the samples that feed it, and a task with no
samples in the batch contributes 0 (never NaN). α comes from the config:
P-Net and R-Net (det 1, box 0.5, landmarks 0.5), O-Net (1, 0.5, 1).

OHEM (Sec. II-C, "online hard sample mining"): among the samples that carry a
face/non-face label (negatives and positives), only the ``k`` largest det losses
are kept; ``k = ohem_k(ohem_ratio, n_labelled)`` is static, fixed by the batch
composition in the config. The keep mask is computed with ``jax.lax.top_k`` on
stopped gradients, so the dropped samples get exactly zero gradient.

Data parallelism: every function that normalises takes ``axis_name``. Inside
``jax.shard_map`` with ``axis_name="data"`` the OHEM selection is made over the
*global* batch (per-sample det losses are all-gathered) and the counts are
``psum``-ed, so each device returns its *share* ``Σ_local m·L / global count``;
summed over devices (which is what the gradient of replicated params is under
``shard_map``'s default ``check_vma``) this is exactly the single-device loss.

Held-out metrics are computed here too, beside the loss they report:
:func:`eval_sums` sums per-batch statistics (the same task losses without OHEM,
accuracy, recall, box and landmark errors) and :func:`finish_eval` turns the
sums into the :data:`EVAL_METRICS`.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

NEGATIVE, POSITIVE, PART, LANDMARK = 0, 1, 2, 3
SAMPLE_TYPES = ("negative", "positive", "part", "landmark")
TASKS = ("det", "box", "landmarks")

#: β[type, task] in {0, 1}: rows negative, positive, part, landmark; columns det, box, landmarks.
#: A NumPy array: a jax array made at import would start JAX's backend, which must wait for
#: ``jax.distributed.initialize`` in a multi-host run.
BETA = np.array(
    [
        [1.0, 0.0, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    ],
    np.float32,
)


class LossTerms(NamedTuple):
    """Per-task normalised losses ``L_j``, their sample counts and the α-weighted total."""

    total: jax.Array  # []
    det: jax.Array  # []
    box: jax.Array  # []
    landmarks: jax.Array  # []
    n_det: jax.Array  # [] samples kept for det (after OHEM)
    n_box: jax.Array  # []
    n_landmarks: jax.Array  # []


def beta(sample_type: jax.Array) -> jax.Array:
    """int32[N] sample types → float32[N, 3] β indicators (det, box, landmarks)."""
    return jnp.asarray(BETA)[sample_type]


def det_loss(logits: jax.Array, sample_type: jax.Array) -> jax.Array:
    """Per-sample face/non-face cross-entropy (Eq. 1).

    logits: float32[N, 2] (index 1 = face); sample_type: int32[N].
    Returns float32[N]; the label is 1 for positives and 0 otherwise (only
    negatives and positives are meant to be counted: mask with β).
    """
    label = (sample_type == POSITIVE).astype(jnp.int32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, label[:, None], axis=-1)[:, 0]


def box_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-sample squared L2 of the box offsets (Eq. 2): float32[N, 4] × 2 → float32[N]."""
    return jnp.sum(jnp.square(pred.astype(jnp.float32) - target), axis=-1)


def landmark_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-sample squared L2 of the landmarks (Eq. 3): float32[N, 10] × 2 → float32[N]."""
    return jnp.sum(jnp.square(pred.astype(jnp.float32) - target), axis=-1)


def ohem_k(ohem_ratio: float, n_labelled: int) -> int:
    """Static number of det losses OHEM keeps: ``max(1, round(ohem_ratio · n_labelled))``."""
    if not 0.0 < ohem_ratio <= 1.0:
        raise ValueError(f"ohem_ratio must be in (0, 1], got {ohem_ratio}")
    return max(1, int(round(ohem_ratio * n_labelled)))


def ohem_mask(
    losses: jax.Array, labelled: jax.Array, k: int, axis_name: Optional[str] = None
) -> jax.Array:
    """Online hard sample mining: keep the ``k`` largest ``losses`` among ``labelled``.

    losses: float32[N] per-sample det losses; labelled: bool[N] (β_det = 1);
    k: a static int, or a traced int32 scalar (then every loss is ranked with
    ``top_k`` and the first ``k`` are kept: the same mask, one compiled program for
    every ratio; :mod:`mtcnn_jax.replicas`). Returns float32[N] in {0, 1} with ``min(k, Σ labelled)`` ones,
    at the labelled samples of largest loss (ties: lower index first, as
    ``jax.lax.top_k``). No gradient flows through the mask.

    With ``axis_name`` (inside ``shard_map``), ``losses``/``labelled`` are this
    device's shard; the selection is over the all-gathered global batch and the
    returned mask is this device's shard of the global mask.
    """
    losses = jax.lax.stop_gradient(losses)
    n_local = losses.shape[0]
    if axis_name is not None:
        losses = jax.lax.all_gather(losses, axis_name, tiled=True)
        labelled = jax.lax.all_gather(labelled, axis_name, tiled=True)
    n = losses.shape[0]
    scores = jnp.where(labelled, losses, -jnp.inf)
    if isinstance(k, (int, np.integer)):
        values, idx = jax.lax.top_k(scores, min(int(k), n))
        kept = jnp.isfinite(values)
    else:  # a traced count (replicas with their own ratio): rank all, keep the first k
        values, idx = jax.lax.top_k(scores, n)
        kept = jnp.isfinite(values) & (jnp.arange(n) < k)
    keep = jnp.zeros((n,), jnp.float32).at[idx].set(kept.astype(jnp.float32))
    if axis_name is not None:
        start = jax.lax.axis_index(axis_name) * n_local
        keep = jax.lax.dynamic_slice(keep, (start,), (n_local,))
    return keep


def loss_masks(logits: jax.Array, sample_type: jax.Array, k: Optional[int], has_landmarks: bool,
               axis_name: Optional[str] = None) -> Tuple[jax.Array, jax.Array]:
    """``(masks float32[N, 3], counts float32[3])``: which samples feed det, box and landmarks, and how many in all.

    ``masks`` is β of each sample's type, its det column times the OHEM keep mask
    (:func:`ohem_mask`, over the global batch with ``axis_name``) when ``k`` is
    given, its landmark column 0 without a landmark head; ``counts`` are its
    column sums over the global batch. No gradient flows through either.
    """
    b = beta(sample_type)
    if k is not None:
        b = b.at[:, 0].multiply(ohem_mask(det_loss(logits, sample_type), b[:, 0] > 0, k, axis_name))
    if not has_landmarks:
        b = b.at[:, 2].set(0.0)
    counts = jnp.sum(b, axis=0)
    if axis_name is not None:
        counts = jax.lax.psum(counts, axis_name)
    return jax.lax.stop_gradient(b), jax.lax.stop_gradient(counts)


def sample_losses(logits: jax.Array, box: jax.Array, landmarks: Optional[jax.Array],
                  batch: Mapping[str, jax.Array]) -> jax.Array:
    """float32[N, 3]: each sample's det, box and landmark loss (Eqs. 1-3; landmarks 0 without a head)."""
    l_lm = jnp.zeros_like(box[:, 0]) if landmarks is None else landmark_loss(landmarks, batch["landmarks"])
    return jnp.stack([det_loss(logits, batch["type"]), box_loss(box, batch["box"]), l_lm], axis=-1)


def multitask_loss(
    logits: jax.Array,
    box: jax.Array,
    landmarks: Optional[jax.Array],
    batch: Mapping[str, jax.Array],
    alpha: Mapping[str, float],
    k: Optional[int] = None,
    axis_name: Optional[str] = None,
) -> LossTerms:
    """The α/β-weighted multi-task loss (Eq. 4, with the normalisation of the module docstring).

    logits: float32[N, 2]; box: float32[N, 4]; landmarks: float32[N, 10] or None
    (a network without a landmark head: its term is 0).
    batch: ``type`` int32[N], ``box`` float32[N, 4] targets, ``landmarks``
    float32[N, 10] targets (values at samples whose β is 0 are ignored).
    alpha: ``{"det": α_det, "box": α_box, "landmarks": α_landmarks}``.
    k: OHEM keep count (static) or None to keep every labelled sample.
    axis_name: mesh axis of the batch inside ``shard_map`` (see module docstring).
    """
    masks, counts = loss_masks(logits, batch["type"], k, landmarks is not None, axis_name)
    det, bx, lm = jnp.sum(masks * sample_losses(logits, box, landmarks, batch), axis=0) / jnp.maximum(counts, 1.0)
    total = alpha["det"] * det + alpha["box"] * bx + alpha["landmarks"] * lm
    return LossTerms(total, det, bx, lm, counts[0], counts[1], counts[2])


# ----------------------------------------------------------------------------- held-out metrics

#: The held-out metrics of :func:`finish_eval`, in the order tables list them.
EVAL_METRICS = ("loss", "det", "box", "landmarks", "accuracy", "recall", "box_error", "landmark_error")


def eval_sums(logits: jax.Array, box: jax.Array, landmarks: Optional[jax.Array], batch: Mapping[str, jax.Array],
              threshold: float) -> dict:
    """Summed statistics of one held-out batch (no OHEM), to add over batches and finish with :func:`finish_eval`.

    logits, box, landmarks: network outputs as for :func:`multitask_loss`;
    ``batch`` also carries ``valid`` bool[N] (False for padding). Accuracy counts
    the argmax of the logits against face / non-face; recall counts positives
    whose face probability is ≥ ``threshold``; ``box_err`` sums the mean absolute
    offset error (window units) of box samples; ``landmark_err`` the mean
    point-to-point distance (window units) of landmark samples.
    """
    t = batch["type"]
    valid = batch["valid"].astype(jnp.float32)
    b = beta(t) * valid[:, None]
    prob = jax.nn.softmax(logits)[:, 1]
    is_pos = (t == POSITIVE).astype(jnp.float32) * valid
    correct = (jnp.argmax(logits, -1) == (t == POSITIVE)).astype(jnp.float32)
    sums = {
        "det_sum": jnp.sum(b[:, 0] * det_loss(logits, t)),
        "n_det": jnp.sum(b[:, 0]),
        "correct": jnp.sum(b[:, 0] * correct),
        "n_pos": jnp.sum(is_pos),
        "recalled": jnp.sum(is_pos * (prob >= threshold)),
        "box_sum": jnp.sum(b[:, 1] * box_loss(box, batch["box"])),
        "box_err": jnp.sum(b[:, 1] * jnp.mean(jnp.abs(box - batch["box"]), -1)),
        "n_box": jnp.sum(b[:, 1]),
        "landmarks_sum": jnp.zeros(()),
        "landmark_err": jnp.zeros(()),
        "n_landmarks": jnp.sum(b[:, 2]),
    }
    if landmarks is not None:
        d = (landmarks - batch["landmarks"]).reshape(-1, 2, 5)
        sums["landmarks_sum"] = jnp.sum(b[:, 2] * landmark_loss(landmarks, batch["landmarks"]))
        sums["landmark_err"] = jnp.sum(b[:, 2] * jnp.mean(jnp.sqrt(jnp.sum(d * d, 1)), -1))
    return sums


def finish_eval(sums: Mapping[str, float], alpha: Mapping[str, float]) -> dict:
    """Summed statistics (:func:`eval_sums`) → the :data:`EVAL_METRICS`: ``loss`` = Σ_j α_j · mean task loss,
    the mean task losses, ``accuracy``, ``recall``, ``box_error``, ``landmark_error``."""
    d = lambda a, b: float(sums[a]) / max(1.0, float(sums[b]))
    det, box, lm = d("det_sum", "n_det"), d("box_sum", "n_box"), d("landmarks_sum", "n_landmarks")
    out = {
        "loss": alpha["det"] * det + alpha["box"] * box + alpha["landmarks"] * lm,
        "det": det,
        "box": box,
        "landmarks": lm,
        "accuracy": d("correct", "n_det"),
        "recall": d("recalled", "n_pos"),
        "box_error": d("box_err", "n_box"),
        "landmark_error": d("landmark_err", "n_landmarks"),
    }
    return {k: out[k] for k in EVAL_METRICS}
