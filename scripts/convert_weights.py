"""Convert the authors' MTCNN weights from the PyPI package ``mtcnn`` 1.0.0 into our params.

    pip install -e ".[dev]"            # brings mtcnn==1.0.0, joblib, lz4 (no TensorFlow)
    python scripts/convert_weights.py  # writes mtcnn_jax/weights/mtcnn_authors.msgpack

The package stores each network as a joblib (pickle) list of Keras arrays in
layer order. Pickle can run code, so they are read here only, from the installed
package, and never at detection time. Layout facts used:

* Keras conv kernels are already (kh, kw, in, out) = Flax's HWIO;
* PReLU slopes are stored as (1, 1, C);
* the dense layer after the convolutions expects features flattened in
  (W, H, C) order, which :mod:`mtcnn_jax.models` reproduces;
* the heads are stored box first, then (O-Net) landmarks, then classification.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn_jax import pretrained  # noqa: E402

# Our parameter names, in the order the package stores its arrays.
LAYOUT = {
    "pnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "box", "face"],
    "rnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "dense4", "prelu4", "box", "face"],
    "onet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
             "dense5", "prelu5", "box", "landmarks", "face"],
}


def package_weights_dir() -> Path:
    """Folder of the installed ``mtcnn`` package's weights, found without importing it."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("convert_weights: the 'mtcnn' package is not installed (pip install mtcnn==1.0.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"


def convert(weights_dir: Path) -> dict:
    """Read ``{pnet,rnet,onet}.lz4`` from ``weights_dir`` and return our params for all three."""
    import joblib

    out = {}
    for stage, names in LAYOUT.items():
        arrays = [np.asarray(a, np.float32) for a in joblib.load(weights_dir / f"{stage}.lz4")]
        params, i = {}, 0
        for name in names:
            if name.startswith("prelu"):
                params[name] = {"alpha": arrays[i].reshape(-1)}
                i += 1
            else:
                params[name] = {"kernel": arrays[i], "bias": arrays[i + 1]}
                i += 2
        if i != len(arrays):
            raise SystemExit(f"convert_weights: {stage}: {len(arrays)} arrays, layout uses {i}")
        out[stage] = params
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=pretrained.WEIGHTS_FILE)
    args = parser.parse_args(argv)
    params = convert(package_weights_dir())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pretrained.save_params(args.out, params)
    pretrained.load_params(args.out)  # checks every shape against the networks
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
