"""Five-point landmark error on MTFL-style annotations (e.g. the AFLW test crops).

Protocol (``shared/reference/README.md``): for each image the highest-scoring detection is
taken; its normalised mean error is

    NME = mean over the 5 points of ||p_k - g_k|| / ||g_left_eye - g_right_eye||

(the inter-ocular distance of the ground-truth eye points). An image with no detection is a
miss and stays out of the NME statistics; a failure is an image with NME > 0.1, counted
over the detected images. Points are ``(x, y)`` in 0-based image pixels, in the order
left eye, right eye, nose, left mouth corner, right mouth corner ("left" = the image's
left).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Mapping

import numpy as np

from mtcnn_jax.errors import UserError
from mtcnn_jax.evaluation.predictions import Detections, align_to_ground_truth

POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
MTFL_ATTRIBUTES = ("gender", "smile", "glasses", "pose")


@dataclasses.dataclass(frozen=True, eq=False)
class MtflAnnotations:
    """Landmark ground truth of M images.

    Attributes:
      paths: M image paths as listed (``\\`` turned into ``/``).
      points: float32[M, 5, 2], ``(x, y)`` per point in the order of :data:`POINT_NAMES`,
        in 0-based pixels when read with ``one_based=True`` (the MTFL convention).
      gender, smile, glasses, pose: int32[M] (MTFL legend: gender 1 male / 2 female; smile
        and glasses 1 yes / 2 no; pose 1 left profile ... 3 frontal ... 5 right profile;
        0 where the line has no attributes).
    """

    paths: list[str]
    points: np.ndarray
    gender: np.ndarray
    smile: np.ndarray
    glasses: np.ndarray
    pose: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def parse_mtfl(
    lines: Iterable[str], filename: str = "<landmarks>", one_based: bool = True
) -> MtflAnnotations:
    """Parse MTFL list lines: ``path x1..x5 y1..y5 [gender smile glasses pose]``.

    Args:
      lines: the lines; blank ones are skipped.
      filename: named in error messages.
      one_based: the file's coordinates are 1-based (MTFL's are: they equal the CUHK
        lists' + 1); 1 is subtracted so the result is 0-based. False keeps them as read.

    Raises:
      UserError: ``"<filename>:<line>: <reason>"`` (1-based line) on a malformed line.
    """
    paths, points, attrs = [], [], []
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (11, 15):
            raise UserError(
                f"{filename}:{lineno}: expected 'path x1..x5 y1..y5 [gender smile glasses pose]', "
                f"got {len(fields)} fields"
            )
        try:
            xy = np.asarray([float(v) for v in fields[1:11]], np.float64)
            extra = [int(v) for v in fields[11:]] or [0, 0, 0, 0]
        except ValueError:
            raise UserError(f"{filename}:{lineno}: not a number in {line.strip()!r}") from None
        if not np.all(np.isfinite(xy)):
            raise UserError(f"{filename}:{lineno}: coordinate is not finite")
        paths.append(fields[0].replace("\\", "/"))
        points.append(np.stack([xy[:5], xy[5:]], axis=1))
        attrs.append(extra)
    pts = np.asarray(points, np.float64).reshape(-1, 5, 2) - (1.0 if one_based else 0.0)
    a = np.asarray(attrs, np.int32).reshape(-1, 4)
    return MtflAnnotations(paths, pts.astype(np.float32), *(a[:, i] for i in range(4)))


def read_mtfl(filename: str | os.PathLike, one_based: bool = True) -> MtflAnnotations:
    """Read an MTFL list file (e.g. ``testing.txt``); see :func:`parse_mtfl`."""
    with open(filename, encoding="utf-8") as f:
        return parse_mtfl(f.read().splitlines(), filename=os.fspath(filename), one_based=one_based)


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-point error normalised by the inter-ocular distance.

    Args:
      pred: float[M, 5, 2] predicted points.
      gt: float[M, 5, 2] ground truth, left eye first and right eye second.

    Returns:
      float64[M, 5]: ``||pred_k - gt_k|| / ||gt_0 - gt_1||``.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    iod = np.linalg.norm(gt[:, 0] - gt[:, 1], axis=-1)
    if np.any(iod <= 0):
        raise UserError("a ground-truth face has both eyes at one point (inter-ocular distance 0)")
    return np.linalg.norm(pred - gt, axis=-1) / iod[:, None]


def best_landmarks(det: Detections | None) -> np.ndarray | None:
    """float32[5, 2] landmarks of the highest-scoring detection (first on ties), or None
    when the image has no detection."""
    if det is None or det.scores.shape[0] == 0:
        return None
    if det.landmarks is None:
        raise UserError("the predictions carry no landmarks")
    return det.landmarks[int(np.argmax(det.scores))]


def evaluate_landmarks(
    predictions: Mapping[str, Detections],
    annotations: MtflAnnotations,
    failure_threshold: float = 0.1,
) -> dict:
    """Landmark accuracy of the highest-scoring detection per image (module docstring).

    Args:
      predictions: ``{image path: Detections}`` with landmarks in 0-based pixels; paths
        are matched to ``annotations.paths`` exactly or by suffix.
      annotations: the ground truth, 0-based (:func:`read_mtfl` with ``one_based=True``).
      failure_threshold: an image fails when its NME exceeds this.

    Returns:
      dict with ``n_images``, ``n_detected``, ``detection_rate`` (= n_detected / n_images),
      ``nme_mean``, ``nme_median``, ``nme_per_point`` (float64[5], mean over detected
      images, order of :data:`POINT_NAMES`), ``failure_rate`` (share of detected images
      with NME > ``failure_threshold``), ``errors`` (float64[M] per-image NME in annotation
      order, NaN for misses -- for a cumulative error distribution), ``point_errors``
      (float64[M, 5], NaN rows for misses) and ``unmatched`` (prediction paths not in the
      annotations; ignored). The NME statistics are NaN when nothing was detected.
    """
    aligned, unmatched = align_to_ground_truth(predictions, annotations.paths)
    m = len(annotations)
    pred = np.full((m, 5, 2), np.nan)
    for i, path in enumerate(annotations.paths):
        lm = best_landmarks(aligned.get(path))
        if lm is not None:
            pred[i] = lm
    detected = ~np.isnan(pred[:, 0, 0])
    per_point = np.full((m, 5), np.nan)
    per_point[detected] = point_errors(pred[detected], annotations.points[detected])
    errors = per_point.mean(axis=1)
    found = errors[detected]
    n_det = int(detected.sum())
    empty = n_det == 0
    return dict(
        n_images=m,
        n_detected=n_det,
        detection_rate=n_det / m if m else float("nan"),
        nme_mean=float("nan") if empty else float(found.mean()),
        nme_median=float("nan") if empty else float(np.median(found)),
        nme_per_point=np.full(5, np.nan) if empty else per_point[detected].mean(axis=0),
        failure_rate=float("nan") if empty else float(np.mean(found > failure_threshold)),
        errors=errors,
        point_errors=per_point,
        unmatched=unmatched,
    )


def cumulative_error_distribution(
    errors: np.ndarray, thresholds: np.ndarray, include_misses: bool = False
) -> np.ndarray:
    """Share of images with NME <= each threshold (a CED curve).

    Args:
      errors: float[M] per-image NME, NaN for misses (``evaluate_landmarks(...)["errors"]``).
      thresholds: float[T] NME values.
      include_misses: divide by all M images (misses never count as below) instead of the
        detected ones.

    Returns:
      float64[T] fractions in ``[0, 1]``.
    """
    errors = np.asarray(errors, np.float64)
    found = np.sort(errors[~np.isnan(errors)])
    total = errors.size if include_misses else found.size
    if total == 0:
        return np.zeros(np.shape(thresholds))
    return np.searchsorted(found, np.asarray(thresholds, np.float64), side="right") / total
