"""Options shared by the commands: the detector's settings, input files and the output folder.

``detect`` and ``evaluate`` take the same detector options (``--min-face``,
``--factor``, ``--thresholds``, ``--weights``, ``--max-megapixels``, ``--pyramid``):
:func:`add_detector_options` adds them, :func:`parse_settings` validates them into
:class:`Settings` and :func:`make_detector` builds the detector. ``evaluate`` and
``report`` read input files and write into an output folder: :func:`read_input`,
:func:`prepare_out` and the ``write_output*`` functions turn OS errors into one-line
:class:`~mtcnn_jax.errors.UserError` s that name the option.

``--min-face`` must be at least :data:`MIN_FACE_FLOOR` (6) pixels: below 12 px the
pyramid upsamples the image by 12 / min-face, and 6 caps that at 2x (4x the pixels).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from typing import Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from mtcnn_jax import files, images
from mtcnn_jax.errors import UserError
from mtcnn_jax.pyramid import PYRAMID_MODES

#: Smallest --min-face accepted, in pixels (see the module docstring).
MIN_FACE_FLOOR = 6.0
DEFAULTS = {"min_face": 20.0, "factor": 0.709, "thresholds": (0.6, 0.7, 0.7)}

#: The detector options, in the order ``detect --help`` lists them.
DETECTOR_OPTIONS = ("--min-face", "--factor", "--thresholds", "--weights", "--max-megapixels", "--pyramid")

_SPECS = {
    "--min-face": dict(metavar="N", default=str(DEFAULTS["min_face"]),
                       help="smallest face to look for, in pixels, >= 6 (default 20)"),
    "--factor": dict(metavar="F", default=str(DEFAULTS["factor"]),
                     help="image pyramid scale step, in (0, 1) (default 0.709)"),
    "--thresholds": dict(metavar="A,B,C", default=",".join(map(str, DEFAULTS["thresholds"])),
                         help="P-Net, R-Net, O-Net score thresholds in [0, 1] (default 0.6,0.7,0.7)"),
    "--weights": dict(metavar="FILE_OR_DIR",
                      help="msgpack params file, or a folder holding params.msgpack "
                           "(default: the authors' weights shipped with the package)"),
    "--max-megapixels": dict(metavar="M", default=str(images.DEFAULT_MAX_PIXELS / 1e6),
                             help="refuse images larger than M megapixels, before decoding (default 100)"),
    "--pyramid": dict(metavar="MODE", default="summed",
                      help="how pyramid levels are made: 'summed' (default: the authors' levels, averaged from "
                           "running sums of the image's rows), 'original' (each resized from the image, as the "
                           "authors do) or 'chained' (each from the level about twice its size)"),
}


class Settings(NamedTuple):
    """Validated detector options."""

    min_face: float
    factor: float
    thresholds: Tuple[float, float, float]
    weights: Optional[str]
    max_pixels: int
    pyramid: str


def add_detector_options(
    parser: argparse.ArgumentParser,
    order: Sequence[str] = DETECTOR_OPTIONS,
    helps: Optional[Mapping[str, str]] = None,
) -> None:
    """Add the detector options named in ``order`` to ``parser``, in that order.

    ``helps`` replaces the help text of some of them (each command keeps its own
    wording); names, metavars and defaults are the same everywhere.
    """
    for name in order:
        spec = dict(_SPECS[name])
        if helps and name in helps:
            spec["help"] = helps[name]
        parser.add_argument(name, **spec)


def parse_number(option: str, text: str) -> float:
    """``text`` as a finite float; UserError naming ``option`` otherwise."""
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
    """Validate the detector options; raises UserError (one line) on the first bad one."""
    min_face = parse_number("--min-face", args.min_face)
    if min_face < MIN_FACE_FLOOR:
        raise UserError(f"--min-face: must be at least {MIN_FACE_FLOOR:g} pixels, got {args.min_face}")
    factor = parse_number("--factor", args.factor)
    if not 0.0 < factor < 1.0:
        raise UserError(f"--factor: must be in (0, 1), got {args.factor}")
    thresholds = parse_thresholds(args.thresholds)
    megapixels = parse_number("--max-megapixels", args.max_megapixels)
    if megapixels <= 0:
        raise UserError(f"--max-megapixels: must be positive, got {args.max_megapixels}")
    weights = args.weights
    if weights is not None and not os.path.exists(weights):
        raise UserError(f"--weights: {weights}: no such file or folder")
    pyramid = args.pyramid
    if pyramid not in PYRAMID_MODES:
        names = list(map(repr, PYRAMID_MODES))
        raise UserError(f"--pyramid: expected {', '.join(names[:-1])} or {names[-1]}, got {pyramid!r}")
    return Settings(min_face, factor, thresholds, weights, int(megapixels * 1e6), pyramid)


def make_detector(settings: Settings, model: Optional[str] = None):
    """The detector for ``settings`` (imported here: JAX loads only when needed).

    ``model``: a folder written by ``mtcnn-jax export`` (either format), whose
    networks and weights are used instead of the package's
    (:func:`mtcnn_jax.deploy.load_model`); it excludes ``--weights``.
    """
    if model is not None:
        from mtcnn_jax.deploy import load_model  # noqa: PLC0415

        if settings.weights is not None:
            raise UserError("--model and --weights exclude each other: the exported folder holds its own weights")
        return load_model(model, min_face_size=settings.min_face, factor=settings.factor,
                          thresholds=settings.thresholds, pyramid=settings.pyramid)
    from mtcnn_jax.detector import MTCNN  # noqa: PLC0415

    return MTCNN(
        min_face_size=settings.min_face,
        factor=settings.factor,
        thresholds=settings.thresholds,
        weights=settings.weights,
        pyramid=settings.pyramid,
    )


def detector_info(settings: Settings) -> dict:
    """The ``"detector"`` entry of an evaluation's metrics.json."""
    return {"library": "mtcnn_jax", "min_face_size": settings.min_face, "factor": settings.factor,
            "thresholds": list(settings.thresholds), "weights": settings.weights or "authors"}


# --------------------------------------------------------------------------- input files, output folder


def read_input(option: str, path: str, reader, *args, **kwargs):
    """``reader(path, ...)`` with a missing file, a folder, OS and encoding errors turned into
    one-line UserErrors naming ``option``."""
    if not os.path.exists(path):
        raise UserError(f"{option}: {path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{option}: {path}: is a folder, expected a file")
    try:
        return reader(path, *args, **kwargs)
    except UnicodeDecodeError:
        raise UserError(f"{option}: {path}: not a UTF-8 text file") from None
    except OSError as err:
        raise UserError(f"{option}: {path}: cannot read ({err.strerror or err})") from None


def prepare_out(out: str, inputs: Sequence[Optional[str]] = (), overwrite: bool = False,
                names: Sequence[str] = ()) -> str:
    """Check and create the ``--out`` folder by the output policy (:class:`mtcnn_jax.files.OutputPolicy`).

    ``inputs``: the command's input files and folders (the folder may not be, lie
    inside or hold one of them); ``names``: the files the command will write there
    (refused when one exists). Both unless ``overwrite``. UserError (one line) otherwise.
    """
    from mtcnn_jax.files import OutputPolicy  # noqa: PLC0415

    policy = OutputPolicy([p for p in inputs if p], overwrite)
    policy.check_folder("--out", out)
    policy.refuse_existing("--out", out, names)
    return out


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: let the command replace existing outputs and write inside an input folder."""
    parser.add_argument("--overwrite", action="store_true",
                        help="allow replacing existing output files and writing inside an input folder")


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise UserError(f"--out: cannot write {path} ({err.strerror or err})") from None


def write_output(out: str, name: str, data: Union[bytes, str]) -> str:
    """Write ``data`` to ``out/name`` atomically (``name``: a fixed relative name chosen by the
    command, never a user path); UserError when it cannot be written. Returns the path."""
    path = os.path.join(out, name)
    with _writing(path):
        files.write_atomically(path, data)
    return path


def write_output_json(out: str, name: str, obj) -> str:
    """Write ``obj`` as indented JSON to ``out/name`` (:func:`mtcnn_jax.files.write_json`: NaN → null)."""
    path = os.path.join(out, name)
    with _writing(path):
        files.write_json(path, obj)
    return path
