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
import math
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from tqdm import tqdm

from mtcnn_jax.commands.options import (
    Settings,
    add_detector_options,
    add_overwrite_option,
    detector_info,
    make_detector,
    parse_number,
    parse_settings,
    prepare_out,
    read_input,
    write_output,
    write_output_json,
)
from mtcnn_jax.errors import UserError
from mtcnn_jax.evaluation import plots
from mtcnn_jax.evaluation import nme as lm_eval
from mtcnn_jax.evaluation import wider_ap as wider_eval
from mtcnn_jax.evaluation.predictions import PredictionsWriter, align_to_ground_truth, read_predictions
from mtcnn_jax.evaluation.runner import DetectionRun, detect_images, landmark_metrics, timing, wider_metrics
from mtcnn_jax.faces import Faces
from mtcnn_jax.outputs import printable

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


#: The detector options' help texts in ``evaluate`` (``detect`` has its own wording).
_DETECTOR_HELP = {
    "--weights": "detector weights (default: the authors')",
    "--min-face": "smallest face, pixels (default 20; the authors use 10 for WIDER FACE)",
    "--factor": "pyramid scale step (default 0.709)",
    "--thresholds": "P-Net, R-Net, O-Net thresholds (default 0.6,0.7,0.7)",
    "--max-megapixels": "refuse images larger than M megapixels (default 100)",
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.json and the plots")
    add_overwrite_option(p)
    p.add_argument("--images", metavar="DIR", help="folder the ground-truth paths are relative to")
    p.add_argument("--predictions", metavar="P.json",
                   help="score these detections instead of running the detector")
    add_detector_options(p, ("--weights", "--min-face", "--factor", "--thresholds", "--max-megapixels", "--pyramid"),
                         _DETECTOR_HELP)


# --------------------------------------------------------------------------- shared steps


class _Source(NamedTuple):
    predictions: Optional[Dict[str, Faces]]  # None: run the detector
    settings: Optional[Settings]
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
    settings = parse_settings(args)
    return _Source(None, settings, detector_info(settings))


def _report(message: str) -> None:
    tqdm.write(f"mtcnn-jax: {printable(message)}", file=sys.stderr)


def _run_detector(source: _Source, images: str, paths: List[str], out: Optional[str] = None) -> DetectionRun:
    """The detector over ``images/<path>``; with ``out``, each image's detections go to
    ``out/predictions.json`` as soon as they are found (an interrupted run keeps them)."""
    detector = make_detector(source.settings)
    writer = PredictionsWriter(os.path.join(out, "predictions.json")) if out is not None else None
    try:
        return detect_images(detector, images, paths, source.settings.max_pixels, _report,
                             on_entry=None if writer is None else writer.write)
    except OSError as err:
        raise UserError(f"--out: cannot write {os.path.join(out, 'predictions.json')} ({err.strerror or err})") from None
    finally:
        if writer is not None:
            writer.close()


def _check_paths(source: Optional[str], predictions, gt_paths: List[str]) -> List[str]:
    """Prediction paths that match no ground-truth path; UserError when none matches."""
    _, unmatched = align_to_ground_truth(predictions, gt_paths)
    if source is not None and predictions and len(unmatched) == len(predictions):
        raise UserError(f"--predictions: {source}: none of its {len(predictions)} image paths "
                        "is in the ground truth (paths match exactly or by a '/'-suffix)")
    return unmatched


def _skipped(run: Optional[DetectionRun]) -> dict:
    """The ``n_skipped`` and ``skipped`` entries of metrics.json."""
    return dict(n_skipped=len(run.skipped) if run else 0, skipped=run.skipped_entries() if run else [])


def _sizes(text: str) -> Tuple[float, ...]:
    try:
        sizes = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        sizes = ()
    if not sizes or not all(math.isfinite(s) and s >= 0 for s in sizes):
        raise UserError(f"--sizes: expected non-negative numbers separated by commas, got {text!r}")
    return sizes


# --------------------------------------------------------------------------- commands


def run_wider(args: argparse.Namespace) -> int:
    """``evaluate wider``; returns 0, or 1 when images were skipped."""
    from mtcnn_jax.data.wider import read_wider_gt  # noqa: PLC0415

    sizes = _sizes(args.sizes)
    records = read_input("--gt", args.gt, read_wider_gt)
    face_lists, face_list_paths = {}, []
    for name in WIDER_LISTS:
        path = getattr(args, name)
        if path is not None:
            face_lists[name] = read_input(f"--{name}", path, wider_eval.read_face_lists)
            face_list_paths.append(path)
    source = _source(args)
    if source.predictions is not None:
        _check_paths(args.predictions, source.predictions, [r.path for r in records])
    out = prepare_out(args.out, [args.gt, args.images, args.predictions, *face_list_paths], args.overwrite,
                      ("metrics.json", "pr_curve.png", "predictions.json"))

    run = None
    predictions = source.predictions
    if predictions is None:
        run = _run_detector(source, args.images, [r.path for r in records], out)
        predictions = run.predictions
        skipped_paths = {p for p, _ in run.skipped}
        records = [r for r in records if r.path not in skipped_paths]

    settings, curves = wider_metrics(predictions, records, sizes, face_lists)
    unmatched = _check_paths(args.predictions, predictions, [r.path for r in records])
    skipped = _skipped(run)
    metrics = dict(
        protocol="wider",
        gt=args.gt,
        predictions=args.predictions,
        detector=source.detector_info,
        n_images=len(records) + skipped["n_skipped"],
        n_evaluated=len(records),
        **skipped,
        n_unmatched_predictions=len(unmatched),
        settings=settings,
        timing=timing(run),
    )
    write_output_json(out, "metrics.json", metrics)
    write_output(out, "pr_curve.png", plots.encode_png(plots.pr_plot(
        [plots.Curve(f"{name}: AP {s['ap']:.3f}", *curves[name]) for name, s in settings.items()],
        title="WIDER FACE precision-recall (official sampling)",
    )))
    for name, s in settings.items():
        print(f"AP {name}: {s['ap']:.4f} ({s['n_faces']} faces; at every distinct score "
              f"{s['ap_distinct']:.4f})")
    print(f"{metrics['n_evaluated']} images evaluated, {metrics['n_skipped']} skipped; wrote {out}")
    return 1 if metrics["n_skipped"] else 0


def run_landmarks(args: argparse.Namespace) -> int:
    """``evaluate landmarks``; returns 0, or 1 when images were skipped."""
    threshold = parse_number("--failure-threshold", args.failure_threshold)
    if threshold <= 0:
        raise UserError(f"--failure-threshold: must be positive, got {args.failure_threshold}")
    ann = read_input("--gt", args.gt, lm_eval.read_mtfl, one_based=args.one_based)
    if len(ann) == 0:
        raise UserError(f"--gt: {args.gt}: no annotated image")
    source = _source(args)
    if source.predictions is not None:
        _check_paths(args.predictions, source.predictions, ann.paths)
    out = prepare_out(args.out, [args.gt, args.images, args.predictions], args.overwrite,
                      ("metrics.json", "ced.png", "predictions.json"))

    run = None
    predictions = source.predictions
    if predictions is None:
        run = _run_detector(source, args.images, ann.paths, out)
        predictions = run.predictions
        skipped_paths = {p for p, _ in run.skipped}
        ann = ann.subset(np.array([p not in skipped_paths for p in ann.paths], bool))

    unmatched = _check_paths(args.predictions, predictions, ann.paths)
    if len(ann):
        try:
            metrics, errors = landmark_metrics(predictions, ann, threshold)
        except UserError as err:  # e.g. predictions without landmarks (Haar): name the file
            raise UserError(f"{args.predictions or 'detector'}: {err}") from None
    else:  # every image skipped
        metrics, errors = dict(n_images=0, n_detected=0), np.zeros(0)
    skipped = _skipped(run)
    metrics = dict(
        protocol="landmarks",
        gt=args.gt,
        one_based=args.one_based,
        predictions=args.predictions,
        detector=source.detector_info,
        **metrics,
        n_unmatched_predictions=len(unmatched),
        **skipped,
        timing=timing(run),
    )
    write_output_json(out, "metrics.json", metrics)
    grid = np.linspace(0.0, CED_MAX_ERROR, 201)
    write_output(out, "ced.png", plots.encode_png(plots.ced_plot([
        plots.Curve("detected images", grid, lm_eval.cumulative_error_distribution(errors, grid)),
        plots.Curve("all images (misses never below)", grid,
                    lm_eval.cumulative_error_distribution(errors, grid, include_misses=True)),
    ], max_error=CED_MAX_ERROR)))
    if metrics["n_detected"]:
        print(f"NME mean {metrics['nme_mean']:.4f}, median {metrics['nme_median']:.4f}, "
              f"failure rate {metrics['failure_rate']:.4f} (NME > {threshold:g}), "
              f"detection rate {metrics['detection_rate']:.4f} "
              f"({metrics['n_detected']}/{metrics['n_images']})")
    else:
        print(f"no face detected in {metrics['n_images']} images")
    print(f"{metrics['n_images']} images evaluated, {metrics['n_skipped']} skipped; wrote {out}")
    return 1 if metrics["n_skipped"] else 0


FDDB_FALSE_POSITIVES = (100, 500, 1000, 2000)


def _read_fddb_predictions(path: str):
    from mtcnn_jax.evaluation import fddb  # noqa: PLC0415 (SciPy: loaded only for FDDB)

    if path.lower().endswith(".json"):
        preds = read_input("--predictions", path, read_predictions)
        return {p: fddb.from_corners(d.boxes, d.scores) for p, d in preds.items()}
    return read_input("--predictions", path, fddb.read_detections)


def run_fddb(args: argparse.Namespace) -> int:
    """``evaluate fddb``; returns 0, or 1 when images were skipped."""
    from mtcnn_jax.evaluation import fddb  # noqa: PLC0415 (SciPy: loaded only for FDDB)

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
    out = prepare_out(args.out, [*args.folds, args.images, args.predictions], args.overwrite,
                      ("metrics.json", "roc.png", "DiscROC.txt", "ContROC.txt", "detections.txt"))

    run, sizes = None, None
    if args.predictions is None:
        by_file = {a.path + ".jpg": a.path for a in folds}
        run = _run_detector(source, args.images, list(by_file))
        detections = {by_file[p]: fddb.from_corners(d.boxes, d.scores) for p, d in run.predictions.items()}
        sizes = {by_file[e["path"]]: (e["height"], e["width"]) for e in run.entries}
        skipped_paths = {by_file[p] for p, _ in run.skipped}
        folds = [a for a in folds if a.path not in skipped_paths]
        write_output(out, "detections.txt", fddb.format_detections(detections))

    curve = fddb.roc(detections, folds, sizes)
    rates = {
        kind: {str(fp): fddb.tpr_at(curve, fp, continuous=(kind == "continuous")) for fp in FDDB_FALSE_POSITIVES}
        for kind in ("discrete", "continuous")
    }
    evaluated = {a.path for a in folds}
    skipped = _skipped(run)
    metrics = dict(
        protocol="fddb",
        folds=list(args.folds),
        predictions=args.predictions,
        detector=source.detector_info,
        n_images=len(folds),
        n_faces=curve.n_faces,
        n_detections=int(sum(len(d.scores) for p, d in detections.items() if p in evaluated)),
        tpr_at_false_positives=rates,
        **skipped,
        timing=timing(run),
    )
    write_output_json(out, "metrics.json", metrics)
    for name, tpr in (("DiscROC.txt", curve.tpr_discrete), ("ContROC.txt", curve.tpr_continuous)):
        write_output(out, name, "".join(f"{t:.6f} {fp}\n" for t, fp in zip(tpr, curve.false_positives)))
    max_fp = max(1, int(curve.false_positives.max()) if curve.false_positives.size else 1)
    write_output(out, "roc.png", plots.encode_png(plots.roc_plot([
        plots.Curve("discrete", curve.false_positives, curve.tpr_discrete),
        plots.Curve("continuous", curve.false_positives, curve.tpr_continuous),
    ], max_false_positives=min(max_fp, 2000), title="FDDB ROC")))
    d, c = rates["discrete"]["1000"], rates["continuous"]["1000"]
    print(f"TPR at 1000 false positives: discrete {d:.4f}, continuous {c:.4f} ({curve.n_faces} faces)")
    print(f"{len(folds)} images evaluated, {metrics['n_skipped']} skipped; wrote {out}")
    return 1 if metrics["n_skipped"] else 0
