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
import json
import math
import os
import re
import secrets
import sys
from typing import List, NamedTuple, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from mtcnn_jax import images
from mtcnn_jax.draw import annotate
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.pyramid import PYRAMID_MODES

#: Smallest --min-face accepted, in pixels (see the module docstring).
MIN_FACE_FLOOR = 6.0
DEFAULTS = {"min_face": 20.0, "factor": 0.709, "thresholds": (0.6, 0.7, 0.7)}


class Settings(NamedTuple):
    """Validated options of ``detect``."""

    min_face: float
    factor: float
    thresholds: Tuple[float, float, float]
    weights: Optional[str]
    max_pixels: int
    pyramid: str


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
    p.add_argument("--min-face", metavar="N", default=str(DEFAULTS["min_face"]),
                   help="smallest face to look for, in pixels, >= 6 (default 20)")
    p.add_argument("--factor", metavar="F", default=str(DEFAULTS["factor"]),
                   help="image pyramid scale step, in (0, 1) (default 0.709)")
    p.add_argument("--thresholds", metavar="A,B,C", default="0.6,0.7,0.7",
                   help="P-Net, R-Net, O-Net score thresholds in [0, 1] (default 0.6,0.7,0.7)")
    p.add_argument("--weights", metavar="FILE_OR_DIR",
                   help="msgpack params file, or a folder holding params.msgpack "
                        "(default: the authors' weights shipped with the package)")
    p.add_argument("--max-megapixels", metavar="M", default=str(images.DEFAULT_MAX_PIXELS / 1e6),
                   help="refuse images larger than M megapixels, before decoding (default 100)")
    add_pyramid_option(p)
    p.set_defaults(func=run)


def add_pyramid_option(p) -> None:
    """``--pyramid chained|original`` (see :class:`mtcnn_jax.MTCNN`), shared with ``evaluate``."""
    p.add_argument("--pyramid", metavar="MODE", default="chained",
                   help="how pyramid levels are made: 'chained' (default: each from the level about twice "
                        "its size) or 'original' (each from the image, as the authors do)")


# --------------------------------------------------------------------------- options


def _number(option: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{option}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{option}: expected a finite number, got {text!r}")
    return value


def parse_thresholds(text: str) -> Tuple[float, float, float]:
    """``"a,b,c"`` -> three floats in [0, 1]; raises UserError otherwise."""
    parts = str(text).split(",")
    bad = UserError(
        f"--thresholds: expected three numbers in [0, 1] separated by commas "
        f"(like 0.6,0.7,0.7), got {text!r}"
    )
    if len(parts) != 3:
        raise bad
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise bad from None
    if not all(0.0 <= v <= 1.0 for v in values):  # also refuses nan
        raise bad
    return values  # type: ignore[return-value]


def parse_settings(args: argparse.Namespace) -> Settings:
    """Validate the options of ``detect``; raises UserError (one line) on the first bad one."""
    min_face = _number("--min-face", args.min_face)
    if min_face < MIN_FACE_FLOOR:
        raise UserError(f"--min-face: must be at least {MIN_FACE_FLOOR:g} pixels, got {args.min_face}")
    factor = _number("--factor", args.factor)
    if not 0.0 < factor < 1.0:
        raise UserError(f"--factor: must be in (0, 1), got {args.factor}")
    thresholds = parse_thresholds(args.thresholds)
    megapixels = _number("--max-megapixels", args.max_megapixels)
    if megapixels <= 0:
        raise UserError(f"--max-megapixels: must be positive, got {args.max_megapixels}")
    weights = args.weights
    if weights is not None and not os.path.exists(weights):
        raise UserError(f"--weights: {weights}: no such file or folder")
    pyramid = args.pyramid
    if pyramid not in PYRAMID_MODES:
        raise UserError(f"--pyramid: expected {' or '.join(map(repr, PYRAMID_MODES))}, got {pyramid!r}")
    return Settings(min_face, factor, thresholds, weights, int(megapixels * 1e6), pyramid)


def make_detector(settings: Settings):
    """The detector for ``settings`` (imported here: JAX loads only when needed)."""
    from mtcnn_jax.detector import MTCNN

    return MTCNN(
        min_face_size=settings.min_face,
        factor=settings.factor,
        thresholds=settings.thresholds,
        weights=settings.weights,
        pyramid=settings.pyramid,
    )


# --------------------------------------------------------------------------- outputs


def faces_to_json(display: str, image: np.ndarray, faces) -> dict:
    """One JSON entry: ``{"path", "width", "height", "faces": [{"box", "score", "landmarks"}]}``."""
    boxes = np.asarray(faces[0], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(faces[1], dtype=np.float64).reshape(-1)
    landmarks = np.asarray(faces[2], dtype=np.float64).reshape(-1, 5, 2)
    return {
        "path": display,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "faces": [
            {
                "box": [round(float(v), 2) for v in box],
                "score": round(float(score), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in points],
            }
            for box, score, points in zip(boxes, scores, landmarks)
        ],
    }


def format_json(results: List[dict]) -> str:
    """The JSON text of ``results``: one line per image header and one per face."""
    if not results:
        return "[]\n"
    blocks = []
    for entry in results:
        head = json.dumps({k: v for k, v in entry.items() if k != "faces"})[:-1]
        faces = ",\n".join("    " + json.dumps(face) for face in entry["faces"])
        blocks.append(f'  {head}, "faces": [' + (f"\n{faces}\n  ]}}" if faces else "]}"))
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace.

    A symbolic link at ``path`` is replaced, not followed. Raises OSError.
    """
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never through an existing file or link
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_SEPARATORS = re.compile(r"[\\/]+")


def output_name(relative: str, used: Set[str]) -> str:
    """A safe relative output path for ``relative``, unique among ``used`` (updated).

    Splits on / and \\, drops empty, ``.`` and ``..`` parts (so the result never
    leaves the output folder), keeps an image extension (else adds ``.png``), and
    adds ``-1``, ``-2``, ... before the extension when the name (compared
    case-insensitively) is taken. Returns the path joined with ``os.sep``.
    """
    drive_free = _SEPARATORS.sub("/", relative)
    parts = [p for p in drive_free.split("/") if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]  # a Windows drive
    if not parts:
        parts = ["image"]
    stem, ext = os.path.splitext(parts[-1])
    if not images.is_image_name(parts[-1]):
        stem, ext = parts[-1], ".png"
    k = 0
    while True:
        name = stem + (f"-{k}" if k else "") + ext
        candidate = os.path.join(*parts[:-1], name)
        if candidate.lower() not in used:
            used.add(candidate.lower())
            return candidate
        k += 1


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` safe to print as one line: control characters and undecodable bytes escaped."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def write_annotated(out_dir: str, name: str, image: np.ndarray, faces) -> str:
    """Draw ``faces`` on ``image`` (RGB) and write it to ``out_dir/name``; returns the path.

    Raises OSError if the file cannot be written or would land outside ``out_dir``
    (e.g. through a symbolic link inside it).
    """
    path = os.path.join(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not _inside(os.path.dirname(path), out_dir):
        raise OSError(f"{path} would be outside {out_dir} (symbolic link?)")
    drawn = annotate(image, faces[0], faces[1], faces[2])
    ok, encoded = cv2.imencode(os.path.splitext(name)[1].lower(), drawn[:, :, ::-1])
    if not ok:
        raise OSError(f"cannot encode {name}")
    write_atomically(path, encoded.tobytes())
    return path


# --------------------------------------------------------------------------- command


class _Item(NamedTuple):
    display: str
    path: str
    relative: str  # the name used under --annotate


def _collect(paths: Sequence[str], errors: List[ImageError], skip_under: Optional[str]) -> List[_Item]:
    items = []
    for given in paths:
        is_dir = os.path.isdir(given)
        # The output folder inside this folder: its files are our own earlier output.
        skip = is_dir and skip_under is not None and _inside(skip_under, given)
        for display, path in images.find_images([given], errors):
            if is_dir:
                if skip and _inside(path, skip_under):
                    continue
                relative = os.path.relpath(display, given)
            else:
                relative = os.path.basename(display)
            items.append(_Item(display, path, relative))
    return items


def _check_json_target(target: Optional[str]) -> None:
    if target is None or target == "-":
        return
    if os.path.isdir(target):
        raise UserError(f"--json: {target} is a folder")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise UserError(f"--json: folder {folder} does not exist")


def run(args: argparse.Namespace) -> int:
    """Run ``detect``; returns 0, or 1 if any file could not be used. Bad options raise UserError."""
    settings = parse_settings(args)
    _check_json_target(args.json)
    out_dir = args.annotate
    if out_dir is not None:
        for given in args.paths:
            if os.path.isdir(given) and os.path.realpath(given) == os.path.realpath(out_dir):
                raise UserError(f"--annotate: {out_dir} is an input folder: choose another "
                                "folder for the annotated images")
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as err:
            raise UserError(f"--annotate: cannot create {out_dir} ({err.strerror or err})") from None
    detector = make_detector(settings)

    lines = sys.stderr if args.json == "-" else sys.stdout
    n_errors = 0

    def report(message: str) -> None:
        nonlocal n_errors
        n_errors += 1
        tqdm.write(f"mtcnn-jax: {printable(message)}", file=sys.stderr)

    errors: List[ImageError] = []
    items = _collect(args.paths, errors, out_dir)
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
                write_atomically(args.json, text.encode("utf-8"))
            except OSError as err:
                raise UserError(f"--json: cannot write {args.json} ({err.strerror or err})") from None
    print(f"{len(results)} image{'' if len(results) == 1 else 's'}, {n_faces} face"
          f"{'' if n_faces == 1 else 's'}, {n_errors} error{'' if n_errors == 1 else 's'}", file=lines)
    return 1 if n_errors else 0
