"""Detections read back from JSON, for evaluation.

Two layouts are accepted (the second is the one of ``shared/reference/*.json``)::

    [{"path": "<event>/<file>.jpg", "width": W, "height": H,
      "faces": [{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x 5]}, ...]}, ...]

    {"detector": {...}, "images": [ ...the same list... ]}

Boxes and landmarks are in input-image pixels. Landmarks are in the order left eye, right
eye, nose, left mouth corner, right mouth corner ("left" = the image's left); they are
optional (Haar cascades have none).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from mtcnn_jax.errors import UserError


class Detections(NamedTuple):
    """The detections of one image.

    Attributes:
      boxes: float32[N, 4], ``x1, y1, x2, y2`` in image pixels, as the detector wrote them.
      scores: float64[N]. Kept in double precision: MTCNN scores crowd just below 1.0, and
        the official WIDER sampling compares them with thresholds ``1 - k/1000``.
      landmarks: float32[N, 5, 2] ``(x, y)`` per point, or None where the faces carry no
        landmarks. An image with no face has float32[0, 5, 2].
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None


class PredictionFormatError(UserError):
    """Malformed detection JSON; ``str(err)`` is one line naming the file and the entry."""


def normalise_path(path: str) -> str:
    """``/`` separators, no leading ``./``: the key form used for matching image paths."""
    path = str(path).replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _faces(entry: Mapping[str, Any], where: str) -> Detections:
    faces = entry.get("faces")
    if not isinstance(faces, list):
        raise PredictionFormatError(f"{where}: 'faces' must be a list")
    n = len(faces)
    boxes = np.zeros((n, 4), np.float32)
    scores = np.zeros((n,), np.float64)
    landmarks = np.zeros((n, 5, 2), np.float32)
    with_landmarks = 0
    for i, face in enumerate(faces):
        try:
            boxes[i] = np.asarray(face["box"], np.float64).reshape(4)
            scores[i] = float(face["score"])
            if face.get("landmarks") is not None:
                landmarks[i] = np.asarray(face["landmarks"], np.float64).reshape(5, 2)
                with_landmarks += 1
        except (KeyError, TypeError, ValueError) as err:
            raise PredictionFormatError(
                f"{where}, face {i}: expected 'box' [x1, y1, x2, y2], 'score' s and optional "
                f"'landmarks' [[x, y] x 5] ({type(err).__name__}: {err})"
            ) from None
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise PredictionFormatError(f"{where}: a box or score is not finite")
    if 0 < with_landmarks < n:
        raise PredictionFormatError(f"{where}: some faces have landmarks and some do not")
    return Detections(boxes, scores, landmarks if with_landmarks == n else None)


def parse_predictions(obj: Any, source: str = "<predictions>") -> dict[str, Detections]:
    """Detections per image from a parsed JSON document (either layout, see module doc).

    Args:
      obj: the list of image entries, or a dict with an ``"images"`` list.
      source: named in error messages.

    Returns:
      ``{path: Detections}`` keyed by :func:`normalise_path` of each entry's ``"path"``,
      in file order.

    Raises:
      PredictionFormatError: on a malformed entry or a path listed twice.
    """
    if isinstance(obj, Mapping):
        obj = obj.get("images")
    if not isinstance(obj, list):
        raise PredictionFormatError(f"{source}: expected a list of images or a dict with 'images'")
    out: dict[str, Detections] = {}
    for k, entry in enumerate(obj):
        if not isinstance(entry, Mapping) or "path" not in entry:
            raise PredictionFormatError(f"{source}: image entry {k} has no 'path'")
        path = normalise_path(entry["path"])
        where = f"{source}: image {k} ({path})"
        if path in out:
            raise PredictionFormatError(f"{where}: path listed twice")
        out[path] = _faces(entry, where)
    return out


def read_predictions(filename: str | os.PathLike) -> dict[str, Detections]:
    """Read a detection JSON file (either layout); see :func:`parse_predictions`."""
    try:
        with open(filename, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as err:
        raise PredictionFormatError(f"{os.fspath(filename)}: not valid JSON ({err})") from None
    return parse_predictions(obj, source=os.fspath(filename))


def match_paths(pred_paths: Iterable[str], gt_paths: Iterable[str]) -> dict[str, str]:
    """Map prediction paths to ground-truth paths.

    A prediction path matches the ground-truth path equal to it or, failing that, the one
    that is its suffix at a ``/`` boundary (so ``/data/wider/images/0--Parade/a.jpg`` matches
    ``0--Parade/a.jpg``). Both sides are compared in :func:`normalise_path` form.

    Returns:
      ``{prediction path: ground-truth path}`` for the paths that match exactly one
      ground-truth path; unmatched prediction paths are left out.

    Raises:
      UserError: if a prediction path matches several ground-truth paths, or two
        prediction paths match the same one.
    """
    gt = {normalise_path(p): p for p in gt_paths}
    by_name: dict[str, list[str]] = {}
    for key in gt:
        by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for p in pred_paths:
        key = normalise_path(p)
        if key in gt:
            hit = key
        else:
            cands = [g for g in by_name.get(key.rsplit("/", 1)[-1], []) if key.endswith("/" + g)]
            if not cands:
                continue
            if len(cands) > 1:
                raise UserError(f"prediction path {p!r} matches several ground-truth paths {cands}")
            hit = cands[0]
        if hit in taken:
            raise UserError(f"prediction paths {taken[hit]!r} and {p!r} both match {gt[hit]!r}")
        taken[hit] = p
        out[p] = gt[hit]
    return out


def align_to_ground_truth(
    predictions: Mapping[str, Detections], gt_paths: Iterable[str]
) -> tuple[dict[str, Detections], list[str]]:
    """Re-key predictions by ground-truth path (see :func:`match_paths`).

    Returns:
      ``(by_gt_path, unmatched)``: the detections keyed by the ground-truth path they
      belong to, and the prediction paths that match no ground-truth path.
    """
    mapping = match_paths(predictions.keys(), gt_paths)
    aligned = {mapping[p]: d for p, d in predictions.items() if p in mapping}
    unmatched = [p for p in predictions if p not in mapping]
    return aligned, unmatched
