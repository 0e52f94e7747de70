"""The detector's defaults, measured: which pyramid, and how to read the landmarks (mirrored, second pass).

    .venv/bin/python benchmarks/defaults_study.py --no-timing --markdown      # ~25 min on 2 shared cores
    .venv/bin/python benchmarks/defaults_study.py --only-timing --markdown    # speed, on a quiet machine

Everything runs with the paper's settings (min face 20, factor 0.709, thresholds 0.6 / 0.7 / 0.7)
and the authors' weights. Settings are chosen on validation splits drawn from training data and
confirmed, never tuned, on the evaluation sets (``--sets val,eval``):

* WIDER FACE AP (official protocol and 1,000-threshold sampling, all valid faces / >= 20 / >= 40 px)
  per pyramid (``--pyramids``, :data:`mtcnn_jax.pyramid.PYRAMID_MODES`) through
  :func:`mtcnn_jax.evaluation.runner.detect_images`: validation ``widerface_train_mini`` (640
  images), evaluation ``widerface_val_subset`` (360); with a paired bootstrap of each pyramid's AP
  against ``original`` (the authors' pyramid) over images;
* landmarks, NME of the best detection (inter-ocular) and failure rate (NME > 0.1), per pyramid
  (``--landmark-pyramids``) and per way of reading O-Net's landmark outputs
  (:data:`VARIANTS`), with the mean signed error per point: validation ``lfw_a`` (the 4,151 LFW
  faces of ``mtfl_lfw_train_landmarks/training_lfw.txt``, MTFL, 1-based) and ``lfw_b`` (the other
  1,439 LFW faces, ``cuhk_testImageList_lfw.txt``, CUHK, 0-based); evaluation ``aflw``
  (``mtfl_aflw_test_landmarks``, 2,995 crops of 150x150). The landmark outputs come from one run
  of the cascade per set and pyramid (:func:`capture`), checked against ``MTCNN.detect`` with and
  without ``flip_landmarks`` and ``refine_landmarks`` on the first 40 images of each set;
* the pyramid levels against a port of the authors' ``imResample`` (:func:`pyramid_fidelity`).

Timing (off with ``--no-timing``; alone with ``--only-timing``) runs the configurations of
``--timing-configs`` in turn on each image, ``--timing-rounds`` times, so that changes of load hit
all of them alike: median wall and process-CPU ms per image on ``--timing-wider`` evenly spread WIDER
subset images and on the bundled portrait at 640x480 and 1920x1080 (``benchmarks/speed.py``'s images),
with the load average before and after each round. Only meaningful on an otherwise idle machine.

Results are cached in ``--out`` (default ``/tmp/defaults_study``) per set and pyramid and reused unless
``--fresh``; ``--markdown`` prints the tables of ``benchmarks/README.md``.
Data: ``$MTCNN_JAX_DATA`` (default ``../shared/data`` next to the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from mtcnn_jax import MTCNN, load_image, pyramid, tiles  # noqa: E402
from mtcnn_jax import boxes as bx  # noqa: E402
from mtcnn_jax.boxes import BoxMode  # noqa: E402
from mtcnn_jax.data.landmarks import read_cuhk_list  # noqa: E402
from mtcnn_jax.data.wider import read_wider_gt  # noqa: E402
from mtcnn_jax.evaluation import nme, wider_ap  # noqa: E402
from mtcnn_jax.evaluation.runner import detect_images, wider_metrics  # noqa: E402
from mtcnn_jax.faces import Faces  # noqa: E402

SIZES = (1, 20, 40)
SETTINGS = dict(min_face_size=20, factor=0.709, thresholds=(0.6, 0.7, 0.7))
#: WIDER sets: role -> (folder, ground truth).
WIDER_SETS = {
    "val": ("widerface_train_mini", "widerface_train_mini/wider_face_train_mini_bbx_gt.txt"),
    "eval": ("widerface_val_subset", "widerface_val_subset/wider_face_val_bbx_gt_subset.txt"),
}
#: Landmark sets: name -> (role, folder, list file, format).
LANDMARK_SETS = {
    "lfw_a": ("val", "mtfl_lfw_train_landmarks", "training_lfw.txt", "mtfl"),
    "lfw_b": ("val", "mtfl_lfw_train_landmarks", "cuhk_testImageList_lfw.txt", "cuhk"),
    "aflw": ("eval", "mtfl_aflw_test_landmarks", "testing.txt", "mtfl"),
}
AUTHORS, INCLUSIVE, HALF_OPEN = BoxMode.AUTHORS, BoxMode.INCLUSIVE, BoxMode.HALF_OPEN


def data_dir() -> Path:
    return Path(os.environ.get("MTCNN_JAX_DATA", REPO.parent / "shared" / "data"))


def load_avg() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def spread(n_total: int, limit: Optional[int]) -> np.ndarray:
    """``limit`` indices spread evenly over ``range(n_total)`` (all of them when ``limit`` is falsy)."""
    if not limit or limit >= n_total:
        return np.arange(n_total)
    return np.unique(np.round(np.linspace(0, n_total - 1, limit)).astype(int))


# --------------------------------------------------------------------------- pyramid fidelity


def imresample_weights(n_in: int, n_out: int) -> np.ndarray:
    """float64[n_out, n_in]: the weights of the authors' ``imResample(A, [h w], 'bilinear')`` along one axis.

    A port of ``resampleCoef`` in Piotr's toolbox (``channels/private/imResampleMex.cpp``, v3.x;
    MTCNN's README lists the toolbox as a requirement), in single precision as it runs on the
    authors' ``single`` images: when shrinking, output ``yb`` averages the input over
    ``[yb / s, (yb + 1) / s)`` with the cut rows weighted by their overlap (a box, not a triangle),
    weights under ``1e-3 s`` dropped; when enlarging, bilinear at ``(yb + 0.5) / s - 0.5``, clamped.
    """
    f32 = np.float32
    s = f32(n_out) / f32(n_in)
    s_inv = f32(1) / s
    out = np.zeros((n_out, n_in))
    if n_in > n_out:
        for yb in range(n_out):
            a0f = f32(yb) * s_inv
            a1f = a0f + s_inv
            a0, a1 = int(np.ceil(a0f)), int(a1f)
            picked = []
            for ya in range(a0 - 1, a1 + 1):
                wt = s
                if ya == a0 - 1:
                    wt = (f32(a0) - a0f) * s
                elif ya == a1:
                    wt = (a1f - f32(a1)) * s
                if wt > f32(1e-3) * s and ya >= 0:
                    picked.append((min(ya, n_in - 1), float(wt)))
            total = sum(wt for _, wt in picked)
            for ya, wt in picked:
                out[yb, ya] += wt / total if total > 1 else wt
    else:
        for yb in range(n_out):
            af = (f32(0.5) + yb) * s_inv - f32(0.5)
            ya = int(np.floor(af))
            wt = 1.0 - float(af - ya) if 0 <= ya < n_in - 1 else 1.0
            ya = min(max(ya, 0), n_in - 1)
            out[yb, ya] += wt
            if ya + 1 < n_in:
                out[yb, ya + 1] += 1.0 - wt
    return out


def imresample(image: np.ndarray, size_hw) -> np.ndarray:
    """The authors' ``imResample`` of a float image (never rounded), float64[h, w, C]."""
    wy = imresample_weights(image.shape[0], int(size_hw[0]))
    wx = imresample_weights(image.shape[1], int(size_hw[1]))
    t = np.tensordot(wy, image.astype(np.float64), axes=(1, 0))
    return np.moveaxis(np.tensordot(wx, t, axes=(1, 1)), 0, 1)


def pyramid_fidelity(modes: Sequence[str], n_images: int = 6) -> dict:
    """Mean |level - imResample level| in grey levels over the levels >= 2 (those "chained" makes
    from another level), for the bundled portrait and ``n_images`` widerface_train_mini images."""
    records = read_wider_gt(data_dir() / WIDER_SETS["val"][1])
    images = [load_image(REPO / "mtcnn_jax" / "assets" / "astronaut.jpg")]
    images += [load_image(data_dir() / WIDER_SETS["val"][0] / "images" / records[i].path)
               for i in spread(len(records), n_images)]
    out: Dict[str, list] = {m: [] for m in modes}
    for image in images:
        h, w = image.shape[:2]
        reference = [imresample(image, pyramid.level_size(h, w, s)) for s in pyramid.scales(h, w)]
        for m in modes:
            levels = pyramid.Levels([image], 20, 0.709, m)
            made = [levels.make(i) for i in range(len(levels.sizes))]
            out[m].append([float(np.abs(a - r).mean()) for a, r in zip(made[2:], reference[2:])])
    return {m: dict(mean=float(np.mean([np.mean(v) for v in per])), worst=float(np.max([np.max(v) for v in per])))
            for m, per in out.items()}


# --------------------------------------------------------------------------- WIDER


def wider_run(mode: str, role: str, limit: Optional[int]) -> dict:
    folder, gt = WIDER_SETS[role]
    records = read_wider_gt(data_dir() / gt)
    records = [records[i] for i in spread(len(records), limit)]
    det = MTCNN(**SETTINGS, pyramid=mode)
    run = detect_images(det, str(data_dir() / folder / "images"), [r.path for r in records], progress=False)
    settings, _ = wider_metrics(run.predictions, records, SIZES)
    preds = {p: np.concatenate([f.boxes.astype(np.float64), np.asarray(f.scores, np.float64)[:, None]], axis=1).tolist()
             for p, f in run.predictions.items()}
    return dict(ap={k: v["ap"] for k, v in settings.items()}, n_images=len(records), predictions=preds,
                n_detections=int(sum(len(f.scores) for f in run.predictions.values())))


def _matches(preds: dict, records, size: float) -> list:
    """Per image: :func:`mtcnn_jax.evaluation.wider_ap.match_image`'s scores and flags, and the faces counted."""
    out = []
    for rec in records:
        counted = wider_ap.counted_faces(rec, size)
        det = np.asarray(preds.get(rec.path, np.zeros((0, 5))), np.float64).reshape(-1, 5)
        s, c, r = wider_ap.match_image(det[:, :4], det[:, 4], rec.boxes, counted, 0.5)
        out.append((s, c, r, int(counted.sum())))
    return out


def _ap(matches: list, idx) -> float:
    pick = [matches[i] for i in idx]
    cat = lambda k, dt: np.concatenate([m[k] for m in pick]) if pick else np.zeros(0, dt)  # noqa: E731
    _, precision, recall = wider_ap.pr_curve(cat(0, np.float64), cat(1, bool), cat(2, bool), sum(m[3] for m in pick))
    return wider_ap.voc_ap(recall, precision)


def paired_bootstrap(runs: dict, role: str, reference: str = "original", n: int = 1000, seed: int = 0) -> dict:
    """AP(mode) - AP(reference) over images resampled with replacement (the same resamples for every
    mode; AP at every distinct score): observed difference, 2.5 / 97.5 percentiles, share below 0."""
    records = read_wider_gt(data_dir() / WIDER_SETS[role][1])
    paths = {p for r in runs.values() for p in r["predictions"]}
    records = [r for r in records if r.path in paths]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(records), len(records)) for _ in range(n)]
    full = np.arange(len(records))
    out: dict = {}
    for size in SIZES:
        ref = _matches(runs[reference]["predictions"], records, size)
        ref_ap = np.array([_ap(ref, d) for d in draws])
        for mode, run in runs.items():
            if mode == reference:
                continue
            m = _matches(run["predictions"], records, size)
            diff = np.array([_ap(m, d) for d in draws]) - ref_ap
            out.setdefault(mode, {})[wider_ap.setting_name(size)] = dict(
                diff=_ap(m, full) - _ap(ref, full), lo=float(np.percentile(diff, 2.5)),
                hi=float(np.percentile(diff, 97.5)), below=float(np.mean(diff < 0)))
    return out


# --------------------------------------------------------------------------- landmarks


def onet_float(det: MTCNN, crops: np.ndarray) -> np.ndarray:
    """O-Net's landmark outputs float32[B, 10] on float32[B, 48, 48, 3] crops in 0..255 (the authors
    never round their crops to uint8; the library's networks take uint8)."""
    import jax  # noqa: PLC0415

    from mtcnn_jax import models  # noqa: PLC0415

    fn = jax.jit(lambda params, x: models.ONet().apply({"params": params}, (x - 127.5) * 0.0078125).landmarks)
    out = []
    for s in range(0, len(crops), 16):
        batch = np.zeros((16,) + crops.shape[1:], np.float32)
        batch[: len(crops[s : s + 16])] = crops[s : s + 16]
        out.append(np.asarray(fn(det.params["onet"], batch))[: len(crops[s : s + 16])])
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def float_crop(image: np.ndarray, box_inclusive, size: int = 48) -> np.ndarray:
    """The zero-padded crop of an inclusive 0-based box resized to ``size`` in float32, never rounded:
    area average when shrinking, bilinear when enlarging."""
    crop = bx.crop(image, box_inclusive).astype(np.float32)
    interp = cv2.INTER_AREA if crop.shape[0] >= size and crop.shape[1] >= size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp).reshape(size, size, -1)


def capture(det: MTCNN, image: np.ndarray) -> Optional[dict]:
    """The cascade on one image, keeping for its best face (highest score, first on ties: the NME
    protocol's) what the variants need: ``box``, the INCLUSIVE 0-based box O-Net saw (before its
    regression), and ``u`` / ``um``, O-Net's raw landmark outputs on its crop and on the mirrored crop.

    Stages 1-2 are the detector's public ``proposals`` and ``refine``; stage 3 is ``MTCNN._output``
    written out (truncate, O-Net, threshold, calibrate, NMS 0.7 "min", O-Net on the mirrored crops
    of the faces kept), plus ``boxsq`` / ``usq`` / ``umsq``: ``refine_landmarks``' second pass, the
    INCLUSIVE box of the square around the final box and O-Net's outputs on it and mirrored. None when
    no face is found."""
    if min(image.shape[:2]) < pyramid.CELL:
        return None
    cand = det.proposals(image)
    cand = det.refine(image, cand) if len(cand) else cand
    if not len(cand):
        return None
    fixed = np.fix(cand[:, :4])
    nets = det.networks
    run = lambda fn, b: tiles.run_crops(fn, [image], [bx.convert(b, AUTHORS, INCLUSIVE)], 48, det.resize,  # noqa: E731
                                        nets.onet_batch, fixed=nets.fixed_batches)
    prob, reg, lms = (np.asarray(a) for a in run(nets.onet, fixed))
    ok = np.flatnonzero(prob > det.thresholds[2])
    if not len(ok):
        return None
    b, p = fixed[ok], prob[ok].astype(np.float64)
    keep = bx.nms(bx.calibrate(b, reg[ok], inclusive=True), p, det.nms_thresholds[3], "min")
    best = keep[int(np.argmax(p[keep]))]
    mirrored = lambda c: nets.onet(np.ascontiguousarray(c[:, :, ::-1]))  # noqa: E731
    um = np.asarray(run(mirrored, b[best : best + 1])[2])[0]
    # The second pass of refine_landmarks: O-Net on the square around the final box, truncated.
    sq = np.fix(bx.square(bx.calibrate(b[best : best + 1], reg[ok][best : best + 1], inclusive=True)))
    return dict(box=bx.convert(b[best : best + 1], AUTHORS, INCLUSIVE)[0], u=lms[ok][best].astype(np.float64),
                um=um.astype(np.float64), n=len(keep), boxsq=bx.convert(sq, AUTHORS, INCLUSIVE)[0],
                usq=np.asarray(run(nets.onet, sq)[2])[0].astype(np.float64),
                umsq=np.asarray(run(mirrored, sq)[2])[0].astype(np.float64))


def points(box: np.ndarray, u: np.ndarray, offset: float) -> np.ndarray:
    """float64[5, 2]: ``x1 + offset + w u_x``, ``y1 + offset + h u_y`` for an inclusive 0-based box
    (``w = x2 - x1 + 1``); the library's ``detector._landmarks`` is offset 0."""
    w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
    return np.stack([box[0] + offset + w * u[:5], box[1] + offset + h * u[5:]], axis=-1)


def flip_mean(c: dict, suffix: str = "") -> np.ndarray:
    """MTCNNv1's average of the crop's outputs with the mirrored crop's (x -> 1 - x, left/right swapped)."""
    return 0.5 * (c["u" + suffix] + tiles.mirror_landmarks(c["um" + suffix]))


#: Where a fraction u of O-Net's box lies, in 0-based pixel-centre coordinates: name -> offset.
OFFSETS = {
    "centre": 0.0,  # x1 + w u: the authors' x1 - 1 + w u (1-based x1) read as 0-based: the library's
    "authors": -1.0,  # x1 - 1 + w u: the same read as 1-based (as Matlab plots it), moved to 0-based
    "edge": -0.5,  # x1 - 1/2 + w u: u measured from the box's outer edge, the frame of the mirror 1 - u
}


def _variant(flip: bool, offset: float, suffix: str = ""):
    return lambda c: points(c["box"], flip_mean(c, suffix) if flip else c["u" + suffix], offset)


def _refined(flip: bool):
    """``refine_landmarks``: the mean of the first pass's points and the second pass's (on ``boxsq``)."""
    def fn(c):
        second = points(c["boxsq"], flip_mean(c, "sq") if flip else c["usq"], 0.0)
        return 0.5 * (_variant(flip, 0.0)(c) + second)
    return fn


#: name -> record -> float64[5, 2] points, 0-based pixel-centre coordinates: with and without the flip,
#: in each frame; on float crops (the authors never round their crops to uint8); and with the second
#: pass of refine_landmarks.
VARIANTS = {f"{f}-{name}": _variant(f == "flip", o) for f in ("plain", "flip") for name, o in OFFSETS.items()}
VARIANTS |= {f"{f}-centre-float": _variant(f == "flip", 0.0, "f") for f in ("plain", "flip")}
VARIANTS |= {f"{f}-centre-refine": _refined(f == "flip") for f in ("plain", "flip")}
#: The library's landmarks: (flip_landmarks, refine_landmarks) -> variant.
LIBRARY = {(False, False): "plain-centre", (True, False): "flip-centre", (False, True): "plain-centre-refine",
           (True, True): "flip-centre-refine"}


def read_landmark_set(name: str, limit: Optional[int] = None) -> nme.MtflAnnotations:
    _, folder, listfile, fmt = LANDMARK_SETS[name]
    path = data_dir() / folder / listfile
    ann = nme.read_mtfl(path, one_based=True) if fmt == "mtfl" else nme.annotations_from_faces(read_cuhk_list(path))
    if limit:
        ann = ann.subset(np.isin(np.arange(len(ann)), spread(len(ann), limit)))
    return ann


def capture_set(mode: str, name: str, ann: nme.MtflAnnotations, check: int = 40) -> dict:
    """:func:`capture` on every image of a landmark set, plus O-Net on the float crops of the best
    faces; the first ``check`` images compared with ``MTCNN.detect`` (each setting of flip_landmarks and
    refine_landmarks: :data:`LIBRARY`)."""
    det = MTCNN(**SETTINGS, pyramid=mode)
    folder = data_dir() / LANDMARK_SETS[name][1]
    recs = [capture(det, load_image(folder / path)) for path in ann.paths]
    found = [i for i, r in enumerate(recs) if r is not None]
    crops = np.stack([float_crop(load_image(folder / ann.paths[i]), recs[i]["box"]) for i in found])
    uf, umf = onet_float(det, crops), onet_float(det, np.ascontiguousarray(crops[:, :, ::-1]))
    for j, i in enumerate(found):
        recs[i]["uf"], recs[i]["umf"] = uf[j].astype(np.float64), umf[j].astype(np.float64)
    diffs = {}
    for (flip, refine), variant in LIBRARY.items():
        ref = MTCNN(**SETTINGS, pyramid=mode, flip_landmarks=flip, refine_landmarks=refine)
        diffs[variant] = 0.0
        for i in range(min(check, len(ann))):
            faces = ref.detect(load_image(folder / ann.paths[i]))
            assert (recs[i] is None) == (len(faces.scores) == 0), ann.paths[i]
            if recs[i] is not None:
                err = np.abs(nme.best_landmarks(faces) - VARIANTS[variant](recs[i])).max()
                diffs[variant] = max(diffs[variant], float(err))
    return dict(records=recs, check=diffs)


def same_face(rec: Optional[dict], gt: np.ndarray) -> bool:
    """Whether the best detection is the annotated face: its O-Net box holds the five ground-truth points
    (an LFW photo may show a second person, whose face can score higher)."""
    if rec is None:
        return False
    x1, y1, x2, y2 = rec["box"]
    return bool(np.all((gt[:, 0] >= x1) & (gt[:, 0] <= x2) & (gt[:, 1] >= y1) & (gt[:, 1] <= y2)))


def landmark_tables(cap: dict, ann: nme.MtflAnnotations) -> dict:
    """Per variant: NME, failure rate, detection rate, and the mean signed error per point (px) on
    the faces where the best detection is the annotated one."""
    out = {}
    same = np.array([same_face(r, ann.points[i]) for i, r in enumerate(cap["records"])])
    for name, fn in VARIANTS.items():
        pred = np.full((len(ann), 5, 2), np.nan)
        preds = {}
        for i, (path, rec) in enumerate(zip(ann.paths, cap["records"])):
            if rec is not None:
                pred[i] = fn(rec)
                preds[path] = Faces(np.zeros((1, 4), np.float32), np.ones(1), pred[i][None].astype(np.float32))
        res = nme.evaluate_landmarks(preds, ann)
        out[name] = dict(nme=res["nme_mean"], failure=res["failure_rate"], detected=res["detection_rate"],
                         n_same_face=int(same.sum()), bias_px=(pred[same] - ann.points[same]).mean(axis=0).tolist())
    return out


def bias_by_padding(cap: dict, ann: nme.MtflAnnotations, name: str) -> List[dict]:
    """Mean signed x, y error (the library's, without and with flip) by where O-Net's box leaves the
    image (zero padding)."""
    folder = data_dir() / LANDMARK_SETS[name][1]
    groups: Dict[str, list] = {"inside the image": [], "padded, left ≈ right (±2 px)": [],
                               "padded more on the left": [], "padded more on the right": []}
    sizes: dict = {}
    for i, rec in enumerate(cap["records"]):
        if not same_face(rec, ann.points[i]):
            continue
        path = folder / ann.paths[i]
        if path.parent not in sizes:  # the images of a folder share one size in these sets
            sizes[path.parent] = load_image(path).shape[:2]
        height, width = sizes[path.parent]
        x1, y1, x2, y2 = rec["box"]
        left, right = max(0.0, -x1), max(0.0, x2 - (width - 1))
        if left == right == max(0.0, -y1) == max(0.0, y2 - (height - 1)) == 0:
            key = "inside the image"
        elif abs(left - right) <= 2:
            key = "padded, left ≈ right (±2 px)"
        else:
            key = "padded more on the left" if left > right else "padded more on the right"
        groups[key].append((i, rec))
    rows = []
    for key, members in groups.items():
        row: dict = dict(group=key, n=len(members))
        for v in LIBRARY.values():
            e = np.array([VARIANTS[v](r) - ann.points[i] for i, r in members]).reshape(-1, 5, 2)
            row[v] = [float(e[..., 0].mean()), float(e[..., 1].mean())] if len(e) else [float("nan")] * 2
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- timing


def timing(configs: Sequence[str], rounds: int, n_wider: int, portrait_repeats: int = 15) -> dict:
    """Interleaved wall / CPU ms per image for each configuration (``<pyramid>[+flip][+refine]``)."""
    from speed import portrait  # noqa: PLC0415  (benchmarks/speed.py's images)

    records = read_wider_gt(data_dir() / WIDER_SETS["eval"][1])
    wider = [load_image(data_dir() / WIDER_SETS["eval"][0] / "images" / records[i].path)
             for i in spread(len(records), n_wider)]
    images = {"portrait 640x480": [portrait(480, 640)], "portrait 1920x1080": [portrait(1080, 1920)],
              f"WIDER subset, {len(wider)} images": wider}
    fns = {}
    for c in configs:
        mode, *extra = c.split("+")
        fns[c] = MTCNN(**SETTINGS, pyramid=mode, flip_landmarks="flip" in extra,
                       refine_landmarks="refine" in extra).detect
    for fn in fns.values():  # compile and warm up
        for ims in images.values():
            for im in ims[:3]:
                fn(im)
    times: Dict[str, dict] = {k: {c: [] for c in configs} for k in images}
    loads = []
    for _ in range(rounds):
        loads.append([load_avg()])
        for key, ims in images.items():
            for im in ims:
                for _ in range(portrait_repeats if len(ims) == 1 else 1):
                    for c, fn in fns.items():
                        t, p = time.perf_counter(), time.process_time()
                        fn(im)
                        times[key][c].append((time.perf_counter() - t, time.process_time() - p))
        loads[-1].append(load_avg())
    table = {key: {c: dict(wall_ms=float(np.median([w for w, _ in v]) * 1e3), cpu_ms=float(np.median([p for _, p in v]) * 1e3))
                   for c, v in per.items()} for key, per in times.items()}
    return dict(table=table, loads=loads)


# --------------------------------------------------------------------------- main


def cached(path: Path, fresh: bool, fn):
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    value = fn()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    tmp.replace(path)
    return value


def as_arrays(cap: dict) -> dict:
    recs = [None if r is None else {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in r.items()}
            for r in cap["records"]]
    return dict(records=recs, check=cap["check"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/defaults_study")
    ap.add_argument("--limit", type=int, default=0, help="images per set, spread evenly (0: all)")
    ap.add_argument("--sets", default="val,eval", help="val (validation splits), eval (evaluation sets) or both")
    ap.add_argument("--pyramids", default=",".join(pyramid.PYRAMID_MODES))
    ap.add_argument("--landmark-pyramids", default="summed,chained")
    ap.add_argument("--timing-configs", default="summed+flip+refine,summed+flip,summed,chained")
    ap.add_argument("--timing-rounds", type=int, default=3)
    ap.add_argument("--timing-wider", type=int, default=120)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--only-timing", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="recompute results kept in --out")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    roles, lim = args.sets.split(","), args.limit or None
    tag = f"_n{args.limit}" if args.limit else ""
    res: dict = {"wider": {}, "landmarks": {}, "padding": {}, "bootstrap": {}}
    if not args.only_timing:
        modes = args.pyramids.split(",")
        res["fidelity"] = cached(out_dir / f"fidelity_{'_'.join(modes)}.json", args.fresh, lambda: pyramid_fidelity(modes))
        for role in roles:
            for mode in modes:
                r = res["wider"][f"{role}/{mode}"] = cached(out_dir / f"wider_{role}_{mode}{tag}.json", args.fresh,
                                                            lambda: wider_run(mode, role, lim))
                print(f"wider {role} {mode}: {r['ap']}", file=sys.stderr)
            runs = {m: res["wider"][f"{role}/{m}"] for m in modes}
            if "original" in runs and len(runs) > 1:
                res["bootstrap"][role] = paired_bootstrap(runs, role)
        for name, (role, *_) in LANDMARK_SETS.items():
            if role not in roles:
                continue
            ann = read_landmark_set(name, lim)
            for mode in args.landmark_pyramids.split(","):
                cap = as_arrays(cached(out_dir / f"lm_{name}_{mode}{tag}.json", args.fresh,
                                       lambda: capture_set(mode, name, ann)))
                r = res["landmarks"][f"{name}/{mode}"] = landmark_tables(cap, ann) | {"check": cap["check"]}
                res["padding"][f"{name}/{mode}"] = bias_by_padding(cap, ann, name)
                print(f"landmarks {name} {mode}: " + ", ".join(f"{v} {r[v]['nme']:.4f}/{r[v]['failure']:.3f}"
                                                              for v in VARIANTS) + f" (check {cap['check']})",
                      file=sys.stderr)
    if not args.no_timing:
        res["timing"] = timing(args.timing_configs.split(","), args.timing_rounds, args.timing_wider)
    (out_dir / "results.json").write_text(json.dumps(res, indent=1))
    if args.markdown:
        print(markdown(res))
    return 0


def _f(v, d=4):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"


def markdown(res: dict) -> str:
    lines: List[str] = []
    if res.get("fidelity"):
        lines += ["| pyramid | mean \\|level − imResample\\| (grey levels, levels ≥ 2) | worst level |", "|---|---|---|"]
        lines += [f"| {m} | {v['mean']:.2f} | {v['worst']:.2f} |" for m, v in res["fidelity"].items()] + [""]
    if res["wider"]:
        lines += ["| set | pyramid | AP all | AP ≥ 20 px | AP ≥ 40 px | detections |", "|---|---|---|---|---|---|"]
        for key, r in res["wider"].items():
            role, mode = key.split("/")
            lines.append(f"| {WIDER_SETS[role][0]} ({r['n_images']}) | {mode} | {_f(r['ap']['all'])} | "
                         f"{_f(r['ap']['>=20'])} | {_f(r['ap']['>=40'])} | {r['n_detections']} |")
        lines.append("")
    if res["bootstrap"]:
        lines += ["AP − AP of `original`, paired bootstrap over images (1,000 resamples, AP at every distinct "
                  "score): observed [2.5 %, 97.5 %], share of resamples below 0:", "",
                  "| set | pyramid | Δ AP all | Δ AP ≥ 20 px | Δ AP ≥ 40 px |", "|---|---|---|---|---|"]
        for role, per in res["bootstrap"].items():
            for mode, d in per.items():
                lines.append(f"| {WIDER_SETS[role][0]} | {mode} | " + " | ".join(
                    f"{d[k]['diff']:+.4f} [{d[k]['lo']:+.4f}, {d[k]['hi']:+.4f}], {100 * d[k]['below']:.0f}%"
                    for k in ("all", ">=20", ">=40")) + " |")
        lines.append("")
    if res["landmarks"]:
        lines += ["| set | pyramid | landmarks | NME | failure | detected | mean x error (px) | mean y error (px) |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, r in res["landmarks"].items():
            name, mode = key.split("/")
            for v in VARIANTS:
                b = np.asarray(r[v]["bias_px"])
                lines.append(f"| {name} | {mode} | {v} | {_f(r[v]['nme'])} | {_f(100 * r[v]['failure'], 1)}% | "
                             f"{_f(r[v]['detected'], 3)} | {b[:, 0].mean():+.2f} | {b[:, 1].mean():+.2f} |")
        lines += ["", "Mean signed error per point, pred − gt, px (x, y), on the faces whose best detection is "
                  "the annotated one:", "",
                  "| set | pyramid | landmarks | " + " | ".join(nme.POINT_NAMES) + " |", "|---|---|---|" + "---|" * 5]
        for key, r in res["landmarks"].items():
            name, mode = key.split("/")
            for v in ("plain-centre", "flip-centre", "flip-edge", "flip-centre-refine"):
                b = np.asarray(r[v]["bias_px"])
                lines.append(f"| {name} | {mode} | {v} | " + " | ".join(f"{b[k, 0]:+.2f}, {b[k, 1]:+.2f}" for k in range(5))
                             + " |")
        lines.append("")
    if res["padding"]:
        lines += ["Mean signed error (x, y px) by the zero padding of O-Net's box:", "",
                  "| set | pyramid | O-Net box | n | " + " | ".join(f"{v} x, y" for v in LIBRARY.values()) + " |",
                  "|---|---|---|---|" + "---|" * len(LIBRARY)]
        for key, rows in res["padding"].items():
            name, mode = key.split("/")
            for row in (r for r in rows if r["n"]):
                lines.append(f"| {name} | {mode} | {row['group']} | {row['n']} | "
                             + " | ".join(f"{row[v][0]:+.2f}, {row[v][1]:+.2f}" for v in LIBRARY.values()) + " |")
        lines.append("")
    if res.get("timing"):
        t = res["timing"]
        configs = list(next(iter(t["table"].values())))
        lines += ["Median wall ms per image (process CPU ms):", "",
                  "| images | " + " | ".join(configs) + " |", "|---|" + "---:|" * len(configs)]
        for key, per in t["table"].items():
            lines.append(f"| {key} | " + " | ".join(f"{per[c]['wall_ms']:.0f} ({per[c]['cpu_ms']:.0f})" for c in configs) + " |")
        lines += ["", "Load average (1 min) before/after each round: " + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in t["loads"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
