"""Running a detector over a data set's images, and the metrics of what it found.

One runner for every caller: ``mtcnn-jax evaluate`` (all three protocols), the
training recipe's evaluation step (:func:`evaluate_wider_folder`) and
``benchmarks/compare_peers.py`` (which runs other detectors through the same loop).

:func:`detect_images` reads each image of a list, runs the detector and times the
call; an image that cannot be read is skipped and reported, never raised, so that
one broken file does not end a long evaluation. :func:`wider_metrics` and
:func:`landmark_metrics` turn detections into the numbers ``evaluate`` writes
(:mod:`~mtcnn_jax.evaluation.wider_ap`, :mod:`~mtcnn_jax.evaluation.nme`);
:func:`timing` summarises the per-image times.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from mtcnn_jax import images
from mtcnn_jax.errors import ImageError
from mtcnn_jax.evaluation import nme
from mtcnn_jax.evaluation import wider_ap
from mtcnn_jax.evaluation.predictions import faces_to_json
from mtcnn_jax.faces import Faces
from mtcnn_jax.files import report_skipped


class DetectionRun(NamedTuple):
    """What :func:`detect_images` found.

    predictions: ``{path as listed: Faces}`` for every image that could be read (boxes
      float32, scores float64, landmarks float32).
    entries: the same as ``detect --json`` entries (list of dicts), in order.
    skipped: ``[(path as listed, reason)]`` for the images that could not be read.
    seconds: float[K] wall time of ``detector.detect`` per read image (decoding excluded).
    cpu_seconds: float[K] CPU time of this process (all threads) during each call: on a
      machine shared with other jobs it grows less than the wall time does.
    """

    predictions: Dict[str, Faces]
    entries: List[dict]
    skipped: List[Tuple[str, str]]
    seconds: np.ndarray
    cpu_seconds: np.ndarray

    def skipped_entries(self) -> List[dict]:
        """``[{"path", "reason"}]`` of the skipped images (the ``"skipped"`` list of metrics.json)."""
        return [{"path": p, "reason": r} for p, r in self.skipped]


def detect_images(
    detector,
    images_dir: str,
    paths: Sequence[str],
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    report: Optional[Callable[[str], None]] = None,
    progress: bool = True,
    on_entry: Optional[Callable[[dict], None]] = None,
) -> DetectionRun:
    """Run ``detector.detect`` on ``images_dir/<path>`` for each path.

    Args:
      detector: anything with ``detect(uint8[H, W, 3] RGB) -> (boxes [N, 4], scores [N],
        landmarks [N, 5, 2])`` in image pixels (e.g. :class:`mtcnn_jax.MTCNN`).
      images_dir: the folder the paths are relative to.
      paths: image paths, ``/``-separated, as the ground truth lists them.
      max_pixels: larger images are refused (skipped) before decoding.
      report: called with ``"<full path>: <reason>"`` for each image skipped.
      progress: show a progress bar on stderr (when it is a terminal).
      on_entry: called with each image's ``detect --json`` entry as soon as it is made
        (e.g. :meth:`~mtcnn_jax.evaluation.predictions.PredictionsWriter.write`, so that
        an interrupted evaluation keeps its detections).

    Returns:
      a :class:`DetectionRun`; an unreadable image is skipped, not raised.
    """
    preds: Dict[str, Faces] = {}
    entries, skipped, seconds, cpu = [], [], [], []
    for path in tqdm(paths, desc="detect", unit="image", file=sys.stderr,
                     disable=None if progress else True, leave=False):
        full = os.path.join(images_dir, *path.split("/"))
        try:
            image = images.load_image(full, max_pixels=max_pixels)
        except ImageError as err:
            skipped.append((path, err.reason))
            if report is not None:
                report(f"{full}: {err.reason}")
            continue
        start, start_cpu = time.perf_counter(), time.process_time()
        faces = detector.detect(image)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        found = Faces(np.asarray(faces[0], np.float32).reshape(-1, 4),
                      np.asarray(faces[1], np.float64).reshape(-1),
                      np.asarray(faces[2], np.float32).reshape(-1, 5, 2))
        preds[path] = found
        entries.append(faces_to_json(path, image, found))
        if on_entry is not None:
            on_entry(entries[-1])
    return DetectionRun(preds, entries, skipped, np.asarray(seconds, np.float64), np.asarray(cpu, np.float64))


def timing(run: Optional[DetectionRun]) -> Optional[dict]:
    """``{"n_images", "median_ms", "mean_ms", "first_ms", "median_cpu_ms"}`` of the per-image
    times of a run (the first call includes compilation), or None when nothing ran."""
    if run is None or len(run.seconds) == 0:
        return None
    ms = np.asarray(run.seconds, np.float64) * 1e3
    return dict(n_images=int(ms.size), median_ms=float(np.median(ms)), mean_ms=float(ms.mean()),
                first_ms=float(ms[0]), median_cpu_ms=float(np.median(run.cpu_seconds) * 1e3))


# --------------------------------------------------------------------------- metrics


def wider_metrics(
    predictions: Mapping[str, Faces],
    records: Sequence,
    sizes: Sequence[float] = wider_ap.DEFAULT_SIZES,
    face_lists: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None,
) -> Tuple[dict, dict]:
    """WIDER FACE AP for each face-size setting and each face list.

    Args:
      predictions: ``{image path: Faces}``.
      records: the :class:`~mtcnn_jax.data.wider.WiderRecord` s evaluated.
      sizes: face-size settings (shorter side >= N px; 1 = all valid faces).
      face_lists: optional ``{"easy": {path: 0-based face indices}, ...}``.

    Returns:
      ``(settings, curves)``: ``settings[name] = {"ap", "ap_distinct", "n_faces",
      "n_detections", "min_size" or "list"}`` with the official 1,000-threshold sampling
      for ``"ap"`` and every distinct score for ``"ap_distinct"``; ``curves[name] =
      (recall, precision)`` float64[1000] each, official sampling.
    """
    records = list(records)
    jobs = [(wider_ap.setting_name(s), dict(min_size=s), {"min_size": s}) for s in sizes]
    for name, keep in (face_lists or {}).items():
        jobs.append((name, dict(keep=keep), {"list": name}))
    settings, curves = {}, {}
    for name, kwargs, info in jobs:
        off = wider_ap.evaluate(predictions, records, sampling="official", **kwargs)
        dis = wider_ap.evaluate(predictions, records, sampling="distinct", **kwargs)
        settings[name] = dict(info, ap=off["ap"], ap_distinct=dis["ap"],
                              n_faces=off["n_faces"], n_detections=off["n_detections"])
        # thresholds that no detection passes give (0, 0): not a point of the curve
        empty = (off["recall"] == 0) & (off["precision"] == 0)
        curves[name] = (np.where(empty, np.nan, off["recall"]), off["precision"])
    return settings, curves


def landmark_metrics(
    predictions: Mapping[str, Faces],
    annotations: nme.MtflAnnotations,
    failure_threshold: float = 0.1,
) -> Tuple[dict, np.ndarray]:
    """Landmark accuracy as JSON-ready numbers, and the per-image NME.

    Returns:
      ``(metrics, errors)``: ``metrics`` holds ``n_images``, ``n_detected``,
      ``detection_rate``, ``nme_mean``, ``nme_median``, ``nme_per_point`` (``{point name:
      mean NME}``), ``failure_threshold`` and ``failure_rate``; ``errors`` is float64[M],
      NaN for misses (see :func:`mtcnn_jax.evaluation.nme.evaluate_landmarks`).
    """
    res = nme.evaluate_landmarks(predictions, annotations, failure_threshold)
    metrics = dict(
        n_images=res["n_images"],
        n_detected=res["n_detected"],
        detection_rate=res["detection_rate"],
        nme_mean=res["nme_mean"],
        nme_median=res["nme_median"],
        nme_per_point={n: float(v) for n, v in zip(nme.POINT_NAMES, res["nme_per_point"])},
        failure_threshold=failure_threshold,
        failure_rate=res["failure_rate"],
    )
    return metrics, res["errors"]


# --------------------------------------------------------------------------- the recipe's evaluation


def evaluate_wider_folder(detector, images_dir, records: Sequence, progress: bool = False) -> dict:
    """AP per face-size setting of ``detector`` on the WIDER-format images ``images_dir/<record path>``.

    Each unreadable image is reported (``skipped: <path>: <reason>`` on stderr) and
    skipped; its faces still count, as missed. The AP is the official WIDER FACE one
    (1,000-threshold sampling) for all valid faces, >= 20 px and >= 40 px.

    Returns:
      ``{"ap": {"all", ">=20", ">=40"}, "images": images read, "n_skipped_images",
      "skipped_images": ["<path>: <reason>", ...]}``.
    """
    records = list(records)
    skipped: List[str] = []
    run = detect_images(detector, images_dir, [r.path for r in records],
                        report=lambda message: report_skipped([message], into=skipped), progress=progress)
    ap = wider_ap.evaluate_settings(run.predictions, records)
    return {"ap": ap, "images": len(run.predictions), "n_skipped_images": len(skipped), "skipped_images": skipped}
