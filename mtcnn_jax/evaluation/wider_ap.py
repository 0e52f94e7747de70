"""WIDER FACE average precision, as the official evaluation computes it.

The protocol (``eval_tools`` of WIDER FACE and its Python port; see
``shared/reference/README.md``):

* Ground-truth boxes are ``[x1, y1, x1 + w, y1 + h]``; IoU counts ``+1`` pixel in each
  dimension (``area = (x2 - x1 + 1) * (y2 - y1 + 1)``), as the official ``bbox_overlaps``:
  :func:`mtcnn_jax.boxes.iou_matrix` with ``inclusive=True``.
* A face *counts* in setting "min size N" when it is valid (``invalid == 0``, or listed in
  the keep list when one is given) and ``min(w, h) >= N``; every other face is *ignored*.
* Per image, detections are taken in descending score order; each is matched to the face
  of highest IoU (first one on ties). If that IoU is ``>= 0.5``: a match to an ignored face
  removes the detection from the count (it neither counts nor costs); a match to a counted
  face recalls it, once; a later detection of the same face is a false positive.
  A detection with best IoU below 0.5 is a false positive.
* Precision = recalled faces / counted detections; recall = recalled faces / counted faces,
  taken at a set of score thresholds (each image contributes its detections with score
  ``>=`` the threshold):

  - ``sampling="official"``: all scores of the evaluated images are min-max normalised to
    ``[0, 1]``, thresholds ``1 - (t + 1) / 1000`` for ``t = 0 ... 999`` (the official code
    starts its running min at 1 and max at 0, which differs from the true min-max only when
    every score is above 1 or every score below 0; the true min and max are used here);
  - ``sampling="distinct"``: every distinct raw score is a threshold (no normalisation).

* AP is the VOC area under the precision envelope, with sentinels ``(recall 0, precision 0)``
  and ``(recall 1, precision 0)``.

Two edge cases where this implementation states its choice: at a threshold with no counted
detection the precision is taken as 0 (the official code divides by zero; the value never
reaches the AP because recall is 0 there too), and detections on an image with no ground-
truth face at all are false positives (the official code skips images whose box list is
empty; in the official val file such images carry one all-zero box, so their detections are
false positives there as well -- our reader drops that box).
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from mtcnn_jax.boxes import iou_matrix
from mtcnn_jax.data.wider import WiderRecord
from mtcnn_jax.errors import FormatError, UserError
from mtcnn_jax.evaluation.predictions import align_to_ground_truth, normalise_path
from mtcnn_jax.faces import Faces
from mtcnn_jax.files import read_text

#: Face-size settings reported by default: all valid faces, >= 20 px, >= 40 px (shorter side).
DEFAULT_SIZES = (1, 20, 40)
SAMPLINGS = ("official", "distinct")


def setting_name(min_size: float) -> str:
    """Name of a face-size setting: ``"all"`` for 1 (or less), else ``">=N"`` (e.g. ``">=20"``)."""
    return "all" if min_size <= 1 else f">={min_size:g}"


def match_image(
    boxes: np.ndarray,
    scores: np.ndarray,
    gt_boxes: np.ndarray,
    counted: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one image's detections to its ground truth (official WIDER rules).

    Args:
      boxes: float[N, 4] detections, ``x1, y1, x2, y2`` in pixels.
      scores: float[N] detection scores.
      gt_boxes: float[M, 4] faces, ``x1, y1, x1 + w, y1 + h`` in pixels.
      counted: bool[M], True for faces that count in the setting, False for ignored ones.
      iou_threshold: minimum IoU (``+1``-pixel areas) of a match.

    Returns:
      ``(scores, counts, recalls)``, each of length N in descending score order (stable on
      ties): float64 scores; bool ``counts``, False where the detection matched an ignored
      face (it is removed from the count); bool ``recalls``, True where the detection is the
      first (highest-scoring) to recall a counted face. A counted detection that does not
      recall is a false positive (no match, or a duplicate).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    n = scores.shape[0]
    counted = np.asarray(counted, bool).reshape(-1)
    if n == 0 or counted.shape[0] == 0:
        return scores, np.ones(n, bool), np.zeros(n, bool)
    iou = iou_matrix(np.asarray(boxes).reshape(-1, 4)[order], gt_boxes, inclusive=True)
    best = np.argmax(iou, axis=1)
    hit = iou[np.arange(n), best] >= iou_threshold
    counts = ~(hit & ~counted[best])
    on_counted = np.flatnonzero(hit & counted[best])
    recalls = np.zeros(n, bool)
    _, first = np.unique(best[on_counted], return_index=True)
    recalls[on_counted[first]] = True
    return scores, counts, recalls


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC area under the precision envelope.

    Args:
      recall: float[T], non-decreasing.
      precision: float[T], same sampling points.

    Returns:
      ``sum (r[i+1] - r[i]) * p_env[i+1]`` over the points where recall changes, with
      sentinels ``r = 0, 1`` and ``p = 0, 0`` and ``p_env`` the running maximum of the
      precision from the right.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def counted_faces(
    record: WiderRecord, min_size: float = 1, keep: Sequence[int] | None = None
) -> np.ndarray:
    """bool[N]: the faces of ``record`` that count in a setting.

    A face counts when ``min(w, h) >= min_size`` and it is valid: ``invalid == 0`` or, when
    ``keep`` (0-based face indices into ``record.boxes``) is given, listed in ``keep``.
    """
    size_ok = np.minimum(record.widths, record.heights) >= min_size
    if keep is None:
        valid = ~record.invalid
    else:
        valid = np.zeros(len(record), bool)
        idx = np.asarray(keep, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(record)):
            raise UserError(f"{record.path}: keep-list index out of range 0..{len(record) - 1}")
        valid[idx] = True
    return valid & size_ok


def _collect(
    predictions: Mapping[str, Faces],
    gt_records: Iterable[WiderRecord],
    min_size: float,
    keep: Mapping[str, Sequence[int]] | None,
    iou_threshold: float,
):
    gt_records = list(gt_records)
    aligned, unmatched = align_to_ground_truth(predictions, [r.path for r in gt_records])
    if keep is not None:
        keep = {normalise_path(k): v for k, v in keep.items()}
    scores, counts, recalls = [], [], []
    n_faces = 0
    for rec in gt_records:
        face_keep = None if keep is None else keep.get(normalise_path(rec.path), ())
        counted = counted_faces(rec, min_size, face_keep)
        n_faces += int(counted.sum())
        det = aligned.get(rec.path)
        if det is None:
            continue
        s, c, r = match_image(det.boxes, det.scores, rec.boxes, counted, iou_threshold)
        scores.append(s)
        counts.append(c)
        recalls.append(r)
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    arrays = cat(scores, np.float64), cat(counts, bool), cat(recalls, bool)
    return (*arrays, n_faces, unmatched, len(gt_records))


def pr_curve(
    scores: np.ndarray,
    counts: np.ndarray,
    recalls: np.ndarray,
    n_faces: int,
    sampling: str = "official",
    num_thresholds: int = 1000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall over the whole dataset at the thresholds of a sampling.

    Args:
      scores, counts, recalls: float[D], bool[D], bool[D], the concatenated outputs of
        :func:`match_image` over all images.
      n_faces: number of counted faces.
      sampling: ``"official"`` (min-max normalised scores, ``num_thresholds`` thresholds
        ``1 - (t + 1) / num_thresholds``) or ``"distinct"`` (every distinct raw score).

    Returns:
      ``(thresholds, precision, recall)``, float64[T] each, thresholds descending (in the
      normalised score space for ``"official"``). Precision is 0 where no counted
      detection passes the threshold.
    """
    scores = np.asarray(scores, np.float64)
    if sampling == "official":
        if scores.size:
            lo, hi = scores.min(), scores.max()
            scores = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        thresholds = 1.0 - (np.arange(num_thresholds, dtype=np.float64) + 1) / num_thresholds
    elif sampling == "distinct":
        thresholds = np.unique(scores)[::-1]
    else:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    cum_det = np.concatenate(([0], np.cumsum(np.asarray(counts, bool)[order])))
    cum_tp = np.concatenate(([0], np.cumsum(np.asarray(recalls, bool)[order])))
    # number of detections with score >= threshold, on the descending order
    passing = np.searchsorted(-sorted_scores, -thresholds, side="right")
    det, tp = cum_det[passing], cum_tp[passing]
    precision = np.where(det > 0, tp / np.maximum(det, 1), 0.0)
    recall = tp / n_faces if n_faces > 0 else np.zeros_like(precision)
    return thresholds, precision, recall


def evaluate(
    predictions: Mapping[str, Faces],
    gt_records: Iterable[WiderRecord],
    min_size: float = 1,
    sampling: str = "official",
    keep: Mapping[str, Sequence[int]] | None = None,
    iou_threshold: float = 0.5,
    num_thresholds: int = 1000,
) -> dict:
    """WIDER FACE AP of a set of detections (protocol in the module docstring).

    Args:
      predictions: ``{image path: Faces}`` (e.g. from
        :func:`mtcnn_jax.evaluation.predictions.read_predictions`); boxes ``x1, y1, x2, y2``
        in pixels. Paths are matched to the ground truth exactly or by suffix (see
        :func:`~mtcnn_jax.evaluation.predictions.match_paths`). Ground-truth images with no
        entry have no detections.
      gt_records: the ground truth (:func:`mtcnn_jax.data.wider.read_wider_gt`); the images
        evaluated.
      min_size: faces count when ``min(w, h) >= min_size`` pixels (1 = all valid faces).
      sampling: ``"official"`` or ``"distinct"`` (see :func:`pr_curve`).
      keep: optional ``{image path: 0-based face indices}`` that replace ``invalid == 0``
        as the definition of valid faces (e.g. the official easy/medium/hard lists, read
        with :func:`read_face_lists`); images missing from it have no valid face.
      iou_threshold: minimum IoU of a match.
      num_thresholds: thresholds of the official sampling.

    Returns:
      dict with ``ap`` (float), ``precision``, ``recall``, ``thresholds`` (float64[T]),
      ``n_faces`` (counted faces), ``n_detections`` (all detections on evaluated images),
      ``n_images``, and ``unmatched`` (prediction paths not in the ground truth; ignored).
    """
    scores, counts, recalls, n_faces, unmatched, n_images = _collect(
        predictions, gt_records, min_size, keep, iou_threshold
    )
    thresholds, precision, recall = pr_curve(
        scores, counts, recalls, n_faces, sampling, num_thresholds
    )
    return dict(
        ap=voc_ap(recall, precision),
        precision=precision,
        recall=recall,
        thresholds=thresholds,
        n_faces=n_faces,
        n_detections=int(scores.size),
        n_images=n_images,
        unmatched=unmatched,
    )


def evaluate_settings(
    predictions: Mapping[str, Faces],
    gt_records: Iterable[WiderRecord],
    sizes: Sequence[float] = DEFAULT_SIZES,
    sampling: str = "official",
    **kwargs,
) -> dict[str, float]:
    """AP per face-size setting.

    Returns:
      ``{setting_name(size): ap}``, e.g. ``{"all": 0.43, ">=20": 0.74, ">=40": 0.79}``
      for the default sizes (1, 20, 40): all valid faces, and valid faces whose shorter
      side is at least 20 / 40 pixels. Other keyword arguments go to :func:`evaluate`.
    """
    gt_records = list(gt_records)
    out = {}
    for size in sizes:
        res = evaluate(predictions, gt_records, min_size=size, sampling=sampling, **kwargs)
        out[setting_name(size)] = res["ap"]
    return out


def read_face_lists(filename: str | os.PathLike, one_based: bool = True) -> dict[str, np.ndarray]:
    """Read per-image lists of the faces that count (a plain-text form of the official
    ``wider_{easy,medium,hard}_val.mat`` keep lists).

    One line per image: ``<path> i1 i2 ...``, the indices of the faces that count in the
    order of the ground-truth file (1-based like the ``.mat`` lists unless
    ``one_based=False``). An image with no index has no valid face. Blank lines and lines
    starting with ``#`` are skipped.

    Returns:
      ``{path: int64[K]}`` with 0-based indices, for ``evaluate(..., keep=...)``. Note that
      the reader drops all-zero boxes; indices refer to the remaining faces.

    Raises:
      FormatError: ``"<file>:<line>: <reason>"`` on an index that is not a whole number
        or is below the first.
    """
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(read_text(filename).splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            idx = np.asarray([int(v) for v in fields[1:]], np.int64) - (1 if one_based else 0)
        except ValueError:
            raise FormatError(filename, lineno, "expected '<path> <face index>...'") from None
        if idx.size and idx.min() < 0:
            raise FormatError(filename, lineno, f"face index below {1 if one_based else 0}")
        out[normalise_path(fields[0])] = idx
    return out
