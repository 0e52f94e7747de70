"""Sweeps: one training run per point of a grid, a results table and plots.

A sweep file (big_vision style, e.g. ``configs/sweeps/ohem.py``) holds two functions:

* ``get_config(arg=None)`` — the base training config (usually one of
  ``configs/{pnet,rnet,onet}.py`` with the variant ``arg``, so
  ``configs/sweeps/ohem.py:runlocal`` sweeps around ``configs/onet.py:runlocal``);
* ``sweep(arg=None)`` — the grid: a list of override dicts with dotted config
  keys, e.g. ``[{"ohem_ratio": 1.0}, {"ohem_ratio": 0.7}]``. The first dict's key
  order is the plots' order: the first key is the x axis, the others label curves;

and may hold:

* ``seeds(arg=None)`` — the seeds every grid point runs with (``--seeds N``
  overrides it): each point's overrides get a last key ``seed``, and
  ``config.data.seed`` is set to the first seed, so that all seeds of a point
  train and are scored on the same cut windows and differ in init, batch order
  and augmentation;
* ``reference(arg=None)`` — the grid point the others are compared with (default
  the first);
* ``cascade_eval(arg=None)`` — WIDER eval settings (``EvalSettings`` fields but
  ``root``): each finished run's stage is then also scored inside the authors'
  cascade (``ap_all`` / ``ap_20`` / ``ap_40``, :func:`cascade_ap`).

:func:`run_sweep` trains every point in its own subfolder of the sweep's workdir,
named from its overrides (``ohem_ratio=0.7``, ``alpha.landmarks=0_alpha.box=0.5``,
``ohem_ratio=0.7_seed=3``). Points that differ only in seed, α or OHEM ratio train
together as replicas of one compiled program (:mod:`mtcnn_jax.replicas`; the group's
samples and stacked checkpoints in ``replicas-<hash>/``, each replica's log and
result in its own folder); ``sequential=True`` trains them one by one with
:func:`mtcnn_jax.train.train_and_evaluate`. A finished run leaves ``result.json``
(its final held-out metrics) and is skipped when the sweep is run again; a run
or group that was interrupted (even by SIGKILL) resumes from its latest
checkpoint. Runs on the same cut windows start from a hard-linked copy of another
run's ``samples/`` folder (:func:`mtcnn_jax.data.store.link_sets`; the trainer
checks the settings recorded with them and cuts again when they do not match).

After every run or group the sweep (re)writes, in its workdir:

* ``results.csv`` — one row per run (per replica: a ``seed`` column with seeds):
  the swept values, the status (``done`` or the step reached), the final held-out
  metrics;
* ``results.md`` — the same table; with seeds, first each grid point's mean ±
  half-width of the 95% confidence interval (Student's t over the seeds) and each
  point's difference from the reference with Welch's t-test and whether it is
  significant at 0.05 after Holm's correction over the grid (:func:`compare`);
* ``results.png`` — each held-out metric against the first swept key (one curve
  per value of the other keys; with seeds the mean, and the interval as two thin
  curves of the same colour);
* ``curves.png`` — held-out metrics against the training step, one curve per run
  (with seeds, per grid point: the mean over its seeds).

The plots are drawn with :mod:`mtcnn_jax.evaluation.plots`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from mtcnn_jax import config_utils, files
from mtcnn_jax.errors import UserError
from mtcnn_jax.losses import EVAL_METRICS
from mtcnn_jax.metrics_log import read_metrics

#: Held-out metrics of :func:`mtcnn_jax.losses.finish_eval`, in table order.
METRICS = EVAL_METRICS
#: The metrics drawn against the training step in ``curves.png``.
CURVE_METRICS = ("det", "accuracy", "box_error", "landmark_error")
#: WIDER AP (all / ≥ 20 / ≥ 40 px) of the authors' cascade with the run's stage swapped in, for sweeps
#: whose file has ``cascade_eval(arg)`` (:func:`cascade_ap`).
CASCADE_METRICS = ("ap_all", "ap_20", "ap_40")
RESULT = "result.json"
#: The key of a grid point's seed when a sweep has seeds (the ``seed`` column of ``results.csv``).
SEED = "seed"


class Point(NamedTuple):
    """One grid point: its folder name, its overrides and the full config it trains."""

    name: str
    overrides: dict
    config: Any  # ml_collections.ConfigDict


# ----------------------------------------------------------------------------- loading


@dataclasses.dataclass(frozen=True)
class SweepFile:
    """A sweep file loaded once: ``spec`` as given (``"path/to/sweep.py[:arg]"``), its module and ``arg``
    (None when the spec names none). The helpers below take either this or the spec text."""

    spec: str
    module: Any
    arg: Optional[str]


def open_sweep(spec: "str | SweepFile") -> SweepFile:
    """Load the sweep file ``spec`` names (a :class:`SweepFile` is returned as is, so that a caller
    that runs several helpers loads the file once and every helper sees the same module)."""
    if isinstance(spec, SweepFile):
        return spec
    path, _, arg = spec.partition(":")
    module = config_utils.load_module(path, "sweep")
    for fn in ("get_config", "sweep"):
        if not callable(getattr(module, fn, None)):
            raise UserError(f"{path}: no {fn}(arg) function (a sweep file needs get_config and sweep)")
    return SweepFile(spec, module, arg or None)


def _text(value) -> str:
    """A value as :func:`mtcnn_jax.config_utils.apply_override` parses it back."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return repr(tuple(value))
    return repr(value)


def _fmt(value) -> str:
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_name(overrides: dict) -> str:
    """Folder name of a grid point: ``key=value`` joined by ``_``, e.g. ``alpha.box=0.5_ohem_ratio=1``.

    Only letters, digits and ``. = + -`` are kept (others become ``-``), so the folder
    always lies directly inside the sweep's workdir.
    """
    name = "_".join(f"{k}={_fmt(v)}" for k, v in overrides.items())
    name = re.sub(r"[^A-Za-z0-9.=+\-_]", "-", name).strip(".")
    return name or "base"


def sweep_seeds(spec: "str | SweepFile", n_seeds: Optional[int] = None) -> Optional[list[int]]:
    """The seeds of ``spec``'s sweep: ``n_seeds`` consecutive ones from the base config's seed when given,
    else the sweep file's ``seeds(arg)`` when it has one, else None (one run per grid point, no ``seed`` key)."""
    sf = open_sweep(spec)
    if n_seeds is not None:
        if n_seeds < 1:
            raise UserError(f"--seeds must be ≥ 1, got {n_seeds}")
        base = int(sf.module.get_config(sf.arg).seed)
        return list(range(base, base + n_seeds))
    if not callable(getattr(sf.module, "seeds", None)):
        return None
    seeds = [int(s) for s in sf.module.seeds(sf.arg)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"{sf.spec}: seeds() must return distinct integers")
    return seeds


def sweep_reference(spec: "str | SweepFile") -> Optional[dict]:
    """The grid point the others are compared with in ``results.md``: the sweep file's ``reference(arg)``
    (swept values, e.g. ``{"ohem_ratio": 1.0}``), or None (the first grid point)."""
    sf = open_sweep(spec)
    return dict(sf.module.reference(sf.arg)) if callable(getattr(sf.module, "reference", None)) else None


def sweep_cascade_eval(spec: "str | SweepFile", root: str):
    """The :class:`mtcnn_jax.settings.EvalSettings` of the sweep file's ``cascade_eval(arg)`` (a dict of
    its fields but ``root``, which is the runs' ``data.root``), or None when the file has none."""
    from mtcnn_jax.settings import EvalSettings  # noqa: PLC0415

    sf = open_sweep(spec)
    fn = getattr(sf.module, "cascade_eval", None)
    fields = fn(sf.arg) if callable(fn) else None
    return None if fields is None else EvalSettings(root=str(root), **dict(fields))


def cascade_ap(stage: str, params, eval_settings, progress: bool = False) -> dict:
    """``ap_all`` / ``ap_20`` / ``ap_40``: WIDER AP of the authors' cascade with ``stage``'s params
    replaced by ``params`` (:func:`mtcnn_jax.recipe.evaluate_cascade` on ``eval_settings``)."""
    from mtcnn_jax import pretrained, recipe  # noqa: PLC0415

    weights = dict(pretrained.load_pretrained(), **{stage: params})
    ap = recipe.evaluate_cascade(weights, eval_settings, progress)["ap"]
    return {"ap_all": float(ap["all"]), "ap_20": float(ap[">=20"]), "ap_40": float(ap[">=40"])}


def _same_value(value, text: str) -> bool:
    """Whether the grid value ``value`` is what ``text`` (from ``--only``) names: the same folder-name
    text (``1`` for 1.0), or the same number."""
    if _fmt(value) == text:
        return True
    try:
        return not isinstance(value, (bool, str)) and float(value) == float(text)
    except (TypeError, ValueError):
        return False


def _is_point(values: dict, point: dict) -> bool:
    """Whether a grid point's swept ``values`` are those of ``point`` (e.g. a sweep's reference)."""
    return all(values.get(k) == v for k, v in point.items())


def select_grid(grid: Sequence[dict], only: Sequence[tuple[str, str]], spec: str = "the sweep") -> list[dict]:
    """The grid points whose swept values match every ``(KEY, "V1,V2,...")`` of ``only`` (as from
    ``--only KEY=V1,V2``), in grid order. A key the grid does not sweep, or a value no point has,
    is a :class:`UserError` that lists what the grid has."""
    kept = list(grid)
    for key, text in only:
        have = [g[key] for g in grid if key in g]
        if not have:
            swept = sorted({k for g in grid for k in g})
            raise UserError(f"{spec}: --only {key}=...: the grid does not sweep {key!r} (it sweeps {', '.join(swept)})")
        wanted = [t.strip() for t in text.split(",") if t.strip()]
        for t in wanted:
            if not any(_same_value(v, t) for v in have):
                values = ", ".join(dict.fromkeys(_fmt(v) for v in have))
                raise UserError(f"{spec}: --only {key}={t}: no grid point has that value (it has {values})")
        kept = [g for g in kept if key in g and any(_same_value(g[key], t) for t in wanted)]
    return kept


def load_sweep(spec: "str | SweepFile", overrides: Sequence[tuple[str, str]] = (),
               n_seeds: Optional[int] = None, only: Sequence[tuple[str, str]] = ()) -> list[Point]:
    """``"path/to/sweep.py[:arg]"`` → the grid points, each with its validated config.

    ``overrides`` (``[(KEY, VALUE-text), ...]``, as from ``--config.KEY=VALUE``) apply
    to every point before the point's own overrides. ``only`` (``[(KEY, "V1,V2"), ...]``,
    as from ``--only``) keeps the grid points with those swept values (:func:`select_grid`);
    it must keep the sweep's reference point (:func:`sweep_reference`), which ``results.md``
    compares the others with.
    With seeds (:func:`sweep_seeds`: ``n_seeds``, or the file's ``seeds(arg)``) every
    grid point is run once per seed: its overrides get a last key ``seed`` (folders
    ``ohem_ratio=0.7_seed=3``).
    """
    sf = open_sweep(spec)
    spec, module, arg = sf.spec, sf.module, sf.arg
    try:
        grid = module.sweep(arg)
    except ValueError as err:
        raise UserError(f"{spec}: {str(err).splitlines()[0]}") from None
    if not isinstance(grid, (list, tuple)) or not grid or not all(isinstance(g, dict) and g for g in grid):
        raise UserError(f"{spec}: sweep() must return a non-empty list of non-empty override dicts")
    if only:
        grid = select_grid(grid, only, spec)
        reference = sweep_reference(sf)
        if reference is not None and not any(_is_point(g, reference) for g in grid):
            ref = "_".join(f"{k}={_fmt(v)}" for k, v in reference.items())
            raise UserError(f"{spec}: --only leaves out the reference point {ref}, which results.md compares with")
    seeds = sweep_seeds(sf, n_seeds)
    if seeds is not None:
        if any(SEED in g for g in grid):
            raise UserError(f"{spec}: the grid sets {SEED!r}; give seeds with seeds() or --seeds instead")
        grid = [{**g, SEED: s} for g in grid for s in seeds]
    points, seen = [], {}
    for overrides_of_point in grid:
        try:
            config = module.get_config(arg)
        except ValueError as err:
            raise UserError(f"{spec}: {str(err).splitlines()[0]}") from None
        for key, text in overrides:
            config_utils.apply_override(config, key, text)
        if seeds is not None and config.data.seed < 0:  # every seed on the same windows (the first seed's cut)
            config.data.seed = seeds[0]
        for key, value in overrides_of_point.items():
            config_utils.apply_override(config, str(key), _text(value))
        config_utils.validate(config)
        name = run_name(overrides_of_point)
        if name in seen:
            raise UserError(f"{spec}: two grid points share the folder name {name!r}")
        seen[name] = True
        points.append(Point(name, dict(overrides_of_point), config))
    return points


# ----------------------------------------------------------------------------- running


def _config_json(config) -> Any:
    return json.loads(config.to_json())


def read_result(rundir: Path) -> Optional[dict]:
    """The ``result.json`` of a finished run, or None."""
    try:
        return json.loads((Path(rundir) / RESULT).read_text())
    except (OSError, ValueError):
        return None


def _check_same_run(point: Point, rundir: Path) -> None:
    """Refuse to resume or skip a folder that holds a run of another config."""
    try:
        previous = json.loads((rundir / "config.json").read_text())
    except (OSError, ValueError):
        return
    if previous != _config_json(point.config):
        raise UserError(
            f"{rundir} holds a run with another config (grid, variant or --config overrides changed): "
            "use another --workdir or remove that folder"
        )


def _share_samples(workdir: Path, rundir: Path, names: Sequence[str], samples_dir: str) -> None:
    """Start ``rundir`` with a hard-linked copy of another run's cut samples (checked by the trainer)."""
    from mtcnn_jax.data.store import link_sets  # noqa: PLC0415

    if (rundir / samples_dir).exists():
        return
    for name in names:
        if link_sets(workdir / name / samples_dir, rundir / samples_dir):
            return


def replica_groups(settings: Sequence, max_replicas: int = 0) -> list[list[int]]:
    """Indices of the points that train together as replicas (:mod:`mtcnn_jax.replicas`): each point joins
    the first group whose settings it can share (all but seed, α and OHEM ratio), groups of at most
    ``max_replicas`` (0: no limit), in grid order."""
    from mtcnn_jax.replicas import can_share  # noqa: PLC0415

    groups: list[list[int]] = []
    for i, s in enumerate(settings):
        for g in groups:
            if can_share(settings[g[0]], s) and (not max_replicas or len(g) < max_replicas):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def group_name(names: Sequence[str]) -> str:
    """The folder of a replica group (its samples and stacked checkpoints): ``replicas-<hash of its members>``."""
    return "replicas-" + hashlib.sha1("\n".join(names).encode()).hexdigest()[:10]


def _finished(point: Point, rundir: Path) -> bool:
    result = read_result(rundir)
    return result is not None and result.get("config") == _config_json(point.config)


def _write_result(point: Point, rundir: Path, step: int, metrics: dict, seconds: float, replicas: int = 1) -> None:
    files.write_json(rundir / RESULT, {
        "name": point.name, "overrides": point.overrides, "step": step,
        "metrics": {k: float(metrics[k]) for k in (*METRICS, *CASCADE_METRICS) if k in metrics}, "seconds": round(seconds, 1), "replicas": replicas,
        "config": _config_json(point.config),
    })


def run_sweep(
    spec: "str | SweepFile",
    workdir,
    overrides: Sequence[tuple[str, str]] = (),
    max_steps: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    n_seeds: Optional[int] = None,
    sequential: bool = False,
    max_replicas: int = 0,
    split_cpu: bool = False,
    only: Sequence[tuple[str, str]] = (),
) -> list[dict]:
    """Train every grid point of ``spec`` under ``workdir``; returns the table rows.

    Points that differ only in seed, α or OHEM ratio train together as replicas
    in one compiled program (:func:`replica_groups`, :func:`mtcnn_jax.replicas.train_replicas`;
    the group's samples and stacked checkpoints in ``workdir/replicas-<hash>/``,
    each point's log and ``result.json`` in its own folder); ``sequential`` trains
    each point alone with :func:`mtcnn_jax.train.train_and_evaluate` instead.
    ``n_seeds``, ``only``: see :func:`load_sweep`.

    Finished runs (``<run>/result.json`` with the same config) are skipped (a
    group whose members have all finished); interrupted ones resume from their
    checkpoints. ``max_steps`` caps the steps each run takes in this call (a run
    stopped by it stays unfinished and resumes later). The results files are
    rewritten after every run or group (:func:`write_results`). Each point's
    config is turned into :class:`mtcnn_jax.settings.TrainSettings` here, before
    anything trains. ``workdir`` is checked first
    (:func:`mtcnn_jax.runs.check_workdir`: a writable folder, outside every run's
    training data unless ``overwrite``). Interrupted, a sweep keeps its finished
    runs and the checkpoints of the one in progress; the same call resumes it.
    ``split_cpu`` (the command's choice): when a group trains several replicas, JAX gets one CPU
    device per core so that they split over the cores (:func:`mtcnn_jax.replicas.split_cpu_devices`;
    nothing once JAX has started); runs alone keep one device, as ``train``'s.
    """
    from mtcnn_jax import runs, train  # noqa: PLC0415 (jax)
    from mtcnn_jax.settings import TrainSettings  # noqa: PLC0415

    sf = open_sweep(spec)  # loaded once: every helper below sees the same module
    points = load_sweep(sf, overrides, n_seeds, only)
    reference = sweep_reference(sf)
    settings = [TrainSettings.from_config(p.config) for p in points]
    cascade = sweep_cascade_eval(sf, settings[0].data.root)
    workdir = runs.check_workdir(workdir, [f for s in settings for f in train.input_folders(s)], overwrite)
    files.write_json(workdir / "sweep.json", {"spec": sf.spec, "overrides": [list(o) for o in overrides],
                                             "only": [list(o) for o in only], "grid": [p.overrides for p in points]},
                     indent=2)
    names = [p.name for p in points]
    for point in points:  # refuse before training anything
        _check_same_run(point, workdir / point.name)
    groups = [[i] for i in range(len(points))] if sequential else replica_groups(settings, max_replicas)
    if split_cpu and any(len(g) > 1 for g in groups):
        from mtcnn_jax.replicas import split_cpu_devices  # noqa: PLC0415

        split_cpu_devices()
    folders = [names[g[0]] if len(g) == 1 else group_name([names[i] for i in g]) for g in groups]
    with runs.interruptible():  # a Ctrl-C lost inside a gc callback still stops the sweep
        for j, (group, folder) in enumerate(zip(groups, folders)):
            runs.check_interrupt()
            label = names[group[0]] if len(group) == 1 else f"{folder} ({len(group)} replicas: {names[group[0]]} ...)"
            where = f"[{j + 1}/{len(groups)}] {label}"
            if all(_finished(points[i], workdir / names[i]) for i in group):
                log(f"{where}: finished before, skipped")
                continue
            log(f"{where}: training")
            _share_samples(workdir, workdir / folder, folders[:j][::-1] + folders[j + 1 :], train.SAMPLES_DIR)
            t0 = time.time()
            try:
                if len(group) == 1:
                    state, metrics = train.train_and_evaluate(settings[group[0]], workdir / folder, progress=progress,
                                                              max_steps=max_steps, overwrite=overwrite)
                    step, results = int(state.step), [metrics]
                else:
                    from mtcnn_jax.replicas import train_replicas  # noqa: PLC0415

                    state, results = train_replicas([settings[i] for i in group], workdir / folder,
                                                    [workdir / names[i] for i in group], progress=progress,
                                                    max_steps=max_steps, overwrite=overwrite)
                    step = int(np.asarray(jax_get(state.step))[0])
            except ValueError as err:
                raise UserError(f"{label}: {str(err).splitlines()[0]}") from None
            total = points[group[0]].config.total_steps
            if step >= total and cascade is not None:  # each run's stage inside the authors' cascade
                from mtcnn_jax.replicas import unstack  # noqa: PLC0415

                host = jax_get(state.params)
                per_run = [host] if len(group) == 1 else unstack(host, len(group))
                for n, (i, params) in enumerate(zip(group, per_run)):
                    results[n] = dict(results[n], **cascade_ap(settings[i].stage, params, cascade))
                    log(f"  {names[i]}: AP in the authors' cascade " +
                        " / ".join(f"{results[n][k]:.4f}" for k in CASCADE_METRICS))
            if step >= total:
                for i, metrics in zip(group, results):
                    _write_result(points[i], workdir / names[i], step, metrics, time.time() - t0, len(group))
                    log(f"  {names[i]}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in (*METRICS, *CASCADE_METRICS)
                                                   if k in metrics))
                log(f"{where}: done in {time.time() - t0:.0f} s")
            else:
                log(f"{where}: stopped at step {step} of {total}")
            write_results(workdir, points, reference)
    return write_results(workdir, points, reference)


def jax_get(x):
    """``jax.device_get`` (imported here so that loading a sweep needs no JAX)."""
    import jax  # noqa: PLC0415

    return jax.device_get(x)


# ----------------------------------------------------------------------------- results


def _last_step(rundir: Path) -> int:
    """The last checkpoint of a run; for a replica (checkpointed with its group), its last logged step."""
    ckpts = rundir / "checkpoints"
    steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
    if not steps and (rundir / "metrics.jsonl").is_file():
        for line in (rundir / "metrics.jsonl").read_text(errors="replace").splitlines():
            try:
                steps.append(int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                continue
    return max(steps, default=0)


def metrics_of(rows: Sequence[dict]) -> tuple:
    """The metric columns of ``rows``: :data:`METRICS`, and :data:`CASCADE_METRICS` when a run has them."""
    return (*METRICS, *CASCADE_METRICS) if any(r.get(CASCADE_METRICS[0]) is not None for r in rows) else METRICS


def collect(workdir, points: Sequence[Point]) -> list[dict]:
    """One row per grid point: ``run``, the swept values, ``status``, ``step``, the metrics
    (None where the run has not finished)."""
    workdir = Path(workdir)
    rows = []
    for p in points:
        result = read_result(workdir / p.name)
        done = result is not None and result.get("config") == _config_json(p.config)
        row = {"run": p.name, **p.overrides}
        row["status"] = "done" if done else ("not started" if not (workdir / p.name).exists() else "unfinished")
        row["step"] = result["step"] if done else _last_step(workdir / p.name)
        for k in (*METRICS, *CASCADE_METRICS):
            row[k] = result["metrics"].get(k) if done else None
        if all(row[k] is None for k in CASCADE_METRICS):
            for k in CASCADE_METRICS:
                del row[k]
        rows.append(row)
    return rows


def swept_keys(points: Sequence[Point]) -> list[str]:
    keys = []
    for p in points:
        keys += [k for k in p.overrides if k not in keys]
    return keys


def _over_seeds(keys: Sequence[str]) -> bool:
    """Whether the runs are grid points × seeds (a ``seed`` key beside others), so that results are
    summarized per grid point; a grid of seeds alone is shown run by run."""
    return SEED in keys and len(keys) > 1


def _cell(v) -> str:
    return "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def to_markdown(rows: Sequence[dict], keys: Sequence[str], reference: Optional[dict] = None) -> str:
    """The per-run table; with seeds (a ``seed`` key) first each grid point's mean ± 95% interval
    (:func:`summarize`) and the differences from ``reference`` (:func:`compare`)."""
    cols = ["run", *keys, "status", "step", *metrics_of(rows)]
    lines = []
    if SEED in keys:
        lines += _summary_markdown(rows, keys, reference)
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- seeds: intervals and tests


class Summary(NamedTuple):
    """One grid point over its seeds: the swept values (no seed), ``n`` finished seeds, and per metric
    the mean and the half-width of its 95% confidence interval (Student's t, n − 1 degrees of freedom;
    None with fewer than 2 seeds)."""

    point: dict
    n: int
    mean: dict
    half: dict
    values: dict


def _grid_key(row: dict, keys: Sequence[str]) -> tuple:
    return tuple(row.get(k) for k in keys if k != SEED)


def summarize(rows: Sequence[dict], keys: Sequence[str], metrics: Optional[Sequence[str]] = None) -> list[Summary]:
    """The finished rows grouped by grid point (every swept key but ``seed``), in grid order
    (``metrics``: default :func:`metrics_of` the rows)."""
    from scipy import stats  # noqa: PLC0415 (a dependency of JAX)

    metrics = metrics_of(rows) if metrics is None else metrics
    groups: dict = {}
    for r in rows:
        groups.setdefault(_grid_key(r, keys), []).append(r)
    out = []
    for key, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        mean, half, values = {}, {}, {}
        for m in metrics:
            v = np.array([r[m] for r in done], float)
            values[m] = v
            mean[m] = float(np.mean(v)) if len(v) else None
            half[m] = (float(stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v)))
                       if len(v) >= 2 else None)
        out.append(Summary(dict(zip([k for k in keys if k != SEED], key)), len(done), mean, half, values))
    return out


def compare(summaries: Sequence[Summary], reference: Optional[dict] = None, metrics: Optional[Sequence[str]] = None,
            level: float = 0.05) -> list[dict]:
    """Each grid point against ``reference`` (a grid point's swept values; default the first point), per metric:
    the difference of means, Welch's two-sided t-test p value, and whether it is significant at ``level``
    after Holm's correction over all the comparisons of that metric. Points with < 2 seeds are left out."""
    from scipy import stats  # noqa: PLC0415

    metrics = list(summaries[0].mean) if metrics is None else metrics
    ref = summaries[0] if reference is None else next(
        (s for s in summaries if _is_point(s.point, reference)), None)
    if ref is None:
        raise UserError(f"reference point {reference} is not in the grid")
    out = []
    for m in metrics:
        tests = []
        for s in summaries:
            if s is ref or s.n < 2 or ref.n < 2:
                continue
            a, b = s.values[m], ref.values[m]
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if np.ptp(np.concatenate([a, b])) > 0 else 1.0
            tests.append({"metric": m, "point": s.point, "reference": ref.point,
                          "diff": float(np.mean(a) - np.mean(b)), "p": p if np.isfinite(p) else 1.0})
        # Holm: the i-th smallest p (0-based) of n is compared with level / (n - i), stopping at the first failure.
        order = sorted(range(len(tests)), key=lambda i: tests[i]["p"])
        rejecting = True
        for rank, i in enumerate(order):
            rejecting = rejecting and tests[i]["p"] <= level / (len(tests) - rank)
            tests[i]["significant"] = rejecting
        out += tests
    return out


def _point_text(point: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in point.items()) or "base"


def _summary_markdown(rows: Sequence[dict], keys: Sequence[str], reference: Optional[dict]) -> list[str]:
    summaries = summarize(rows, keys)
    metrics = metrics_of(rows)
    grid_keys = [k for k in keys if k != SEED]
    lines = ["Mean ± half-width of the 95% confidence interval over the seeds (Student's t), per grid point:", "",
             "| " + " | ".join([*grid_keys, "seeds", *metrics]) + " |", "|" + "---|" * (len(grid_keys) + 1 + len(metrics))]
    for s in summaries:
        cells = [_fmt(s.point.get(k)) for k in grid_keys] + [str(s.n)]
        cells += ["" if s.mean[m] is None else (f"{s.mean[m]:.4f}" + ("" if s.half[m] is None else f" ± {s.half[m]:.4f}"))
                  for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    tests = compare(summaries, reference) if len(summaries) > 1 else []
    if tests:
        ref = _point_text(tests[0]["reference"])
        lines += ["", f"Differences from {ref} (Welch's t-test, two-sided; significant: p below 0.05 after Holm's "
                  "correction over the grid, per metric):", "",
                  "| point | " + " | ".join(metrics) + " |", "|" + "---|" * (1 + len(metrics))]
        for s in summaries:
            by_metric = {t["metric"]: t for t in tests if t["point"] == s.point}
            if not by_metric:
                continue
            cells = [f"{by_metric[m]['diff']:+.4f} (p {by_metric[m]['p']:.3f}{', significant' if by_metric[m]['significant'] else ''})"
                     for m in metrics]
            lines.append(f"| {_point_text(s.point)} | " + " | ".join(cells) + " |")
    return lines + ["", "Every run:", ""]


def to_csv(rows: Sequence[dict], keys: Sequence[str]) -> str:
    cols = ["run", *keys, "status", "step", *metrics_of(rows)]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in cols])
    return out.getvalue()


def _range(values: Sequence[float], legend_rows: int = 0, legend: str = "", height: int = 300) -> tuple:
    """Axis range around ``values`` with 8% margins, plus room for a legend of
    ``legend_rows`` rows at the ``legend`` side ("upper ..." / "lower ...") of a panel
    ``height`` pixels high, so that it does not hide the curves."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    lo, hi = (float(np.min(values)), float(np.max(values))) if values.size else (0.0, 1.0)
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1e-3)
    lo, hi = lo - pad, hi + pad
    if legend_rows:
        share = min(0.6, (28 + 18 * legend_rows) / max(1, height - 95))  # legend height / plot height
        extra = (hi - lo) * share / (1 - share)
        lo, hi = (lo, hi + extra) if legend.startswith("upper") else (lo - extra, hi)
    return lo, hi


def _tile(images: Sequence[np.ndarray], columns: int) -> np.ndarray:
    h, w = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    canvas = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return canvas


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()


def _legend(metric: str) -> str:
    """Legend corner: away from where the curves of ``metric`` usually end up."""
    return "lower right" if metric in ("accuracy", "recall") else "upper right"


def results_plot(rows: Sequence[dict], keys: Sequence[str], metrics: Optional[Sequence[str]] = None,
                 panel: tuple = (400, 300)) -> Optional[np.ndarray]:
    """Each metric of the finished rows against ``keys[0]`` (one curve per value of the
    other keys), panels tiled 4 per row. uint8 RGB, or None when nothing has finished."""
    from mtcnn_jax.evaluation import plots  # noqa: PLC0415

    metrics = metrics_of(rows) if metrics is None else metrics
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return None
    over_seeds = _over_seeds(keys)
    if over_seeds:  # one point per grid point: the mean over its seeds, its 95% interval as error bars
        keys = [k for k in keys if k != SEED]
        summaries = [s for s in summarize(rows, [*keys, SEED], metrics) if s.n]
        done = [{**s.point, "status": "done", **s.mean, **{f"{m}/err": s.half[m] or 0.0 for m in metrics}}
                for s in summaries]
    xkey, others = keys[0], list(keys[1:])
    numeric = all(isinstance(r[xkey], (int, float)) and not isinstance(r[xkey], bool) for r in done)
    categories = list(dict.fromkeys(str(r[xkey]) for r in done))  # x positions when not numeric
    series: dict = {}
    for r in done:
        series.setdefault(tuple(r.get(k) for k in others), []).append(r)
    images = []
    for m in metrics:
        curves = []
        for label, rs in series.items():
            rs = sorted(rs, key=lambda r: r[xkey]) if numeric else rs
            x = np.array([float(r[xkey]) if numeric else categories.index(str(r[xkey])) for r in rs], float)
            y = np.array([r[m] for r in rs], float)
            err = np.array([r[f"{m}/err"] for r in rs], float) if f"{m}/err" in rs[0] else None
            text = ", ".join(f"{k}={_fmt(v)}" for k, v in zip(others, label))
            curves.append(plots.Curve(_ascii(text), x, y, err=err))
        ys = np.concatenate([c.y if c.err is None else np.r_[c.y - c.err, c.y + c.err] for c in curves])
        xs = np.concatenate([c.x for c in curves])
        rows_ = len(curves) if others else 0  # a single curve needs no legend
        if not others:
            curves = [c._replace(label="") for c in curves]
        images.append(plots.line_plot(
            curves, title=f"val {m}" + (" (mean, 95% CI)" if over_seeds else ""), xlabel=_ascii(xkey), ylabel=m, xlim=_range(xs),
            ylim=_range(ys, rows_, _legend(m), panel[1]), size=panel, legend=_legend(m),
        ))
    return _tile(images, min(4, len(images)))


def curves_plot(workdir, names: Sequence[str], metrics: Sequence[str] = CURVE_METRICS,
                panel: tuple = (560, 420), seeds_of: Optional[dict] = None) -> Optional[np.ndarray]:
    """Held-out metrics against the training step, one curve per run (from each run's
    ``metrics.jsonl``), panels tiled 2 per row; uint8 RGB, or None when no run has logged yet.
    ``seeds_of``: run name → its grid point's label, to draw one mean curve per grid point instead."""
    from mtcnn_jax.evaluation import plots  # noqa: PLC0415

    logs = {n: read_metrics(Path(workdir) / n) for n in names}
    logs = {n: v for n, v in logs.items() if v}
    if seeds_of is not None:  # one curve per grid point: the mean over the seeds that logged each step
        merged: dict = {}
        for n, v in logs.items():
            merged.setdefault(seeds_of[n], []).append(v)
        logs = {}
        for point, runs_ in merged.items():
            steps = sorted(set.intersection(*({r["step"] for r in v} for v in runs_)))
            by_step = [{r["step"]: r for r in v} for v in runs_]
            logs[f"{point} (mean of {len(runs_)})"] = [{"step": t, **{m: float(np.mean([b[t][m] for b in by_step]))
                                                                     for m in metrics}} for t in steps]
    if not logs:
        return None
    images = []
    for m in metrics:
        curves = [plots.Curve(_ascii(n), np.array([r["step"] for r in v], float), np.array([r[m] for r in v], float))
                  for n, v in logs.items()]
        xs = np.concatenate([c.x for c in curves])
        ys = np.concatenate([c.y for c in curves])
        images.append(plots.line_plot(curves, title=f"val {m}", xlabel="step", ylabel=m, xlim=_range(xs),
                                      ylim=_range(ys, len(curves), _legend(m), panel[1]), size=panel,
                                      legend=_legend(m)))
    return _tile(images, min(2, len(images)))


def write_results(workdir, points: Sequence[Point], reference: Optional[dict] = None) -> list[dict]:
    """Write ``results.csv``, ``results.md``, ``results.png`` and ``curves.png``; return the rows.

    With seeds, ``results.md`` starts with each grid point's mean ± 95% interval and the differences
    from ``reference`` (default the first grid point), and the plots draw means and intervals."""
    from mtcnn_jax.evaluation import plots  # noqa: PLC0415

    workdir = Path(workdir)
    rows = collect(workdir, points)
    keys = swept_keys(points)
    seeds_of = ({p.name: _point_text({k: v for k, v in p.overrides.items() if k != SEED}) for p in points}
                if _over_seeds(keys) else None)
    for name, text in (("results.csv", to_csv(rows, keys)), ("results.md", to_markdown(rows, keys, reference))):
        files.write_atomically(workdir / name, text)
    for name, img in (("results.png", results_plot(rows, keys)),
                      ("curves.png", curves_plot(workdir, [p.name for p in points], seeds_of=seeds_of))):
        if img is not None:
            files.write_atomically(workdir / name, plots.encode_png(img))
    return rows
