"""Training samples for P-Net (and the first-pass R/O-Net) cut from annotated images.

Zhang et al. 2016, Sec. III-A ("Training data"): four kinds of window, labelled by
their IoU with the annotated faces —

* **negative**: IoU < 0.3 with every face;
* **positive**: IoU > 0.65 with some face;
* **part**: 0.4 ≤ IoU ≤ 0.65 (windows with 0.3 ≤ IoU < 0.4 are discarded);
* **landmark**: a face with five annotated points.

Coordinate convention (the same as :mod:`mtcnn_jax.detector` outputs and WIDER's
``x2 = x1 + w``): **half-open, 0-based, continuous** pixel coordinates — pixel
column ``i`` spans ``[i, i + 1)``. A square window ``w = (x1, y1, x1 + s, y1 + s)``
with integer corners covers the ``s × s`` pixels ``x1 .. x1 + s - 1`` and is
resized to ``size × size`` (12 for P-Net).

Targets, in units of the window side ``s`` (what the networks predict; see
:mod:`mtcnn_jax.models`):

* box: ``(dx1, dy1, dx2, dy2) = ((gx1 - x1) / s, (gy1 - y1) / s, (gx2 - x2) / s,
  (gy2 - y2) / s)`` for the face ``g`` the window overlaps most. The detector's
  calibration ``x1 + dx1 · w`` with the inclusive width ``w = s`` gives the face
  back (:func:`box_to_pixels`).
* landmarks: ``(x1..x5, y1..y5)`` with ``t = (p - window corner) / s``, 0 = left /
  top edge, 1 = right / bottom edge (:func:`landmarks_to_pixels`). The CUHK lists
  are 0-based in this frame; MTFL's ``training.txt`` is 1-based (subtract 1:
  :func:`read_mtfl`).

Sample cutting follows the common open-source recipe (e.g. AITTSMD's
``gen_12net_data.py``): per image ``negatives_per_image`` random windows of side
``[size, min(H, W) / 2)``; per usable face (not invalid, side ≥ ``min_face``)
``negatives_per_face`` windows shifted next to it and ``crops_per_face`` windows of
side ``[0.8 · min(w, h), 1.25 · max(w, h)]`` shifted by up to 0.2 of the face size,
labelled by IoU. Landmark faces: ``crops_per_landmark_face`` windows around the
annotated face box, kept when IoU > 0.65 and all five points fall inside,
mirrored with probability 1/2 (left/right points swapped). Windows must lie
inside the image. Everything is deterministic for a seed: each image gets its
own generator ``np.random.default_rng([seed, kind, image index])``.

A sample set is a dict of NumPy arrays (the batch layout of :mod:`mtcnn_jax.train`):
``image`` uint8[N, size, size, 3] RGB, ``type`` int32[N] (:mod:`mtcnn_jax.losses`
codes), ``box`` float32[N, 4], ``landmarks`` float32[N, 10] (zeros where unused).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import cv2
import numpy as np

from mtcnn_jax import boxes as boxes_lib
from mtcnn_jax import models
from mtcnn_jax.data.wider import read_wider_gt
from mtcnn_jax.errors import UserError
from mtcnn_jax.losses import LANDMARK, NEGATIVE, PART, POSITIVE

NEGATIVE_IOU = 0.3
PART_IOU = 0.4
POSITIVE_IOU = 0.65
FIELDS = ("image", "type", "box", "landmarks")
#: Mirror permutation of the five points: left eye ↔ right eye, left ↔ right mouth corner.


# ----------------------------------------------------------------------------- geometry


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one half-open ``box`` float[4] with ``boxes`` float[N, 4] → float[N].

    Areas are ``(x2 - x1) · (y2 - y1)`` (continuous, no ``+1``):
    :func:`mtcnn_jax.boxes.iou` with ``inclusive=False``.
    """
    return boxes_lib.iou(box, boxes, inclusive=False)


def label(window: np.ndarray, faces: np.ndarray) -> tuple[Optional[int], int]:
    """Sample type of ``window`` float[4] against ``faces`` float[M, 4], and the face index.

    Returns ``(type, j)`` with ``j`` the face of largest IoU (-1 without faces);
    ``type`` is None for the discarded band 0.3 ≤ IoU < 0.4.
    """
    if len(faces) == 0:
        return NEGATIVE, -1
    o = iou(window, faces)
    j = int(np.argmax(o))
    if o[j] < NEGATIVE_IOU:
        return NEGATIVE, j
    if o[j] > POSITIVE_IOU:
        return POSITIVE, j
    if o[j] >= PART_IOU:
        return PART, j
    return None, j


def box_targets(window: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Regression target float32[4] of ``face`` in square ``window`` (both half-open float[4])."""
    s = window[2] - window[0]
    return ((np.asarray(face, np.float64) - window) / s).astype(np.float32)


def box_to_pixels(window: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`box_targets`: the face box float[4] from the window and offsets."""
    s = window[2] - window[0]
    return np.asarray(window, np.float64) + s * np.asarray(offsets, np.float64)


def landmark_targets(window: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Five points float[5, 2] (x, y) → float32[10] ``(x1..x5, y1..y5)`` relative to ``window``."""
    s = window[2] - window[0]
    p = np.asarray(points, np.float64)
    return np.concatenate([(p[:, 0] - window[0]) / s, (p[:, 1] - window[1]) / s]).astype(np.float32)


def landmarks_to_pixels(window: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Inverse of :func:`landmark_targets`: float[10] → float[5, 2] pixels."""
    s = window[2] - window[0]
    t = np.asarray(t, np.float64)
    return np.stack([window[0] + s * t[:5], window[1] + s * t[5:]], axis=1)


def mirror_landmarks(t: np.ndarray) -> np.ndarray:
    """Targets float[10] of a horizontally mirrored window: ``x → 1 - x``, left/right swapped."""
    return models.mirror_landmarks(np.asarray(t, np.float32))


def cut(image: np.ndarray, window: np.ndarray, size: int, method: str = "antialiased") -> np.ndarray:
    """The pixels of an integer half-open ``window`` inside ``image`` resized to uint8[size, size, 3].

    ``method``: :func:`mtcnn_jax.boxes.resize`'s; the default "antialiased" is
    the detector's, so a training window looks like the crop the detector will
    feed the network at test time (area averaging when shrinking).
    """
    x1, y1, x2, y2 = (int(v) for v in window)
    return boxes_lib.resize(image[y1:y2, x1:x2], (size, size), method)


def _inside(window, h, w) -> bool:
    return window[0] >= 0 and window[1] >= 0 and window[2] <= w and window[3] <= h


# ----------------------------------------------------------------------------- cutting


class Cutting(NamedTuple):
    """How many windows to try (see the module docstring)."""

    size: int = 12
    negatives_per_image: int = 30
    negatives_per_face: int = 3
    crops_per_face: int = 10
    crops_per_landmark_face: int = 3
    min_face: int = 20
    mirror: bool = True
    resize: str = "antialiased"  # boxes.resize method of the crops: the detector's


def _empty(size: int) -> dict:
    return {
        "image": np.zeros((0, size, size, 3), np.uint8),
        "type": np.zeros((0,), np.int32),
        "box": np.zeros((0, 4), np.float32),
        "landmarks": np.zeros((0, 10), np.float32),
    }


def _stack(rows: list, size: int) -> dict:
    if not rows:
        return _empty(size)
    return {
        "image": np.stack([r[0] for r in rows]).astype(np.uint8),
        "type": np.array([r[1] for r in rows], np.int32),
        "box": np.stack([r[2] for r in rows]).astype(np.float32),
        "landmarks": np.stack([r[3] for r in rows]).astype(np.float32),
    }


def concat(parts: Sequence[dict], size: int) -> dict:
    """Concatenate sample sets field by field."""
    parts = [p for p in parts if len(p["type"])]
    if not parts:
        return _empty(size)
    return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}


def cut_detection_samples(
    image: np.ndarray, faces: np.ndarray, usable: np.ndarray, rng: np.random.Generator, c: Cutting
) -> dict:
    """Negative, positive and part windows of one image.

    image: uint8[H, W, 3]; faces: float[M, 4] half-open boxes (all annotated faces,
    used for labelling); usable: bool[M], faces to crop around (and to regress
    to: a positive/part window whose best face is not usable is dropped).
    """
    h, w = image.shape[:2]
    zeros10 = np.zeros(10, np.float32)
    rows = []

    def add(window, only_negative=False):
        if not _inside(window, h, w):
            return
        t, j = label(window, faces)
        if t is None or (only_negative and t != NEGATIVE):
            return
        if t == NEGATIVE:
            rows.append((cut(image, window, c.size, c.resize), NEGATIVE, np.zeros(4, np.float32), zeros10))
        elif usable[j]:
            rows.append((cut(image, window, c.size, c.resize), t, box_targets(window, faces[j]), zeros10))

    hi = min(h, w) // 2
    if hi > c.size:
        for _ in range(c.negatives_per_image):
            s = int(rng.integers(c.size, hi))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            add(np.array([x, y, x + s, y + s], np.float64), only_negative=True)
    for j in np.flatnonzero(usable):
        x1, y1, x2, y2 = faces[j]
        fw, fh = x2 - x1, y2 - y1
        for _ in range(c.negatives_per_face):  # hard negatives next to the face
            s = int(rng.integers(c.size, max(c.size + 1, int(min(w, h) / 2))))
            dx = int(rng.integers(int(max(-s, -x1)), int(fw) + 1))
            dy = int(rng.integers(int(max(-s, -y1)), int(fh) + 1))
            x, y = int(x1) + dx, int(y1) + dy
            add(np.array([x, y, x + s, y + s], np.float64), only_negative=True)
        for _ in range(c.crops_per_face):
            s = int(rng.integers(int(np.ceil(0.8 * min(fw, fh))), int(np.ceil(1.25 * max(fw, fh))) + 1))
            s = max(s, c.size)
            dx = rng.integers(-int(0.2 * fw), int(0.2 * fw) + 1)
            dy = rng.integers(-int(0.2 * fh), int(0.2 * fh) + 1)
            x = int(max(0.0, np.floor(x1 + fw / 2 + dx - s / 2)))
            y = int(max(0.0, np.floor(y1 + fh / 2 + dy - s / 2)))
            add(np.array([x, y, x + s, y + s], np.float64))
    return _stack(rows, c.size)


def cut_landmark_samples(
    image: np.ndarray, face: np.ndarray, points: np.ndarray, rng: np.random.Generator, c: Cutting
) -> dict:
    """Landmark windows around one annotated face.

    face: float[4] half-open box; points: float[5, 2] 0-based (x, y) in the frame of
    the module docstring. The first window is the face box made square about its
    centre; the others are random shifts of it (IoU > 0.65 with the face, all
    points inside the window).
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = np.asarray(face, np.float64)
    fw, fh = x2 - x1, y2 - y1
    rows = []
    for k in range(c.crops_per_landmark_face):
        if k == 0:
            s = int(round(max(fw, fh)))
            dx = dy = 0
        else:
            s = int(rng.integers(int(np.ceil(0.8 * min(fw, fh))), int(np.ceil(1.25 * max(fw, fh))) + 1))
            dx = rng.integers(-int(0.1 * fw), int(0.1 * fw) + 1)
            dy = rng.integers(-int(0.1 * fh), int(0.1 * fh) + 1)
        x = int(np.floor(x1 + fw / 2 + dx - s / 2))
        y = int(np.floor(y1 + fh / 2 + dy - s / 2))
        window = np.array([x, y, x + s, y + s], np.float64)
        if s < c.size or not _inside(window, h, w) or iou(window, face[None])[0] <= POSITIVE_IOU:
            continue
        t = landmark_targets(window, points)
        if np.any(t < 0) or np.any(t > 1):
            continue
        patch = cut(image, window, c.size, c.resize)
        if c.mirror and rng.random() < 0.5:
            patch, t = patch[:, ::-1].copy(), mirror_landmarks(t)
        rows.append((patch, LANDMARK, np.zeros(4, np.float32), t))
    return _stack(rows, c.size)


# ----------------------------------------------------------------------------- readers


class LandmarkFace(NamedTuple):
    path: str
    box: Optional[np.ndarray]  # float64[4] half-open, or None (MTFL has no box)
    points: np.ndarray  # float64[5, 2], 0-based (x, y)


def read_cuhk_list(filename) -> list[LandmarkFace]:
    """CUHK list lines ``path left right top bottom x1 y1 … x5 y5`` (0-based points).

    The box is taken as half-open ``(left, top, right, bottom)``.
    """
    out = []
    for line in Path(filename).read_text().splitlines():
        f = line.split()
        if not f:
            continue
        left, right, top, bottom = map(float, f[1:5])
        pts = np.array(list(map(float, f[5:15])), np.float64).reshape(5, 2)
        out.append(LandmarkFace(f[0], np.array([left, top, right, bottom]), pts))
    return out


def read_mtfl(filename) -> list[LandmarkFace]:
    """MTFL lines ``path x1..x5 y1..y5 gender smile glasses pose``; 1-based → 0-based (−1)."""
    out = []
    for line in Path(filename).read_text().splitlines():
        f = line.split()
        if not f:
            continue
        v = np.array(list(map(float, f[1:11])), np.float64) - 1.0
        out.append(LandmarkFace(f[0], None, np.stack([v[:5], v[5:]], axis=1)))
    return out


def load_rgb(path) -> np.ndarray:
    """uint8[H, W, 3] RGB of a trusted dataset image."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- data sets


def split(n: int, val_every: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic held-out split of ``n`` items: every ``val_every``-th is validation."""
    idx = np.arange(n)
    val = idx % val_every == val_every - 1
    return idx[~val], idx[val]


def detection_samples(wider_dir, indices, seed: int, c: Cutting, records=None, skipped: Optional[list] = None,
                      line_of: Optional[dict] = None, gt_name: str = "gt") -> dict:
    """Samples cut from the WIDER images at ``indices`` of the gt file (in file order).

    ``records``: :class:`mtcnn_jax.data.wider.WiderRecord` list (read from the
    folder's ``*_bbx_gt.txt`` when None); boxes half-open, invalid faces flagged.
    ``skipped``: when a list, an unreadable image is reported there (``"path
    (gt_name:line): reason"``, the line from ``line_of``) and skipped instead of
    raising.
    """
    wider_dir = Path(wider_dir)
    if records is None:
        records = read_wider_gt(next(wider_dir.glob("*_bbx_gt.txt")))
    parts = []
    for i in indices:
        r = records[int(i)]
        try:
            image = load_rgb(wider_dir / "images" / r.path)
        except UserError as err:
            if skipped is None:
                raise
            path, line = wider_dir / "images" / r.path, (line_of or {}).get(r.path)
            reason = str(err).removeprefix(f"{path}: ")
            skipped.append(f"{path} ({gt_name}:{line}): {reason}" if line else str(err))
            continue
        boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        wh = boxes[:, 2:] - boxes[:, :2]
        usable = ~np.asarray(r.invalid, bool) & (np.min(wh, axis=1) >= c.min_face)
        rng = np.random.default_rng([seed, 0, int(i)])
        parts.append(cut_detection_samples(image, boxes, usable, rng, c))
    return concat(parts, c.size)


def landmark_samples(landmark_dir, faces: Sequence[LandmarkFace], indices, seed: int, c: Cutting,
                     skipped: Optional[list] = None) -> dict:
    """Landmark windows of ``faces[indices]``; ``skipped`` as in :func:`detection_samples`."""
    parts = []
    for i in indices:
        f = faces[int(i)]
        try:
            image = load_rgb(Path(landmark_dir) / f.path)
        except UserError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        rng = np.random.default_rng([seed, 1, int(i)])
        parts.append(cut_landmark_samples(image, f.box, f.points, rng, c))
    return concat(parts, c.size)


def build(data_config, size: int, seed: int, skipped: Optional[dict] = None) -> tuple[dict, dict]:
    """Train and held-out sample sets from ``config.data`` (see configs/pnet.py).

    Uses the first ``wider_images`` images of the WIDER gt file and the first
    ``landmark_faces`` lines of the CUHK list; every ``val_every``-th image / face
    goes to the held-out set (so held-out samples come from other images).

    ``skipped``: when a dict, malformed gt lines (``"file:line: reason"``) and
    unreadable images are skipped instead of raising, and reported in its lists
    ``"lines"`` and ``"images"`` (also printed on stderr).
    """
    root = Path(os.path.expanduser(data_config.root))
    wider_dir = root / data_config.wider
    lm_dir = root / data_config.landmarks
    gt = wider_dir / "wider_face_train_mini_bbx_gt.txt"
    gt = gt if gt.exists() else next(iter(sorted(wider_dir.glob("*_bbx_gt.txt"))), gt)
    lm_list = lm_dir / data_config.landmark_list
    for p in (gt, lm_list):
        if not p.exists():
            raise UserError(f"training data not found: {p} (set config.data.root or MTCNN_JAX_DATA)")
    c = Cutting(
        size=size,
        negatives_per_image=data_config.negatives_per_image,
        negatives_per_face=data_config.negatives_per_face,
        crops_per_face=data_config.crops_per_face,
        crops_per_landmark_face=data_config.crops_per_landmark_face,
        min_face=data_config.min_face,
        mirror=data_config.mirror,
    )
    line_of = None
    if skipped is None:
        records = read_wider_gt(gt)[: data_config.wider_images]
    else:
        import sys  # noqa: PLC0415
        import warnings  # noqa: PLC0415

        from mtcnn_jax.data.wider import WiderFormatWarning  # noqa: PLC0415

        skipped.setdefault("lines", [])
        skipped.setdefault("images", [])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", WiderFormatWarning)
            records = read_wider_gt(gt, strict=False)[: data_config.wider_images]
        skipped["lines"] += [str(w.message) for w in caught if issubclass(w.category, WiderFormatWarning)]
        line_of = {}
        for k, text in enumerate(gt.read_text(encoding="utf-8", errors="replace").splitlines()):
            line_of.setdefault(text.strip().replace("\\", "/"), k + 1)
        for msg in skipped["lines"]:
            print(f"skipped: {msg}", file=sys.stderr)
    faces = read_cuhk_list(lm_list)[: data_config.landmark_faces]
    wtr, wva = split(len(records), data_config.val_every)
    ltr, lva = split(len(faces), data_config.val_every)
    bad = None if skipped is None else skipped["images"]
    n_bad = 0 if bad is None else len(bad)
    train, val = (
        concat(
            [
                detection_samples(wider_dir, w, seed, c, records, bad, line_of, str(gt)),
                landmark_samples(lm_dir, faces, lm, seed, c, bad),
            ],
            size,
        )
        for w, lm in ((wtr, ltr), (wva, lva))
    )
    if bad is not None:
        import sys  # noqa: PLC0415

        for msg in bad[n_bad:]:
            print(f"skipped: {msg}", file=sys.stderr)
    return train, val


def counts(samples: dict) -> dict:
    """Number of samples of each type: ``{"negative": …, "positive": …, "part": …, "landmark": …}``."""
    t = np.asarray(samples["type"])
    return {name: int(np.sum(t == code)) for code, name in enumerate(("negative", "positive", "part", "landmark"))}


def save(path, train: dict, val: dict, recipe: str = "") -> None:
    """Write both sets and a ``recipe`` string (what they were cut with) to one ``.npz``,
    atomically (temporary file, then rename); no pickle."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        recipe=np.array(recipe),
        **{f"train_{k}": v for k, v in train.items()},
        **{f"val_{k}": v for k, v in val.items()},
    )
    os.replace(tmp, path)


def load(path) -> tuple[dict, dict, str]:
    """``(train, val, recipe)`` as written by :func:`save`."""
    with np.load(path, allow_pickle=False) as z:
        recipe = str(z["recipe"]) if "recipe" in z.files else ""
        return ({k: z[f"train_{k}"] for k in FIELDS}, {k: z[f"val_{k}"] for k in FIELDS}, recipe)
