"""``mtcnn-jax export``: write the detector's networks to a folder, to deploy without the model code.

    mtcnn-jax export --format stablehlo|onnx --out DIR [--weights FILE_OR_DIR] [--overwrite]

``--format stablehlo``: each network serialized by ``jax.export`` (for CPU, CUDA, ROCm and
TPU) with its params in ``params.npz``; running them needs JAX only (no Flax), and gives
the detections of ``mtcnn-jax detect`` bit for bit. ``--format onnx`` (needs
``pip install 'mtcnn-jax[onnx]'``): three ONNX models (opset 17, uint8 NHWC input, dynamic
batch; P-Net also dynamic height and width), checked with the ONNX checker; running them
needs ONNX Runtime, NumPy and OpenCV, not JAX. Both folders hold ``manifest.json``
(format version, shapes, the weights' SHA-256, the package version), written last.

Run the folder with ``mtcnn-jax detect PATH... --model DIR``, or in Python with
``mtcnn_jax.deploy.load_model(DIR).detect(image)``. ``--weights`` takes what
``detect --weights`` takes (default: the authors' weights). Files in ``--out`` are not
replaced, and ``--out`` may not lie inside the ``--weights`` folder, unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os

from mtcnn_jax.commands.options import add_overwrite_option, prepare_out
from mtcnn_jax.errors import UserError

FORMATS = ("stablehlo", "onnx")


def register(subparsers) -> None:
    """Add the ``export`` sub-command to ``subparsers`` (its ``func`` is :func:`run`)."""
    p = subparsers.add_parser(
        "export",
        help="export the networks as StableHLO or ONNX, to run without the model code",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="stablehlo (jax.export programs, run by JAX) or onnx (run by ONNX Runtime)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the model into (created if needed)")
    p.add_argument("--weights", metavar="FILE_OR_DIR",
                   help="msgpack params file, or a folder holding params.msgpack (default: the authors' weights)")
    add_overwrite_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``export``: 0 when the folder is written. Bad options and unusable weights raise UserError."""
    from mtcnn_jax import export  # noqa: PLC0415  (JAX loads only when a command needs it)

    if args.weights is not None and not os.path.exists(args.weights):
        raise UserError(f"--weights: {args.weights}: no such file or folder")
    prepare_out(args.out, [args.weights], args.overwrite, export.output_files(args.format))
    try:
        manifest = export.export(args.out, args.format, args.weights, overwrite=args.overwrite)
    except OSError as err:
        raise UserError(f"--out: cannot write into {args.out} ({err.strerror or err})") from None
    names = [entry["file"] for entry in manifest["networks"].values()]
    print(f"{args.out}: {args.format} model, {', '.join(names)} and manifest.json "
          f"(weights {manifest['weights']['source']}, sha256 {manifest['weights']['sha256'][:12]}...)")
    print(f"run it with: mtcnn-jax detect PATH... --model {args.out}")
    return 0
