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

``--json OUT`` writes a list with one entry per image processed::

    {"path": "photos/a.jpg", "width": 640, "height": 480,
     "annotated": "out/a.jpg",
     "faces": [{"box": [x1, y1, x2, y2], "score": 0.9987000226974487,
                "landmarks": [[x, y], ...5: left eye, right eye, nose,
                              left mouth corner, right mouth corner]}]}

in pixels of the (upright) input image, boxes and landmarks rounded to 2
decimals; scores at full precision (the detector's float32 value, read back
exactly, so that AP computed from the file is that of the detections).
``path`` is the path as given, or folder-as-given/
relative-path for files found in a folder; ``annotated`` (with ``--annotate``)
is the annotated copy made of it. The file is valid JSON after every image, so
an interrupted run (Ctrl-C: exit code 130) or a write error keeps every image
finished before it. ``OUT`` ending in ``.jsonl`` gets JSON Lines instead (one
entry per line); ``--json -`` writes to stdout (the per-image lines then go to
stderr).

``--annotate DIR`` writes a copy of each image with its detections drawn to
``DIR/<relative name>``: the file name for a file given directly, the path
relative to the folder for files found in a folder; ``..`` and empty parts are
dropped, names taken twice get ``-1``, ``-2``, ... (the JSON's ``annotated``
says which is which) and no file is written outside DIR.

Nothing of the user's is replaced unless ``--overwrite`` is given: ``--json``
may not name an existing file, an input file or a file inside an input folder;
``--annotate`` may not be an input folder, lie inside one or hold an input, and
an existing file in it is not replaced (that image is reported). With
``--overwrite`` these are allowed, and files under DIR inside an input folder are
not taken as input (they are earlier output). An annotated copy never replaces
an input image.

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
from mtcnn_jax.evaluation.predictions import PredictionsWriter, faces_to_json
from mtcnn_jax.outputs import OutputPolicy, collect_images, output_name, printable, write_annotated


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
    p.add_argument("--overwrite", action="store_true",
                   help="allow replacing existing output files and writing inside an input folder")
    add_detector_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``detect``: 0, 1 if a file could not be used, 130 if interrupted. Bad options raise UserError."""
    settings = parse_settings(args)
    policy = OutputPolicy(args.paths, args.overwrite)
    if args.json not in (None, "-"):
        policy.check_file("--json", args.json)
    out_dir = args.annotate
    if out_dir is not None:
        policy.check_folder("--annotate", out_dir)
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
    writer = None
    if args.json is not None:
        try:
            writer = PredictionsWriter(args.json, sys.stdout)
        except OSError as err:
            raise UserError(f"--json: cannot write {args.json} ({err.strerror or err})") from None

    inputs = {os.path.realpath(item.path) for item in items}
    show_bar = len(items) > 1 or any(os.path.isdir(p) for p in args.paths)
    used: Set[str] = set()
    n_images = n_faces = 0
    interrupted = False
    try:
        for item in tqdm(items, desc="detect", unit="image", file=sys.stderr,
                         disable=None if show_bar else True, leave=False):
            try:
                image = images.load_image(item.path, max_pixels=settings.max_pixels)
            except ImageError as err:
                report(f"{item.display}: {err.reason}")
                continue
            faces = detector.detect(image)
            entry = faces_to_json(item.display, image, faces)
            if out_dir is not None:
                _annotate(out_dir, item, image, faces, entry, used, inputs, args.overwrite, report)
            if writer is not None:
                try:
                    writer.write(entry)
                except BrokenPipeError:
                    raise  # the reader of stdout went away: the CLI ends quietly (exit 141)
                except OSError as err:
                    report(f"--json: cannot write {args.json} ({err.strerror or err}); stopped, "
                           f"the {writer.count} images before are kept")
                    break
            n_images += 1
            n_faces += len(entry["faces"])
            count = len(entry["faces"])
            tqdm.write(f"{printable(item.display)}: {count} face{'' if count == 1 else 's'}", file=lines)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if writer is not None:
            try:
                writer.close()
            except BrokenPipeError:
                pass
            except OSError as err:
                report(f"--json: cannot write {args.json} ({err.strerror or err})")
    print(f"{n_images} image{'' if n_images == 1 else 's'}, {n_faces} face{'' if n_faces == 1 else 's'}, "
          f"{n_errors} error{'' if n_errors == 1 else 's'}" + (f"; interrupted after {n_images} of {len(items)} "
          "images (the results so far are kept)" if interrupted else ""), file=lines)
    if interrupted:
        return 130
    return 1 if n_errors else 0


def _annotate(out_dir, item, image, faces, entry, used, inputs, overwrite, report) -> None:
    """Write the annotated copy of ``item`` under ``out_dir``; record its path as ``entry["annotated"]``."""
    name = output_name(item.relative, used)
    target = os.path.join(out_dir, name)
    if os.path.realpath(target) in inputs:
        report(f"{item.display}: not annotated: {target} is an input image")
        return
    if not overwrite and os.path.lexists(target):
        report(f"{item.display}: not annotated: {target} exists (pass --overwrite to replace it)")
        return
    try:
        write_annotated(out_dir, name, image, faces)
    except (OSError, cv2.error) as err:
        report(f"{item.display}: cannot write the annotated image ({getattr(err, 'strerror', None) or err})")
        return
    entry["annotated"] = target
