"""What the rotation search (``--rotations 0,90,180,270``) costs and what it finds, on turned WIDER images.

    .venv/bin/python benchmarks/rotations.py               # 120 of the 360 images (~10 min on 2 busy cores)
    .venv/bin/python benchmarks/rotations.py --limit 0     # all 360 images (~30 min)

For each image of ``$MTCNN_JAX_DATA/widerface_val_subset`` (default ``../shared/data``;
``--limit N`` takes N images spread evenly over the sorted list) and each turn of 0, 90,
180 and 270 degrees clockwise (``np.rot90(image, -k)``: a face then lies on its side or
upside down), the detector (authors' weights, paper settings) runs

* **plain**: ``MTCNN().detect(image)``;
* **search**: :func:`mtcnn_jax.rotations.detect_rotated` over 0, 90, 180, 270 (merged by NMS).

The ground-truth boxes are turned with the image (:class:`mtcnn_jax.rotations.Rotation`,
exact for quarter turns) and the detections scored by the official WIDER FACE protocol
(:mod:`mtcnn_jax.evaluation.wider_ap`: AP with the 1,000-threshold sampling, all valid faces,
≥ 20 px and ≥ 40 px), plus the recall at the lowest threshold (every detection kept) for
faces ≥ 20 px, and the median wall time per image of the detector call (decoding and turning
excluded), and its CPU time (all threads of this process: on a machine shared with other
jobs it grows less than the wall time). The load average is printed beside the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtcnn_jax import MTCNN, load_image  # noqa: E402
from mtcnn_jax.data.wider import find_gt, read_wider_gt  # noqa: E402
from mtcnn_jax.evaluation import wider_ap  # noqa: E402
from mtcnn_jax.faces import Faces  # noqa: E402
from mtcnn_jax.rotations import DEFAULT_ANGLES, Rotation, detect_rotated  # noqa: E402

TURNS = (0, 90, 180, 270)  # degrees clockwise


def data_dir() -> Path:
    return Path(os.environ.get("MTCNN_JAX_DATA", REPO.parent / "shared" / "data")).resolve()


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all when ``n`` is 0 or too large)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def turned_record(record, clockwise: int, width: int, height: int):
    """The record's boxes in the image turned ``clockwise`` degrees clockwise."""
    r = Rotation(-clockwise, width, height)  # clockwise = counter-clockwise by -angle
    return dataclasses.replace(record, boxes=r.boxes_to_rotated(record.boxes).astype(np.float32))


def scores(preds: dict, records: list) -> dict:
    out = wider_ap.evaluate_settings(preds, records)
    recall = wider_ap.evaluate(preds, records, min_size=20)["recall"]
    out["recall>=20"] = float(np.nanmax(recall)) if len(recall) else 0.0
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=120, help="images, spread over the set (0: all 360)")
    args = parser.parse_args(argv)
    wider = data_dir() / "widerface_val_subset"
    if not wider.is_dir():
        sys.exit(f"no WIDER subset at {wider}: set MTCNN_JAX_DATA")
    records = spread(sorted(read_wider_gt(find_gt(wider)), key=lambda r: r.path), args.limit)
    det = MTCNN()
    det.detect(np.zeros((64, 64, 3), np.uint8))  # compile before timing
    results = {(t, m): ({}, [], [], []) for t in TURNS for m in ("plain", "search")}
    start, load = time.time(), os.getloadavg()[0]
    for i, record in enumerate(records):
        image = load_image(wider / "images" / record.path)
        h, w = image.shape[:2]
        for turn in TURNS:
            turned = np.ascontiguousarray(np.rot90(image, -turn // 90))
            rec = turned_record(record, turn, w, h)
            for mode in ("plain", "search"):
                t0, c0 = time.perf_counter(), time.process_time()
                faces = det.detect(turned) if mode == "plain" else detect_rotated(det, turned, DEFAULT_ANGLES)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                preds, recs, times, cpus = results[(turn, mode)]
                preds[record.path] = Faces(faces[0], np.asarray(faces[1], np.float64), faces[2])
                recs.append(rec)
                times.append(seconds)
                cpus.append(cpu)
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(records)} images, {time.time() - start:.0f} s", file=sys.stderr)
    print(f"\n{len(records)} WIDER images ({'all' if len(records) == 360 else 'spread over the 360'}), "
          f"load average {load:.2f} at the start ({os.cpu_count()} CPUs), {time.time() - start:.0f} s:\n")
    print("| image turned (clockwise) | detection | AP all | AP ≥ 20 px | AP ≥ 40 px | recall ≥ 20 px "
          "| ms/image | CPU ms/image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for turn in TURNS:
        for mode in ("plain", "search"):
            preds, recs, times, cpus = results[(turn, mode)]
            s = scores(preds, recs)
            label = "plain" if mode == "plain" else "search 0/90/180/270"
            print(f"| {turn}° | {label} | {s['all']:.3f} | {s['>=20']:.3f} | {s['>=40']:.3f} | "
                  f"{s['recall>=20']:.3f} | {1e3 * float(np.median(times)):.0f} | {1e3 * float(np.median(cpus)):.0f} |")


if __name__ == "__main__":
    main()
