"""Hard-sample mining: training windows for R-Net and O-Net from the detections of the earlier stages.

Zhang et al. 2016, Sec. III-C ("Training"): R-Net learns from the windows the
trained P-Net proposes on the training images, O-Net from the windows P-Net +
R-Net keep. Each proposed window is labelled by its IoU with the annotated faces,
with the thresholds of the config (paper: negative < 0.3, part 0.4 – 0.65,
positive > 0.65; 0.3 – 0.4 is discarded), and cropped the way the detector will
crop it at test time: zero-padded where it leaves the image, resized to 24×24
(R-Net) or 48×48 (O-Net).

Coordinates. The detector's stage methods (:meth:`mtcnn_jax.detector.MTCNN.proposals`,
``refine``) return the authors' boxes (:attr:`mtcnn_jax.boxes.BoxMode.AUTHORS`,
inclusive 1-based). A candidate (truncated to integers as the detector does
before cropping) converted to :attr:`~mtcnn_jax.boxes.BoxMode.HALF_OPEN` is
``(x1, y1, x2, y2)``; here it becomes the **half-open 0-based** square window
``w = (x1, y1, x1 + s, y1 + s)`` with ``s = max(x2 - x1, y2 - y1)`` (the
detector's boxes are square up to the truncation), the frame of
:mod:`mtcnn_jax.data.samples`. Box targets are
:func:`mtcnn_jax.data.samples.box_targets` of that window, i.e. exactly what the
detector's calibration ``x1 + dx1 · w`` (inclusive width = ``s``) inverts.

Per image: every positive and part window is kept; negatives are capped at
``negatives_per_image``, drawn with ``np.random.default_rng([seed, stage code,
image index])``, so mining is deterministic for a seed and a params set.
Positive and part windows whose best face is invalid or smaller than
``min_face`` are dropped (their regression target would be noise), as in
:func:`mtcnn_jax.data.samples.cut_detection_samples`.

Robustness: the WIDER gt file is read with ``strict=False`` (a malformed line
is reported as ``file:line: reason`` and skipped); an image that cannot be
decoded is reported as ``path (gt file:line): reason`` and skipped. Both are
counted in the :class:`MiningSummary`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from mtcnn_jax import boxes as bx
from mtcnn_jax import files
from mtcnn_jax.data import samples as sp
from mtcnn_jax.data.wider import read_wider_gt_skipping
from mtcnn_jax.losses import NEGATIVE, PART, POSITIVE, SAMPLE_TYPES
from mtcnn_jax.models import INPUT_SIZE
from mtcnn_jax.settings import MiningSettings

#: The types mining labels windows with (landmark samples are cut from the landmark faces instead).
MINED_TYPES = (NEGATIVE, POSITIVE, PART)
#: Seed stream per stage it mines for (distinct from samples.py's 0 = detection, 1 = landmark).
STAGE_CODE = {"rnet": 2, "onet": 3}
DISCARD = -1


@dataclasses.dataclass
class Thresholds:
    """IoU thresholds of the labelling (paper: 0.3 / 0.4 / 0.65)."""

    negative: float = sp.NEGATIVE_IOU
    part: float = sp.PART_IOU
    positive: float = sp.POSITIVE_IOU


@dataclasses.dataclass
class MiningSummary:
    """What a mining run saw: images mined, windows proposed, samples per type, and what it skipped."""

    images: int = 0
    proposals: int = 0
    counts: dict = dataclasses.field(default_factory=lambda: {SAMPLE_TYPES[t]: 0 for t in MINED_TYPES})
    negatives_dropped: int = 0  # negatives over the per-image cap
    random_windows: int = 0  # optional random windows added (random_crops_per_face)
    skipped_images: list = dataclasses.field(default_factory=list)  # "path (gt:line): reason"
    skipped_lines: list = dataclasses.field(default_factory=list)  # "gt file:line: reason"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["n_skipped_images"] = len(self.skipped_images)
        d["n_skipped_lines"] = len(self.skipped_lines)
        return d


# ----------------------------------------------------------------------------- one image


def windows_from_candidates(cand: np.ndarray) -> np.ndarray:
    """Detector candidates float[N, ≥4] (the authors' boxes) → half-open 0-based square windows float64[N, 4]."""
    c = np.asarray(cand, np.float64)
    c = np.fix(c.reshape(-1, c.shape[-1])[:, :4]) if c.size else np.zeros((0, 4))
    h = bx.convert(c, bx.BoxMode.AUTHORS, bx.BoxMode.HALF_OPEN)
    side = np.maximum(h[:, 2] - h[:, 0], h[:, 3] - h[:, 1])
    return np.stack([h[:, 0], h[:, 1], h[:, 0] + side, h[:, 1] + side], axis=1)


def label_windows(windows: np.ndarray, faces: np.ndarray, thresholds: Thresholds = Thresholds()):
    """Type of each window by its best IoU with ``faces``.

    windows: float[N, 4], faces: float[M, 4], both half-open. Returns ``(types
    int32[N], best int64[N], best_iou float64[N])``: types are NEGATIVE (IoU <
    ``negative`` with every face, or no face), POSITIVE (> ``positive``), PART
    (``part`` ≤ IoU ≤ ``positive``) or :data:`DISCARD`; ``best`` is the face of
    largest IoU (-1 without faces).
    """
    windows = np.asarray(windows, np.float64).reshape(-1, 4)
    faces = np.asarray(faces, np.float64).reshape(-1, 4)
    n = len(windows)
    if len(faces) == 0 or n == 0:
        return np.full(n, NEGATIVE, np.int32), np.full(n, -1, np.int64), np.zeros(n)
    overlaps = np.stack([sp.iou(f, windows) for f in faces])  # [M, N]
    best = np.argmax(overlaps, axis=0)
    o = overlaps[best, np.arange(n)]
    types = np.full(n, DISCARD, np.int32)
    types[o < thresholds.negative] = NEGATIVE
    types[(o >= thresholds.part) & (o <= thresholds.positive)] = PART
    types[o > thresholds.positive] = POSITIVE
    return types, best, o


def mine_image(
    image: np.ndarray,
    cand: np.ndarray,
    faces: np.ndarray,
    usable: np.ndarray,
    size: int,
    rng: np.random.Generator,
    negatives_per_image: int,
    thresholds: Thresholds = Thresholds(),
    resize: str = "antialiased",
    summary: Optional[MiningSummary] = None,
) -> dict:
    """Samples (the :mod:`mtcnn_jax.data.samples` layout, ``size × size`` crops) from one image's candidates.

    image: uint8[H, W, 3]; cand: the detector's float[N, ≥4] boxes (the authors'
    convention); faces: float[M, 4] half-open gt boxes (all of them, for labelling);
    usable: bool[M], faces a positive / part window may regress to.
    """
    windows = windows_from_candidates(cand)
    windows = windows[windows[:, 2] - windows[:, 0] >= 1]
    types, best, _ = label_windows(windows, faces, thresholds)
    if len(faces):
        ok_face = np.asarray(usable, bool)[np.maximum(best, 0)]
        types[(types != NEGATIVE) & ~ok_face] = DISCARD
    neg = np.flatnonzero(types == NEGATIVE)
    if len(neg) > negatives_per_image:
        keep_neg = np.sort(rng.choice(neg, negatives_per_image, replace=False))
        if summary is not None:
            summary.negatives_dropped += len(neg) - negatives_per_image
        types[np.setdiff1d(neg, keep_neg)] = DISCARD
    keep = np.flatnonzero(types != DISCARD)
    if summary is not None:
        summary.proposals += len(windows)
    if len(keep) == 0:
        return sp._empty(size)
    inclusive = bx.convert(windows[keep], bx.BoxMode.HALF_OPEN, bx.BoxMode.INCLUSIVE).astype(np.int64)
    crops = bx.crop_and_resize(image, inclusive, size, resize)
    t = types[keep]
    box = np.zeros((len(keep), 4), np.float32)
    for r, (k, typ) in enumerate(zip(keep, t)):
        if typ != NEGATIVE:
            box[r] = sp.box_targets(windows[k], faces[best[k]])
    out = {"image": crops, "type": t.astype(np.int32), "box": box, "landmarks": np.zeros((len(keep), 10), np.float32)}
    if summary is not None:
        for code in MINED_TYPES:
            summary.counts[SAMPLE_TYPES[code]] += int(np.sum(t == code))
    return out


# ----------------------------------------------------------------------------- data sets


def read_gt(gt_file, summary: Optional[MiningSummary] = None):
    """WIDER records read with ``strict=False`` and ``{image path: gt line number}``.

    Each malformed line is reported on stderr and in ``summary.skipped_lines``.
    """
    lines: list = []
    records, line_of = read_wider_gt_skipping(Path(gt_file), lines)
    files.report_skipped(lines, None if summary is None else summary.skipped_lines)
    return records, line_of


def find_gt(wider_dir) -> Path:
    """The gt file of a WIDER-format folder: :func:`mtcnn_jax.data.wider.find_gt` (both layouts)."""
    from mtcnn_jax.data.wider import find_gt as _find  # noqa: PLC0415

    return _find(wider_dir)


def recipe_pyramid(settings) -> str:
    """The ``pyramid`` of mining or evaluation settings; "original" (each level from the image) where it has none.

    The recipe keeps the authors' pyramid so that its results stay reproducible;
    settings made before the setting existed mean the same
    (:class:`mtcnn_jax.settings.MiningSettings` defaults to it).
    """
    return getattr(settings, "pyramid", "original")


def make_detector(params: Mapping[str, dict], stage: str, mining: MiningSettings):
    """A :class:`mtcnn_jax.detector.MTCNN` running the stages before ``stage`` with ``params``.

    Stages ``params`` lacks (and the ones mining does not run) take the authors'
    weights. Detector settings from ``mining`` (``min_face_size``, ``factor``,
    ``pnet_threshold``, ``rnet_threshold``, ``resize``, ``pyramid``).
    """
    from mtcnn_jax.detector import MTCNN  # noqa: PLC0415
    from mtcnn_jax.pretrained import load_pretrained  # noqa: PLC0415

    weights = dict(params)
    if any(s not in weights for s in ("pnet", "rnet", "onet")):
        authors = load_pretrained()
        for s in ("pnet", "rnet", "onet"):
            weights.setdefault(s, authors[s])
    m = mining
    return MTCNN(
        min_face_size=m.min_face_size,
        factor=m.factor,
        thresholds=(m.pnet_threshold, m.rnet_threshold, 0.7),
        resize=m.resize,
        weights=weights,
        pyramid=recipe_pyramid(m),
    )


def mine(
    detector,
    stage: str,
    wider_dir,
    records: Sequence,
    indices: Sequence[int],
    seed: int,
    mining: MiningSettings,
    min_face: int = 20,
    line_of: Optional[Mapping[str, int]] = None,
    gt_file: str = "gt",
    summary: Optional[MiningSummary] = None,
    progress: bool = False,
    proposal_cache: Optional[dict] = None,
) -> dict:
    """Mined samples of ``stage`` ("rnet" or "onet") from the WIDER images ``records[indices]``.

    ``detector``: :func:`make_detector`'s; R-Net samples come from its
    ``proposals``, O-Net samples from ``refine(proposals)``. ``mining``:
    ``negative_iou``, ``part_iou``, ``positive_iou``, ``negatives_per_image``,
    ``resize`` and ``random_crops_per_face`` (> 0 adds, per image with a usable
    face, that many random windows around each usable face, one next to it and
    that many anywhere, labelled as :mod:`mtcnn_jax.data.samples` does: a top-up
    for small sets or weak earlier stages whose proposals hold few positives, or
    none at all; not in the paper). Unreadable images are reported, skipped and
    counted in ``summary``.

    ``proposal_cache``: a dict ``{image path in the gt file: P-Net proposals}``;
    an image found in it skips P-Net, one missing is run and added. R-Net mining
    fills it and O-Net mining reuses it (same trained P-Net, same settings), so
    P-Net runs once per image for the whole recipe.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from mtcnn_jax.images import load_image  # noqa: PLC0415

    if stage not in STAGE_CODE:
        raise ValueError(f"mining makes samples for rnet or onet, not {stage!r}")
    size = INPUT_SIZE[stage]
    summary = summary if summary is not None else MiningSummary()
    m = mining
    th = Thresholds(m.negative_iou, m.part_iou, m.positive_iou)
    line_of = line_of or {}
    parts = []
    for i in tqdm(list(indices), desc=f"mine {stage}", disable=not progress, dynamic_ncols=True):
        r = records[int(i)]
        path = Path(wider_dir) / "images" / r.path
        try:
            image = load_image(path)
        except Exception as err:  # noqa: BLE001 (any undecodable image is skipped)
            where = f"{gt_file}:{line_of[r.path]}" if r.path in line_of else gt_file
            msg = f"{path} ({where}): {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            files.report_skipped([msg], summary.skipped_images)
            continue
        if proposal_cache is not None and r.path in proposal_cache:
            cand = proposal_cache[r.path]
        else:
            cand = detector.proposals(image)
            if proposal_cache is not None:
                proposal_cache[r.path] = np.asarray(cand)
        if stage == "onet" and len(cand):
            cand = detector.refine(image, cand)
        faces = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        wh = faces[:, 2:] - faces[:, :2]
        usable = ~np.asarray(r.invalid, bool) & (np.min(wh, axis=1) >= min_face)
        rng = np.random.default_rng([seed, STAGE_CODE[stage], int(i)])
        parts.append(mine_image(image, cand, faces, usable, size, rng, int(m.negatives_per_image), th, m.resize,
                                summary))
        extra = int(m.random_crops_per_face)
        if extra and usable.any():  # optional top-up: random windows around the faces (samples.py's recipe)
            cut = sp.Cutting(size=size, negatives_per_image=extra, negatives_per_face=1, crops_per_face=extra,
                             min_face=min_face, mirror=False, resize=m.resize)
            more = sp.cut_detection_samples(image, faces, usable, np.random.default_rng([seed, STAGE_CODE[stage], int(i), 1]),
                                            cut)
            summary.random_windows += len(more["type"])
            parts.append(more)
        summary.images += 1
    return sp.concat(parts, size)
