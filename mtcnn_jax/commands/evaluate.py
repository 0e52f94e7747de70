"""``mtcnn-jax evaluate``: score detections by the standard protocols.

    mtcnn-jax evaluate wider --gt GT.txt --out DIR
                       (--images DIR [--weights W] [detector options] | --predictions P.json)
                       [--easy LIST] [--medium LIST] [--hard LIST] [--sizes 1,20,40]
    mtcnn-jax evaluate landmarks --gt LIST --out DIR
                       (--images DIR [--weights W] [detector options] | --predictions P.json)
                       [--one-based | --zero-based] [--failure-threshold 0.1]
    mtcnn-jax evaluate fddb --folds FOLD... --out DIR
                       (--images DIR [--weights W] [detector options] | --predictions DETS)

``wider`` runs the detector on the images of a WIDER FACE ground-truth file
(``wider_face_val_bbx_gt.txt`` format; image paths relative to ``--images``), or
reads detections from ``--predictions`` (the ``detect --json`` format, or a dict
with an ``"images"`` list), and computes the official WIDER FACE AP
(:mod:`mtcnn_jax.evaluation.wider_ap`) for the face-size settings all valid, >= 20 px
and >= 40 px (``--sizes``), and for easy / medium / hard when their face lists are
given (``<path> i1 i2 ...`` per line, 1-based face indices, a text form of the
official ``wider_*_val.mat`` keep lists). It writes to DIR:

    metrics.json      AP per setting (official 1,000-threshold sampling, and at every
                      distinct score), face and detection counts, skipped images,
                      median time per image
    pr_curve.png      precision-recall curves, one per setting
    predictions.json  the detections, in the ``detect --json`` format, paths as in
                      the ground truth (only when the detector ran)

``landmarks`` does the same for five-point landmarks on an MTFL-style list
(``path x1..x5 y1..y5 [attributes]``, 1-based coordinates unless
``--zero-based``): NME normalised by the inter-ocular distance of the best
detection per image (mean, median, per point), failure rate (NME above
``--failure-threshold``), detection rate; ``metrics.json``, ``ced.png`` (cumulative
error distribution) and ``predictions.json``.

``fddb`` scores on FDDB's ellipse folds (``FDDB-fold-XX-ellipseList.txt``; images
``--images/<path>.jpg``) with FDDB's discrete and continuous ROC
(:mod:`mtcnn_jax.evaluation.fddb`); ``--predictions`` takes FDDB's rectangle detection
list (``path``, count, ``left top width height score`` lines) or a ``.json`` file in the
detect format. It writes ``metrics.json`` (true positive rates at 100, 500, 1,000 and
2,000 false positives), ``roc.png``, ``DiscROC.txt`` / ``ContROC.txt`` (``TPR FP`` per
line, as FDDB's ``evaluate``) and, when the detector ran, ``detections.txt`` in FDDB's
format.

An image that cannot be read while the detector runs is reported on stderr as
``mtcnn-jax: <path>: <reason>``, left out of the evaluation (its faces count
neither way) and listed under ``"skipped"`` in metrics.json; the exit code is then
1. A missing or malformed ground-truth, list or predictions file stops the command
with one line naming the file and line, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from mtcnn_jax import images
from mtcnn_jax.commands import detect as detect_cmd
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.evaluation import plots
from mtcnn_jax.evaluation import nme as lm_eval
from mtcnn_jax.evaluation import wider_ap as wider_eval
from mtcnn_jax.evaluation.predictions import Detections, align_to_ground_truth, read_predictions

WIDER_LISTS = ("easy", "medium", "hard")
CED_MAX_ERROR = 0.2


# --------------------------------------------------------------------------- parser


def register(subparsers) -> None:
    """Add ``evaluate`` with its ``wider``, ``landmarks`` and ``fddb`` sub-commands."""
    p = subparsers.add_parser(
        "evaluate",
        help="WIDER FACE AP, landmark NME or FDDB ROC of the detector or of a predictions file",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="protocol", required=True, metavar="{wider,landmarks,fddb}")

    w = sub.add_parser("wider", help="WIDER FACE average precision",
                       description="WIDER FACE AP (official protocol); see 'mtcnn-jax evaluate --help'.")
    w.add_argument("--gt", required=True, metavar="GT.txt", help="WIDER FACE ground-truth file")
    _add_common(w)
    for name in WIDER_LISTS:
        w.add_argument(f"--{name}", metavar="LIST",
                       help=f"the faces of the {name} setting: '<path> i1 i2 ...' per line, 1-based")
    w.add_argument("--sizes", default="1,20,40", metavar="N,N,...",
                   help="face-size settings, shorter side in pixels (default 1,20,40; 1 = all valid)")
    w.set_defaults(func=run_wider)

    m = sub.add_parser("landmarks", help="five-point landmark error (NME)",
                       description="Landmark NME of the best detection per image; "
                                   "see 'mtcnn-jax evaluate --help'.")
    m.add_argument("--gt", required=True, metavar="LIST",
                   help="MTFL-style list: 'path x1..x5 y1..y5 [gender smile glasses pose]'")
    _add_common(m)
    base = m.add_mutually_exclusive_group()
    base.add_argument("--one-based", dest="one_based", action="store_true", default=True,
                      help="the list's coordinates are 1-based, as MTFL's (default)")
    base.add_argument("--zero-based", dest="one_based", action="store_false",
                      help="the list's coordinates are 0-based")
    m.add_argument("--failure-threshold", default="0.1", metavar="T",
                   help="an image fails when its NME exceeds T (default 0.1)")
    m.set_defaults(func=run_landmarks)

    f = sub.add_parser("fddb", help="FDDB discrete and continuous ROC",
                       description="FDDB ROC (discrete and continuous); see 'mtcnn-jax evaluate --help'.")
    f.add_argument("--folds", required=True, nargs="+", metavar="FOLD",
                   help="FDDB-fold-XX-ellipseList.txt files")
    _add_common(f)
    f.set_defaults(func=run_fddb)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.json and the plots")
    p.add_argument("--images", metavar="DIR", help="folder the ground-truth paths are relative to")
    p.add_argument("--predictions", metavar="P.json",
                   help="score these detections instead of running the detector")
    p.add_argument("--weights", metavar="FILE_OR_DIR", help="detector weights (default: the authors')")
    p.add_argument("--min-face", default=str(detect_cmd.DEFAULTS["min_face"]), metavar="N",
                   help="smallest face, pixels (default 20; the authors use 10 for WIDER FACE)")
    p.add_argument("--factor", default=str(detect_cmd.DEFAULTS["factor"]), metavar="F",
                   help="pyramid scale step (default 0.709)")
    p.add_argument("--thresholds", default="0.6,0.7,0.7", metavar="A,B,C",
                   help="P-Net, R-Net, O-Net thresholds (default 0.6,0.7,0.7)")
    p.add_argument("--max-megapixels", default=str(images.DEFAULT_MAX_PIXELS / 1e6), metavar="M",
                   help="refuse images larger than M megapixels (default 100)")
    detect_cmd.add_pyramid_option(p)


# --------------------------------------------------------------------------- running the detector


class DetectionRun(NamedTuple):
    """What :func:`detect_images` found.

    predictions: ``{path as listed: Detections}`` for every image that could be read.
    entries: the same as ``detect --json`` entries (list of dicts), in order.
    skipped: ``[(path as listed, reason)]`` for the images that could not be read.
    seconds: float[K] wall time of ``detector.detect`` per read image (decoding excluded).
    cpu_seconds: float[K] CPU time of this process (all threads) during each call: on a
      machine shared with other jobs it grows less than the wall time does.
    """

    predictions: Dict[str, Detections]
    entries: List[dict]
    skipped: List[Tuple[str, str]]
    seconds: np.ndarray
    cpu_seconds: np.ndarray


def detect_images(
    detector,
    images_dir: str,
    paths: Sequence[str],
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    report: Optional[Callable[[str], None]] = None,
    progress: bool = True,
) -> DetectionRun:
    """Run ``detector.detect`` on ``images_dir/<path>`` for each path.

    Args:
      detector: anything with ``detect(uint8[H, W, 3] RGB) -> (boxes [N, 4], scores [N],
        landmarks [N, 5, 2])`` in image pixels (e.g. :class:`mtcnn_jax.MTCNN`).
      images_dir: the folder the paths are relative to.
      paths: image paths, ``/``-separated, as the ground truth lists them.
      max_pixels: larger images are refused (skipped) before decoding.
      report: called with ``"<path>: <reason>"`` for each image skipped.
      progress: show a progress bar on stderr (when it is a terminal).

    Returns:
      a :class:`DetectionRun`; an unreadable image is skipped, not raised.
    """
    preds: Dict[str, Detections] = {}
    entries, skipped, seconds, cpu = [], [], [], []
    for path in tqdm(paths, desc="detect", unit="image", file=sys.stderr,
                     disable=None if progress else True, leave=False):
        full = os.path.join(images_dir, *path.split("/"))
        try:
            with images.quiet_native_stderr():
                image = images.load_image(full, max_pixels=max_pixels)
        except ImageError as err:
            skipped.append((path, err.reason))
            if report is not None:
                report(f"{full}: {err.reason}")
            continue
        start, start_cpu = time.perf_counter(), time.process_time()
        faces = detector.detect(image)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        boxes = np.asarray(faces[0], np.float32).reshape(-1, 4)
        scores = np.asarray(faces[1], np.float64).reshape(-1)
        marks = np.asarray(faces[2], np.float32).reshape(-1, 5, 2)
        preds[path] = Detections(boxes, scores, marks)
        entries.append(detect_cmd.faces_to_json(path, image, (boxes, scores, marks)))
    return DetectionRun(preds, entries, skipped, np.asarray(seconds, np.float64), np.asarray(cpu, np.float64))


# --------------------------------------------------------------------------- metrics


def wider_metrics(
    predictions: Mapping[str, Detections],
    records: Sequence,
    sizes: Sequence[float] = wider_eval.DEFAULT_SIZES,
    face_lists: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None,
) -> Tuple[dict, dict]:
    """WIDER FACE AP for each face-size setting and each face list.

    Args:
      predictions: ``{image path: Detections}``.
      records: the :class:`~mtcnn_jax.data.wider.WiderRecord` s evaluated.
      sizes: face-size settings (shorter side >= N px; 1 = all valid faces).
      face_lists: optional ``{"easy": {path: 0-based face indices}, ...}``.

    Returns:
      ``(settings, curves)``: ``settings[name] = {"ap", "ap_distinct", "n_faces",
      "n_detections", "min_size" or "list"}`` with the official 1,000-threshold sampling
      for ``"ap"`` and every distinct score for ``"ap_distinct"``; ``curves[name] =
      (recall, precision)`` float64[1000] each, official sampling.
    """
    records = list(records)
    jobs = [(wider_eval.setting_name(s), dict(min_size=s), {"min_size": s}) for s in sizes]
    for name, keep in (face_lists or {}).items():
        jobs.append((name, dict(keep=keep), {"list": name}))
    settings, curves = {}, {}
    for name, kwargs, info in jobs:
        off = wider_eval.evaluate(predictions, records, sampling="official", **kwargs)
        dis = wider_eval.evaluate(predictions, records, sampling="distinct", **kwargs)
        settings[name] = dict(info, ap=off["ap"], ap_distinct=dis["ap"],
                              n_faces=off["n_faces"], n_detections=off["n_detections"])
        # thresholds that no detection passes give (0, 0): not a point of the curve
        empty = (off["recall"] == 0) & (off["precision"] == 0)
        curves[name] = (np.where(empty, np.nan, off["recall"]), off["precision"])
    return settings, curves


def landmark_metrics(
    predictions: Mapping[str, Detections],
    annotations: lm_eval.MtflAnnotations,
    failure_threshold: float = 0.1,
) -> Tuple[dict, np.ndarray]:
    """Landmark accuracy as JSON-ready numbers, and the per-image NME.

    Returns:
      ``(metrics, errors)``: ``metrics`` holds ``n_images``, ``n_detected``,
      ``detection_rate``, ``nme_mean``, ``nme_median``, ``nme_per_point`` (``{point name:
      mean NME}``), ``failure_threshold`` and ``failure_rate``; ``errors`` is float64[M],
      NaN for misses (see :func:`mtcnn_jax.evaluation.nme.evaluate_landmarks`).
    """
    res = lm_eval.evaluate_landmarks(predictions, annotations, failure_threshold)
    metrics = dict(
        n_images=res["n_images"],
        n_detected=res["n_detected"],
        detection_rate=res["detection_rate"],
        nme_mean=res["nme_mean"],
        nme_median=res["nme_median"],
        nme_per_point={n: float(v) for n, v in zip(lm_eval.POINT_NAMES, res["nme_per_point"])},
        failure_threshold=failure_threshold,
        failure_rate=res["failure_rate"],
    )
    return metrics, res["errors"]


def timing(run: "DetectionRun") -> Optional[dict]:
    """``{"n_images", "median_ms", "mean_ms", "first_ms", "median_cpu_ms"}`` of the per-image
    times of a run (the first call includes compilation), or None when nothing ran."""
    if len(run.seconds) == 0:
        return None
    ms = np.asarray(run.seconds, np.float64) * 1e3
    return dict(n_images=int(ms.size), median_ms=float(np.median(ms)), mean_ms=float(ms.mean()),
                first_ms=float(ms[0]), median_cpu_ms=float(np.median(run.cpu_seconds) * 1e3))


def subset_annotations(ann: lm_eval.MtflAnnotations, keep: np.ndarray) -> lm_eval.MtflAnnotations:
    """The annotations of the images where ``keep`` (bool[M]) is True."""
    keep = np.asarray(keep, bool)
    return lm_eval.MtflAnnotations(
        paths=[p for p, k in zip(ann.paths, keep) if k],
        **{f.name: getattr(ann, f.name)[keep] for f in dataclasses.fields(ann) if f.name != "paths"},
    )


def json_ready(obj):
    """``obj`` with NumPy scalars/arrays turned into Python values and NaN/inf into None
    (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------- files


def _readable(option: str, path: str) -> str:
    if not os.path.exists(path):
        raise UserError(f"{option}: {path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{option}: {path}: is a folder, expected a file")
    return path


def read_input(option: str, path: str, reader, *args, **kwargs):
    """``reader(path, ...)`` with OS and encoding errors turned into one-line UserErrors."""
    _readable(option, path)
    try:
        return reader(path, *args, **kwargs)
    except UnicodeDecodeError:
        raise UserError(f"{option}: {path}: not a UTF-8 text file") from None
    except OSError as err:
        raise UserError(f"{option}: {path}: cannot read ({err.strerror or err})") from None


def prepare_out(out: str) -> str:
    """Create the output folder (UserError when it cannot be)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out: {out} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot create {out} ({err.strerror or err})") from None
    return out


def write_file(out: str, name: str, data: bytes) -> str:
    """Write ``data`` to ``out/name`` atomically (``name``: a fixed relative name chosen by the
    command, never a user path); UserError when it cannot be written. Returns the path."""
    path = os.path.join(out, name)
    try:
        detect_cmd.write_atomically(path, data)
    except OSError as err:
        raise UserError(f"--out: cannot write {path} ({err.strerror or err})") from None
    return path


def write_json(out: str, name: str, obj) -> str:
    """Write ``obj`` (after :func:`json_ready`) as indented JSON to ``out/name``."""
    text = json.dumps(json_ready(obj), indent=2) + "\n"
    return write_file(out, name, text.encode("utf-8"))


def write_image(out: str, name: str, image: np.ndarray) -> str:
    """Write a uint8[H, W, 3] RGB image as PNG to ``out/name``."""
    return write_file(out, name, plots.encode_png(image))


# --------------------------------------------------------------------------- commands


class _Source(NamedTuple):
    predictions: Optional[Dict[str, Detections]]  # None: run the detector
    settings: Optional[detect_cmd.Settings]
    detector_info: Optional[dict]


def _source(args) -> _Source:
    """Validate the options choosing between a predictions file and the detector."""
    if args.predictions is not None:
        if args.weights is not None:
            raise UserError("--predictions and --weights exclude each other")
        preds = read_input("--predictions", args.predictions, read_predictions)
        return _Source(preds, None, None)
    if args.images is None:
        raise UserError("--images DIR is needed to run the detector (or give --predictions)")
    if not os.path.isdir(args.images):
        raise UserError(f"--images: {args.images}: no such folder")
    settings = detect_cmd.parse_settings(args)
    info = {"library": "mtcnn_jax", "min_face_size": settings.min_face, "factor": settings.factor,
            "thresholds": list(settings.thresholds), "weights": settings.weights or "authors"}
    return _Source(None, settings, info)


def _reporter():
    count = [0]

    def report(message: str) -> None:
        count[0] += 1
        tqdm.write(f"mtcnn-jax: {detect_cmd.printable(message)}", file=sys.stderr)

    return report


def _run_detector(source: _Source, images: str, paths: List[str]) -> DetectionRun:
    detector = detect_cmd.make_detector(source.settings)
    return detect_images(detector, images, paths, source.settings.max_pixels, _reporter())


def _check_paths(source: Optional[str], predictions, gt_paths: List[str]) -> List[str]:
    """Prediction paths that match no ground-truth path; UserError when none matches."""
    _, unmatched = align_to_ground_truth(predictions, gt_paths)
    if source is not None and predictions and len(unmatched) == len(predictions):
        raise UserError(f"--predictions: {source}: none of its {len(predictions)} image paths "
                        "is in the ground truth (paths match exactly or by a '/'-suffix)")
    return unmatched


def _sizes(text: str) -> Tuple[float, ...]:
    try:
        sizes = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        sizes = ()
    if not sizes or not all(math.isfinite(s) and s >= 0 for s in sizes):
        raise UserError(f"--sizes: expected non-negative numbers separated by commas, got {text!r}")
    return sizes


def run_wider(args: argparse.Namespace) -> int:
    """``evaluate wider``; returns 0, or 1 when images were skipped."""
    from mtcnn_jax.data.wider import read_wider_gt

    sizes = _sizes(args.sizes)
    records = read_input("--gt", args.gt, read_wider_gt)
    face_lists = {}
    for name in WIDER_LISTS:
        path = getattr(args, name)
        if path is not None:
            face_lists[name] = read_input(f"--{name}", path, wider_eval.read_face_lists)
    source = _source(args)
    if source.predictions is not None:
        _check_paths(args.predictions, source.predictions, [r.path for r in records])
    out = prepare_out(args.out)

    run = None
    predictions = source.predictions
    if predictions is None:
        run = _run_detector(source, args.images, [r.path for r in records])
        predictions = run.predictions
        skipped_paths = {p for p, _ in run.skipped}
        records = [r for r in records if r.path not in skipped_paths]
        write_file(out, "predictions.json", detect_cmd.format_json(run.entries).encode("utf-8"))

    settings, curves = wider_metrics(predictions, records, sizes, face_lists)
    unmatched = _check_paths(args.predictions, predictions, [r.path for r in records])
    metrics = dict(
        protocol="wider",
        gt=args.gt,
        predictions=args.predictions,
        detector=source.detector_info,
        n_images=len(records) + (len(run.skipped) if run else 0),
        n_evaluated=len(records),
        n_skipped=len(run.skipped) if run else 0,
        skipped=[{"path": p, "reason": r} for p, r in run.skipped] if run else [],
        n_unmatched_predictions=len(unmatched),
        settings=settings,
        timing=timing(run) if run else None,
    )
    write_json(out, "metrics.json", metrics)
    write_image(out, "pr_curve.png", plots.pr_plot(
        [plots.Curve(f"{name}: AP {s['ap']:.3f}", *curves[name]) for name, s in settings.items()],
        title="WIDER FACE precision-recall (official sampling)",
    ))
    for name, s in settings.items():
        print(f"AP {name}: {s['ap']:.4f} ({s['n_faces']} faces; at every distinct score "
              f"{s['ap_distinct']:.4f})")
    skipped = metrics["n_skipped"]
    print(f"{metrics['n_evaluated']} images evaluated, {skipped} skipped; wrote {out}")
    return 1 if skipped else 0


def run_landmarks(args: argparse.Namespace) -> int:
    """``evaluate landmarks``; returns 0, or 1 when images were skipped."""
    threshold = detect_cmd._number("--failure-threshold", args.failure_threshold)
    if threshold <= 0:
        raise UserError(f"--failure-threshold: must be positive, got {args.failure_threshold}")
    ann = read_input("--gt", args.gt, lm_eval.read_mtfl, one_based=args.one_based)
    if len(ann) == 0:
        raise UserError(f"--gt: {args.gt}: no annotated image")
    source = _source(args)
    if source.predictions is not None:
        _check_paths(args.predictions, source.predictions, ann.paths)
    out = prepare_out(args.out)

    run = None
    predictions = source.predictions
    if predictions is None:
        run = _run_detector(source, args.images, ann.paths)
        predictions = run.predictions
        skipped_paths = {p for p, _ in run.skipped}
        ann = subset_annotations(ann, np.array([p not in skipped_paths for p in ann.paths], bool))
        write_file(out, "predictions.json", detect_cmd.format_json(run.entries).encode("utf-8"))

    unmatched = _check_paths(args.predictions, predictions, ann.paths)
    if len(ann):
        try:
            metrics, errors = landmark_metrics(predictions, ann, threshold)
        except UserError as err:  # e.g. predictions without landmarks (Haar): name the file
            raise UserError(f"{args.predictions or 'detector'}: {err}") from None
    else:  # every image skipped
        metrics, errors = dict(n_images=0, n_detected=0), np.zeros(0)
    n_skipped = len(run.skipped) if run else 0
    metrics = dict(
        protocol="landmarks",
        gt=args.gt,
        one_based=args.one_based,
        predictions=args.predictions,
        detector=source.detector_info,
        **metrics,
        n_unmatched_predictions=len(unmatched),
        n_skipped=n_skipped,
        skipped=[{"path": p, "reason": r} for p, r in run.skipped] if run else [],
        timing=timing(run) if run else None,
    )
    write_json(out, "metrics.json", metrics)
    grid = np.linspace(0.0, CED_MAX_ERROR, 201)
    write_image(out, "ced.png", plots.ced_plot([
        plots.Curve("detected images", grid, lm_eval.cumulative_error_distribution(errors, grid)),
        plots.Curve("all images (misses never below)", grid,
                    lm_eval.cumulative_error_distribution(errors, grid, include_misses=True)),
    ], max_error=CED_MAX_ERROR))
    if metrics["n_detected"]:
        print(f"NME mean {metrics['nme_mean']:.4f}, median {metrics['nme_median']:.4f}, "
              f"failure rate {metrics['failure_rate']:.4f} (NME > {threshold:g}), "
              f"detection rate {metrics['detection_rate']:.4f} "
              f"({metrics['n_detected']}/{metrics['n_images']})")
    else:
        print(f"no face detected in {metrics['n_images']} images")
    print(f"{metrics['n_images']} images evaluated, {n_skipped} skipped; wrote {out}")
    return 1 if n_skipped else 0


FDDB_FALSE_POSITIVES = (100, 500, 1000, 2000)


def _read_fddb_predictions(path: str):
    from mtcnn_jax.evaluation import fddb

    if path.lower().endswith(".json"):
        preds = read_input("--predictions", path, read_predictions)
        return {p: fddb.from_corners(d.boxes, d.scores) for p, d in preds.items()}
    return read_input("--predictions", path, fddb.read_detections)


def run_fddb(args: argparse.Namespace) -> int:
    """``evaluate fddb``; returns 0, or 1 when images were skipped."""
    from mtcnn_jax.evaluation import fddb

    folds = []
    for fold in args.folds:
        folds.extend(read_input("--folds", fold, fddb.read_ellipses))
    if args.predictions is not None:
        if args.weights is not None:
            raise UserError("--predictions and --weights exclude each other")
        detections = _read_fddb_predictions(args.predictions)
        known = {a.path for a in folds}
        if detections and not any(p in known for p in detections):
            raise UserError(f"--predictions: {args.predictions}: none of its {len(detections)} image paths "
                            "is in the folds")
        source = _Source(None, None, None)
    else:
        source = _source(args)
    out = prepare_out(args.out)

    run, sizes = None, None
    if args.predictions is None:
        by_file = {a.path + ".jpg": a.path for a in folds}
        run = _run_detector(source, args.images, list(by_file))
        detections = {by_file[p]: fddb.from_corners(d.boxes, d.scores) for p, d in run.predictions.items()}
        sizes = {by_file[e["path"]]: (e["height"], e["width"]) for e in run.entries}
        skipped = {by_file[p] for p, _ in run.skipped}
        folds = [a for a in folds if a.path not in skipped]
        write_file(out, "detections.txt", fddb.format_detections(detections).encode("utf-8"))

    curve = fddb.roc(detections, folds, sizes)
    n_skipped = len(run.skipped) if run else 0
    rates = {
        kind: {str(fp): fddb.tpr_at(curve, fp, continuous=(kind == "continuous")) for fp in FDDB_FALSE_POSITIVES}
        for kind in ("discrete", "continuous")
    }
    metrics = dict(
        protocol="fddb",
        folds=list(args.folds),
        predictions=args.predictions,
        detector=source.detector_info,
        n_images=len(folds),
        n_faces=curve.n_faces,
        n_detections=int(sum(len(d.scores) for p, d in detections.items() if p in {a.path for a in folds})),
        tpr_at_false_positives=rates,
        n_skipped=n_skipped,
        skipped=[{"path": p, "reason": r} for p, r in run.skipped] if run else [],
        timing=timing(run) if run else None,
    )
    write_json(out, "metrics.json", metrics)
    for name, tpr in (("DiscROC.txt", curve.tpr_discrete), ("ContROC.txt", curve.tpr_continuous)):
        text = "".join(f"{t:.6f} {fp}\n" for t, fp in zip(tpr, curve.false_positives))
        write_file(out, name, text.encode("utf-8"))
    max_fp = max(1, int(curve.false_positives.max()) if curve.false_positives.size else 1)
    write_image(out, "roc.png", plots.roc_plot([
        plots.Curve("discrete", curve.false_positives, curve.tpr_discrete),
        plots.Curve("continuous", curve.false_positives, curve.tpr_continuous),
    ], max_false_positives=min(max_fp, 2000), title="FDDB ROC"))
    d, c = rates["discrete"]["1000"], rates["continuous"]["1000"]
    print(f"TPR at 1000 false positives: discrete {d:.4f}, continuous {c:.4f} ({curve.n_faces} faces)")
    print(f"{len(folds)} images evaluated, {n_skipped} skipped; wrote {out}")
    return 1 if n_skipped else 0
