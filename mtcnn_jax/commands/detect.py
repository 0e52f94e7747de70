"""``mtcnn-jax detect``: find faces and their five landmarks in image files and folders.

    mtcnn-jax detect PATH... [--json OUT] [--annotate DIR] [--min-face N]
                     [--factor F] [--thresholds a,b,c] [--weights FILE_OR_DIR]
                     [--max-megapixels M] [--pyramid chained|original]

Each PATH is an image file or a folder (searched recursively for .jpg, .jpeg,
.png, .bmp, .webp, .tif, .tiff). For each image it prints ``<path>: <N> faces``,
then ``<N> images, <M> faces, <K> errors``. A file that cannot be used (missing,
not an image, truncated, too large, ...) is reported on stderr as
``mtcnn-jax: <path>: <reason>`` and the others are still processed; the exit code
is then 1. Bad options give one line on stderr and exit code 2.

``--json OUT`` writes (atomically) a list with one entry per image processed::

    {"path": "photos/a.jpg", "width": 640, "height": 480,
     "faces": [{"box": [x1, y1, x2, y2], "score": 0.9987,
                "landmarks": [[x, y], ...5: left eye, right eye, nose,
                              left mouth corner, right mouth corner]}]}

in pixels of the (upright) input image, boxes and landmarks rounded to 2
decimals, scores to 4. ``--json -`` writes it to stdout (the per-image lines then
go to stderr). ``path`` is the path as given, or folder-as-given/relative-path for
files found in a folder.

``--annotate DIR`` writes a copy of each image with its detections drawn to
``DIR/<relative name>``: the file name for a file given directly, the path
relative to the folder for files found in a folder; ``..`` and empty parts are
dropped, names taken twice get ``-1``, ``-2``, ... and no file is written outside
DIR, nor over an input image. DIR may not be an input folder; when it lies
inside one, the files under DIR (earlier output) are not taken as input.

``--min-face`` (pixels, default 20) must be at least 6: below 12 px the pyramid
upsamples the image by 12 / min-face, and 6 caps that at 2x (4x the pixels).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Set

import cv2
from tqdm import tqdm

from mtcnn_jax import images
from mtcnn_jax.commands.options import add_detector_options, make_detector, parse_settings
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.evaluation.predictions import faces_to_json, format_json
from mtcnn_jax.files import write_atomically
from mtcnn_jax.outputs import collect_images, output_name, printable, write_annotated


def register(subparsers) -> None:
    """Add the ``detect`` sub-command to ``subparsers`` (its ``func`` is :func:`run`)."""
    p = subparsers.add_parser(
        "detect",
        help="detect faces and landmarks in images or folders",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--json", metavar="OUT", help="write the detections to OUT as JSON ('-': stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images to DIR")
    add_detector_options(p)
    p.set_defaults(func=run)


def _check_json_target(target: Optional[str]) -> None:
    if target is None or target == "-":
        return
    if os.path.isdir(target):
        raise UserError(f"--json: {target} is a folder")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise UserError(f"--json: folder {folder} does not exist")


def _prepare_annotate(out_dir: Optional[str], paths: List[str]) -> None:
    if out_dir is None:
        return
    for given in paths:
        if os.path.isdir(given) and os.path.realpath(given) == os.path.realpath(out_dir):
            raise UserError(f"--annotate: {out_dir} is an input folder: choose another "
                            "folder for the annotated images")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"--annotate: cannot create {out_dir} ({err.strerror or err})") from None


def run(args: argparse.Namespace) -> int:
    """Run ``detect``; returns 0, or 1 if any file could not be used. Bad options raise UserError."""
    settings = parse_settings(args)
    _check_json_target(args.json)
    out_dir = args.annotate
    _prepare_annotate(out_dir, args.paths)
    detector = make_detector(settings)

    lines = sys.stderr if args.json == "-" else sys.stdout
    n_errors = 0

    def report(message: str) -> None:
        nonlocal n_errors
        n_errors += 1
        tqdm.write(f"mtcnn-jax: {printable(message)}", file=sys.stderr)

    errors: List[ImageError] = []
    items = collect_images(args.paths, errors, out_dir)
    for err in errors:
        report(str(err))

    inputs = {os.path.realpath(item.path) for item in items}
    show_bar = len(items) > 1 or any(os.path.isdir(p) for p in args.paths)
    used: Set[str] = set()
    results = []
    n_faces = 0
    for item in tqdm(items, desc="detect", unit="image", file=sys.stderr,
                     disable=None if show_bar else True, leave=False):
        try:
            with images.quiet_native_stderr():  # libjpeg/libpng warnings: our one line suffices
                image = images.load_image(item.path, max_pixels=settings.max_pixels)
        except ImageError as err:
            report(f"{item.display}: {err.reason}")
            continue
        faces = detector.detect(image)
        entry = faces_to_json(item.display, image, faces)
        results.append(entry)
        n_faces += len(entry["faces"])
        count = len(entry["faces"])
        tqdm.write(f"{printable(item.display)}: {count} face{'' if count == 1 else 's'}", file=lines)
        if out_dir is not None:
            name = output_name(item.relative, used)
            if os.path.realpath(os.path.join(out_dir, name)) in inputs:
                report(f"{item.display}: not annotated: {os.path.join(out_dir, name)} is an input image")
                continue
            try:
                write_annotated(out_dir, name, image, faces)
            except (OSError, cv2.error) as err:
                report(f"{item.display}: cannot write the annotated image ({getattr(err, 'strerror', None) or err})")

    if args.json is not None:
        text = format_json(results)
        if args.json == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            try:
                write_atomically(args.json, text)
            except OSError as err:
                raise UserError(f"--json: cannot write {args.json} ({err.strerror or err})") from None
    print(f"{len(results)} image{'' if len(results) == 1 else 's'}, {n_faces} face"
          f"{'' if n_faces == 1 else 's'}, {n_errors} error{'' if n_errors == 1 else 's'}", file=lines)
    return 1 if n_errors else 0
