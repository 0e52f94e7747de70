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
    calibrate/     R-Net / O-Net's operating point chosen on held-out training images
                   (:func:`_calibrate`); writes the cascade, ``<workdir>/params.msgpack``
    eval/          the trained cascade on a WIDER-format set: metrics.json (AP all / ≥20 / ≥40),
                   its AP on the training images no stage trained on (``validation``: the set to
                   choose settings by), and the stage diagnostics (:func:`stage_diagnostics`): each trained stage's
                   AP inside the authors' cascade, its held-out recall and accuracy

A step that finished writes ``done.json`` (its summary and its time) into its
folder; a rerun on the same work directory skips finished steps and resumes an
interrupted one (training from its latest Orbax checkpoint; a sample store that
was completely written is reused, TFDS writes it atomically). A sample store
found damaged when it is read (:class:`mtcnn_jax.data.store.StoreDamaged`) is
deleted and cut or mined again, saying so in one line; the samples are
deterministic, so the result is the same. Each step also records, when it starts,
the settings its result depends on (``step_settings.json``: :func:`step_settings`); a
rerun whose config changes any of them for a step already in the work directory
is refused in one line that names the settings and the steps that can be copied
to a new work directory (:func:`check_step_settings`), so a changed config never
quietly reuses, or resumes, what other settings made. Each trained step
also writes ``<stage>/params.msgpack``; the ``calibrate`` step writes the whole
cascade to ``<workdir>/params.msgpack``, which ``MTCNN(weights=workdir)`` and ``mtcnn-jax
detect --weights workdir`` load. ``summary.json`` gathers every step's summary
and time.

The config (``configs/cascade.py``) holds one full train config per stage
(:func:`mtcnn_jax.config_utils.base_config` schema: ``pnet``, ``rnet``,
``onet``), ``mining`` (IoU thresholds, detector settings, caps) and ``eval``.
``data_root`` and ``seed`` are set into every stage. :func:`train_cascade`
turns it into a :class:`mtcnn_jax.settings.CascadeSettings` once
(:func:`cascade_settings`); the steps take that.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mtcnn_jax import config_utils, files
from mtcnn_jax.data import mining
from mtcnn_jax.data import samples as sp
from mtcnn_jax.data import store as st
from mtcnn_jax.errors import UserError
from mtcnn_jax.models import INPUT_SIZE
from mtcnn_jax.settings import CascadeSettings, EvalSettings, MiningSettings, TrainSettings

STEPS = ("pnet_samples", "pnet", "rnet_samples", "rnet", "onet_samples", "onet", "calibrate", "eval")

#: The config keys each step's result depends on: its own and those of the steps before it (R-Net's
#: samples are mined by the trained P-Net, and so on). A stage's samples read only its ``data`` settings
#: (and the seed); its training reads the whole stage config.
STEP_KEYS = {
    "pnet_samples": ("seed", "pnet.data"),
    "pnet": ("seed", "pnet"),
    "rnet_samples": ("seed", "pnet", "mining", "rnet.data"),
    "rnet": ("seed", "pnet", "mining", "rnet"),
    "onet_samples": ("seed", "pnet", "mining", "rnet", "onet.data"),
    "onet": ("seed", "pnet", "mining", "rnet", "onet"),
    # calibrate scores the held-out training images with the detector settings of eval, not its data set
    "calibrate": ("seed", "pnet", "mining", "rnet", "onet", "calibration", "eval.min_face_size", "eval.factor",
                  "eval.thresholds", "eval.pyramid"),
    "eval": ("seed", "pnet", "mining", "rnet", "onet", "calibration", "eval"),
}
#: Keys under :data:`STEP_KEYS` that a step does not read: R-Net's samples and training come before
#: R-Net proposes windows, so O-Net's mining threshold cannot change them.
STEP_IGNORED = {"rnet_samples": ("mining.rnet_threshold",), "rnet": ("mining.rnet_threshold",)}
#: The settings a step was made with, in its folder (written when the step starts).
SETTINGS_FILE = "step_settings.json"


# ----------------------------------------------------------------------------- config


def stage_config(config, stage: str) -> TrainSettings:
    """The train settings of ``stage`` in the cascade ``config``, with the cascade's ``data_root`` and ``seed``.

    Validated (:func:`mtcnn_jax.config_utils.validate`); a bad key is a :class:`UserError`.
    """
    c = config[stage].copy_and_resolve_references()
    c.stage = stage
    c.seed = int(config.seed)
    c.data.root = str(config.data_root)
    return TrainSettings.from_config(c)


def validate(config) -> None:
    """Check every stage config and the mining / eval settings; :class:`UserError` names the first bad key."""
    cascade_settings(config)


def cascade_settings(config) -> CascadeSettings:
    """The cascade ``config`` checked and converted, once; :class:`UserError` names the first bad key."""
    for key in ("seed", "data_root", "pnet", "rnet", "onet", "mining", "eval"):
        if key not in config:
            raise UserError(f"cascade config key '{key}' is missing")
    stages = {}
    for stage in config_utils.STAGES:
        try:
            stages[stage] = stage_config(config, stage)
        except UserError as err:
            raise UserError(f"{stage}: {err}") from None
    m = MiningSettings.from_config(config.mining)
    if not 0 <= m.negative_iou <= m.part_iou <= m.positive_iou <= 1:
        raise UserError("mining IoU thresholds must satisfy 0 ≤ negative_iou ≤ part_iou ≤ positive_iou ≤ 1")
    if m.negatives_per_image < 0 or m.random_crops_per_face < 0:
        raise UserError("mining.negatives_per_image and mining.random_crops_per_face must be ≥ 0")
    grid = config.get("calibration", ())
    grid = (grid,) if isinstance(grid, (int, float)) and not isinstance(grid, bool) else grid
    if not isinstance(grid, (tuple, list)) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in grid):
        raise UserError(f"invalid value for config.calibration: {grid!r} (a tuple of probabilities in (0, 1))")
    return CascadeSettings(seed=int(config.seed), data_root=str(config.data_root), mining=m,
                           eval=EvalSettings.from_config(config.eval, config.data_root), **stages,
                           calibration=tuple(float(t) for t in grid))


# ----------------------------------------------------------------------------- bookkeeping


def is_done(workdir, step: str) -> bool:
    return (Path(workdir) / step / "done.json").is_file()


def read_done(workdir, step: str) -> Optional[dict]:
    """The summary a finished step recorded, or None when its ``done.json`` is absent or damaged."""
    try:
        done = json.loads((Path(workdir) / step / "done.json").read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) and isinstance(done.get("seconds"), (int, float)) else None


# ----------------------------------------------------------------------------- steps


def step_settings(config, step: str) -> dict:
    """``{"pnet.optimizer.learning_rate": 0.01, ...}``: the settings ``step``'s result depends on
    (:data:`STEP_KEYS`, less :data:`STEP_IGNORED` and :data:`mtcnn_jax.config_utils.NEUTRAL_KEYS`),
    flattened to dotted keys, values as JSON has them."""
    flat = config_utils.flat_settings(json.loads(config.to_json()), STEP_KEYS[step])
    for key in STEP_IGNORED.get(step, ()):
        flat.pop(key, None)
    return flat


def check_step_settings(config, workdir: Path) -> None:
    """Refuse, in one line, a work directory whose steps were made with other settings than ``config``.

    A rerun skips finished steps and resumes an interrupted one; with a changed
    config that would quietly keep what the old settings made (or mix the two).
    Each step records its settings when it starts (:data:`SETTINGS_FILE`); a step
    folder without that record (made before it was kept) is taken as it is, but
    not offered for copying. Keys only one side has (the config schema grew
    since) are not compared (:func:`mtcnn_jax.config_utils.settings_change`).
    """
    same = []
    for step in STEPS:
        made = config_utils.read_settings_record(workdir / step / SETTINGS_FILE,
                                                 f"{step} was made with (delete {workdir / step} to make it again)")
        if made is None:
            continue  # not made yet, or made before steps kept a record: nothing to compare, nothing to offer
        change = config_utils.settings_change(made, step_settings(config, step))
        if change:
            shown = config_utils.describe_change(change)
            reuse = (f" (copy {', '.join(same)} there to reuse {'them' if len(same) > 1 else 'it'}: "
                     "made with the same settings)" if same else "")
            raise UserError(f"{workdir / step} was made with other settings than this config ({shown}): "
                            f"run it in a new --workdir{reuse}")
        same.append(step)


def _pnet_samples(cs: CascadeSettings, workdir: Path, progress: bool) -> dict:
    c = cs.pnet
    cache: dict = {}
    skipped: dict = {"lines": [], "images": []}

    def make(split):
        if not cache:
            cache["train"], cache["val"] = sp.build(c.data, INPUT_SIZE["pnet"], c.seed, skipped, progress=progress)
        return cache[split]

    counts = st.write_sets(workdir / "pnet_samples", "pnet", make, again="cutting it again")
    return {"counts": counts, "n_skipped_images": len(skipped["images"]), "n_skipped_lines": len(skipped["lines"]),
            "skipped_images": skipped["images"], "skipped_lines": skipped["lines"]}


def _train(cs: CascadeSettings, workdir: Path, stage: str, progress: bool, remake_samples: Callable[[], None],
           overwrite: bool = False) -> dict:
    """Train ``stage`` on its sample stores; a damaged store is deleted and ``remake_samples()`` runs first."""
    import jax  # noqa: PLC0415

    from mtcnn_jax import pretrained, train  # noqa: PLC0415

    c = cs.stage(stage)
    folder = workdir / f"{stage}_samples"
    try:
        data = st.read_sets(folder, stage)
    except st.StoreDamaged as err:
        print(f"mtcnn-jax: {err}: {'cutting' if stage == 'pnet' else 'mining'} it again", file=sys.stderr, flush=True)
        shutil.rmtree(err.path, ignore_errors=True)
        remake_samples()
        data = st.read_sets(folder, stage)
    try:
        state, metrics = train.train_and_evaluate(c, workdir / stage, progress=progress, data=data,
                                                  overwrite=overwrite)
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


def _landmark_faces(c: TrainSettings, summary: dict) -> list:
    """The stage's landmark faces (any list format); malformed lines skipped, printed and counted.

    ``summary`` gets ``skipped_landmark_lines`` (``"file:line: reason"``) and
    ``n_skipped_landmark_lines``.
    """
    lines: list = []
    faces = sp.landmark_faces(c.data, lines)
    summary["skipped_landmark_lines"], summary["n_skipped_landmark_lines"] = lines, len(lines)
    files.report_skipped(lines)
    return faces


def _landmark_part(c: TrainSettings, stage: str, faces, indices, summary: dict) -> dict:
    """Landmark windows of ``stage``'s size from ``faces[indices]`` (:func:`_landmark_faces`).

    Unreadable images (``"image path (list file:line): reason"``) are skipped,
    printed on stderr and collected in ``summary["skipped_landmark_images"]``.
    Images are cut over ``c.data.workers`` processes; the samples do not depend
    on their number.
    """
    lm_dir = Path(c.data.root) / c.data.landmarks
    images = summary.setdefault("skipped_landmark_images", [])
    n_before = len(images)
    cut = sp.Cutting(size=INPUT_SIZE[stage], crops_per_landmark_face=c.data.crops_per_landmark_face,
                     mirror=c.data.mirror)
    out = sp.landmark_samples(lm_dir, faces, indices, c.seed, cut, images, workers=c.data.workers)
    files.report_skipped(images[n_before:])
    return out


def _proposal_key(m: MiningSettings) -> str:
    """What P-Net's proposals depend on (besides its params): its detector settings."""
    return json.dumps({"min_face_size": m.min_face_size, "factor": m.factor, "pnet_threshold": m.pnet_threshold,
                       "resize": m.resize, "pyramid": mining.recipe_pyramid(m)}, sort_keys=True)


def save_proposals(path: Path, cache: dict, key: str) -> None:
    """P-Net proposals per image (``{gt path: float[N, 5]}``) → one ``.npz``, written atomically."""
    names = sorted(cache)
    arrays = [np.asarray(cache[n], np.float64).reshape(-1, 5) for n in names]
    with files.atomic_path(path, ".npz") as tmp:
        np.savez(tmp, names=np.array(names, dtype=str), key=np.array(key),
                 counts=np.array([len(a) for a in arrays], np.int64),
                 boxes=np.concatenate(arrays) if arrays else np.zeros((0, 5)))


def load_proposals(path: Path, key: str) -> dict:
    """:func:`save_proposals`' cache, or ``{}`` when absent or made with other P-Net settings.

    A damaged file (truncated, garbled) is also ``{}`` (P-Net runs again): it is
    deleted, after one line on stderr saying so.
    """
    if not path.is_file():
        return {}
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return {}
            counts = z["counts"]
            boxes, names = z["boxes"], z["names"].tolist()
            if int(np.sum(counts)) != len(boxes) or len(counts) != len(names) or boxes.shape[1:] != (5,):
                raise ValueError("its arrays do not agree")
            parts = np.split(boxes, np.cumsum(counts)[:-1]) if len(counts) else []
            return dict(zip(names, parts))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"mtcnn-jax: {path}: damaged ({reason}): running P-Net again", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        return {}


def _mine_samples(cs: CascadeSettings, workdir: Path, stage: str, progress: bool) -> dict:
    """Mined windows for ``stage`` (rnet / onet) plus landmark windows, written as stores.

    P-Net's proposals on the training images are kept in
    ``rnet_samples/proposals.npz``; O-Net mining reads them instead of running
    the same P-Net again.
    """
    c = cs.stage(stage)
    cache_file = workdir / "rnet_samples" / "proposals.npz"
    proposals = load_proposals(cache_file, _proposal_key(cs.mining))
    earlier = ("pnet",) if stage == "rnet" else ("pnet", "rnet")
    detector = mining.make_detector(trained_params(workdir, earlier), stage, cs.mining)
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
        mined = mining.mine(detector, stage, wider_dir, records, idx, c.seed, cs.mining, c.data.min_face,
                            line_of, str(gt), summary, progress, proposals)
        summaries[split] = summary.to_dict()
        return sp.concat([mined, _landmark_part(c, stage, faces, lidx, lm_summary)], INPUT_SIZE[stage])

    counts = st.write_sets(workdir / f"{stage}_samples", stage, make, again="mining it again")
    if stage == "rnet" and proposals:
        save_proposals(cache_file, proposals, _proposal_key(cs.mining))
    out = {"counts": counts, "mining": summaries}
    if lm_summary:
        out["landmarks"] = {"n_skipped_images": len(lm_summary.get("skipped_landmark_images", [])), **lm_summary}
    return out


def evaluate_cascade(weights, eval_config, progress: bool = False, wider_dir=None, indices=None) -> dict:
    """AP per face-size setting of the cascade ``weights`` on ``eval_config.root / eval_config.wider``
    (its first ``eval_config.images``; or on the ``indices`` of the records of ``wider_dir``), with
    ``eval_config``'s detector settings.

    Runs :func:`mtcnn_jax.evaluation.runner.evaluate_wider_folder` (the runner ``mtcnn-jax
    evaluate`` uses): unreadable images are reported, skipped and counted (a skipped
    image's faces still count as missed); malformed gt lines likewise.
    """
    from mtcnn_jax.detector import MTCNN  # noqa: PLC0415
    from mtcnn_jax.evaluation.runner import evaluate_wider_folder  # noqa: PLC0415

    e = eval_config
    wider_dir = Path(e.root) / e.wider if wider_dir is None else Path(wider_dir)
    summary = mining.MiningSummary()
    records, _ = mining.read_gt(mining.find_gt(wider_dir), summary)
    if indices is not None:
        records = [records[i] for i in indices if i < len(records)]
    elif e.images:
        records = records[: e.images]
    det = MTCNN(min_face_size=e.min_face_size, factor=e.factor, thresholds=tuple(e.thresholds), weights=weights,
                pyramid=mining.recipe_pyramid(e))
    out = evaluate_wider_folder(det, str(wider_dir / "images"), records, progress=progress)
    out.update(n_skipped_lines=len(summary.skipped_lines), skipped_lines=summary.skipped_lines)
    return out


def stage_diagnostics(cs: CascadeSettings, workdir: Path, summary: dict, progress: bool = False) -> dict:
    """Which trained stage is weak: per stage, the AP of the authors' cascade with that one stage
    replaced by the cascade's (``<workdir>/params.msgpack``: as trained, R-Net and O-Net calibrated) (trained P + authors' R/O, authors' P + trained R + authors' O,
    authors' P/R + trained O; same eval set and settings as the cascade's AP), and the stage's
    held-out numbers from its training step: ``recall`` (faces scoring above ``threshold``) and
    ``accuracy`` on its held-out windows (random windows for P-Net, mined ones for R-Net and O-Net).
    """
    from mtcnn_jax import pretrained  # noqa: PLC0415

    authors, trained = pretrained.load_pretrained(), pretrained.load_params(Path(workdir) / "params.msgpack")
    out = {}
    for stage in ("pnet", "rnet", "onet"):
        val = (summary.get(stage) or {}).get("val") or {}
        swapped = evaluate_cascade(dict(authors, **{stage: trained[stage]}), cs.eval, progress)
        out[stage] = {"ap_in_authors_cascade": swapped["ap"], "threshold": float(cs.stage(stage).threshold),
                      "recall": val.get("recall"), "accuracy": val.get("accuracy"),
                      "held_out": "random windows" if stage == "pnet" else "mined windows"}
    return out


def held_out_images(cs: CascadeSettings) -> tuple:
    """``(wider_dir, indices)``: the training WIDER images no stage trained on (each stage holds out
    every ``data.val_every``-th of its first ``data.wider_images``; these are held out by all three),
    for choosing a recipe's settings by AP without looking at the evaluation set."""
    stages = [cs.stage(s).data for s in ("pnet", "rnet", "onet")]
    folders = {(d.root, d.wider) for d in stages}
    if len(folders) != 1:
        return None, []
    n = min(d.wider_images for d in stages)
    held = np.ones(n, bool)
    for d in stages:
        train_idx, _ = sp.split(d.wider_images, d.val_every)
        held[train_idx[train_idx < n]] = False
    root, wider = folders.pop()
    return Path(root) / wider, np.flatnonzero(held)


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def calibrated(params: dict, thresholds, point: float) -> dict:
    """``params`` with R-Net's and O-Net's face logit raised so that the detector's thresholds
    (``thresholds[1]`` / ``thresholds[2]``) pass exactly the windows the raw network scores at
    least ``point``: the face bias (index 1 of ``face``) gains ``logit(threshold) - logit(point)``
    (the face probability is ``sigmoid(l_face - l_nonface)``). Other layers are shared, not copied."""
    out = dict(params)
    for stage, threshold in (("rnet", thresholds[1]), ("onet", thresholds[2])):
        face = dict(out[stage]["face"])
        bias = np.array(face["bias"], np.float32)
        bias[1] += np.float32(_logit(float(threshold)) - _logit(point))
        out[stage] = dict(out[stage], face=dict(face, bias=bias))
    return out


def _calibrate(cs: CascadeSettings, workdir: Path, progress: bool) -> dict:
    """Choose R-Net's and O-Net's operating point on the validation images and write the cascade.

    Networks trained here score faces lower than the authors' (their recall at the
    detector's 0.7 is well under theirs: the stage diagnostics), so at the detector's
    default thresholds the cascade drops faces it ranks well. For each point ``t`` of
    ``config.calibration``, the cascade with R-Net and O-Net shifted by
    :func:`calibrated` (the default thresholds then act as ``t`` on the raw networks)
    is scored on the training images no stage trained on (:func:`held_out_images`);
    the point with the best mean of AP ≥ 20 and ≥ 40 px wins (the first on ties) and
    ``<workdir>/params.msgpack`` gets those params. Nothing here looks at the
    evaluation set. Without points or held-out images the cascade is written as trained.
    """
    from mtcnn_jax import pretrained  # noqa: PLC0415

    raw = trained_params(workdir, ("pnet", "rnet", "onet"))
    wider_dir, idx = held_out_images(cs)
    if not cs.calibration or not len(idx):
        pretrained.save_params(workdir / "params.msgpack", raw)
        why = "no operating points in config.calibration" if not cs.calibration else "no held-out images"
        return {"operating_point": None, "skipped": why}
    scores = {}
    for t in cs.calibration:
        ap = evaluate_cascade(calibrated(raw, cs.eval.thresholds, t), cs.eval, progress, wider_dir, idx)["ap"]
        scores[t] = ap
    best = max(cs.calibration, key=lambda t: (scores[t][">=20"] + scores[t][">=40"]) / 2)
    pretrained.save_params(workdir / "params.msgpack", calibrated(raw, cs.eval.thresholds, best))
    return {"operating_point": best, "validation_ap": {str(t): ap for t, ap in scores.items()},
            "face_bias_shift": {s: _logit(float(th)) - _logit(best)
                                for s, th in (("rnet", cs.eval.thresholds[1]), ("onet", cs.eval.thresholds[2]))},
            "images": int(len(idx))}


def _eval(cs: CascadeSettings, workdir: Path, summary: dict, progress: bool) -> dict:
    weights = Path(workdir) / "params.msgpack"
    out = evaluate_cascade(weights, cs.eval, progress)
    wider_dir, idx = held_out_images(cs)
    if len(idx):  # the validation AP: training images no stage saw
        v = evaluate_cascade(weights, cs.eval, progress, wider_dir=wider_dir, indices=idx)
        out["validation"] = {"ap": v["ap"], "images": v["images"], "wider": str(wider_dir)}
    out["stages"] = stage_diagnostics(cs, workdir, summary, progress)
    files.write_json(Path(workdir) / "eval" / "metrics.json", out, sort_keys=True)
    return out


def summary_lines(summary: dict) -> list:
    """The printed summary of a recipe run: stage times, the cascade's AP, and the stage diagnostics."""
    times = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in summary.items() if isinstance(v, dict))
    ev = summary["eval"]
    lines = [f"stage times: {times}; total {summary['total_seconds']:.0f} s",
             "WIDER AP: " + ", ".join(f"{k} {v:.3f}" for k, v in ev["ap"].items())]
    cal = summary.get("calibrate") or {}
    if cal.get("operating_point") is not None:
        lines.append(f"calibrated R-Net / O-Net: the default thresholds act as {cal['operating_point']:g} on the "
                     f"raw networks (chosen on {cal['images']} held-out training images from "
                     f"{', '.join(f'{float(t):g}' for t in cal['validation_ap'])})")
    elif cal:
        lines.append(f"calibration skipped: {cal.get('skipped')}")
    if ev.get("validation"):
        val = ev["validation"]
        lines.append(f"validation AP ({val['images']} held-out training images): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in val["ap"].items()))
    names = {"pnet": "trained P + authors' R/O", "rnet": "authors' P + trained R + authors' O",
             "onet": "authors' P/R + trained O"}
    for stage, d in (ev.get("stages") or {}).items():
        held = "" if d["recall"] is None else (f"; held-out {d['held_out']}: recall {d['recall']:.3f} at "
                                               f"{d['threshold']:g}, accuracy {d['accuracy']:.3f}")
        lines.append(f"{stage}: AP {', '.join(f'{k} {v:.3f}' for k, v in d['ap_in_authors_cascade'].items())} "
                     f"as {names[stage]}{held}")
    return lines


def input_folders(cs: CascadeSettings) -> list:
    """The training and evaluation data folders a cascade reads (its workdir may not lie inside one)."""
    from mtcnn_jax.runs import data_folders  # noqa: PLC0415

    folders = [f for stage in ("pnet", "rnet", "onet") for f in data_folders(cs.stage(stage).data)]
    return folders + [Path(cs.eval.root), Path(cs.eval.root) / cs.eval.wider]


def train_cascade(config, workdir, progress: bool = True, log: Optional[Callable[[str], None]] = print,
                  stop_after: Optional[str] = None, overwrite: bool = False) -> dict:
    """Run (or resume) every step of the recipe in ``workdir``; returns ``summary.json``'s content.

    ``config``: the cascade's ``ml_collections.ConfigDict`` (``configs/cascade.py``),
    checked and converted here (:func:`cascade_settings`). ``stop_after``: stop
    once that step is done (testing, or splitting a long run). ``workdir`` is
    checked first (:func:`mtcnn_jax.runs.check_workdir`: a writable folder,
    outside the data folders unless ``overwrite``).
    """
    from mtcnn_jax.runs import check_interrupt, check_workdir, interruptible  # noqa: PLC0415

    cs = cascade_settings(config)
    workdir = check_workdir(workdir, input_folders(cs), overwrite)
    check_step_settings(config, workdir)
    files.write_atomically(workdir / "config.json", config.to_json(indent=2) + "\n")
    log = log or (lambda s: None)
    summary = {}

    def run_step(step: str) -> None:
        """Run ``step`` and record it as done (its ``done.json`` written last, atomically)."""
        (workdir / step).mkdir(parents=True, exist_ok=True)
        files.write_json(workdir / step / SETTINGS_FILE, step_settings(config, step), sort_keys=True)
        t0 = time.time()
        result = runners[step]()
        result["seconds"] = time.time() - t0
        files.write_json(workdir / step / "done.json", result, sort_keys=True)
        summary[step] = result

    def remake(step: str) -> Callable[[], None]:
        def go() -> None:  # no longer done until it is made again
            (workdir / step / "done.json").unlink(missing_ok=True)
            run_step(step)
        return go

    runners = {
        "pnet_samples": lambda: _pnet_samples(cs, workdir, progress),
        "pnet": lambda: _train(cs, workdir, "pnet", progress, remake("pnet_samples"), overwrite),
        "rnet_samples": lambda: _mine_samples(cs, workdir, "rnet", progress),
        "rnet": lambda: _train(cs, workdir, "rnet", progress, remake("rnet_samples"), overwrite),
        "onet_samples": lambda: _mine_samples(cs, workdir, "onet", progress),
        "onet": lambda: _train(cs, workdir, "onet", progress, remake("onet_samples"), overwrite),
        "calibrate": lambda: _calibrate(cs, workdir, progress),
        "eval": lambda: _eval(cs, workdir, summary, progress),
    }
    with interruptible():  # a Ctrl-C lost inside a gc callback still stops the recipe
        for step in STEPS:
            check_interrupt()
            done = read_done(workdir, step) if is_done(workdir, step) else None
            if step == "calibrate" and not (workdir / "params.msgpack").is_file():
                done = None  # the cascade it wrote is gone: write it again
            elif is_done(workdir, step) and done is None:
                print(f"mtcnn-jax: {workdir / step / 'done.json'} is damaged: running {step} again "
                      "(what it finished is reused)", file=sys.stderr, flush=True)
            if done is not None:
                summary[step] = done
                log(f"{step}: done before ({summary[step]['seconds']:.0f} s), skipped")
            else:
                log(f"{step}: running")
                run_step(step)
                log(f"{step}: finished in {summary[step]['seconds']:.0f} s")
            if step == stop_after:
                break
    summary["total_seconds"] = sum(v["seconds"] for v in summary.values() if isinstance(v, dict))
    files.write_json(workdir / "summary.json", summary, sort_keys=True)
    return summary
