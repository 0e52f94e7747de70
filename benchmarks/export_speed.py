"""Speed of the exported detectors beside ``MTCNN()``: StableHLO on JAX, ONNX on ONNX Runtime.

    .venv/bin/python benchmarks/export_speed.py                # all 360 WIDER images (~10 min on 2 shared cores)
    .venv/bin/python benchmarks/export_speed.py --limit 40     # 40 images spread over the subset
    .venv/bin/python benchmarks/export_speed.py --model-dir /tmp/models   # reuse (or keep) the exports

Exports the authors' weights both ways (``mtcnn_jax.export.export``; into a temporary
folder unless ``--model-dir``), loads them with ``mtcnn_jax.deploy.load_model`` and runs
the three detectors with the default settings in this one process, **interleaved**: each
image goes through ``MTCNN()``, the StableHLO cascade and the ONNX Runtime cascade one after
the other, so that load from other processes on a shared machine falls on all three alike
(the load average is printed). Reported, median wall ms per image (decoding excluded):

* **portraits** 640×480 and 1920×1080: the bundled photo resized to 90% of the height on a
  grey canvas, as ``benchmarks/speed.py`` makes them; 15 calls each after 2 warm-up calls;
* **WIDER**: the images of ``$MTCNN_JAX_DATA/widerface_val_subset`` (default
  ``../shared/data``), decoded once, one call each after a warm-up pass over 3.

Beside the times, what each exported cascade found against ``MTCNN()`` on the same images:
faces in all, images whose face count differs, and the largest difference of a box
coordinate and of a landmark (pixels) over the faces matched one to one (nearest box).
ONNX Runtime runs with one intra-op thread per usable CPU, threads not spinning
(``mtcnn_jax.onnx_runtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtcnn_jax import MTCNN, deploy, export, load_image  # noqa: E402
from mtcnn_jax.data.wider import read_wider_gt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import portrait  # noqa: E402  (the same portraits as speed.py)

PORTRAITS = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
NAMES = ("jax", "stablehlo", "onnx")
TITLES = {"jax": "MTCNN() (JAX)", "stablehlo": "StableHLO export (JAX, no Flax)",
          "onnx": "ONNX export (ONNX Runtime, no JAX)"}


def data_dir() -> Path:
    return Path(os.environ.get("MTCNN_JAX_DATA", REPO.parent / "shared" / "data")).resolve()


def load_avg() -> float:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return float("nan")


def run_all(detectors: dict, images: list, warmup: int, repeat: int):
    """Each image through every detector in turn, ``repeat`` times, after ``warmup`` images
    → ({name: [seconds of each call]}, {name: [the last Faces of each image]})."""
    for image in images[:warmup]:
        for det in detectors.values():
            det.detect(image)
    times = {n: [] for n in detectors}
    found = {n: [] for n in detectors}
    for image in images:
        for _ in range(repeat):
            last = {}
            for name, det in detectors.items():
                t = time.perf_counter()
                last[name] = det.detect(image)
                times[name].append(time.perf_counter() - t)
        for name in detectors:
            found[name].append(last[name])
    return times, found


def compare(ours: list, theirs: list) -> dict:
    """Faces of an exported cascade against MTCNN()'s on the same images (see the module docstring)."""
    faces = differ = 0
    box = landmark = 0.0
    for a, b in zip(ours, theirs):
        faces += len(b.boxes)
        if len(a.boxes) != len(b.boxes):
            differ += 1
            continue
        if not len(a.boxes):
            continue
        nearest = np.abs(a.boxes[:, None] - b.boxes[None]).max(axis=2).argmin(axis=1)
        if sorted(nearest.tolist()) != list(range(len(b.boxes))):
            differ += 1
            continue
        box = max(box, float(np.abs(b.boxes[nearest] - a.boxes).max()))
        landmark = max(landmark, float(np.abs(b.landmarks[nearest] - a.landmarks).max()))
    return {"faces": faces, "images_differing": differ, "max_box_px": box, "max_landmark_px": landmark}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="N WIDER images spread over the subset (default all)")
    ap.add_argument("--model-dir", help="export into (or reuse the exports in) DIR/stablehlo and DIR/onnx")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()

    import jax
    import onnxruntime

    root = Path(args.model_dir) if args.model_dir else Path(tempfile.mkdtemp(prefix="mtcnn_export_"))
    for fmt in ("stablehlo", "onnx"):
        if not (root / fmt / deploy.MANIFEST).is_file():
            t = time.perf_counter()
            export.export(root / fmt, fmt)
            print(f"exported {fmt} to {root / fmt} in {time.perf_counter() - t:.1f} s", flush=True)
    detectors = {"jax": MTCNN(), "stablehlo": deploy.load_model(root / "stablehlo"),
                 "onnx": deploy.load_model(root / "onnx")}

    wider = data_dir() / "widerface_val_subset"
    records = read_wider_gt(wider / "wider_face_val_bbx_gt_subset.txt")
    if args.limit:
        records = [records[int(i)] for i in np.linspace(0, len(records) - 1, args.limit).round()]
    images = [load_image(wider / "images" / r.path) for r in records]

    rows, parity = {}, {}
    for label, (h, w) in PORTRAITS.items():
        times, found = run_all(detectors, [portrait(h, w)], warmup=0, repeat=17)
        rows[f"portrait {label}"] = {n: 1000 * float(np.median(t[2:])) for n, t in times.items()}
        print(f"portrait {label}: " + ", ".join(f"{n} {v:.0f} ms" for n, v in rows[f"portrait {label}"].items())
              + f" (load {load_avg()})", flush=True)
    times, found = run_all(detectors, images, warmup=3, repeat=1)
    key = f"WIDER subset, {len(images)} images"
    rows[key] = {n: 1000 * float(np.median(t)) for n, t in times.items()}
    print(f"{key}: " + ", ".join(f"{n} {v:.0f} ms" for n, v in rows[key].items()) + f" (load {load_avg()})")
    for name in ("stablehlo", "onnx"):
        parity[name] = compare(found["jax"], found[name])
    parity["jax"] = {"faces": sum(len(f.boxes) for f in found["jax"])}

    print()
    print(f"median ms per image; JAX {jax.__version__} on {jax.default_backend()}, ONNX Runtime "
          f"{onnxruntime.__version__}, {os.cpu_count()} CPUs, load average {load_avg()} at the end")
    print()
    print("| | " + " | ".join(TITLES[n] for n in NAMES) + " |")
    print("|---|" + "---:|" * len(NAMES))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[n]:.0f}" for n in NAMES) + " |")
    print(f"| faces found on the WIDER images | {parity['jax']['faces']} | "
          + " | ".join(f"{parity[n]['faces']}" for n in ("stablehlo", "onnx")) + " |")
    print("| images whose faces differ from MTCNN()'s | – | "
          + " | ".join(f"{parity[n]['images_differing']}" for n in ("stablehlo", "onnx")) + " |")
    print("| largest box / landmark difference, px | – | "
          + " | ".join(f"{parity[n]['max_box_px']:.1e} / {parity[n]['max_landmark_px']:.1e}"
                       for n in ("stablehlo", "onnx")) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"ms_per_image": rows, "parity": parity}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
