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
from typing import Dict, List, Optional

import cv2
import numpy as np

from mtcnn_jax import images
from mtcnn_jax.commands import detect as detect_cmd
from mtcnn_jax.commands import evaluate as ev
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.evaluation import plots
from mtcnn_jax.evaluation import report as rp
from mtcnn_jax.evaluation.predictions import Detections, align_to_ground_truth, read_predictions
from mtcnn_jax.evaluation.wider_ap import DEFAULT_SIZES, counted_faces, setting_name

PANEL_WIDTH = 480
GRID_PANEL_WIDTH = 320


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


def _name(given: Optional[str], path: str, preds_file: str) -> str:
    """A display name: the option, else the file's ``detector.library``, else its stem."""
    if given:
        return given
    import json

    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if isinstance(info, dict) and isinstance(info.get("detector"), dict):
            lib = info["detector"].get("library")
            if lib:
                return str(lib)
    except (OSError, ValueError):
        pass
    return os.path.splitext(os.path.basename(preds_file))[0]


def _aligned(option: str, path: str, gt_paths: List[str]) -> Dict[str, Detections]:
    preds = ev.read_input(option, path, read_predictions)
    aligned, unmatched = align_to_ground_truth(preds, gt_paths)
    if preds and len(unmatched) == len(preds):
        raise UserError(f"{option}: {path}: none of its {len(preds)} image paths is in the ground truth")
    return aligned


def run(args: argparse.Namespace) -> int:
    """Run ``report``; returns 0, or 1 if an image could not be read."""
    from mtcnn_jax.data.wider import read_wider_gt

    min_size = detect_cmd._number("--min-size", args.min_size)
    if min_size < 0:
        raise UserError(f"--min-size: must be >= 0, got {args.min_size}")
    min_score = -np.inf if args.min_score is None else detect_cmd._number("--min-score", args.min_score)
    try:
        count = int(args.count)
    except ValueError:
        count = -1
    if count < 1:
        raise UserError(f"--count: expected a positive whole number, got {args.count!r}")
    records = ev.read_input("--gt", args.gt, read_wider_gt)
    if not os.path.isdir(args.images):
        raise UserError(f"--images: {args.images}: no such folder")
    gt_paths = [r.path for r in records]
    ours = _aligned("--predictions", args.predictions, gt_paths)
    peer = _aligned("--peer", args.peer, gt_paths) if args.peer else None
    name = _name(args.name, args.predictions, args.predictions)
    peer_name = _name(args.peer_name, args.peer, args.peer) if args.peer else None
    out = ev.prepare_out(args.out)

    # numbers
    sizes = tuple(sorted(set(DEFAULT_SIZES) | {max(min_size, 1)}))
    shown = setting_name(max(min_size, 1))
    detectors = [(name, ours)] + ([(peer_name, peer)] if peer is not None else [])
    table, curves = [], []
    marks_by = {}
    for label, preds in detectors:
        settings, pr = ev.wider_metrics(preds, records, sizes)
        marks = {r.path: rp.classify(preds.get(r.path), r, min_size, min_score) for r in records}
        marks_by[label] = marks
        found = sum(m.n_found for m in marks.values())
        missed = sum(m.n_missed for m in marks.values())
        fps = sum(m.n_false_positives for m in marks.values())
        table.append((label, *(f"{settings[setting_name(s)]['ap']:.4f}" for s in DEFAULT_SIZES),
                      f"{found}/{found + missed}", fps))
        curves.append(plots.Curve(f"{label}: AP {settings[shown]['ap']:.3f}", *pr[shown]))
    columns = ("detector", "AP all", "AP >= 20 px", "AP >= 40 px",
               f"faces found ({shown})", f"false positives ({shown})")
    ev.write_image(out, "pr_curve.png", plots.pr_plot(curves, title=f"WIDER FACE precision-recall, {shown}"))

    # image rows
    chosen = rp.select(records, marks_by[name], count, args.select)
    rows_dir = os.path.join(out, "rows")
    os.makedirs(rows_dir, exist_ok=True)
    figures, grid_rows, n_errors = [], [], 0
    for k, i in enumerate(chosen):
        rec = records[i]
        full = os.path.join(args.images, *rec.path.split("/"))
        try:
            with images.quiet_native_stderr():
                image = images.load_image(full)
        except ImageError as err:
            n_errors += 1
            print(f"mtcnn-jax: {detect_cmd.printable(f'{full}: {err.reason}')}", file=sys.stderr)
            continue
        panels = []
        for label, preds in detectors:
            m = marks_by[label][rec.path]
            drawn = rp.draw(image, rec, preds.get(rec.path), m)
            caption = f"{label}: {m.n_found}/{m.n_found + m.n_missed} found, {m.n_false_positives} false"
            panels.append((drawn, caption))
        if peer is None:
            n_counted = int(np.sum(counted_faces(rec, min_size)))
            panels.append((rp.draw_ground_truth(image, rec, min_size), f"ground truth: {n_counted} faces ({shown})"))
        row = [rp.panel(im, cap, PANEL_WIDTH) for im, cap in panels]
        grid_rows.append([rp.panel(im, cap, GRID_PANEL_WIDTH) for im, cap in panels])
        rel = f"rows/{k:03d}.jpg"
        ok, data = cv2.imencode(".jpg", rp.grid([row])[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise UserError(f"cannot encode {rel}")
        ev.write_file(out, rel, data.tobytes())
        figures.append((rel, rec.path))
    if grid_rows:
        ev.write_image(out, "grid.png", rp.grid(grid_rows))

    title = f"{name} on {os.path.basename(args.gt)}" + (f", beside {peer_name}" if peer_name else "")
    notes = [
        f"{len(records)} images; WIDER FACE official protocol (IoU >= 0.5 with +1-pixel areas, "
        "invalid faces and faces outside the setting ignored), AP with the official 1,000-threshold sampling.",
        f"Images shown: {len(figures)} ({args.select}); faces count in the setting '{shown}'"
        + ("" if args.min_score is None else f"; detections scoring below {min_score:g} are grey and not counted")
        + ".",
    ]
    if n_errors:
        notes.append(f"{n_errors} image(s) could not be read and are not shown.")
    page = rp.html_page(title, table, columns, [("pr_curve.png", "precision-recall")] + figures, notes)
    ev.write_file(out, "report.html", page.encode("utf-8"))
    print(f"wrote {os.path.join(out, 'report.html')} ({len(figures)} images"
          + (f", {n_errors} unreadable" if n_errors else "") + ")")
    return 1 if n_errors else 0
