"""Sweeps: one training run per point of a grid, a results table and plots.

A sweep file (big_vision style, e.g. ``configs/sweeps/ohem.py``) holds two functions:

* ``get_config(arg=None)`` — the base training config (usually one of
  ``configs/{pnet,rnet,onet}.py`` with the variant ``arg``, so
  ``configs/sweeps/ohem.py:runlocal`` sweeps around ``configs/onet.py:runlocal``);
* ``sweep(arg=None)`` — the grid: a list of override dicts with dotted config
  keys, e.g. ``[{"ohem_ratio": 1.0}, {"ohem_ratio": 0.7}]``. The first dict's key
  order is the plots' order: the first key is the x axis, the others label curves.

:func:`run_sweep` trains every point with :func:`mtcnn_jax.train.train_and_evaluate`
in its own subfolder of the sweep's workdir, named from its overrides
(``ohem_ratio=0.7``, ``alpha.landmarks=0_alpha.box=0.5``). A finished run leaves
``result.json`` (its final held-out metrics) and is skipped when the sweep is run
again; a run that was interrupted (even by SIGKILL) resumes from its latest
checkpoint. The cut samples do not depend on the swept keys in the usual sweeps, so
each run starts from a hard-linked copy of another run's ``samples/`` folder
(:func:`mtcnn_jax.data.store.link_sets`; the trainer checks the settings recorded
with them and cuts again when they do not match).

After every run the sweep (re)writes, in its workdir:

* ``results.csv`` and ``results.md`` — one row per grid point: the swept values,
  the status (``done`` or the step reached), the final held-out metrics;
* ``results.png`` — each held-out metric against the first swept key (one curve
  per value of the other keys);
* ``curves.png`` — held-out metrics against the training step, one curve per run.

The plots are drawn with :mod:`mtcnn_jax.evaluation.plots` (OpenCV, no matplotlib).
"""

from __future__ import annotations

import csv
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
RESULT = "result.json"


class Point(NamedTuple):
    """One grid point: its folder name, its overrides and the full config it trains."""

    name: str
    overrides: dict
    config: Any  # ml_collections.ConfigDict


# ----------------------------------------------------------------------------- loading


def _load_module(path: str):
    module = config_utils.load_module(path, "sweep")
    for fn in ("get_config", "sweep"):
        if not callable(getattr(module, fn, None)):
            raise UserError(f"{path}: no {fn}(arg) function (a sweep file needs get_config and sweep)")
    return module


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


def load_sweep(spec: str, overrides: Sequence[tuple[str, str]] = ()) -> list[Point]:
    """``"path/to/sweep.py[:arg]"`` → the grid points, each with its validated config.

    ``overrides`` (``[(KEY, VALUE-text), ...]``, as from ``--config.KEY=VALUE``) apply
    to every point before the point's own overrides.
    """
    path, _, arg = spec.partition(":")
    module = _load_module(path)
    try:
        grid = module.sweep(arg or None)
    except ValueError as err:
        raise UserError(f"{spec}: {str(err).splitlines()[0]}") from None
    if not isinstance(grid, (list, tuple)) or not grid or not all(isinstance(g, dict) and g for g in grid):
        raise UserError(f"{spec}: sweep() must return a non-empty list of non-empty override dicts")
    points, seen = [], {}
    for overrides_of_point in grid:
        try:
            config = module.get_config(arg or None)
        except ValueError as err:
            raise UserError(f"{spec}: {str(err).splitlines()[0]}") from None
        for key, text in overrides:
            config_utils.apply_override(config, key, text)
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


def run_sweep(
    spec: str,
    workdir,
    overrides: Sequence[tuple[str, str]] = (),
    max_steps: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> list[dict]:
    """Train every grid point of ``spec`` under ``workdir``; returns the table rows.

    Finished runs (``<run>/result.json`` with the same config) are skipped;
    interrupted ones resume from their checkpoints. ``max_steps`` caps the steps each
    run takes in this call (a run stopped by it stays unfinished and resumes later).
    The results files are rewritten after every run (:func:`write_results`).
    Each point's config is turned into :class:`mtcnn_jax.settings.TrainSettings`
    here, before anything trains. ``workdir`` is checked first
    (:func:`mtcnn_jax.runs.check_workdir`: a writable folder, outside every run's
    training data unless ``overwrite``). Interrupted, a sweep keeps its finished
    runs and the checkpoints of the one in progress; the same call resumes it.
    """
    from mtcnn_jax import runs, train  # noqa: PLC0415 (jax)
    from mtcnn_jax.settings import TrainSettings  # noqa: PLC0415

    points = load_sweep(spec, overrides)
    settings = [TrainSettings.from_config(p.config) for p in points]
    workdir = runs.check_workdir(workdir, [f for s in settings for f in runs.data_folders(s.data)], overwrite)
    files.write_json(workdir / "sweep.json", {"spec": spec, "overrides": [list(o) for o in overrides],
                                             "grid": [p.overrides for p in points]}, indent=2)
    names = [p.name for p in points]
    for point in points:  # refuse before training anything
        _check_same_run(point, workdir / point.name)
    with runs.interruptible():  # a Ctrl-C lost inside a gc callback still stops the sweep
        for i, point in enumerate(points):
            runs.check_interrupt()
            rundir = workdir / point.name
            result = read_result(rundir)
            if result is not None and result.get("config") == _config_json(point.config):
                log(f"[{i + 1}/{len(points)}] {point.name}: finished before, skipped")
                continue
            log(f"[{i + 1}/{len(points)}] {point.name}: training")
            _share_samples(workdir, rundir, names[:i][::-1] + names[i + 1 :], train.SAMPLES_DIR)
            t0 = time.time()
            try:
                state, metrics = train.train_and_evaluate(settings[i], rundir, progress=progress, max_steps=max_steps,
                                                          overwrite=overwrite)
            except ValueError as err:
                raise UserError(f"{point.name}: {str(err).splitlines()[0]}") from None
            step = int(state.step)
            if step >= point.config.total_steps:
                files.write_json(rundir / RESULT, {
                    "name": point.name, "overrides": point.overrides, "step": step,
                    "metrics": {k: float(metrics[k]) for k in METRICS},
                    "seconds": round(time.time() - t0, 1), "config": _config_json(point.config),
                })
                log(f"[{i + 1}/{len(points)}] {point.name}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in METRICS))
            else:
                log(f"[{i + 1}/{len(points)}] {point.name}: stopped at step {step} of {point.config.total_steps}")
            write_results(workdir, points)
    return write_results(workdir, points)


# ----------------------------------------------------------------------------- results


def _last_step(rundir: Path) -> int:
    ckpts = rundir / "checkpoints"
    steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
    return max(steps, default=0)


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
        for k in METRICS:
            row[k] = result["metrics"][k] if done else None
        rows.append(row)
    return rows


def swept_keys(points: Sequence[Point]) -> list[str]:
    keys = []
    for p in points:
        keys += [k for k in p.overrides if k not in keys]
    return keys


def to_markdown(rows: Sequence[dict], keys: Sequence[str]) -> str:
    cols = ["run", *keys, "status", "step", *METRICS]
    cell = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict], keys: Sequence[str]) -> str:
    cols = ["run", *keys, "status", "step", *METRICS]
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


def results_plot(rows: Sequence[dict], keys: Sequence[str], metrics: Sequence[str] = METRICS,
                 panel: tuple = (400, 300)) -> Optional[np.ndarray]:
    """Each metric of the finished rows against ``keys[0]`` (one curve per value of the
    other keys), panels tiled 4 per row. uint8 RGB, or None when nothing has finished."""
    from mtcnn_jax.evaluation import plots  # noqa: PLC0415

    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return None
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
            text = ", ".join(f"{k}={_fmt(v)}" for k, v in zip(others, label))
            curves.append(plots.Curve(_ascii(text), x, y))
        ys = np.concatenate([c.y for c in curves])
        xs = np.concatenate([c.x for c in curves])
        rows_ = len(curves) if others else 0  # a single curve needs no legend
        if not others:
            curves = [c._replace(label="") for c in curves]
        images.append(plots.line_plot(
            curves, title=f"val {m}", xlabel=_ascii(xkey), ylabel=m, xlim=_range(xs),
            ylim=_range(ys, rows_, _legend(m), panel[1]), size=panel, legend=_legend(m),
        ))
    return _tile(images, min(4, len(images)))


def curves_plot(workdir, names: Sequence[str], metrics: Sequence[str] = CURVE_METRICS,
                panel: tuple = (560, 420)) -> Optional[np.ndarray]:
    """Held-out metrics against the training step, one curve per run (from each run's
    ``metrics.jsonl``), panels tiled 2 per row; uint8 RGB, or None when no run has logged yet."""
    from mtcnn_jax.evaluation import plots  # noqa: PLC0415

    logs = {n: read_metrics(Path(workdir) / n) for n in names}
    logs = {n: v for n, v in logs.items() if v}
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


def write_results(workdir, points: Sequence[Point]) -> list[dict]:
    """Write ``results.csv``, ``results.md``, ``results.png`` and ``curves.png``; return the rows."""
    from mtcnn_jax.evaluation import plots  # noqa: PLC0415

    workdir = Path(workdir)
    rows = collect(workdir, points)
    keys = swept_keys(points)
    for name, text in (("results.csv", to_csv(rows, keys)), ("results.md", to_markdown(rows, keys))):
        files.write_atomically(workdir / name, text)
    for name, img in (("results.png", results_plot(rows, keys)),
                      ("curves.png", curves_plot(workdir, [p.name for p in points]))):
        if img is not None:
            files.write_atomically(workdir / name, plots.encode_png(img))
    return rows
