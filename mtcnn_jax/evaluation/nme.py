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
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from mtcnn_jax.data import landmarks as landmark_lists
from mtcnn_jax.data.landmarks import LandmarkFace
from mtcnn_jax.errors import UserError
from mtcnn_jax.evaluation.predictions import align_to_ground_truth
from mtcnn_jax.faces import Faces
from mtcnn_jax.files import read_text

POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
MTFL_ATTRIBUTES = ("gender", "smile", "glasses", "pose")


@dataclasses.dataclass(frozen=True, eq=False)
class MtflAnnotations:
    """Landmark ground truth of M images, as arrays (the form the NME is computed on).

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

    def subset(self, keep: np.ndarray) -> "MtflAnnotations":
        """The annotations of the images where ``keep`` (bool[M]) is True."""
        keep = np.asarray(keep, bool)
        return MtflAnnotations(
            paths=[p for p, k in zip(self.paths, keep) if k],
            **{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self) if f.name != "paths"},
        )


def annotations_from_faces(faces: Sequence[LandmarkFace]) -> MtflAnnotations:
    """The arrays of :class:`MtflAnnotations` from the records of :func:`mtcnn_jax.data.landmarks.read_mtfl`.

    Paths get ``/`` separators; faces without attributes get 0 for each.
    """
    paths = [f.path.replace("\\", "/") for f in faces]
    points = np.asarray([f.points for f in faces], np.float64).reshape(-1, 5, 2).astype(np.float32)
    attrs = np.asarray([f.attributes if f.attributes is not None else (0, 0, 0, 0) for f in faces],
                       np.int32).reshape(-1, 4)
    return MtflAnnotations(paths, points, *(attrs[:, i] for i in range(4)))


def parse_mtfl(
    lines: Iterable[str], filename: str = "<landmarks>", one_based: bool = True
) -> MtflAnnotations:
    """MTFL list lines (``path x1..x5 y1..y5 [gender smile glasses pose]``) as annotations.

    Parsed by :func:`mtcnn_jax.data.landmarks.parse_mtfl` (strict): ``one_based`` subtracts
    1 from the coordinates (MTFL's count from 1); blank lines are skipped.

    Raises:
      FormatError: ``"<filename>:<line>: <reason>"`` (1-based line) on a malformed line.
    """
    return annotations_from_faces(landmark_lists.parse_mtfl(lines, filename, one_based=one_based))


def read_mtfl(filename: str | os.PathLike, one_based: bool = True) -> MtflAnnotations:
    """Read an MTFL list file (e.g. ``testing.txt``), UTF-8; see :func:`parse_mtfl`.

    ``OSError`` propagates, for the caller to name the option the file came from; a
    file that is not UTF-8 is a :class:`~mtcnn_jax.errors.FormatError`.
    """
    return parse_mtfl(read_text(filename).splitlines(), filename=os.fspath(filename), one_based=one_based)


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


def best_landmarks(det: Optional[Faces]) -> Optional[np.ndarray]:
    """float32[5, 2] landmarks of the highest-scoring detection (first on ties), or None
    when the image has no detection."""
    if det is None or det.scores.shape[0] == 0:
        return None
    if det.landmarks is None:
        raise UserError("the predictions carry no landmarks")
    return det.landmarks[int(np.argmax(det.scores))]


def evaluate_landmarks(
    predictions: Mapping[str, Faces],
    annotations: MtflAnnotations,
    failure_threshold: float = 0.1,
) -> dict:
    """Landmark accuracy of the highest-scoring detection per image (module docstring).

    Args:
      predictions: ``{image path: Faces}`` with landmarks in 0-based pixels; paths
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
