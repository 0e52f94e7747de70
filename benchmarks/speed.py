"""Speed of mtcnn_jax beside facenet-pytorch and ipazc/mtcnn, on the same images in one run.

    .venv/bin/python benchmarks/speed.py                      # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/speed.py --quick              # 60 WIDER images, 200-image stream
    .venv/bin/python benchmarks/speed.py --facenet-python /tmp/fvenv/bin/python --facenet-threads 1

What it measures (medians; the load average is printed beside each block, since
timings on a shared machine are only comparable within one run):

* **Portraits** 640×480, 1280×720, 1920×1080: the bundled public-domain photo
  ``mtcnn_jax/assets/astronaut.jpg`` (512×512, one face) resized with OpenCV
  INTER_AREA/INTER_LINEAR to 90% of the canvas height, centred on a mid-grey
  (128) canvas. Median of 15 calls after 2 warm-up calls.
* **WIDER**: every image of ``$MTCNN_JAX_DATA/widerface_val_subset/images``
  (default ``../shared/data``; ``--wider-limit N`` for the first N in sorted
  order), decoded once, one ``detect`` call each after a warm-up pass over 3;
  median ms per image.
* **Folder throughput**: images/s over the WIDER folder including decoding,
  one by one and as lists of 8 (``detect(list)``).
* **First call in a fresh process**: wall time from starting ``python`` to the
  first 640×480 portrait's detections, with an empty persistent compilation
  cache (cold) and again with the cache it left (warm).
* **Compilation and memory**: a fresh process detects ``--stream`` images
  (default 1,000) of 100 random sizes (48..720 px a side: noise with the face
  pasted in); reports the programs compiled and RSS after the first 100 and at
  the end, and this process's peak RSS.

Peers run in their own interpreters (``--facenet-python``, ``--ipazc-python``;
default: this interpreter if it can import them) on the same pixels (the
portraits are written to a temporary folder as PNG). facenet-pytorch's
``MTCNN.detect`` imports torchvision only for ``batched_nms``; where torchvision
is missing a NumPy stand-in with the same semantics is put on its path, and the
table says so. A peer that cannot be imported is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"
PORTRAITS = {"640x480": (480, 640), "1280x720": (720, 1280), "1920x1080": (1080, 1920)}


def data_dir() -> Path:
    return Path(os.environ.get("MTCNN_JAX_DATA", REPO.parent / "shared" / "data")).resolve()


def load_rgb(path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def portrait(height: int, width: int) -> np.ndarray:
    """The astronaut photo resized to 90% of ``height``, centred on a grey canvas (uint8 RGB)."""
    photo = load_rgb(ASTRONAUT)
    side = int(round(0.9 * height))
    interp = cv2.INTER_AREA if side <= photo.shape[0] else cv2.INTER_LINEAR
    photo = cv2.resize(photo, (side, side), interpolation=interp)
    canvas = np.full((height, width, 3), 128, np.uint8)
    y, x = (height - side) // 2, (width - side) // 2
    canvas[y : y + side, x : x + side] = photo
    return canvas


def load_avg() -> str:
    try:
        return "load %.1f" % os.getloadavg()[0]
    except OSError:
        return "load ?"


def timed(fn, image):
    """(wall, process CPU) seconds of ``fn(image)``; CPU time is less inflated by other load than wall time."""
    t, c = time.perf_counter(), time.process_time()
    fn(image)
    return time.perf_counter() - t, time.process_time() - c


def median_ms(fn, image, repeats=15, warm=2):
    """Median wall and median CPU milliseconds of ``fn(image)``."""
    for _ in range(warm):
        fn(image)
    ts = np.array([timed(fn, image) for _ in range(repeats)])
    return 1000 * float(np.median(ts[:, 0])), 1000 * float(np.median(ts[:, 1]))


# --------------------------------------------------------------------------- peers

PEER_CODE = r'''
import json, sys, time, glob, os
import numpy as np, cv2
args = json.loads(sys.argv[1])
def rgb(p):
    return cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
if args["peer"] == "facenet":
    import torch
    from facenet_pytorch import MTCNN
    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    det = MTCNN(keep_all=True, device="cpu")  # defaults: min face 20, factor 0.709, 0.6/0.7/0.7
    run = lambda im: det.detect(im)
    version = "facenet-pytorch (torch %s, %d threads)" % (torch.__version__, torch.get_num_threads())
else:
    from mtcnn import MTCNN
    det = MTCNN()
    run = lambda im: det.detect_faces(im)
    version = "ipazc mtcnn"
out = {"version": version, "portraits": {}, "wider": None}
def timed(im):
    t, c = time.perf_counter(), time.process_time(); run(im)
    return time.perf_counter() - t, time.process_time() - c
def med(ts):
    ts = np.array(ts); return [1000 * float(np.median(ts[:, 0])), 1000 * float(np.median(ts[:, 1]))]
for name, path in args["portraits"].items():
    im = rgb(path)
    for _ in range(2): run(im)
    out["portraits"][name] = med([timed(im) for _ in range(args["repeats"])])
ims = [rgb(p) for p in args["wider"]]
if ims:
    for im in ims[:3]: run(im)
    out["wider"] = med([timed(im) for im in ims])
print("RESULT " + json.dumps(out))
'''

NMS_STUB = {
    "torchvision/__init__.py": '"""NumPy stand-in for the parts of torchvision facenet-pytorch imports (benchmarks/speed.py)."""\n',
    "torchvision/transforms/__init__.py": "",
    "torchvision/transforms/functional.py": textwrap.dedent(
        """
        import numpy as np, torch
        def to_tensor(a):
            return torch.from_numpy(np.asarray(a)).permute(2, 0, 1).float() / 255.0
        """
    ),
    "torchvision/ops/__init__.py": "",
    "torchvision/ops/boxes.py": textwrap.dedent(
        """
        import numpy as np, torch
        def batched_nms(boxes, scores, idxs, iou_threshold):
            # torchvision semantics: per group, greedy by descending score, IoU > thr suppressed, areas without +1
            b = boxes.detach().cpu().numpy().astype(np.float64)
            s = scores.detach().cpu().numpy()
            g = idxs.detach().cpu().numpy().astype(np.float64)
            if len(b) == 0:
                return torch.zeros(0, dtype=torch.int64)
            b = b + g[:, None] * (b.max() + 1.0)
            x1, y1, x2, y2 = b.T
            area = (x2 - x1) * (y2 - y1)
            order = np.argsort(-s, kind="stable")
            keep = []
            while order.size:
                i = order[0]
                keep.append(i)
                rest = order[1:]
                iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
                ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
                inter = iw * ih
                order = rest[inter / (area[i] + area[rest] - inter) <= iou_threshold]
            return torch.as_tensor(np.array(keep, np.int64))
        """
    ),
}


def run_peer(peer: str, python: str, portrait_paths: dict, wider_paths: list, repeats: int, tmp: Path, threads: int = 0):
    """Run a peer in ``python``; returns (result dict, note) or (None, reason)."""
    module = "facenet_pytorch" if peer == "facenet" else "mtcnn"
    env = dict(os.environ)
    note = ""
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, env=env)
    if probe.returncode != 0 and peer == "facenet" and "torchvision" in probe.stderr:
        stub = tmp / "tvstub"
        for rel, text in NMS_STUB.items():
            (stub / rel).parent.mkdir(parents=True, exist_ok=True)
            (stub / rel).write_text(text)
        env["PYTHONPATH"] = str(stub) + os.pathsep + env.get("PYTHONPATH", "")
        note = "torchvision absent: NumPy batched_nms stand-in"
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"skipped: {python} cannot import {module} ({last})"
    args = json.dumps({"peer": peer, "portraits": portrait_paths, "wider": wider_paths, "repeats": repeats, "threads": threads})
    out = subprocess.run([python, "-c", PEER_CODE, args], capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        return None, f"failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}"
    return json.loads(lines[-1][7:]), note


# --------------------------------------------------------------------------- fresh processes

FIRST_CALL_CODE = r'''
import time, sys
t0 = float(sys.argv[1])
import numpy as np, cv2
from mtcnn_jax import MTCNN
im = np.load(sys.argv[2])
faces = MTCNN().detect(im)
print("RESULT %.3f %d" % (time.time() - t0, len(faces.boxes)))
'''

STREAM_CODE = r'''
import json, os, sys, time, resource
import numpy as np, cv2
from mtcnn_jax import MTCNN, load_image, networks
n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(seed)
sizes = [tuple(int(v) for v in rng.integers(48, 721, 2)) for _ in range(100)]
face = load_image(sys.argv[3])[40:200, 150:300]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
det = MTCNN()
marks = {}
t = time.perf_counter()
for k in range(n):
    h, w = sizes[k % 100]
    im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    side = int(min(h, w) * 0.6)
    im[:side, :side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    det.detect(im)
    if k + 1 in (100, n):
        marks[k + 1] = {"rss_mb": rss(), "programs": networks.compiled_programs()}
print("RESULT " + json.dumps({"marks": marks, "seconds": time.perf_counter() - t,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def first_call(cache_dir: Path, image_path: Path) -> float:
    env = dict(os.environ, MTCNN_JAX_CACHE_DIR=str(cache_dir))
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL_CODE, repr(time.time()), str(image_path)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if not line:
        raise SystemExit(f"first-call run failed: {out.stderr[-2000:]}")
    return float(line[-1].split()[1])


def stream(n: int, cache_dir: Path) -> dict:
    env = dict(os.environ, MTCNN_JAX_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", STREAM_CODE, str(n), "0", str(ASTRONAUT)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if not line:
        raise SystemExit(f"stream run failed: {out.stderr[-2000:]}")
    return json.loads(line[-1][7:])


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wider-limit", type=int, default=0, help="first N WIDER images (0 = all)")
    ap.add_argument("--stream", type=int, default=1000, help="images in the compile/memory stream (0 = skip)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--facenet-python", default=sys.executable)
    ap.add_argument("--ipazc-python", default=sys.executable)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--facenet-threads", default="",
                    help="comma-separated torch thread counts to run facenet-pytorch with besides its default, e.g. 1")
    ap.add_argument("--quick", action="store_true", help="--wider-limit 60 --stream 200 --repeats 7")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.wider_limit, args.stream, args.repeats = args.wider_limit or 60, min(args.stream, 200), 7

    tmp = Path(tempfile.mkdtemp(prefix="mtcnn_speed_"))
    results = {"load_start": load_avg()}
    print(f"mtcnn_jax speed benchmark; {os.cpu_count()} CPUs; {load_avg()}", flush=True)

    # First calls in fresh processes, before anything else warms the OS caches for JAX.
    portrait_paths = {}
    for name, (h, w) in PORTRAITS.items():
        im = portrait(h, w)
        np.save(tmp / f"{name}.npy", im)
        cv2.imwrite(str(tmp / f"{name}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        portrait_paths[name] = str(tmp / f"{name}.png")
    cache = tmp / "jax_cache"
    cold = first_call(cache, tmp / "640x480.npy")
    warm = first_call(cache, tmp / "640x480.npy")
    results["first_call_s"] = {"cold": cold, "warm": warm}
    print(f"first 640x480 detection in a fresh process: cold cache {cold:.2f} s, warm cache {warm:.2f} s ({load_avg()})", flush=True)

    os.environ["MTCNN_JAX_CACHE_DIR"] = str(cache)
    from mtcnn_jax import MTCNN, load_image, networks  # noqa: E402

    det = MTCNN()
    ours = {"portraits": {}, "wider": None}
    for name in PORTRAITS:
        im = np.load(tmp / f"{name}.npy")
        n_faces = len(det.detect(im).boxes)
        ours["portraits"][name] = median_ms(det.detect, im, args.repeats)
        print(f"ours {name}: {ours['portraits'][name][0]:.1f} ms, CPU {ours['portraits'][name][1]:.1f} ms ({n_faces} face) ({load_avg()})", flush=True)

    wider_root = data_dir() / "widerface_val_subset" / "images"
    wider_paths = sorted(str(p) for p in wider_root.glob("*/*.jpg")) if wider_root.is_dir() else []
    if args.wider_limit:
        wider_paths = wider_paths[: args.wider_limit]
    if not wider_paths:
        print(f"WIDER images not found under {wider_root}: set MTCNN_JAX_DATA; skipping the WIDER rows")
    else:
        ims = [load_rgb(p) for p in wider_paths]
        for im in ims[:3]:
            det.detect(im)
        ts = np.array([timed(det.detect, im) for im in ims])
        ours["wider"] = [1000 * float(np.median(ts[:, 0])), 1000 * float(np.median(ts[:, 1]))]
        ours["wider_mean"] = 1000 * float(np.mean(ts[:, 0]))
        print(f"ours WIDER ({len(ims)} images): median {ours['wider'][0]:.1f} ms (CPU {ours['wider'][1]:.1f}), mean {ours['wider_mean']:.1f} ms ({load_avg()})", flush=True)
        del ims
        # folder throughput, decoding included
        t = time.perf_counter()
        for p in wider_paths:
            det.detect(load_image(p))
        one = len(wider_paths) / (time.perf_counter() - t)
        t = time.perf_counter()
        for s in range(0, len(wider_paths), 8):
            det.detect([load_image(p) for p in wider_paths[s : s + 8]])
        batched = len(wider_paths) / (time.perf_counter() - t)
        ours["folder_images_per_s"] = {"one_by_one": one, "lists_of_8": batched}
        print(f"ours folder throughput (decode + detect): {one:.2f} images/s one by one, {batched:.2f} in lists of 8 ({load_avg()})", flush=True)
    results["ours"] = ours
    results["ours_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["ours_programs"] = networks.compiled_programs()

    peers = {}
    if not args.no_peers:
        runs = [("facenet", "facenet", args.facenet_python, 0)]
        runs += [(f"facenet {n}t", "facenet", args.facenet_python, int(n)) for n in args.facenet_threads.split(",") if n.strip()]
        runs += [("ipazc", "ipazc", args.ipazc_python, 0)]
        for label, peer, python, threads in runs:
            t = time.perf_counter()
            res, note = run_peer(peer, python, portrait_paths, wider_paths, args.repeats, tmp, threads)
            peers[label] = {"result": res, "note": note}
            print(f"{label}: {note or 'ok'} ({time.perf_counter() - t:.0f} s, {load_avg()})", flush=True)
    results["peers"] = peers

    if args.stream:
        s = stream(args.stream, cache)
        results["stream"] = s
        marks = s["marks"]
        first, last = marks["100"], marks[str(args.stream)]
        print(
            f"stream of {args.stream} images of 100 sizes: {last['programs']} programs compiled "
            f"({first['programs']} after 100); RSS {first['rss_mb']:.0f} MB after 100, {last['rss_mb']:.0f} MB at the end "
            f"({last['rss_mb'] - first['rss_mb']:+.1f} MB); {args.stream / s['seconds']:.1f} images/s; peak {s['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    results["load_end"] = load_avg()

    # The table.
    rows = [(f"portrait {n} (ms, median)", ours["portraits"][n], {k: (v["result"] or {}).get("portraits", {}).get(n) for k, v in peers.items()}) for n in PORTRAITS]
    if ours["wider"] is not None:
        rows.append((f"WIDER subset, {len(wider_paths)} images (ms/image, median)", ours["wider"], {k: (v["result"] or {}).get("wider") for k, v in peers.items()}))
    names = list(peers)
    print()
    print("Cells: wall ms (CPU ms), medians; ratios: theirs / ours, wall (CPU).")
    print("| | mtcnn_jax | " + " | ".join(f"{n} | {n} / ours" for n in names) + " |")
    print("|---|---:|" + "---:|---:|" * len(names))
    for label, mine, theirs in rows:
        cells = []
        for n in names:
            v = theirs.get(n)
            cells += [f"{v[0]:.0f} ({v[1]:.0f})" if v else "–", f"{v[0] / mine[0]:.2f}× ({v[1] / mine[1]:.2f}×)" if v else "–"]
        print(f"| {label} | {mine[0]:.0f} ({mine[1]:.0f}) | " + " | ".join(cells) + " |")
    for n in names:
        res, note = peers[n]["result"], peers[n]["note"]
        print(f"- {n}: {res['version'] if res else ''} {note}".rstrip())
    print(f"- first 640x480 detection, fresh process: {cold:.2f} s cold cache, {warm:.2f} s warm cache")
    if "folder_images_per_s" in ours:
        f = ours["folder_images_per_s"]
        print(f"- WIDER folder incl. decoding: {f['one_by_one']:.2f} images/s one by one, {f['lists_of_8']:.2f} in lists of 8")
    print(f"- peak RSS of this process: {results['ours_peak_rss_mb']:.0f} MB; programs compiled: {results['ours_programs']}")
    if args.stream:
        print(f"- {args.stream} images of 100 random sizes: {last['programs']} programs; RSS {last['rss_mb'] - first['rss_mb']:+.1f} MB after the first 100")
    print(f"- load average: {results['load_start']} at the start, {results['load_end']} at the end ({os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
