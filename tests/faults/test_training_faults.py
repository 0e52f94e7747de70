"""Faults around training: ``mtcnn-jax train``, ``sweep`` and ``train-cascade``, each case the reliability issue listed.

* Workdir problems are one line (exit 2): a ``--workdir`` that is a file, that
  cannot be created, that cannot be written (read-only), that is, lies inside or
  holds the training data (allowed with ``--overwrite``).
* A damaged sample store (truncated or overwritten shard, missing shard, missing
  or garbled TFDS metadata) is detected when read, and a store the run made is
  deleted and cut or mined again, in one line, with the same samples.
* A damaged checkpoint (files truncated; with or without the list of files
  written beside it) is moved aside and training resumes from the newest
  readable one, in one line, ending with the params of an uninterrupted run.
* SIGINT / SIGTERM (exit 130, one line ``mtcnn-jax: interrupted``) and SIGKILL
  at random points of each command: nothing finished is lost, rerunning the
  same command completes, and the result equals an uninterrupted run (one
  reference run per command, made once for this module).

The kill points are drawn from ``random.Random(SEED)`` (``MTCNN_JAX_FAULT_SEED``
overrides it; the points drawn are in each assertion message). The commands run
in subprocesses that share a JAX compilation cache kept in pytest's base temp
folder, so that only the first run of each shape compiles.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import pytest

from conftest import sigkill_when
from mtcnn_jax import cli, runs, train
from mtcnn_jax.data import store as st
from mtcnn_jax.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("MTCNN_JAX_FAULT_SEED", "1311"))

# P-Net runlocal, shortened: 200 steps (a few seconds) on 10 WIDER images + 50 landmark faces, a checkpoint
# every 20 steps (the last 3 are kept).
TRAIN_STEPS, EVERY = 200, 20
TRAIN_OVERRIDES = [
    ("total_steps", str(TRAIN_STEPS)), ("checkpoint_every", str(EVERY)), ("eval_every", "40"), ("log_every", "20"),
    ("data.wider_images", "10"), ("data.landmark_faces", "50"), ("data.workers", "1"),
]

# Two runs of the training above with two seeds: the same compiled programs, other samples and params.
SWEEP_FILE = f"""
from mtcnn_jax import config_utils

def get_config(arg=None):
    return config_utils.get("configs/pnet.py:runlocal", {TRAIN_OVERRIDES!r})

def sweep(arg=None):
    return [{{"seed": 0}}, {{"seed": 1}}]
"""
SWEEP_RUNS = ["seed=0", "seed=1"]

# configs/cascade.py:tiny, shortened further than tests/test_recipe.py does; P-Net with the batch and
# steps of the training above (the same compiled programs).
CASCADE_OVERRIDES = [
    ("pnet.total_steps", str(TRAIN_STEPS)), ("rnet.total_steps", "12"), ("onet.total_steps", "8"),
    ("pnet.batch.negative", "96"), ("pnet.batch.positive", "32"), ("pnet.batch.part", "32"),
    ("pnet.batch.landmark", "64"), ("pnet.checkpoint_every", "20"), ("pnet.eval_every", "40"),
    ("rnet.checkpoint_every", "4"), ("rnet.eval_every", "12"), ("onet.checkpoint_every", "4"), ("onet.eval_every", "8"),
    ("pnet.data.wider_images", "20"), ("pnet.data.landmark_faces", "100"),
    ("rnet.data.wider_images", "8"), ("onet.data.wider_images", "8"),
    ("pnet.data.workers", "1"), ("rnet.data.workers", "1"), ("onet.data.workers", "1"), ("eval.images", "2"),
]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory) -> dict:
    """Environment variables for the commands run here: CPU, and a compilation cache shared by the session."""
    folder = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    folder.mkdir(mode=0o700, exist_ok=True)
    return {"JAX_COMPILATION_CACHE_DIR": str(folder), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _env(cache_env: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **cache_env)
    env.pop("XLA_FLAGS", None)
    return env


def _cli(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "mtcnn_jax.cli", *map(str, args)]


def _run(args: Sequence[str], cache_env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(args), cwd=REPO, env=_env(cache_env), capture_output=True, text=True, timeout=timeout)


def _lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def _one_line(stderr: str) -> str:
    lines = _lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _after(condition: Callable[[], bool], delay: float) -> Callable[[], bool]:
    """A ``ready()`` that holds ``delay`` seconds after ``condition()`` first held."""
    seen: List[float] = []

    def ready() -> bool:
        if not seen and condition():
            seen.append(time.time())
        return bool(seen) and time.time() - seen[0] >= delay

    return ready


def interrupt_when(cmd: Sequence[str], ready: Callable[[], bool], env: dict, sig: int = signal.SIGINT,
                   timeout: float = 300.0) -> None:
    """Run ``cmd``, send ``sig`` once ``ready()`` holds, and check it stops as Ctrl-C should:
    exit code 130 and one line on stderr, ``mtcnn-jax: interrupted``."""
    with open(os.devnull, "w") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None and not ready():
                time.sleep(0.02)
            alive = proc.poll() is None
            if alive:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"still running 120 s after signal {sig}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        text = err.read()
    assert alive, "the process ended before it could be interrupted: " + text[-2000:]
    assert proc.returncode == 130, f"exit code {proc.returncode}: {text[-3000:]}"
    assert _lines(text) == ["mtcnn-jax: interrupted"], text[-3000:]


def _steps(folder: Path) -> List[int]:
    return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []


def _final_state(workdir: Path):
    """The train state of ``workdir``'s last checkpoint, read as plain arrays."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    step = _steps(workdir / "checkpoints")[-1]
    return step, ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "default")


def _assert_same_state(a, b) -> None:
    import jax  # noqa: PLC0415

    (sa, ta), (sb, tb) = a, b
    assert sa == sb
    assert jax.tree_util.tree_structure(ta) == jax.tree_util.tree_structure(tb)
    for x, y in zip(jax.tree_util.tree_leaves(ta), jax.tree_util.tree_leaves(tb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _val_metrics(workdir: Path) -> list:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "val"]


def _pick(rng: random.Random, points: Sequence, k: int) -> list:
    """The indices of ``k`` of ``points``, drawn by ``rng``, increasing."""
    return sorted(rng.sample(range(len(points)), k))


# ----------------------------------------------------------------------------- workdir problems are one line


def _command(name: str, workdir, data_dir: Path, sweep_file: Path) -> List[str]:
    """The arguments of ``name`` (the short runs below) on ``workdir``."""
    if name == "train":
        return _train_args(workdir, data_dir)
    if name == "sweep":
        return _sweep_args(workdir, sweep_file, data_dir)
    return _cascade_args(workdir, data_dir)


COMMANDS = ["train", "sweep", "train-cascade"]


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweepfile") / "tiny_sweep.py"
    path.write_text(SWEEP_FILE)
    return path


def _main(args, capsys) -> tuple:
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.err


@pytest.mark.parametrize("command", COMMANDS)
def test_workdir_that_is_a_file_is_one_line(command, data_dir, sweep_file, tmp_path, capsys):
    workdir = tmp_path / "notes.txt"
    workdir.write_text("mine\n")
    code, err = _main(_command(command, workdir, data_dir, sweep_file), capsys)
    assert code == 2 and _one_line(err) == f"mtcnn-jax: --workdir: {workdir} exists and is not a folder"
    assert workdir.read_text() == "mine\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_workdir_that_cannot_be_created_is_one_line(command, data_dir, sweep_file, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    workdir = tmp_path / "a-file" / "work"  # its parent is a file
    code, err = _main(_command(command, workdir, data_dir, sweep_file), capsys)
    assert code == 2 and _one_line(err).startswith(f"mtcnn-jax: --workdir: cannot create {workdir} (")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write into: ``chmod 555``, or for root (whom permissions do not
    stop) the immutable attribute (``chattr +i``). Skips only as root without ``chattr``; the folder
    whose parent is a file (above) covers the one-line refusal there."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, where a chmod 555 folder is still writable, and chattr +i is not available")
    try:
        if os.access(folder, os.W_OK) and _can_create(folder):
            pytest.skip("running as root on a file system where chattr +i does not stop writing")
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], capture_output=True)


def _can_create(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("")
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.mark.parametrize("access_tells", [True, False], ids=["os.access-says-no", "os.access-says-yes"])
@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_workdir_is_one_line(command, access_tells, read_only_folder, data_dir, sweep_file, capsys,
                                       monkeypatch):
    """Refused whether or not ``os.access`` sees it (it does not on some network file systems)."""
    if not access_tells:
        monkeypatch.setattr(os, "access", lambda *a, **k: True)
    code, err = _main(_command(command, read_only_folder, data_dir, sweep_file), capsys)
    assert code == 2 and _one_line(err).startswith(f"mtcnn-jax: --workdir: cannot write into {read_only_folder}")
    assert list(read_only_folder.iterdir()) == []


@pytest.fixture
def data_copy(data_dir, tmp_path) -> Path:
    """A data folder of this test's own (its data sets linked from the shared one): a command that failed to
    refuse would write here, never into the shared data (which root can write into)."""
    root = tmp_path / "parent" / "data"
    root.mkdir(parents=True)
    for name in ("widerface_train_mini", "mtfl_lfw_train_landmarks", "widerface_val_subset"):
        (root / name).symlink_to(data_dir / name)
    return root


def _tree(folder: Path) -> list:
    """Every path under ``folder``, symbolic links not followed."""
    return sorted(os.path.join(d, n) for d, dirs, names in os.walk(folder) for n in dirs + names)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["inside", "equal", "holds"])
def test_workdir_in_the_training_data_is_refused(command, where, data_copy, sweep_file, capsys):
    workdir = {"inside": data_copy / "work", "equal": data_copy, "holds": data_copy.parent}[where]
    before = _tree(data_copy.parent)
    code, err = _main(_command(command, workdir, data_copy, sweep_file), capsys)
    line = _one_line(err)
    assert code == 2 and line.startswith(f"mtcnn-jax: --workdir: {workdir} ") and line.endswith("or pass --overwrite")
    assert _tree(data_copy.parent) == before  # nothing written


def test_overwrite_allows_a_workdir_in_the_data(tmp_path):
    data = tmp_path / "data"
    (data / "wider").mkdir(parents=True)
    with pytest.raises(UserError, match="lies inside the input folder"):
        runs.check_workdir(data / "wider" / "work", [data, data / "wider"])
    assert not (data / "wider" / "work").exists()
    assert runs.check_workdir(data / "wider" / "work", [data, data / "wider"], overwrite=True).is_dir()
    with pytest.raises(UserError, match="is an input folder"):
        runs.check_workdir(data, [data])


@pytest.mark.parametrize("command, target", [("train", "mtcnn_jax.train.train_and_evaluate"),
                                             ("sweep", "mtcnn_jax.sweep.run_sweep"),
                                             ("train-cascade", "mtcnn_jax.recipe.train_cascade")])
def test_overwrite_reaches_the_library(command, target, data_dir, sweep_file, tmp_path, monkeypatch, capsys):
    seen = {}

    def stop(*args, **kwargs):
        seen.update(kwargs)
        raise UserError("stopped here")

    monkeypatch.setattr(target, stop)
    code, err = _main(_command(command, tmp_path / "w", data_dir, sweep_file) + ["--overwrite"], capsys)
    assert code == 2 and seen.get("overwrite") is True, err


# ----------------------------------------------------------------------------- damaged sample stores


def _arrays(n: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            "type": rng.integers(0, 4, n).astype(np.int32),
            "box": rng.normal(size=(n, 4)).astype(np.float32),
            "landmarks": rng.uniform(size=(n, 10)).astype(np.float32)}


def _version(folder: Path, split: str, stage: str = "pnet") -> Path:
    return folder / split / "mtcnn_samples" / stage / "1.0.0"


def _shard(folder: Path, split: str, stage: str = "pnet") -> Path:
    return next(_version(folder, split, stage).glob("*.array_record-*"))


def _truncate(path: Path, fraction: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * fraction))


def _overwrite_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated shard": lambda f: _truncate(_shard(f, "train")),
    "empty shard": lambda f: _truncate(_shard(f, "train"), 0.0),
    "overwritten bytes": lambda f: _overwrite_middle(_shard(f, "train")),
    "missing shard": lambda f: _shard(f, "train").unlink(),
    "garbled dataset_info.json": lambda f: (_version(f, "train") / "dataset_info.json").write_text('{"name": "mtcn'),
    "missing dataset_info.json": lambda f: (_version(f, "train") / "dataset_info.json").unlink(),
}


@pytest.fixture
def cut_pair(tmp_path):
    """A sample pair kept by ``cached_sets`` (as ``mtcnn-jax train`` keeps its samples), and what it holds."""
    made = (_arrays(300, 12, 1), _arrays(60, 12, 2))
    folder = tmp_path / "samples"
    st.cached_sets(folder, "pnet", {"seed": 1}, lambda: made)
    return folder, made


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_store_is_refused_in_one_line_when_read(damage, cut_pair):
    folder, _ = cut_pair
    DAMAGE[damage](folder)
    with pytest.raises(st.StoreDamaged) as err:
        st.read_sets(folder, "pnet")
    assert str(err.value).startswith(f"{folder / 'train'}: damaged sample store (") and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cut_samples_are_cut_again_saying_so(damage, cut_pair, capsys):
    folder, made = cut_pair
    DAMAGE[damage](folder)
    calls = []
    capsys.readouterr()
    got = st.cached_sets(folder, "pnet", {"seed": 1}, lambda: calls.append(1) or made, again="cutting them again")
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"mtcnn-jax: {folder / 'train'}: damaged sample store (")
    assert line.endswith("): cutting them again") and calls == [1]
    for back, want in zip(got, made):
        for name in st.FIELDS:
            np.testing.assert_array_equal(back[name], want[name])
    again = st.read_sets(folder, "pnet")  # the stores are whole again
    np.testing.assert_array_equal(again[0]["image"], made[0]["image"])


def test_damaged_store_read_at_random_is_refused(cut_pair):
    folder, _ = cut_pair
    _overwrite_middle(_shard(folder, "train"))
    store = st.SampleStore(folder / "train", "pnet")
    with pytest.raises(st.StoreDamaged):
        store.get(np.arange(len(store)))


@pytest.mark.parametrize("damage", ["truncated shard", "missing dataset_info.json"])
def test_damaged_mined_store_is_made_again_alone(damage, tmp_path, capsys):
    """The recipe's stores (write_sets): the damaged split is made again, the sound one kept."""
    made = {"train": _arrays(200, 12, 3), "val": _arrays(50, 12, 4)}
    calls = []

    def make(split):
        calls.append(split)
        return made[split]

    counts = st.write_sets(tmp_path, "pnet", make, ordered=True)
    val_file = _shard(tmp_path, "val")
    DAMAGE[damage](tmp_path)
    capsys.readouterr()
    assert st.write_sets(tmp_path, "pnet", make, ordered=True, again="mining it again") == counts
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"mtcnn-jax: {tmp_path / 'train'}: damaged sample store (")
    assert line.endswith("mining it again") and calls == ["train", "val", "train"]
    assert _shard(tmp_path, "val") == val_file
    train_set, _ = st.read_sets(tmp_path, "pnet")
    np.testing.assert_array_equal(train_set["box"], made["train"]["box"])


def test_damaged_proposal_cache_is_dropped_saying_so(tmp_path, capsys):
    from mtcnn_jax import recipe  # noqa: PLC0415

    path = tmp_path / "proposals.npz"
    recipe.save_proposals(path, {"a.jpg": np.ones((3, 5))}, "key")
    _truncate(path)
    capsys.readouterr()
    assert recipe.load_proposals(path, "key") == {}
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"mtcnn-jax: {path}: damaged (") and line.endswith("running P-Net again")


def test_damaged_metrics_log_is_cleaned_when_a_run_resumes(tmp_path):
    from mtcnn_jax.metrics_log import METRICS_FILE, MetricsLog, read_metrics  # noqa: PLC0415

    good = [json.dumps({"step": s, "split": "val", "loss": 1.0 / s}) for s in (10, 20)]
    (tmp_path / METRICS_FILE).write_bytes("\n".join(good).encode() + b"\n\xff\xfe{garbled\n[1, 2]\n" +
                                          json.dumps({"step": 30, "split": "val"}).encode() + b"\n{\"step\": 4")
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30]
    MetricsLog(tmp_path, resume_step=20).close()
    assert (tmp_path / METRICS_FILE).read_text().splitlines() == good


# ----------------------------------------------------------------------------- damaged checkpoints


def _toy_manager(folder: Path, optimizer: str = "sgd"):
    """A checkpoint manager and a small train state (params, the optimizer's state, the step) to restore into."""
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415
    import orbax.checkpoint as ocp  # noqa: PLC0415

    tx = optax.sgd(0.1, momentum=0.9) if optimizer == "sgd" else optax.adam(0.1)
    state = train.create_train_state({"conv": {"kernel": jnp.arange(12.0).reshape(3, 4), "bias": jnp.ones(4)}}, tx)
    manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(
        max_to_keep=5, create=True, enable_async_checkpointing=False))
    return manager, state


def test_every_checkpoint_damaged_starts_from_scratch_saying_so(tmp_path, capsys):
    """Checked against the list of files written beside each checkpoint (moved aside before Orbax opens them)."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    manager, state = _toy_manager(tmp_path / "checkpoints")
    for step in (10, 20):
        manager.save(step, args=ocp.args.StandardSave(state._replace(step=state.step + step)))
        runs.write_checkpoint_manifest(tmp_path / "checkpoints" / str(step))
    _truncate(tmp_path / "checkpoints" / "20" / "default" / "_METADATA")
    (tmp_path / "checkpoints" / "10" / "default" / "manifest.ocdbt").write_bytes(b"garbage")
    capsys.readouterr()
    manager, restored, start = runs.open_checkpoints(tmp_path / "checkpoints", state, keep=5)
    line = _one_line(capsys.readouterr().err)
    assert start == 0 and restored is state
    assert "checkpoint 20 (default/_METADATA has" in line and "): moved to 20.corrupt-1; " in line
    assert "checkpoint 10 (default/manifest.ocdbt has 7 bytes" in line and "): moved to 10.corrupt-1; " in line
    assert line.endswith("no checkpoint left: starting from step 0")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["10.corrupt-1", "20.corrupt-1"]
    assert manager.latest_step() is None


def test_sound_checkpoint_of_another_config_is_refused_not_moved(tmp_path):
    import orbax.checkpoint as ocp  # noqa: PLC0415

    manager, state = _toy_manager(tmp_path / "checkpoints")
    manager.save(10, args=ocp.args.StandardSave(state))
    runs.write_checkpoint_manifest(tmp_path / "checkpoints" / "10")
    _, adam_state = _toy_manager(tmp_path / "other", optimizer="adam")
    with pytest.raises(UserError, match="cannot restore this checkpoint into the config's state") as err:
        runs.open_checkpoints(tmp_path / "checkpoints", adam_state, keep=5)
    assert "\n" not in str(err.value)
    assert (tmp_path / "checkpoints" / "10").is_dir()


# ----------------------------------------------------------------------------- mtcnn-jax train


def _train_args(workdir: Path, data_dir: Path) -> List[str]:
    return (["train", "--config", "configs/pnet.py:runlocal", "--workdir", str(workdir), "--no-progress",
             f"--config.data.root={data_dir}"] + [f"--config.{k}={v}" for k, v in TRAIN_OVERRIDES])


@pytest.fixture(scope="module")
def train_reference(data_dir, cache_env, tmp_path_factory) -> Path:
    """``mtcnn-jax train`` run once, uninterrupted."""
    workdir = tmp_path_factory.mktemp("train") / "reference"
    r = _run(_train_args(workdir, data_dir), cache_env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr[-3000:]
    assert _steps(workdir / "checkpoints") == [TRAIN_STEPS - 2 * EVERY, TRAIN_STEPS - EVERY, TRAIN_STEPS]
    return workdir


@pytest.mark.slow
def test_train_interrupted_and_killed_at_random_points_then_rerun_equals_reference(
        train_reference, data_dir, cache_env, tmp_path, monkeypatch):
    rng = random.Random(SEED)
    workdir = tmp_path / "w"
    cmd = _cli(_train_args(workdir, data_dir))
    ckpts = workdir / "checkpoints"
    env = _env(cache_env)
    for key, value in cache_env.items():  # for sigkill_when, which runs with this process's environment
        monkeypatch.setenv(key, value)
    # Three runs cut short, each at a checkpoint drawn among the next two it will write (the last point drawn
    # leaves 60 steps to go): SIGTERM up to 0.3 s (drawn) after it is written, SIGINT while Orbax writes it
    # (the checkpoint is finished first), SIGKILL up to 0.3 s (drawn) after it is written.
    at, delays = [], []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        base = (_steps(ckpts) or [0])[-1]
        at.append(rng.choice([p for p in range(EVERY, TRAIN_STEPS - 2 * EVERY, EVERY) if p > base][:2]
                             or [base + EVERY]))
        delays.append(0.0 if sig == signal.SIGINT else round(rng.uniform(0.0, 0.3), 3))
        if sig == signal.SIGINT:
            ready = _after(lambda: any(ckpts.glob(f"{at[-1]}.orbax-checkpoint-tmp*")), 0.0)
        else:
            ready = _after(lambda: (_steps(ckpts) or [0])[-1] >= at[-1], delays[-1])
        if sig == signal.SIGKILL:
            sigkill_when(cmd, ready)
        else:
            interrupt_when(cmd, ready, env, sig)
            assert not list(ckpts.glob("*tmp*")), (at, list(ckpts.iterdir()))  # no checkpoint left half written
            assert (ckpts / str(at[-1]) / runs.CHECKPOINT_MANIFEST).is_file(), (at, list(ckpts.iterdir()))
        assert _steps(ckpts)[-1] >= at[-1], (at, _steps(ckpts))
    why = f"seed {SEED}: SIGTERM, SIGINT (while saving), SIGKILL at checkpoints {at} + {delays} s"
    r = _run(_train_args(workdir, data_dir), cache_env)
    assert r.returncode == 0 and not r.stderr.strip(), (why, r.stderr[-3000:])
    assert not list(ckpts.glob("*tmp*")), list(ckpts.iterdir())
    _assert_same_state(_final_state(workdir), _final_state(train_reference))
    assert _val_metrics(workdir) == _val_metrics(train_reference), why  # each logged once, the same


def _copy(reference: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "w"
    shutil.copytree(reference, workdir)
    return workdir


@pytest.mark.slow
def test_damaged_latest_checkpoints_fall_back_to_the_newest_readable(train_reference, data_dir, cache_env, tmp_path):
    workdir = _copy(train_reference, tmp_path)
    ckpts = workdir / "checkpoints"
    last, before, resume = TRAIN_STEPS, TRAIN_STEPS - EVERY, TRAIN_STEPS - 2 * EVERY
    for f in (ckpts / str(last)).rglob("*"):  # detected by the list of files written beside them
        if f.is_file() and f.name != runs.CHECKPOINT_MANIFEST:
            _truncate(f)
    (ckpts / str(before) / runs.CHECKPOINT_MANIFEST).unlink()  # as before that list existed: Orbax cannot restore it
    for f in (ckpts / str(before) / "default").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            _truncate(f)
    r = _run(_train_args(workdir, data_dir), cache_env)
    assert r.returncode == 0, r.stderr[-3000:]
    line = _one_line(r.stderr)
    assert line.startswith(f"mtcnn-jax: {ckpts}: cannot restore checkpoint {last} (")
    assert f"): moved to {last}.corrupt-1; checkpoint {before} (" in line and f"): moved to {before}.corrupt-1" in line
    assert line.endswith(f"; resuming from step {resume}")
    assert _steps(ckpts) == [resume, before, last]
    assert (ckpts / f"{last}.corrupt-1").is_dir() and (ckpts / f"{before}.corrupt-1").is_dir()
    _assert_same_state(_final_state(workdir), _final_state(train_reference))
    assert _val_metrics(workdir) == _val_metrics(train_reference)


@pytest.mark.slow
def test_damaged_cut_samples_are_cut_again_by_train(train_reference, data_dir, cache_env, tmp_path):
    workdir = _copy(train_reference, tmp_path)
    for step in (TRAIN_STEPS - EVERY, TRAIN_STEPS):  # 40 steps to train again, on the samples cut again
        shutil.rmtree(workdir / "checkpoints" / str(step))
    _truncate(_shard(workdir / "samples", "train"))
    r = _run(_train_args(workdir, data_dir), cache_env)
    assert r.returncode == 0, r.stderr[-3000:]
    line = _one_line(r.stderr)
    assert line.startswith(f"mtcnn-jax: {workdir / 'samples' / 'train'}: damaged sample store (")
    assert line.endswith("): cutting the samples again")
    st.read_sets(workdir / "samples", "pnet")
    _assert_same_state(_final_state(workdir), _final_state(train_reference))


# ----------------------------------------------------------------------------- mtcnn-jax sweep


def _sweep_args(workdir: Path, sweep_file: Path, data_dir: Path) -> List[str]:
    return ["sweep", "--config", str(sweep_file), "--workdir", str(workdir), "--no-progress",
            f"--config.data.root={data_dir}"]


@pytest.fixture(scope="module")
def sweep_reference(sweep_file, data_dir, cache_env, tmp_path_factory) -> Path:
    """``mtcnn-jax sweep`` run once, uninterrupted."""
    workdir = tmp_path_factory.mktemp("sweep") / "reference"
    r = _run(_sweep_args(workdir, sweep_file, data_dir), cache_env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_sweep_interrupted_and_killed_at_random_points_then_rerun_equals_reference(
        sweep_reference, sweep_file, data_dir, cache_env, tmp_path, monkeypatch):
    rng = random.Random(SEED + 1)
    workdir = tmp_path / "w"
    cmd = _cli(_sweep_args(workdir, sweep_file, data_dir))
    # What a sweep leaves, in order: each run's checkpoints, then its result.json.
    milestones = [workdir / run / sub for run in SWEEP_RUNS
                  for sub in ("checkpoints/40", "checkpoints/80", "result.json")][:-1]
    i, j = _pick(rng, milestones[:-1], 2)
    delays = [round(rng.uniform(0.0, 0.3), 3) for _ in range(2)]
    why = f"seed {SEED + 1}: SIGINT at {milestones[i]} + {delays[0]} s, SIGKILL at {milestones[j]} + {delays[1]} s"
    interrupt_when(cmd, _after(milestones[i].exists, delays[0]), _env(cache_env), signal.SIGINT)
    later = [m for m in milestones[j:] if not m.exists()]  # the kill comes at a point the first run had not reached
    for key, value in cache_env.items():
        monkeypatch.setenv(key, value)
    sigkill_when(cmd, _after(later[0].exists, delays[1]))
    finished = {run: (workdir / run / "result.json").stat().st_mtime_ns
                for run in SWEEP_RUNS if (workdir / run / "result.json").exists()}
    assert len(finished) < len(SWEEP_RUNS), why
    r = _run(_sweep_args(workdir, sweep_file, data_dir), cache_env)
    assert r.returncode == 0 and not r.stderr.strip(), (why, r.stderr[-3000:])
    for run, stamp in finished.items():  # a finished run is kept as it was
        assert f"{run}: finished before, skipped" in r.stdout and \
            (workdir / run / "result.json").stat().st_mtime_ns == stamp, why
    assert (workdir / "results.csv").read_text() == (sweep_reference / "results.csv").read_text(), why
    for run in SWEEP_RUNS:
        _assert_same_state(_final_state(workdir / run), _final_state(sweep_reference / run))


# ----------------------------------------------------------------------------- mtcnn-jax train-cascade


def _cascade_args(workdir: Path, data_dir: Path) -> List[str]:
    return (["train-cascade", "--config", "configs/cascade.py:tiny", "--workdir", str(workdir), "--no-progress",
             f"--config.data_root={data_dir}"] + [f"--config.{k}={v}" for k, v in CASCADE_OVERRIDES])


@pytest.fixture(scope="module")
def cascade_reference(data_dir, cache_env, tmp_path_factory) -> Path:
    """``mtcnn-jax train-cascade`` run once, uninterrupted."""
    workdir = tmp_path_factory.mktemp("cascade") / "reference"
    r = _run(_cascade_args(workdir, data_dir), cache_env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_cascade_interrupted_and_killed_at_random_points_then_rerun_equals_reference(
        cascade_reference, data_dir, cache_env, tmp_path, monkeypatch):
    rng = random.Random(SEED + 2)
    workdir = tmp_path / "w"
    cmd = _cli(_cascade_args(workdir, data_dir))
    milestones = [workdir / m for m in (
        "pnet_samples/done.json", "pnet/checkpoints/40", "pnet/checkpoints/80",
        "pnet/done.json", "rnet_samples/done.json", "rnet/checkpoints/4", "rnet/checkpoints/8", "rnet/done.json",
        "onet_samples/done.json", "onet/checkpoints/4")]
    i, j = _pick(rng, milestones[:-1], 2)
    delays = [round(rng.uniform(0.0, 0.3), 3) for _ in range(2)]
    why = f"seed {SEED + 2}: SIGINT at {milestones[i]} + {delays[0]} s, SIGKILL at {milestones[j]} + {delays[1]} s"
    interrupt_when(cmd, _after(milestones[i].exists, delays[0]), _env(cache_env), signal.SIGINT)
    done = {p: p.stat().st_mtime_ns for p in workdir.glob("*/done.json")}
    later = [m for m in milestones[j:] if not m.exists()]
    for key, value in cache_env.items():
        monkeypatch.setenv(key, value)
    sigkill_when(cmd, _after(later[0].exists, delays[1]))
    done.update({p: p.stat().st_mtime_ns for p in workdir.glob("*/done.json") if p not in done})
    r = _run(_cascade_args(workdir, data_dir), cache_env)
    assert r.returncode == 0 and not r.stderr.strip(), (why, r.stderr[-3000:])
    for path, stamp in done.items():  # finished steps are skipped, untouched
        assert path.stat().st_mtime_ns == stamp and f"{path.parent.name}: done before" in r.stdout, (why, path)
    assert (workdir / "params.msgpack").read_bytes() == (cascade_reference / "params.msgpack").read_bytes(), why
    assert json.loads((workdir / "eval" / "metrics.json").read_text())["ap"] == \
        json.loads((cascade_reference / "eval" / "metrics.json").read_text())["ap"]


@pytest.mark.slow
def test_damaged_mined_samples_and_proposals_are_mined_again(cascade_reference, data_dir, cache_env, tmp_path):
    workdir = _copy(cascade_reference, tmp_path)
    for marker in ("onet/done.json", "eval/done.json", "params.msgpack"):
        (workdir / marker).unlink()
    shutil.rmtree(workdir / "onet" / "checkpoints" / "8")  # O-Net trains its last 4 steps again, on the mined samples
    _truncate(_shard(workdir / "onet_samples", "train", "onet"))
    _truncate(workdir / "rnet_samples" / "proposals.npz")
    r = _run(_cascade_args(workdir, data_dir), cache_env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = _lines(r.stderr)
    assert "Traceback" not in r.stderr and len(lines) == 2, r.stderr[-3000:]
    assert lines[0].startswith(f"mtcnn-jax: {workdir / 'onet_samples' / 'train'}: damaged sample store (")
    assert lines[0].endswith("): mining it again")
    assert lines[1].startswith(f"mtcnn-jax: {workdir / 'rnet_samples' / 'proposals.npz'}: damaged (")
    assert lines[1].endswith("running P-Net again")
    mined = st.read_sets(workdir / "onet_samples", "onet")
    for got, want in zip(mined, st.read_sets(cascade_reference / "onet_samples", "onet")):  # as mined the first time
        for name in st.FIELDS:
            np.testing.assert_array_equal(got[name], want[name])
    assert (workdir / "params.msgpack").read_bytes() == (cascade_reference / "params.msgpack").read_bytes()


@pytest.mark.slow
def test_damaged_done_marker_runs_its_step_again(cascade_reference, data_dir, tmp_path, capsys):
    from mtcnn_jax import recipe  # noqa: PLC0415
    from mtcnn_jax.commands import train_cascade as cmd  # noqa: PLC0415

    workdir = _copy(cascade_reference, tmp_path)
    (workdir / "pnet_samples" / "done.json").write_text('{"counts": {"tr')
    config = cmd.load("configs/cascade.py:tiny", CASCADE_OVERRIDES + [("data_root", str(data_dir))])
    logs: list = []
    capsys.readouterr()
    recipe.train_cascade(config, workdir, progress=False, log=logs.append)
    line = _one_line(capsys.readouterr().err)
    assert line == (f"mtcnn-jax: {workdir / 'pnet_samples' / 'done.json'} is damaged: running pnet_samples again "
                    "(what it finished is reused)")
    assert logs[0] == "pnet_samples: running" and logs[1].startswith("pnet_samples: finished"), logs
    assert len(logs) == 2 + 7 and all(entry.endswith("skipped") for entry in logs[2:]), logs
    assert json.loads((workdir / "pnet_samples" / "done.json").read_text())["counts"] == \
        json.loads((cascade_reference / "pnet_samples" / "done.json").read_text())["counts"]
