"""Our detector beside the other face detectors, on the same images, in one process.

    python benchmarks/compare_peers.py [--reference] [--markdown] [--limit-wider N]
                                       [--limit-landmarks N] [--detectors ours,facenet,ipazc,haar]
                                       [--json OUT]

Prints one table: WIDER FACE AP per face-size setting (all valid, >= 20 px, >= 40 px;
official protocol and 1,000-threshold sampling, ``mtcnn_jax.evaluation.wider_ap``) on
``widerface_val_subset``; on ``mtfl_aflw_test_landmarks`` the detection rate, the NME
(inter-ocular, best detection per crop) and the failure rate (NME > 0.1); the median
time per image on each set (the detector call only, image decoding excluded; each image
is seen once, and JAX compiles once per new bucketed input shape: the median leaves most
of that compilation out);
the median CPU time per WIDER image (all threads of the process; on a machine shared with
other jobs it is inflated less than the wall time); and the peak resident memory (RSS) of
the process while that detector ran.

Every detector runs through ``mtcnn_jax.evaluation.runner`` (the loop of ``mtcnn-jax
evaluate``) with the paper's settings (min face 20, factor 0.709, thresholds 0.6 / 0.7 /
0.7; ipazc's own default for O-Net is 0.8 and is kept, as in the reference files), on
images read once with ``mtcnn_jax.load_image`` (RGB uint8).

The peers are not dependencies of mtcnn_jax; each is used when it imports and skipped,
with the command that installs it, when it does not:

* facenet-pytorch: ``pip install torch torchvision pillow`` then
  ``pip install --no-deps facenet-pytorch==2.6.0`` (its pinned torch is old, hence
  ``--no-deps``; it needs torchvision at run time).
* ipazc/mtcnn: ``pip install mtcnn==1.0.0 tensorflow`` (the ``mtcnn`` package alone
  brings the weights, not TensorFlow).
* OpenCV Haar cascade: ``pip install "opencv-python-headless<5"`` (the 4.x wheels ship
  ``cv2.data.haarcascades``; OpenCV 5 wheels do not).

``--reference`` fills the rows of the peers that are not installed from the detections
stored in ``$MTCNN_JAX_DATA/../reference/*.json`` (the same detectors run by others, see
that folder's README), scored here with the same evaluators on the same images; those
rows say "reference" in the source column, and their times are the ones that README
states (same 2-core CPU class, not measured here) and have no memory figure.

Peak memory: Linux's VmHWM, reset (``/proc/self/clear_refs``) before each detector. It is
the whole process, so it includes the Python interpreter, NumPy and what earlier
detectors left loaded; on other systems ``ru_maxrss`` is reported (never reset).

Data: ``$MTCNN_JAX_DATA`` (default ``../shared/data`` next to the repository).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtcnn_jax.data.wider import read_wider_gt  # noqa: E402
from mtcnn_jax.evaluation.nme import read_mtfl  # noqa: E402
from mtcnn_jax.evaluation.predictions import read_predictions  # noqa: E402
from mtcnn_jax.evaluation.runner import detect_images, landmark_metrics, wider_metrics  # noqa: E402
from mtcnn_jax.files import write_json  # noqa: E402

WIDER_GT = "widerface_val_subset/wider_face_val_bbx_gt_subset.txt"
AFLW_LIST = "mtfl_aflw_test_landmarks/testing.txt"
SIZES = (1, 20, 40)

#: Reference files per peer (in $MTCNN_JAX_DATA/../reference) and the median time per
#: WIDER image that reference/README.md states for them (2-core CPU), in ms.
REFERENCE = {
    "facenet": ("widerface_val_subset.facenet.json", "mtfl_aflw_test.facenet.json", 228.0),
    "ipazc": ("widerface_val_subset.ipazc.json", "mtfl_aflw_test.ipazc.json", 352.0),
    "haar": ("widerface_val_subset.haar.json", None, 273.0),
    "facenet_widermode": ("widerface_val_subset.facenet_widermode.json", None, 950.0),
}
NAMES = {
    "ours": "mtcnn_jax (authors' weights)",
    "facenet": "facenet-pytorch",
    "ipazc": "ipazc mtcnn",
    "haar": "OpenCV Haar",
    "facenet_widermode": "facenet-pytorch, WIDER settings",
}
INSTALL = {
    "facenet": "pip install torch torchvision pillow && pip install --no-deps facenet-pytorch==2.6.0",
    "ipazc": "pip install mtcnn==1.0.0 tensorflow",
    "haar": 'pip install "opencv-python-headless<5" (OpenCV 5 wheels lack the cascades)',
}


# --------------------------------------------------------------------------- detectors


class Adapter(NamedTuple):
    """A detector behind one call: ``detect(uint8[H, W, 3] RGB) -> (boxes float[N, 4]
    x1, y1, x2, y2; scores float[N]; landmarks float[N, 5, 2])`` in image pixels,
    landmarks zero where the detector has none (``has_landmarks`` False)."""

    detect: Callable
    has_landmarks: bool
    version: str


def _ours() -> Adapter:
    import mtcnn_jax
    from mtcnn_jax import MTCNN

    det = MTCNN(min_face_size=20, factor=0.709, thresholds=(0.6, 0.7, 0.7))
    return Adapter(det.detect, True, mtcnn_jax.__version__)


def _facenet() -> Adapter:
    import facenet_pytorch
    import torch
    from facenet_pytorch import MTCNN as FacenetMTCNN

    det = FacenetMTCNN(keep_all=True, device="cpu", min_face_size=20,
                       thresholds=[0.6, 0.7, 0.7], factor=0.709)

    def detect(image):
        with torch.no_grad():
            boxes, probs, points = det.detect(image, landmarks=True)
        if boxes is None:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return np.asarray(boxes), np.asarray(probs), np.asarray(points)

    version = getattr(facenet_pytorch, "__version__", "?")
    return Adapter(detect, True, f"{version} (torch {torch.__version__})")


def _ipazc() -> Adapter:
    import mtcnn
    from mtcnn import MTCNN as IpazcMTCNN

    det = IpazcMTCNN()
    order = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

    def detect(image):
        faces = det.detect_faces(image, min_face_size=20)
        boxes = np.array([[f["box"][0], f["box"][1], f["box"][0] + f["box"][2], f["box"][1] + f["box"][3]]
                          for f in faces], np.float64).reshape(-1, 4)
        scores = np.array([f["confidence"] for f in faces], np.float64)
        points = np.array([[f["keypoints"][k] for k in order] for f in faces], np.float64).reshape(-1, 5, 2)
        return boxes, scores, points

    return Adapter(detect, True, getattr(mtcnn, "__version__", "?"))


def _haar() -> Adapter:
    import cv2

    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder is None:
        raise ImportError(f"OpenCV {cv2.__version__} has no cv2.data.haarcascades")
    cascade = cv2.CascadeClassifier(os.path.join(folder, "haarcascade_frontalface_default.xml"))
    if cascade.empty():
        raise ImportError("haarcascade_frontalface_default.xml did not load")

    def detect(image):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        rects, _, weights = cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=3, minSize=(20, 20), outputRejectLevels=True)
        rects = np.asarray(rects, np.float64).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return boxes, np.asarray(weights, np.float64).reshape(-1), np.zeros((len(rects), 5, 2))

    return Adapter(detect, False, cv2.__version__)


LOADERS = {"ours": _ours, "facenet": _facenet, "ipazc": _ipazc, "haar": _haar}


# --------------------------------------------------------------------------- memory


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (VmHWM, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


# --------------------------------------------------------------------------- rows


class Row(NamedTuple):
    key: str
    source: str  # "run" or "reference"
    version: str
    wider: Optional[dict]  # setting -> AP
    landmarks: Optional[dict]
    ms_wider: Optional[float]
    ms_aflw: Optional[float]
    cpu_ms_wider: Optional[float]
    peak_mb: Optional[float]


def spread(n_total: int, limit: Optional[int]) -> np.ndarray:
    """Indices of ``limit`` items spread evenly over ``n_total`` (all when no limit)."""
    if not limit or limit >= n_total:
        return np.arange(n_total)
    return np.unique(np.round(np.linspace(0, n_total - 1, limit)).astype(int))


def run_detector(key: str, adapter: Adapter, data: Path, wider_records, aflw) -> Row:
    """Run one detector on both sets and score it."""
    reset_peak_rss()
    wider_run = detect_images(_AsFaces(adapter), str(data / "widerface_val_subset" / "images"),
                              [r.path for r in wider_records])
    settings, _ = wider_metrics(wider_run.predictions, wider_records, SIZES)
    lm, ms_aflw = None, None
    if adapter.has_landmarks:
        aflw_run = detect_images(_AsFaces(adapter), str(data / "mtfl_aflw_test_landmarks"), aflw.paths)
        lm, _ = landmark_metrics(aflw_run.predictions, aflw)
        ms_aflw = float(np.median(aflw_run.seconds) * 1e3) if len(aflw_run.seconds) else None
    peak = peak_rss_mb()
    ms_wider = float(np.median(wider_run.seconds) * 1e3) if len(wider_run.seconds) else None
    cpu_wider = float(np.median(wider_run.cpu_seconds) * 1e3) if len(wider_run.seconds) else None
    return Row(key, "run", adapter.version, {k: v["ap"] for k, v in settings.items()}, lm,
               ms_wider, ms_aflw, cpu_wider, peak)


class _AsFaces:
    """An :class:`Adapter` seen as an object with ``detect`` (what ``detect_images`` calls)."""

    def __init__(self, adapter: Adapter):
        self.detect = adapter.detect


def reference_row(key: str, reference: Path, wider_records, aflw) -> Optional[Row]:
    """Score a peer's stored detections (``--reference``) on the same images."""
    wider_file, aflw_file, ms = REFERENCE[key]
    if not (reference / wider_file).exists():
        return None
    preds = read_predictions(reference / wider_file)
    settings, _ = wider_metrics(preds, wider_records, SIZES)
    lm = None
    if aflw_file is not None and (reference / aflw_file).exists():
        lm, _ = landmark_metrics(read_predictions(reference / aflw_file), aflw)
    with open(reference / wider_file, encoding="utf-8") as f:
        info = json.load(f).get("detector", {})
    return Row(key, "reference", str(info.get("version", "?")),
               {k: v["ap"] for k, v in settings.items()}, lm, ms, None, None, None)


# --------------------------------------------------------------------------- table

COLUMNS = ("detector", "source", "AP all", "AP >= 20 px", "AP >= 40 px", "AFLW detected",
           "NME", "failure (NME > 0.1)", "ms/image WIDER", "ms/image AFLW", "CPU ms/image WIDER",
           "peak RSS MiB")


def _f(v, digits=3):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def row_cells(row: Row) -> List[str]:
    w, lm = row.wider or {}, row.landmarks or {}
    source = "run here" if row.source == "run" else "reference JSON"
    return [
        f"{NAMES.get(row.key, row.key)} {row.version}",
        source,
        _f(w.get("all")), _f(w.get(">=20")), _f(w.get(">=40")),
        _f(lm.get("detection_rate")), _f(lm.get("nme_mean"), 4), _f(lm.get("failure_rate")),
        "–" if row.ms_wider is None else f"{row.ms_wider:.0f}" + ("" if row.source == "run" else " (README)"),
        "–" if row.ms_aflw is None else f"{row.ms_aflw:.0f}",
        "–" if row.cpu_ms_wider is None else f"{row.cpu_ms_wider:.0f}",
        "–" if row.peak_mb is None else f"{row.peak_mb:.0f}",
    ]


def format_table(rows: List[Row], markdown: bool) -> str:
    cells = [list(COLUMNS)] + [row_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in COLUMNS) + "|")
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="ours,facenet,ipazc,haar",
                        help="comma-separated, from: " + ", ".join(LOADERS))
    parser.add_argument("--reference", action="store_true",
                        help="rows of peers that are not installed from the stored reference detections")
    parser.add_argument("--limit-wider", type=int, metavar="N",
                        help="only N WIDER images, spread evenly over the 360 (default all)")
    parser.add_argument("--limit-landmarks", type=int, metavar="N",
                        help="only N AFLW crops, spread evenly over the 2,995 (default all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    data = Path(os.environ.get("MTCNN_JAX_DATA", REPO.parent / "shared" / "data")).resolve()
    reference = data.parent / "reference"
    if not (data / WIDER_GT).exists():
        print(f"compare_peers: {data / WIDER_GT} not found: set MTCNN_JAX_DATA", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.detectors.split(",") if k.strip()]
    unknown = [k for k in keys if k not in LOADERS]
    if unknown:
        parser.error(f"unknown detectors {unknown}; choose from {list(LOADERS)}")

    wider = read_wider_gt(data / WIDER_GT)
    wider = [wider[i] for i in spread(len(wider), args.limit_wider)]
    aflw_all = read_mtfl(data / AFLW_LIST)
    keep = np.zeros(len(aflw_all), bool)
    keep[spread(len(aflw_all), args.limit_landmarks)] = True
    aflw = aflw_all.subset(keep)
    print(f"{len(wider)} WIDER images, {len(aflw)} AFLW crops; data {data}", file=sys.stderr)

    rows: List[Row] = []
    for key in keys:
        try:
            adapter = LOADERS[key]()
        except Exception as err:  # noqa: BLE001 - any import/setup failure means "not installed"
            print(f"skip {key}: not usable here ({type(err).__name__}: {err}); "
                  f"install: {INSTALL.get(key, '-')}", file=sys.stderr)
            if args.reference and key in REFERENCE:
                row = reference_row(key, reference, wider, aflw)
                if row is not None:
                    rows.append(row)
                    print(f"{key}: reference detections from {reference}", file=sys.stderr)
            continue
        start = time.perf_counter()
        rows.append(run_detector(key, adapter, data, wider, aflw))
        print(f"{key}: ran in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.reference and "facenet" in keys:
        row = reference_row("facenet_widermode", reference, wider, aflw)
        if row is not None:
            rows.append(row)

    print(format_table(rows, args.markdown))
    if args.json:
        write_json(args.json, [r._asdict() for r in rows])  # atomically; NaN as null
    return 0


if __name__ == "__main__":
    sys.exit(main())
