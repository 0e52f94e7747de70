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
own generator ``np.random.default_rng([seed, kind, image index])`` (kind 0 =
WIDER image, 1 = landmark face), so the images can be cut in any order and over
any number of processes (:func:`run_tasks`, ``config.data.workers``) and the
sets, put back in image order, are the same arrays.

Landmark faces come from a list in the CUHK, MTFL or CelebA format
(:mod:`mtcnn_jax.data.landmarks`, chosen by ``data.landmark_format``).
A malformed list line is reported as ``file:line: reason`` and an unreadable
image as ``image path (list file:line): reason``; :func:`build` skips and
reports both when asked to (its ``skipped`` argument).

The cutting settings come as a :class:`mtcnn_jax.settings.DataSettings` (a
config's ``data`` group). A sample set is a dict of NumPy arrays (the batch
layout of :mod:`mtcnn_jax.train`, the fields of :data:`mtcnn_jax.data.store.FIELDS`):
``image`` uint8[N, size, size, 3] RGB, ``type`` int32[N] (:mod:`mtcnn_jax.losses`
codes), ``box`` float32[N, 4], ``landmarks`` float32[N, 10] (zeros where unused).
On disk, sample sets are sample stores (:mod:`mtcnn_jax.data.store`).

This module is over 500 lines because cutting has one home: the labelling and
target geometry, the two window recipes, and the parallel run that must give
the serial run's arrays exactly.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from mtcnn_jax import boxes as boxes_lib
from mtcnn_jax import files, models
from mtcnn_jax.data import landmarks as landmarks_lib
from mtcnn_jax.data.store import FIELDS, allocate, counts  # noqa: F401 (counts: part of this module's API)
from mtcnn_jax.data.wider import find_gt as find_wider_gt
from mtcnn_jax.data.wider import read_wider_gt, read_wider_gt_skipping
from mtcnn_jax.errors import UserError
from mtcnn_jax.losses import LANDMARK, NEGATIVE, PART, POSITIVE

if TYPE_CHECKING:
    from mtcnn_jax.settings import DataSettings

NEGATIVE_IOU = 0.3
PART_IOU = 0.4
POSITIVE_IOU = 0.65


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


def mirror_box_targets(t: np.ndarray) -> np.ndarray:
    """Box targets float[..., 4] of horizontally mirrored windows: ``(dx1, dy1, dx2, dy2) → (-dx2, dy1, -dx1, dy2)``.

    A half-open window ``[x1, x2)`` mirrors ``x`` to ``x1 + x2 - x``, so the
    face's new left edge is ``x1 + x2 - fx2``: ``(x1 + x2 - fx2 - x1) / s = -dx2``.
    """
    t = np.asarray(t, np.float32)
    return np.stack([-t[..., 2], t[..., 1], -t[..., 0], t[..., 3]], axis=-1)


def augment(batch: dict, flip: bool, colour: float, rng: np.random.Generator) -> dict:
    """Batch-time augmentation of a training batch (:mod:`mtcnn_jax.train`'s dict of host arrays).

    ``flip``: each window mirrored with probability 1/2, its box targets
    (:func:`mirror_box_targets`) and landmark targets (:func:`mirror_landmarks`:
    ``x → 1 - x``, left and right points swapped) with it. ``colour`` (≥ 0): each
    window's pixels ``p → a p + b`` with contrast ``a`` uniform in ``[1 - colour,
    1 + colour]`` and brightness ``b`` uniform in ``±64 colour``, per channel scale
    ``a`` times a factor in ``[1 - colour / 2, 1 + colour / 2]``, rounded and
    clipped to uint8. Returns a new dict; ``batch`` is left as it is.
    """
    out = dict(batch)
    n = len(batch["type"])
    if flip:
        m = rng.random(n) < 0.5
        image = batch["image"].copy()
        image[m] = image[m][:, :, ::-1]
        box, lm = batch["box"].copy(), batch["landmarks"].copy()
        box[m], lm[m] = mirror_box_targets(box[m]), models.mirror_landmarks(lm[m])
        out.update(image=image, box=box, landmarks=lm)
    if colour:
        a = rng.uniform(1 - colour, 1 + colour, (n, 1, 1, 1)) * rng.uniform(1 - colour / 2, 1 + colour / 2, (n, 1, 1, 3))
        b = rng.uniform(-64 * colour, 64 * colour, (n, 1, 1, 1))
        out["image"] = np.clip(np.rint(out["image"].astype(np.float32) * a + b), 0, 255).astype(np.uint8)
    return out


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
    return allocate(0, size)


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

# The landmark list readers live in mtcnn_jax.data.landmarks (one policy for
# malformed lines); these names are kept here for existing callers.
LandmarkFace = landmarks_lib.LandmarkFace
read_cuhk_list = landmarks_lib.read_cuhk_list
read_mtfl = landmarks_lib.read_mtfl
read_landmark_list = landmarks_lib.read_landmark_list


def load_rgb(path) -> np.ndarray:
    """uint8[H, W, 3] RGB of a trusted dataset image."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def landmark_faces(data: "DataSettings", skipped: Optional[list] = None) -> list[LandmarkFace]:
    """The first ``data.landmark_faces`` faces of ``data.root / data.landmarks / data.landmark_list`` (none, and no
    list read, when ``data.landmark_faces`` is 0).

    Read in ``data.landmark_format`` ("celeba" takes the folder of both lists, see
    :mod:`mtcnn_jax.data.landmarks`). ``skipped``: when a list, malformed lines
    are reported there (``"file:line: reason"``) and skipped; when None the first
    one raises. Faces must carry a box (windows are cut around it): a format
    without one (MTFL, aligned CelebA) is a :class:`UserError`.
    """
    if data.landmark_faces == 0:  # a data set without landmark faces (e.g. WIDER alone)
        return []
    root = Path(os.path.expanduser(data.root))
    fmt = data.landmark_format
    path = root / data.landmarks / data.landmark_list
    faces = landmarks_lib.read_landmark_list(path, fmt, strict=skipped is None, skipped=skipped)
    faces = faces[: data.landmark_faces]
    if any(f.box is None for f in faces):
        raise UserError(f"{path}: the {fmt!r} list has no face boxes, which landmark windows are cut around "
                        "(use a list with boxes, e.g. the CUHK list of the same images)")
    return faces


# ----------------------------------------------------------------------------- parallel cutting
#
# Each image is one task, cut with its own generator (seed, kind, image index), so
# the samples do not depend on which process cuts them or when: the results are
# put back in task order and concatenated, giving the serial run's arrays exactly.
# Workers are started with "spawn" (JAX runs threads in the parent; forking after
# that is unsafe) and get chunks of tasks to keep the per-task overhead low.


class _Task(NamedTuple):
    """One image to cut (picklable: plain arrays and strings)."""

    kind: int  # 0 detection (WIDER), 1 landmark face: the seed stream
    index: int  # image / face index: the generator is default_rng([seed, kind, index])
    path: str  # image file
    where: str  # "list file:line" the image comes from ("" if unknown)
    boxes: np.ndarray  # detection: float64[M, 4] half-open faces; landmark: float64[4] face box
    extra: np.ndarray  # detection: bool[M] usable faces; landmark: float64[5, 2] points
    seed: int
    cutting: Cutting


def _cut_task(t: _Task) -> tuple[Optional[dict], str, str]:
    """``(samples, "", "")``, or ``(None, error, report)`` for an image that cannot be read."""
    try:
        image = load_rgb(t.path)
    except (UserError, OSError, cv2.error) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        reason = text.removeprefix(f"{t.path}: ")
        return None, text, f"{t.path} ({t.where}): {reason}" if t.where else f"{t.path}: {reason}"
    rng = np.random.default_rng([t.seed, t.kind, t.index])
    if t.kind == 0:
        return cut_detection_samples(image, t.boxes, t.extra, rng, t.cutting), "", ""
    return cut_landmark_samples(image, t.boxes, t.extra, rng, t.cutting), "", ""


def _cut_chunk(tasks: list) -> list:
    return [_cut_task(t) for t in tasks]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV's own threads would oversubscribe
    # Ctrl-C reaches the whole process group: the parent stops the pool and reports
    # once; the workers stay quiet instead of each printing a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resolve_workers(workers: Optional[int]) -> int:
    """Number of processes: ``workers``, or every core (``os.cpu_count()``) for 0 / None."""
    if workers is None or int(workers) <= 0:
        return os.cpu_count() or 1
    return int(workers)


def run_tasks(tasks: Sequence[_Task], workers: Optional[int] = 1, progress: bool = False,
              desc: str = "samples") -> list:
    """:func:`_cut_task` of every task, in task order, over ``workers`` processes.

    ``workers``: 1 cuts in this process; 0 / None uses every core. A tqdm bar
    counts images when ``progress`` and stderr is a terminal. The processes are
    started with "spawn", which imports the caller's main script in each: a
    script must keep its work under ``if __name__ == "__main__":`` (Python's
    rule for spawn; the ``mtcnn-jax`` command and notebooks need nothing).
    """
    import concurrent.futures as cf  # noqa: PLC0415
    import multiprocessing  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    tasks = list(tasks)
    n = len(tasks)
    workers = max(1, min(resolve_workers(workers), n))
    bar = tqdm(total=n, desc=desc, unit="img", dynamic_ncols=True, disable=not (progress and sys.stderr.isatty()))
    try:
        if workers == 1:
            out = []
            for t in tasks:
                out.append(_cut_task(t))
                bar.update(1)
            return out
        size = max(1, min(32, -(-n // (4 * workers))))  # ≥ 4 chunks per worker, ≤ 32 images each
        chunks = [tasks[i : i + size] for i in range(0, n, size)]
        results: list = [None] * len(chunks)
        ctx = multiprocessing.get_context("spawn")
        try:
            with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                pending = {pool.submit(_cut_chunk, c): k for k, c in enumerate(chunks)}
                for fut in cf.as_completed(pending):
                    k = pending[fut]
                    results[k] = fut.result()
                    bar.update(len(chunks[k]))
        except cf.process.BrokenProcessPool:
            raise UserError(f"a worker process cutting samples died (a script that cuts with workers ≠ 1 must run "
                            f"its code under `if __name__ == \"__main__\":`; or set config.data.workers=1)") from None
        return [r for part in results for r in part]
    finally:
        bar.close()


def _collect(results: list, size: int, skipped: Optional[list]) -> dict:
    """Concatenate task results; unreadable images go to ``skipped`` (or raise when it is None)."""
    parts = []
    for samples, error, report in results:
        if samples is None:
            if skipped is None:
                raise UserError(error)
            skipped.append(report)
            continue
        parts.append(samples)
    return concat(parts, size)


# ----------------------------------------------------------------------------- data sets


def split(n: int, val_every: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic held-out split of ``n`` items: every ``val_every``-th is validation."""
    idx = np.arange(n)
    val = idx % val_every == val_every - 1
    return idx[~val], idx[val]


def _detection_tasks(wider_dir, records, indices, seed: int, c: Cutting, line_of: Optional[dict],
                     gt_name: str) -> list[_Task]:
    tasks = []
    for i in indices:
        r = records[int(i)]
        boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        wh = boxes[:, 2:] - boxes[:, :2]
        usable = ~np.asarray(r.invalid, bool) & (np.min(wh, axis=1) >= c.min_face)
        line = (line_of or {}).get(r.path)
        where = f"{gt_name}:{line}" if line else ""
        tasks.append(_Task(0, int(i), str(Path(wider_dir) / "images" / r.path), where, boxes, usable, seed, c))
    return tasks


def _landmark_tasks(landmark_dir, faces: Sequence[LandmarkFace], indices, seed: int, c: Cutting) -> list[_Task]:
    tasks = []
    for i in indices:
        f = faces[int(i)]
        box = np.asarray(f.box, np.float64)
        tasks.append(_Task(1, int(i), str(Path(landmark_dir) / f.path), f.where, box,
                           np.asarray(f.points, np.float64), seed, c))
    return tasks


def detection_samples(wider_dir, indices, seed: int, c: Cutting, records=None, skipped: Optional[list] = None,
                      line_of: Optional[dict] = None, gt_name: str = "gt", workers: Optional[int] = 1,
                      progress: bool = False) -> dict:
    """Samples cut from the WIDER images at ``indices`` of the gt file (in file order).

    ``records``: :class:`mtcnn_jax.data.wider.WiderRecord` list (read from the
    folder's ``*_bbx_gt.txt`` when None); boxes half-open, invalid faces flagged.
    ``skipped``: when a list, an unreadable image is reported there (``"path
    (gt_name:line): reason"``, the line from ``line_of``) and skipped instead of
    raising. ``workers`` / ``progress``: :func:`run_tasks`; the samples do not
    depend on ``workers``.
    """
    wider_dir = Path(wider_dir)
    if records is None:
        records = read_wider_gt(find_wider_gt(wider_dir))
    tasks = _detection_tasks(wider_dir, records, indices, seed, c, line_of, gt_name)
    return _collect(run_tasks(tasks, workers, progress, f"cut {c.size}×{c.size}"), c.size, skipped)


def landmark_samples(landmark_dir, faces: Sequence[LandmarkFace], indices, seed: int, c: Cutting,
                     skipped: Optional[list] = None, workers: Optional[int] = 1, progress: bool = False) -> dict:
    """Landmark windows of ``faces[indices]`` (images relative to ``landmark_dir``).

    ``skipped``: when a list, an unreadable image is reported there as ``"image
    path (list file:line): reason"`` and skipped instead of raising.
    ``workers`` / ``progress`` as in :func:`detection_samples`.
    """
    tasks = _landmark_tasks(landmark_dir, faces, indices, seed, c)
    return _collect(run_tasks(tasks, workers, progress, f"cut landmarks {c.size}×{c.size}"), c.size, skipped)


def cutting(data: "DataSettings", size: int) -> Cutting:
    """The :class:`Cutting` of ``data`` for windows of side ``size``."""
    return Cutting(size=size, negatives_per_image=data.negatives_per_image, negatives_per_face=data.negatives_per_face,
                   crops_per_face=data.crops_per_face, crops_per_landmark_face=data.crops_per_landmark_face,
                   min_face=data.min_face, mirror=data.mirror)


def build(data: "DataSettings", size: int, seed: int, skipped: Optional[dict] = None,
          progress: bool = True) -> tuple[dict, dict]:
    """Train and held-out sample sets cut as ``data`` says (a config's ``data`` group, see configs/pnet.py).

    Uses the first ``wider_images`` images of the WIDER gt file and the first
    ``landmark_faces`` faces of the landmark list (``landmark_list`` in
    ``landmark_format``: :func:`landmark_faces`); every ``val_every``-th image /
    face goes to the held-out set (so held-out samples come from other images).
    Images are cut over ``data.workers`` processes (0 = every core) with a
    progress bar on a terminal (``progress``); the sets do not depend on the
    number of workers.

    ``skipped``: when a dict, malformed gt / landmark lines (``"file:line:
    reason"``) and unreadable images (``"path (list file:line): reason"``) are
    skipped instead of raising, and reported in its lists ``"lines"`` and
    ``"images"`` (also printed on stderr).
    """
    root = Path(os.path.expanduser(data.root))
    wider_dir = root / data.wider
    lm_dir = root / data.landmarks
    if not wider_dir.is_dir():
        raise UserError(f"training data not found: {wider_dir} (set config.data.root or MTCNN_JAX_DATA)")
    gt = find_wider_gt(wider_dir)  # the shared layout or the official WIDER_train + wider_face_split
    lm_list = lm_dir / data.landmark_list
    for p in (gt, lm_list) if data.landmark_faces else (gt,):  # no landmark faces: no list needed
        if not p.exists():
            raise UserError(f"training data not found: {p} (set config.data.root or MTCNN_JAX_DATA)")
    c = cutting(data, size)
    line_of = None
    if skipped is None:
        records = read_wider_gt(gt)[: data.wider_images]
        faces = landmark_faces(data)
    else:
        skipped.setdefault("lines", [])
        skipped.setdefault("images", [])
        n_lines = len(skipped["lines"])
        records, line_of = read_wider_gt_skipping(gt, skipped["lines"])
        records = records[: data.wider_images]
        faces = landmark_faces(data, skipped["lines"])
        files.report_skipped(skipped["lines"][n_lines:])
    wtr, wva = split(len(records), data.val_every)
    ltr, lva = split(len(faces), data.val_every)
    # One pool for the four groups (train / held-out × WIDER / landmark faces), in the
    # order the serial version cut them.
    groups = [
        _detection_tasks(wider_dir, records, wtr, seed, c, line_of, str(gt)),
        _landmark_tasks(lm_dir, faces, ltr, seed, c),
        _detection_tasks(wider_dir, records, wva, seed, c, line_of, str(gt)),
        _landmark_tasks(lm_dir, faces, lva, seed, c),
    ]
    results = run_tasks([t for g in groups for t in g], data.workers, progress, f"cut {size}×{size}")
    bad = None if skipped is None else skipped["images"]
    n_bad = 0 if bad is None else len(bad)
    sets, k = [], 0
    for g in groups:
        sets.append(_collect(results[k : k + len(g)], size, bad))
        k += len(g)
    if bad is not None:
        files.report_skipped(bad[n_bad:])
    return concat(sets[:2], size), concat(sets[2:], size)

