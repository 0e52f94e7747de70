"""The whole training recipe of the paper, stage after stage, resumable: :func:`train_cascade`.

Zhang et al. 2016, Sec. III-C: P-Net is trained on random windows; R-Net on
the hard samples the trained P-Net proposes on the training images; O-Net on
those P-Net + R-Net keep (:mod:`mtcnn_jax.data.mining`). The steps, each in its own
subfolder of the work directory::

    pnet_samples/  random 12×12 windows (mtcnn_jax.data.samples), TFDS store train/ + val/
    pnet/          P-Net trained on them (mtcnn_jax.train: checkpoints, metrics.jsonl)
    rnet_samples/  24×24 windows mined with the trained P-Net + landmark faces, store
    rnet/          R-Net trained on them
    onet_samples/  48×48 windows mined with P-Net + R-Net + landmark faces, store
    onet/          O-Net trained on them
    eval/          the trained cascade on a WIDER-format set: metrics.json (AP all / ≥20 / ≥40)

A step that finished writes ``done.json`` (its summary and its time) into its
folder; a rerun on the same work directory skips finished steps and resumes an
interrupted one (training from its latest Orbax checkpoint; a sample store that
was completely written is reused, TFDS writes it atomically). Each trained step
also writes ``<stage>/params.msgpack``; the whole cascade goes to
``<workdir>/params.msgpack``, which ``MTCNN(weights=workdir)`` and ``mtcnn-jax
detect --weights workdir`` load. ``summary.json`` gathers every step's summary
and time.

The config (``configs/cascade.py``) holds one full train config per stage
(:func:`mtcnn_jax.config_utils.base_config` schema: ``pnet``, ``rnet``,
``onet``), ``mining`` (IoU thresholds, detector settings, caps) and ``eval``.
``data_root`` and ``seed`` are set into every stage.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mtcnn_jax import config_utils
from mtcnn_jax.data import mining
from mtcnn_jax.data import samples as sp
from mtcnn_jax.errors import UserError

STEPS = ("pnet_samples", "pnet", "rnet_samples", "rnet", "onet_samples", "onet", "eval")
SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


# ----------------------------------------------------------------------------- config


def stage_config(config, stage: str):
    """The train config of ``stage`` with the cascade's ``data_root`` and ``seed``, validated."""
    c = config[stage].copy_and_resolve_references()
    c.stage = stage
    c.seed = int(config.seed)
    c.data.root = str(config.data_root)
    config_utils.validate(c)
    return c


def validate(config) -> None:
    """Check every stage config and the mining / eval settings; :class:`UserError` names the first bad key."""
    for key in ("seed", "data_root", "pnet", "rnet", "onet", "mining", "eval"):
        if key not in config:
            raise UserError(f"cascade config key '{key}' is missing")
    for stage in SIZE:
        try:
            stage_config(config, stage)
        except UserError as err:
            raise UserError(f"{stage}: {err}") from None
    m = config.mining
    if not 0 <= m.negative_iou <= m.part_iou <= m.positive_iou <= 1:
        raise UserError("mining IoU thresholds must satisfy 0 ≤ negative_iou ≤ part_iou ≤ positive_iou ≤ 1")
    if m.negatives_per_image < 0 or m.random_crops_per_face < 0:
        raise UserError("mining.negatives_per_image and mining.random_crops_per_face must be ≥ 0")


# ----------------------------------------------------------------------------- bookkeeping


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def is_done(workdir, step: str) -> bool:
    return (Path(workdir) / step / "done.json").is_file()


def read_done(workdir, step: str) -> dict:
    return json.loads((Path(workdir) / step / "done.json").read_text())


# ----------------------------------------------------------------------------- sample stores


def _quiet_tfds():
    import tensorflow_datasets as tfds  # noqa: PLC0415

    tfds.disable_progress_bar()


def write_sets(folder: Path, stage: str, make: Callable[[str], dict]) -> dict:
    """Write ``make("train")`` and ``make("val")`` as TFDS stores ``folder/train`` and ``folder/val``.

    A split whose store is already complete is not made again. Returns
    ``{"train": counts, "val": counts}``.
    """
    from mtcnn_jax.data import store as st  # noqa: PLC0415

    _quiet_tfds()
    out = {}
    for split in ("train", "val"):
        if not st.store_exists(folder / split, stage):
            arrays = make(split)
            if len(arrays["type"]) == 0:
                raise UserError(f"{folder}: no {split} samples were made (see the summary above)")
            st.write_store(st.examples_from_arrays(arrays), folder / split, stage)
        out[split] = sp.counts({"type": st.SampleStore(folder / split, stage).types})
    return out


def read_sets(folder: Path, stage: str) -> tuple[dict, dict]:
    """``(train, val)`` sample arrays read back from the stores of :func:`write_sets`."""
    from mtcnn_jax.data import store as st  # noqa: PLC0415

    sets = []
    for split in ("train", "val"):
        s = st.SampleStore(folder / split, stage).load()
        sets.append(s.get(np.arange(len(s))))
    return sets[0], sets[1]


# ----------------------------------------------------------------------------- steps


def _pnet_samples(config, workdir: Path, progress: bool) -> dict:
    c = stage_config(config, "pnet")
    cache: dict = {}
    skipped: dict = {"lines": [], "images": []}

    def make(split):
        if not cache:
            cache["train"], cache["val"] = sp.build(c.data, SIZE["pnet"], c.seed, skipped, progress=progress)
        return cache[split]

    counts = write_sets(workdir / "pnet_samples", "pnet", make)
    return {"counts": counts, "n_skipped_images": len(skipped["images"]), "n_skipped_lines": len(skipped["lines"]),
            "skipped_images": skipped["images"], "skipped_lines": skipped["lines"]}


def _train(config, workdir: Path, stage: str, progress: bool) -> dict:
    import jax  # noqa: PLC0415

    from mtcnn_jax import pretrained, train  # noqa: PLC0415

    c = stage_config(config, stage)
    data = read_sets(workdir / f"{stage}_samples", stage)
    try:
        state, metrics = train.train_and_evaluate(c, workdir / stage, progress=progress, data=data)
    except ValueError as err:
        raise UserError(f"{stage}: {str(err).splitlines()[0]}") from None
    params = jax.tree_util.tree_map(np.asarray, jax.device_get(state.params))
    pretrained.save_params(workdir / stage / "params.msgpack", {stage: params})
    return {"val": metrics, "steps": int(c.total_steps)}


def trained_params(workdir: Path, stages) -> dict:
    from mtcnn_jax import pretrained  # noqa: PLC0415

    out = {}
    for s in stages:
        out.update(pretrained.load_params(Path(workdir) / s / "params.msgpack"))
    return out


def _landmark_faces(c, summary: dict) -> list:
    """The stage's landmark faces (any list format); malformed lines skipped, printed and counted.

    ``summary`` gets ``skipped_landmark_lines`` (``"file:line: reason"``) and
    ``n_skipped_landmark_lines``.
    """
    lines: list = []
    faces = sp.landmark_faces(c.data, lines)
    summary["skipped_landmark_lines"], summary["n_skipped_landmark_lines"] = lines, len(lines)
    for msg in lines:
        print(f"skipped: {msg}", file=sys.stderr)
    return faces


def _landmark_part(c, stage: str, faces, indices, summary: dict) -> dict:
    """Landmark windows of ``stage``'s size from ``faces[indices]`` (:func:`_landmark_faces`).

    Unreadable images (``"image path (list file:line): reason"``) are skipped,
    printed on stderr and collected in ``summary["skipped_landmark_images"]``.
    Images are cut over ``c.data.workers`` processes; the samples do not depend
    on their number.
    """
    lm_dir = Path(c.data.root) / c.data.landmarks
    images = summary.setdefault("skipped_landmark_images", [])
    n_before = len(images)
    cut = sp.Cutting(size=SIZE[stage], crops_per_landmark_face=c.data.crops_per_landmark_face, mirror=c.data.mirror)
    out = sp.landmark_samples(lm_dir, faces, indices, c.seed, cut, images, workers=c.data.workers)
    for msg in images[n_before:]:
        print(f"skipped: {msg}", file=sys.stderr)
    return out


def _proposal_key(config) -> str:
    m = config.mining
    return json.dumps({"min_face_size": m.min_face_size, "factor": m.factor, "pnet_threshold": m.pnet_threshold,
                       "resize": m.resize, "pyramid": mining.recipe_pyramid(m)}, sort_keys=True)


def save_proposals(path: Path, cache: dict, key: str) -> None:
    """P-Net proposals per image (``{gt path: float[N, 5]}``) → one ``.npz``, written atomically."""
    names = sorted(cache)
    arrays = [np.asarray(cache[n], np.float64).reshape(-1, 5) for n in names]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, names=np.array(names, dtype=str), key=np.array(key),
             counts=np.array([len(a) for a in arrays], np.int64),
             boxes=np.concatenate(arrays) if arrays else np.zeros((0, 5)))
    os.replace(tmp, path)


def load_proposals(path: Path, key: str) -> dict:
    """:func:`save_proposals`' cache, or ``{}`` when absent or made with other P-Net settings."""
    if not path.is_file():
        return {}
    with np.load(path) as z:
        if str(z["key"]) != key:
            return {}
        parts = np.split(z["boxes"], np.cumsum(z["counts"])[:-1]) if len(z["counts"]) else []
        return dict(zip(z["names"].tolist(), parts))


def _mine_samples(config, workdir: Path, stage: str, progress: bool) -> dict:
    """Mined windows for ``stage`` (rnet / onet) plus landmark windows, written as stores.

    P-Net's proposals on the training images are kept in
    ``rnet_samples/proposals.npz``; O-Net mining reads them instead of running
    the same P-Net again.
    """
    c = stage_config(config, stage)
    cache_file = workdir / "rnet_samples" / "proposals.npz"
    proposals = load_proposals(cache_file, _proposal_key(config))
    earlier = ("pnet",) if stage == "rnet" else ("pnet", "rnet")
    detector = mining.make_detector(trained_params(workdir, earlier), stage, config.mining)
    wider_dir = Path(c.data.root) / c.data.wider
    gt = mining.find_gt(wider_dir)
    summaries = {}
    lm_summary: dict = {}
    faces = _landmark_faces(c, lm_summary)  # read once for both splits

    def make(split):
        summary = mining.MiningSummary()
        records, line_of = mining.read_gt(gt, summary)
        records = records[: c.data.wider_images]
        wtr, wva = sp.split(len(records), c.data.val_every)
        ltr, lva = sp.split(len(faces), c.data.val_every)
        idx, lidx = (wtr, ltr) if split == "train" else (wva, lva)
        mined = mining.mine(detector, stage, wider_dir, records, idx, c.seed, config.mining, c.data.min_face,
                            line_of, str(gt), summary, progress, proposals)
        summaries[split] = summary.to_dict()
        return sp.concat([mined, _landmark_part(c, stage, faces, lidx, lm_summary)], SIZE[stage])

    counts = write_sets(workdir / f"{stage}_samples", stage, make)
    if stage == "rnet" and proposals:
        save_proposals(cache_file, proposals, _proposal_key(config))
    out = {"counts": counts, "mining": summaries}
    if lm_summary:
        out["landmarks"] = {"n_skipped_images": len(lm_summary.get("skipped_landmark_images", [])), **lm_summary}
    return out


def save_cascade(workdir: Path) -> Path:
    """``<workdir>/params.msgpack``: the three trained stages together."""
    from mtcnn_jax import pretrained  # noqa: PLC0415

    path = Path(workdir) / "params.msgpack"
    pretrained.save_params(path, trained_params(workdir, ("pnet", "rnet", "onet")))
    return path


def evaluate_cascade(weights, eval_config, progress: bool = False) -> dict:
    """AP per face-size setting of the cascade ``weights`` on ``eval_config.root / eval_config.wider``.

    Unreadable images are skipped and counted (a skipped image's faces still count as missed).
    """
    from tqdm import tqdm  # noqa: PLC0415

    from mtcnn_jax.detector import MTCNN  # noqa: PLC0415
    from mtcnn_jax.evaluation.predictions import Detections  # noqa: PLC0415
    from mtcnn_jax.evaluation.wider_ap import evaluate_settings  # noqa: PLC0415
    from mtcnn_jax.images import load_image  # noqa: PLC0415

    e = eval_config
    wider_dir = Path(e.root) / e.wider
    summary = mining.MiningSummary()
    records, line_of = mining.read_gt(mining.find_gt(wider_dir), summary)
    if e.images:
        records = records[: e.images]
    det = MTCNN(min_face_size=e.min_face_size, factor=e.factor, thresholds=tuple(e.thresholds), weights=weights,
                pyramid=mining.recipe_pyramid(e))
    preds = {}
    for r in tqdm(records, desc="eval", disable=not progress, dynamic_ncols=True):
        try:
            image = load_image(wider_dir / "images" / r.path)
        except Exception as err:  # noqa: BLE001
            summary.skipped_images.append(f"{wider_dir / 'images' / r.path}: {err}")
            continue
        f = det.detect(image)
        preds[r.path] = Detections(f.boxes, f.scores.astype(np.float64), f.landmarks)
    ap = evaluate_settings(preds, records)
    return {"ap": ap, "images": len(preds), "n_skipped_images": len(summary.skipped_images),
            "skipped_images": summary.skipped_images, "n_skipped_lines": len(summary.skipped_lines),
            "skipped_lines": summary.skipped_lines}


def _eval(config, workdir: Path, progress: bool) -> dict:
    e = config.eval.copy_and_resolve_references()
    e.root = str(config.data_root)
    out = evaluate_cascade(Path(workdir) / "params.msgpack", e, progress)
    _write_json(Path(workdir) / "eval" / "metrics.json", out)
    return out


def train_cascade(config, workdir, progress: bool = True, log: Optional[Callable[[str], None]] = print,
                  stop_after: Optional[str] = None) -> dict:
    """Run (or resume) every step of the recipe in ``workdir``; returns ``summary.json``'s content.

    ``stop_after``: stop once that step is done (testing, or splitting a long run).
    """
    validate(config)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
    log = log or (lambda s: None)
    runners = {
        "pnet_samples": lambda: _pnet_samples(config, workdir, progress),
        "pnet": lambda: _train(config, workdir, "pnet", progress),
        "rnet_samples": lambda: _mine_samples(config, workdir, "rnet", progress),
        "rnet": lambda: _train(config, workdir, "rnet", progress),
        "onet_samples": lambda: _mine_samples(config, workdir, "onet", progress),
        "onet": lambda: _train(config, workdir, "onet", progress),
        "eval": lambda: _eval(config, workdir, progress),
    }
    summary = {}
    for step in STEPS:
        folder = workdir / step
        if is_done(workdir, step):
            summary[step] = read_done(workdir, step)
            log(f"{step}: done before ({summary[step]['seconds']:.0f} s), skipped")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            log(f"{step}: running")
            t0 = time.time()
            result = runners[step]()
            result["seconds"] = time.time() - t0
            _write_json(folder / "done.json", result)
            summary[step] = result
            log(f"{step}: finished in {result['seconds']:.0f} s")
        if step == "onet" and not (workdir / "params.msgpack").is_file():
            save_cascade(workdir)
        if step == stop_after:
            break
    summary["total_seconds"] = sum(v["seconds"] for v in summary.values() if isinstance(v, dict))
    _write_json(workdir / "summary.json", summary)
    return summary
