"""``mtcnn-jax report``: an HTML page and a PNG grid that show, image by image, which
faces the detections found or missed and which detections are false positives.

    mtcnn-jax report --predictions P.json --gt GT.txt --images DIR --out DIR
                     [--peer Q.json] [--name NAME] [--peer-name NAME]
                     [--min-size 1] [--min-score S] [--count 12]
                     [--select spread|worst|first]

P.json and Q.json are detections in the ``detect --json`` format (or a dict with an
``"images"`` list, as ``evaluate`` and the reference files use); GT.txt is a WIDER FACE
ground-truth file whose paths are relative to ``--images``. Each shown image becomes
one row: P's detections, and beside them Q's (``--peer``) or else the ground truth.
Faces count as in ``evaluate wider`` for the setting ``--min-size`` (valid and shorter
side >= N px); detections below ``--min-score`` are drawn grey and not counted.
Green: found face / true detection; red: missed face; orange: false positive; grey:
ignored; blue (ground-truth panel): faces that count.

Writes to DIR: ``report.html`` (AP table, PR curves, the rows), ``grid.png`` (all rows
in one image), ``pr_curve.png`` and ``rows/NNN.jpg``. ``--select`` picks the ``--count``
images spread evenly over the list (default), with the most misses and false
positives of P (``worst``), or the first ones. An image that cannot be read is
reported (``mtcnn-jax: <path>: <reason>``), left out, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

from mtcnn_jax.commands.options import add_overwrite_option, parse_number, prepare_out, read_input, write_output
from mtcnn_jax.errors import UserError
from mtcnn_jax.evaluation.predictions import align_to_ground_truth, detector_library, read_predictions
from mtcnn_jax.evaluation.report import build_report
from mtcnn_jax.faces import Faces
from mtcnn_jax.outputs import printable


def register(subparsers) -> None:
    """Add the ``report`` sub-command (its ``func`` is :func:`run`)."""
    p = subparsers.add_parser(
        "report",
        help="HTML/PNG report: detections next to a peer's or the ground truth, misses and false positives marked",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--predictions", required=True, metavar="P.json", help="the detections to show")
    p.add_argument("--gt", required=True, metavar="GT.txt", help="WIDER FACE ground-truth file")
    p.add_argument("--images", required=True, metavar="DIR", help="folder the ground-truth paths are relative to")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.html and the images")
    add_overwrite_option(p)
    p.add_argument("--peer", metavar="Q.json", help="another detector's detections, shown beside")
    p.add_argument("--name", default=None, help="name of P (default: from the file)")
    p.add_argument("--peer-name", default=None, help="name of Q (default: from the file)")
    p.add_argument("--min-size", default="1", metavar="N",
                   help="faces count when valid and their shorter side is >= N px (default 1: all valid)")
    p.add_argument("--min-score", default=None, metavar="S",
                   help="draw detections scoring below S grey and leave them out (default: none left out)")
    p.add_argument("--count", default="12", metavar="K", help="number of images shown (default 12)")
    p.add_argument("--select", default="spread", choices=("spread", "worst", "first"),
                   help="which images: spread evenly (default), most errors of P first, or the first ones")
    p.set_defaults(func=run)


def _name(given, path: str) -> str:
    """A display name: the option, else the file's ``detector.library``, else its stem."""
    return given or detector_library(path) or os.path.splitext(os.path.basename(path))[0]


def _aligned(option: str, path: str, gt_paths: List[str]) -> Dict[str, Faces]:
    preds = read_input(option, path, read_predictions)
    aligned, unmatched = align_to_ground_truth(preds, gt_paths)
    if preds and len(unmatched) == len(preds):
        raise UserError(f"{option}: {path}: none of its {len(preds)} image paths is in the ground truth")
    return aligned


def _report(message: str) -> None:
    print(f"mtcnn-jax: {printable(message)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``report``; returns 0, or 1 if an image could not be read."""
    from mtcnn_jax.data.wider import read_wider_gt  # noqa: PLC0415

    min_size = parse_number("--min-size", args.min_size)
    if min_size < 0:
        raise UserError(f"--min-size: must be >= 0, got {args.min_size}")
    min_score = None if args.min_score is None else parse_number("--min-score", args.min_score)
    try:
        count = int(args.count)
    except ValueError:
        count = -1
    if count < 1:
        raise UserError(f"--count: expected a positive whole number, got {args.count!r}")
    records = read_input("--gt", args.gt, read_wider_gt)
    if not os.path.isdir(args.images):
        raise UserError(f"--images: {args.images}: no such folder")
    gt_paths = [r.path for r in records]
    detectors = [(_name(args.name, args.predictions), _aligned("--predictions", args.predictions, gt_paths))]
    if args.peer:
        detectors.append((_name(args.peer_name, args.peer), _aligned("--peer", args.peer, gt_paths)))
    out = prepare_out(args.out, [args.predictions, args.peer, args.gt, args.images], args.overwrite,
                      ("report.html", "grid.png", "pr_curve.png", "rows"))

    page = build_report(records, detectors, args.images, os.path.basename(args.gt), min_size=min_size,
                        min_score=min_score, count=count, how=args.select, report=_report)
    os.makedirs(os.path.join(out, "rows"), exist_ok=True)
    for name, data in page.files.items():
        write_output(out, name, data)
    print(f"wrote {os.path.join(out, 'report.html')} ({page.n_shown} images"
          + (f", {page.n_unreadable} unreadable" if page.n_unreadable else "") + ")")
    return 1 if page.n_unreadable else 0
