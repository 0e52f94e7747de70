"""Sweeps (mtcnn_jax.sweep, ``mtcnn-jax sweep``): grid files, the table, resuming after SIGKILL."""

import csv
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest

from mtcnn_jax import cli, sweep
from mtcnn_jax.data import store
from mtcnn_jax.errors import UserError
from conftest import sigkill_when

REPO = Path(__file__).resolve().parents[1]

# A tiny grid: P-Net runlocal on 20 WIDER images + 100 landmark faces, 300 steps, with
# and without OHEM. About 5 s of training per point on 2 CPU cores.
TINY = textwrap.dedent(
    """
    from mtcnn_jax import config_utils

    def get_config(arg=None):
        c = config_utils.load_config("configs/pnet.py:runlocal")
        c.data.wider_images, c.data.landmark_faces = 20, 100
        c.total_steps, c.checkpoint_every, c.eval_every, c.log_every = 300, 50, 150, 50
        return c

    def sweep(arg=None):
        return [{"ohem_ratio": 1.0}, {"ohem_ratio": 0.7}]
    """
)
STEPS = 300
NAMES = ["ohem_ratio=1", "ohem_ratio=0.7"]


def _metrics(rundir, split="val"):
    lines = (Path(rundir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def _csv(workdir):
    with open(Path(workdir) / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweepfile") / "tiny.py"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def straight(tiny, data_dir, tmp_path_factory):
    """The tiny sweep run once, uninterrupted, in this process, one run at a time (``sequential``)."""
    workdir = tmp_path_factory.mktemp("straight")
    log = []
    t0 = time.time()
    rows = sweep.run_sweep(str(tiny), workdir, [("data.root", str(data_dir))], progress=False, log=log.append,
                           sequential=True)
    return workdir, rows, log, time.time() - t0


# ----------------------------------------------------------------------------- the shipped grids


def test_shipped_sweeps_load_and_name_their_commands():
    ohem = sweep.load_sweep("configs/sweeps/ohem.py:runlocal")
    assert [p.config.ohem_ratio for p in ohem][::5] == [1.0, 0.9, 0.7, 0.5]  # 5 seeds each
    assert all(p.config.stage == "onet" and p.config.total_steps == 100 for p in ohem)
    alpha = sweep.load_sweep("configs/sweeps/alpha.py:runlocal")
    pairs = {(p.config.alpha.landmarks, p.config.alpha.box) for p in alpha}
    assert len(pairs) == len(alpha) // 5 == 6
    assert {lm for lm, _ in pairs} >= {0.0, 1.0} and len({b for _, b in pairs}) == 2
    assert all(p.config.alpha.det == 1.0 and p.config.ohem_ratio == 0.7 for p in alpha)
    full = sweep.load_sweep("configs/sweeps/ohem.py")  # the full variant names configs/onet.py itself
    assert full[0].config.total_steps == 20_000
    for name in ("ohem", "alpha"):
        doc = (REPO / "configs" / "sweeps" / f"{name}.py").read_text()
        assert f"mtcnn-jax sweep --config configs/sweeps/{name}.py:runlocal --workdir" in doc
    assert "sweep" in cli.build_parser().format_help()


def test_run_names_stay_inside_the_workdir():
    assert sweep.run_name({"alpha.landmarks": 0.0, "alpha.box": 0.5}) == "alpha.landmarks=0_alpha.box=0.5"
    assert sweep.run_name({"data.root": "../../etc"}) == "data.root=..-..-etc"
    assert "/" not in sweep.run_name({"a/b": "/x/y"})


def test_bad_grids_are_user_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(TINY.replace('{"ohem_ratio": 0.7}', '{"ohem_rate": 0.7}'))
    with pytest.raises(UserError, match="ohem_rate"):
        sweep.load_sweep(str(bad))
    bad.write_text(TINY.replace('{"ohem_ratio": 0.7}', '{"ohem_ratio": 1.0}'))
    with pytest.raises(UserError, match="share the folder name"):
        sweep.load_sweep(str(bad))
    bad.write_text(TINY.replace("def sweep(arg=None)", "def grid(arg=None)"))
    with pytest.raises(UserError, match="sweep"):
        sweep.load_sweep(str(bad))


# ----------------------------------------------------------------------------- acceptance: the real loop


@pytest.mark.slow
def test_tiny_sweep_writes_one_row_per_point_with_the_final_metrics(straight):
    workdir, rows, log, elapsed = straight
    assert [r["run"] for r in rows] == NAMES
    table = _csv(workdir)
    assert [r["run"] for r in table] == NAMES
    assert [float(r["ohem_ratio"]) for r in table] == [1.0, 0.7]
    for row in table:
        assert row["status"] == "done" and int(row["step"]) == STEPS
        final = _metrics(workdir / row["run"])[-1]  # the held-out eval at the last step
        assert final["step"] == STEPS
        for k in sweep.METRICS:
            assert float(row[k]) == pytest.approx(final[k], rel=1e-12), k
        assert 0.5 < float(row["accuracy"]) <= 1.0  # trained, not chance
    # The two points trained differently (OHEM on/off), from the same cut samples.
    assert table[0]["loss"] != table[1]["loss"]
    # The second run started from a hard-linked copy of the first run's sample stores.
    first = workdir / NAMES[0] / "samples"
    records = sorted(first.rglob("*.array_record*"))
    assert len(records) == 2  # train and val
    for record in records:
        assert os.path.samefile(record, workdir / NAMES[1] / "samples" / record.relative_to(first))
    md = (workdir / "results.md").read_text().splitlines()
    assert len(md) == 2 + len(NAMES) and md[0].startswith("| run | ohem_ratio | status | step | loss")
    for name in ("results.png", "curves.png"):
        img = cv2.imread(str(workdir / name))
        assert img is not None and img.shape[0] >= 300 and img.shape[1] >= 400, name
    assert elapsed < 180, elapsed  # about 20 s of CPU time; the rest is waiting on a shared machine


@pytest.mark.slow
def test_finished_sweep_is_skipped_and_a_changed_grid_refused(straight, tiny, data_dir):
    workdir, rows, _, _ = straight
    log = []
    again = sweep.run_sweep(str(tiny), workdir, [("data.root", str(data_dir))], progress=False, log=log.append,
                            sequential=True)
    assert again == rows
    assert [line.endswith("finished before, skipped") for line in log] == [True, True]
    with pytest.raises(UserError, match="another config"):
        sweep.run_sweep(str(tiny), workdir, [("data.root", str(data_dir)), ("total_steps", "400")],
                        progress=False, log=log.append, sequential=True)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_skips_finished_resumes_and_matches(straight, tiny, data_dir, tmp_path):
    workdir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mtcnn_jax.cli", "sweep", "--config", str(tiny), "--workdir", str(workdir),
           "--no-progress", "--sequential", f"--config.data.root={data_dir}"]
    second = workdir / NAMES[1] / "checkpoints"

    def first_done_second_checkpointed():
        steps = [int(p.name) for p in second.glob("*") if p.name.isdigit()] if second.exists() else []
        return bool(steps) and (workdir / NAMES[0] / "result.json").exists()

    # Kill once the first point has finished and the second has a checkpoint.
    sigkill_when(cmd, first_done_second_checkpointed)
    first_result = (workdir / NAMES[0] / "result.json").stat().st_mtime_ns
    assert not (workdir / NAMES[1] / "result.json").exists()
    last = max(int(p.name) for p in second.glob("*") if p.name.isdigit())
    assert 0 < last < STEPS

    log = []
    rows = sweep.run_sweep(str(tiny), workdir, [("data.root", str(data_dir))], progress=False, log=log.append,
                           sequential=True)
    # The finished point was skipped, untouched; the interrupted one resumed from its checkpoint
    # (a restart from step 0 would have logged a second untrained eval at step 0).
    assert log[0] == f"[1/2] {NAMES[0]}: finished before, skipped"
    assert (workdir / NAMES[0] / "result.json").stat().st_mtime_ns == first_result
    val = _metrics(workdir / NAMES[1])
    assert [r["step"] for r in val] == [0, 150, 300]
    assert [r["step"] for r in _metrics(workdir / NAMES[1], "train")] == list(range(50, STEPS + 1, 50))
    # Same table as the uninterrupted sweep (training is deterministic and resumes exactly).
    assert [r["status"] for r in rows] == ["done", "done"]
    straight_rows = straight[1]
    for a, b in zip(rows, straight_rows):
        for k in sweep.METRICS:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["run"], k)
    assert _csv(workdir) == _csv(straight[0])


def _cli_args(straight, tiny, data_dir, workdir, name):
    """``mtcnn-jax sweep`` arguments for the tiny grid in ``workdir``, with ``name``'s cut samples
    linked from ``straight`` (the trainer checks the settings recorded with them)."""
    assert store.link_sets(straight[0] / name / "samples", workdir / name / "samples")
    return ["sweep", "--config", str(tiny), "--workdir", str(workdir), "--no-progress", "--sequential",
            f"--config.data.root={data_dir}"]


@pytest.mark.slow
def test_cli_max_steps_leaves_runs_unfinished_then_completes(straight, tiny, data_dir, tmp_path, capsys):
    workdir = tmp_path / "capped"
    args = _cli_args(straight, tiny, data_dir, workdir, NAMES[0])
    assert cli.main(args + ["--max-steps", "100"]) == 0
    table = _csv(workdir)
    assert [(r["status"], r["step"], r["loss"]) for r in table] == [("unfinished", "100", "")] * 2
    assert not list(workdir.glob("*/result.json"))
    assert "| ohem_ratio=1 | 1.0000 | unfinished | 100 |" in capsys.readouterr().out
    assert cli.main(args) == 0  # the rest: resumes both at step 100
    assert _csv(workdir) == _csv(straight[0])
    assert cli.main(["sweep", "--config", str(tiny), "--workdir", str(workdir), "--max-steps", "0"]) == 2


@pytest.mark.slow
def test_cli_only_runs_the_chosen_grid_points_as_the_full_grid_does(straight, tiny, data_dir, tmp_path, capsys):
    workdir = tmp_path / "only"
    args = _cli_args(straight, tiny, data_dir, workdir, NAMES[1])
    assert cli.main(args + ["--only", "ohem_ratio=0.70"]) == 0
    assert sorted(p.name for p in workdir.iterdir() if p.is_dir()) == [NAMES[1]]  # ohem_ratio=1 never ran
    assert _csv(workdir) == _csv(straight[0])[1:]  # the point trained exactly as in the whole grid
    assert json.loads((workdir / "sweep.json").read_text())["only"] == [["ohem_ratio", "0.70"]]
    capsys.readouterr()
    for bad, why in [("ohem_ratio", "expected KEY=V1[,V2...]"),
                     ("alpha.box=1", "the grid does not sweep 'alpha.box' (it sweeps ohem_ratio)"),
                     ("ohem_ratio=1,0.3", "--only ohem_ratio=0.3: no grid point has that value (it has 1, 0.7)")]:
        assert cli.main(args + ["--only", bad]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err


def test_only_must_keep_the_reference_point(tmp_path, data_dir):
    kept = sweep.select_grid([{"a": 1.0, "b": "x"}, {"a": 0.5, "b": "x"}, {"a": 0.5, "b": "y"}],
                             [("a", "0.5")])
    assert kept == [{"a": 0.5, "b": "x"}, {"a": 0.5, "b": "y"}]
    assert sweep.select_grid(kept, [("b", "y")]) == [{"a": 0.5, "b": "y"}]
    points = sweep.load_sweep("configs/sweeps/ohem.py:runlocal", only=[("ohem_ratio", "1,0.7")])
    assert [p.name for p in points][::5] == ["ohem_ratio=1_seed=0", "ohem_ratio=0.7_seed=0"] and len(points) == 10
    with pytest.raises(UserError, match="--only leaves out the reference point ohem_ratio=1, which results.md"):
        sweep.run_sweep("configs/sweeps/ohem.py:runlocal", tmp_path / "w", [("data.root", str(data_dir))],
                        progress=False, log=lambda s: None, only=[("ohem_ratio", "0.7,0.5")])
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- seeds, replicas, intervals


@pytest.fixture(scope="module")
def seeded(tiny, data_dir, tmp_path_factory):
    """The tiny grid with two seeds per point, trained as 4 replicas of one program (the default)."""
    workdir = tmp_path_factory.mktemp("seeded")
    log = []
    rows = sweep.run_sweep(str(tiny), workdir, [("data.root", str(data_dir))], progress=False, log=log.append,
                           n_seeds=2)
    return workdir, rows, log


@pytest.mark.slow
def test_seeded_sweep_trains_replicas_equal_to_separate_runs(seeded, straight):
    workdir, rows, log = seeded
    names = [f"{n}_seed={s}" for n in NAMES for s in (0, 1)]
    assert [r["run"] for r in rows] == names
    assert log[0].startswith("[1/1] replicas-") and "(4 replicas: ohem_ratio=1_seed=0 ...): training" in log[0]
    table = _csv(workdir)
    assert [(r["run"], r["seed"], r["status"], r["step"]) for r in table] == \
        [(n, n[-1], "done", str(STEPS)) for n in names]
    # Seed 0 of each point is the run the sequential sweep made (same seed, same cut windows):
    # equal after 300 steps up to the rounding that vmapped programs sum in another order.
    for name, ref in zip(NAMES, _csv(straight[0])):
        row = next(r for r in table if r["run"] == f"{name}_seed=0")
        for k in ("loss", "det", "box", "landmarks", "box_error", "landmark_error"):
            assert float(row[k]) == pytest.approx(float(ref[k]), rel=2e-3), (name, k)
    # Seed 1 trained from another init on other batches, on the same windows as seed 0.
    assert table[0]["loss"] != table[1]["loss"]
    group = next(workdir.glob("replicas-*"))
    assert sorted(int(p.name) for p in (group / "checkpoints").iterdir() if p.name.isdigit()) == [200, 250, 300]
    for name in names:  # each replica logs like a single run
        assert [r["step"] for r in _metrics(workdir / name)] == [0, 150, 300]
        assert json.loads((workdir / name / "result.json").read_text())["replicas"] == 4


@pytest.mark.slow
def test_seeded_results_give_intervals_and_tests_worked_from_the_csv(seeded):
    import numpy as np
    from scipy import stats

    workdir, rows, _ = seeded
    table = _csv(workdir)
    md = (workdir / "results.md").read_text()
    for name in NAMES:
        v = np.array([float(r["det"]) for r in table if r["run"].startswith(name + "_")])
        half = stats.t.ppf(0.975, 1) * np.std(v, ddof=1) / np.sqrt(2)  # 12.71 · s / √2 with two seeds
        ratio = "1" if name.endswith("=1") else "0.7"
        line = next(x for x in md.splitlines() if x.startswith(f"| {ratio} | 2 |"))
        assert f"{v.mean():.4f} ± {half:.4f}" == line.split(" | ")[3], line
    a = [float(r["accuracy"]) for r in table if r["run"].startswith(NAMES[1])]
    b = [float(r["accuracy"]) for r in table if r["run"].startswith(NAMES[0])]
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    line = next(x for x in md.splitlines() if x.startswith("| ohem_ratio=0.7 |"))
    assert f"{np.mean(a) - np.mean(b):+.4f} (p {p:.3f}" in line
    assert "Differences from ohem_ratio=1 " in md
    img = cv2.imread(str(workdir / "results.png"))
    assert img is not None and img.shape[0] >= 300


@pytest.mark.slow
def test_seeded_sweep_stopped_by_max_steps_resumes_to_the_same_table(seeded, tiny, data_dir, tmp_path, capsys):
    workdir = tmp_path / "capped"
    args = ["sweep", "--config", str(tiny), "--workdir", str(workdir), "--no-progress", "--seeds", "2",
            f"--config.data.root={data_dir}"]
    assert cli.main(args + ["--max-steps", "100"]) == 0
    assert [(r["status"], r["step"]) for r in _csv(workdir)] == [("unfinished", "100")] * 4
    capsys.readouterr()
    assert cli.main(args) == 0  # resumes all four replicas from the stacked checkpoint at step 100
    assert _csv(workdir) == _csv(seeded[0])
    assert "finished before, skipped" in (cli.main(args) == 0 and capsys.readouterr().out)


def test_compare_applies_holm_over_the_grid():
    import numpy as np

    # Three points of 3 seeds; the reference is the first. p values from Welch's test:
    # b differs strongly, c weakly; Holm compares the smallest p with 0.05 / 2, the next with 0.05 / 1.
    def summary(point, values):
        v = np.array(values, float)
        return sweep.Summary(point, len(v), {"m": v.mean()}, {"m": None}, {"m": v})

    s = [summary({"x": 0}, [1.0, 1.1, 0.9]), summary({"x": 1}, [2.0, 2.1, 1.9]), summary({"x": 2}, [1.2, 1.35, 1.05])]
    tests = sweep.compare(s, metrics=("m",))
    from scipy import stats

    p_b = stats.ttest_ind([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], equal_var=False).pvalue
    p_c = stats.ttest_ind([1.2, 1.35, 1.05], [1.0, 1.1, 0.9], equal_var=False).pvalue
    assert p_b < 0.025 and 0.05 < p_c  # so: b significant, c not
    assert [(t["point"], round(t["diff"], 6), t["p"] == pytest.approx(p), t["significant"]) for t, p in
            zip(tests, (p_b, p_c))] == [({"x": 1}, 1.0, True, True), ({"x": 2}, 0.2, True, False)]
    assert sweep.compare(s, reference={"x": 2}, metrics=("m",))[0]["reference"] == {"x": 2}
    with pytest.raises(UserError, match="not in the grid"):
        sweep.compare(s, reference={"x": 7}, metrics=("m",))


def test_seeds_extend_the_grid_and_share_one_cut():
    points = sweep.load_sweep("configs/sweeps/ohem.py:runlocal")
    assert len(points) == 4 * 5
    assert [p.name for p in points[:2]] == ["ohem_ratio=1_seed=0", "ohem_ratio=1_seed=1"]
    assert {p.config.data.seed for p in points} == {0}  # every seed on the windows of seed 0
    assert [p.config.seed for p in points[:5]] == [0, 1, 2, 3, 4]
    assert sweep.sweep_reference("configs/sweeps/ohem.py:runlocal") == {"ohem_ratio": 1.0}
    assert len(sweep.load_sweep("configs/sweeps/alpha.py:runlocal", n_seeds=7)) == 6 * 7
    from mtcnn_jax.settings import TrainSettings

    settings = [TrainSettings.from_config(p.config) for p in points]
    assert sweep.replica_groups(settings) == [list(range(20))]
    assert sweep.replica_groups(settings, max_replicas=8) == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


def test_a_sweep_file_opened_once_serves_every_helper(tmp_path, monkeypatch):
    """run_sweep opens the file once; the helpers take the opened file and never load it again,
    while a spec given as text is loaded afresh each time (a notebook that edits its sweep file sees the edit)."""
    path = tmp_path / "grid.py"
    body = textwrap.dedent("""
        from mtcnn_jax import config_utils
        def get_config(arg=None):
            return config_utils.load_config("configs/pnet.py:" + arg)
        def sweep(arg=None):
            return [{"ohem_ratio": r} for r in RATIOS]
        def seeds(arg=None):
            return [3, 4]
        def reference(arg=None):
            return {"ohem_ratio": RATIOS[-1]}
    """)
    path.write_text("RATIOS = (1.0, 0.7)\n" + body)
    opened = sweep.open_sweep(f"{path}:runlocal")
    assert sweep.open_sweep(opened) is opened
    path.write_text("RATIOS = (0.5,)\n" + body)  # the edit: the opened file keeps what it read
    from mtcnn_jax import config_utils

    loaded, load = [], config_utils.load_module
    monkeypatch.setattr(config_utils, "load_module", lambda p, *a, **k: loaded.append(Path(p)) or load(p, *a, **k))
    points = sweep.load_sweep(opened)
    assert [p.name for p in points] == ["ohem_ratio=1_seed=3", "ohem_ratio=1_seed=4",
                                        "ohem_ratio=0.7_seed=3", "ohem_ratio=0.7_seed=4"]
    assert {p.config.data.seed for p in points} == {3}
    assert sweep.sweep_seeds(opened) == [3, 4] and sweep.sweep_seeds(opened, n_seeds=2) == [0, 1]
    assert sweep.sweep_reference(opened) == {"ohem_ratio": 0.7}
    assert sweep.sweep_cascade_eval(opened, "/data") is None
    assert path not in loaded and loaded  # the base configs were loaded, the sweep file never again
    assert [p.name for p in sweep.load_sweep(f"{path}:runlocal")] == ["ohem_ratio=0.5_seed=3", "ohem_ratio=0.5_seed=4"]


def test_recipe_variants_train_a_mini_stage_on_named_mined_samples(tmp_path, data_dir):
    points = sweep.load_sweep("configs/sweeps/ohem.py:rnet")
    c = points[0].config
    assert len(points) == 20 and c.stage == "rnet" and c.total_steps == 3000 and c.augment.flip
    assert c.samples == "RECIPE_WORKDIR/rnet_samples"
    assert sweep.load_sweep("configs/sweeps/alpha.py:onet_short")[0].config.total_steps == 1500
    ev = sweep.sweep_cascade_eval("configs/sweeps/ohem.py:rnet", "/data")
    assert (ev.root, ev.wider, ev.images, tuple(ev.thresholds)) == ("/data", "widerface_val_subset", 120, (0.6, 0.7, 0.7))
    assert sweep.sweep_cascade_eval("configs/sweeps/ohem.py:runlocal", "/data") is None
    with pytest.raises(UserError, match=r"config.samples: RECIPE_WORKDIR/rnet_samples is not a folder \(mtcnn-jax "
                                        r"train-cascade writes them in <workdir>/rnet_samples"):
        sweep.run_sweep("configs/sweeps/ohem.py:rnet", tmp_path / "w", [("data.root", str(data_dir))],
                        progress=False, log=lambda s: None)
