"""Train state, optimizer, the data-parallel step, eval metrics (mtcnn_jax.train)."""

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtcnn_jax import losses, models, train
from mtcnn_jax.data import store
from mtcnn_jax.settings import OptimizerSettings, TrainSettings

REPO = Path(__file__).resolve().parents[1]


def _opt(**kw):
    c = OptimizerSettings(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
                          warmup_steps=0, decay_at=(0.5, 0.75), decay_factor=0.1, clip_grad_norm=0.0)
    return dataclasses.replace(c, **kw)


def test_step_schedule():
    s = train.make_schedule(_opt(), 100)
    assert float(s(0)) == pytest.approx(0.1)
    assert float(s(60)) == pytest.approx(0.01)
    assert float(s(80)) == pytest.approx(0.001)
    c = train.make_schedule(_opt(schedule="cosine", warmup_steps=10), 110)
    assert float(c(5)) == pytest.approx(0.05)
    assert float(c(110)) == pytest.approx(0.0, abs=1e-7)


# One data-parallel step over 4 host CPU devices vs one step on 1 device, same global
# batch. Runs in a subprocess: XLA_FLAGS must be set before jax is imported.
_DP_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from mtcnn_jax import losses, models, train
    from mtcnn_jax.settings import OptimizerSettings
    assert jax.device_count() == 4, jax.devices()
    jax.config.update("jax_default_matmul_precision", "highest")
    opt = OptimizerSettings(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
        schedule="constant", warmup_steps=0, decay_at=(), decay_factor=0.1, clip_grad_norm=0.0)
    model = models.create("pnet", landmarks=True)
    params = jax.device_get(models.init_params("pnet", jax.random.key(0), landmarks=True))
    rng = np.random.default_rng(0)
    n = 32
    batch = dict(image=rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8),
                 type=np.tile(np.array([0, 0, 0, 1, 1, 2, 3, 3], np.int32), n // 8),
                 box=rng.normal(0, 0.1, (n, 4)).astype(np.float32),
                 landmarks=rng.uniform(0, 1, (n, 10)).astype(np.float32))
    rng.shuffle(batch["type"])
    alpha = dict(det=1.0, box=0.5, landmarks=0.5)
    k = losses.ohem_k(0.7, int(np.sum(batch["type"] < 2)))
    tx = train.make_optimizer(opt, 10)
    out = {}
    # The modules' one-program step, the CPU formulation in one program (the default here: 8 or 32
    # windows fit one chunk) and in chunks of 3 windows (3 chunks per device on 4 devices, 11 on 1).
    for form, chunk in (("modules", None), ("cpu", None), ("cpu", 3)):
        for nd in (1, 4):
            mesh = train.make_mesh(jax.devices()[:nd])
            step = train.make_train_step(model, tx, alpha, k, mesh, formulation=form, chunk=chunk)
            state = train.replicate(train.create_train_state(params, tx), mesh)
            for _ in range(2):  # two steps: the second one exercises the momentum state
                state, m = step(state, train.shard_batch(batch, mesh))
            out[form, chunk, nd] = (jax.device_get(state.params), float(m["loss"]), float(m["n_det"]))
    p0 = out["modules", None, 1][0]
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(params)))
    assert moved > 1e-3, moved
    for key, (p, loss, n_det) in out.items():
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p0)))
        print("DIFF", key, diff, "MOVED", moved, "LOSS", loss, "NDET", n_det)
        assert n_det == k, (key, n_det, k)
        assert abs(loss - out["modules", None, 1][1]) < 1e-5, (key, loss)
        assert diff < (1e-6 if key[0] == "modules" else 2e-6), (key, diff)
    """
)


@pytest.mark.slow
def test_data_parallel_step_equals_single_device_step():
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-c", _DP_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "DIFF" in r.stdout


def test_eval_metrics_hand_checked():
    model = models.create("rnet", landmarks=True)
    params = models.init_params("rnet", jax.random.key(1), landmarks=True)
    # Zero every head so the outputs are known: logits 0 (p = 0.5), box 0, landmarks 0.
    for head in ("face", "box", "landmarks"):
        params[head] = jax.tree.map(jnp.zeros_like, params[head])
    n = 5
    samples = dict(
        image=np.zeros((n, 24, 24, 3), np.uint8),
        type=np.array([0, 1, 2, 3, 1], np.int32),
        box=np.full((n, 4), 0.5, np.float32),
        landmarks=np.tile(np.array([0.3] * 5 + [0.4] * 5, np.float32), (n, 1)),
    )
    alpha = dict(det=1.0, box=0.5, landmarks=1.0)
    step = train.make_eval_step(model, alpha, threshold=0.5)
    m = train.evaluate(step, params, samples, alpha, batch_size=4)  # 2 batches, one padded
    assert m["det"] == pytest.approx(np.log(2.0), rel=1e-5)
    assert m["box"] == pytest.approx(4 * 0.25, rel=1e-5)
    assert m["landmarks"] == pytest.approx(5 * 0.09 + 5 * 0.16, rel=1e-5)
    assert m["loss"] == pytest.approx(np.log(2.0) + 0.5 + 1.25, rel=1e-5)
    # argmax of equal logits is 0 = non-face: the negative is right, both positives wrong.
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["recall"] == 1.0  # p = 0.5 ≥ 0.5
    assert m["box_error"] == pytest.approx(0.5, rel=1e-5)
    assert m["landmark_error"] == pytest.approx(0.5, rel=1e-5)


# ----------------------------------------------------------------------------- acceptance: the real loop

import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

from mtcnn_jax import config_utils  # noqa: E402
from mtcnn_jax.data import samples  # noqa: E402
from conftest import sigkill_when  # noqa: E402


def _metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pnet_from_scratch_learns(data_dir, tmp_path):
    """configs/pnet.py:runlocal: held-out loss falls and face/non-face accuracy > 90%."""
    config = config_utils.get("configs/pnet.py:runlocal", [("data.root", str(data_dir))])
    t0 = time.time()
    state, final = train.train_and_evaluate(config, tmp_path / "w", progress=False)
    elapsed = time.time() - t0
    val = [m for m in _metrics(tmp_path / "w") if m["split"] == "val"]
    assert val[0]["step"] == 0 and val[-1]["step"] == config.total_steps
    assert val[-1]["loss"] < 0.5 * val[0]["loss"], (val[0], val[-1])
    assert final["accuracy"] > 0.90, final
    assert final["recall"] > 0.5, final
    assert elapsed < 150, elapsed
    # The cut samples are kept as sample stores with the settings they were cut with;
    # held-out samples come from other images than the training samples.
    train_set, val_set = store.read_sets(tmp_path / "w" / "samples", "pnet")
    assert len(val_set["type"]) > 1000 and len(train_set["type"]) > 2 * len(val_set["type"])
    recorded = json.loads((tmp_path / "w" / "samples" / "settings.json").read_text())
    assert recorded == {"data": TrainSettings.from_config(config).data.cut_key(), "size": 12, "seed": 0}
    for f in ("samples/settings.json", "config.json", "metrics.jsonl"):
        assert (tmp_path / "w" / f).is_file()
    assert json.loads((tmp_path / "w" / "config.json").read_text()) == json.loads(config.to_json())
    assert list((tmp_path / "w" / "tensorboard").glob("events.out.tfevents.*"))
    assert int(state.step) == config.total_steps


_SMALL = [
    ("total_steps", "1000"), ("checkpoint_every", "100"), ("eval_every", "1000"), ("log_every", "100"),
    ("data.wider_images", "30"), ("data.landmark_faces", "200"),
]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(data_dir, tmp_path):
    overrides = _SMALL + [("data.root", str(data_dir))]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mtcnn_jax.cli", "train", "--config", "configs/pnet.py:runlocal",
           "--workdir", str(killed), "--no-progress"] + [f"--config.{k}={v}" for k, v in overrides]
    ckpts = killed / "checkpoints"

    def past_step_300():
        done = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        return bool(done) and max(done) >= 300

    sigkill_when(cmd, past_step_300, poll=0.05)
    done = sorted(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())
    last = done[-1]
    assert 300 <= last < 1000, done

    config = config_utils.get("configs/pnet.py:runlocal", overrides)
    # The rerun may take only the steps left after the last checkpoint: ending at step
    # 1000 proves it resumed there rather than starting again.
    resumed, _ = train.train_and_evaluate(config, killed, progress=False, max_steps=1000 - last)
    assert int(resumed.step) == 1000
    # Same cut samples (deterministic, see tests/test_samples.py): reuse them.
    shutil.copytree(killed / "samples", tmp_path / "straight" / "samples")
    straight, _ = train.train_and_evaluate(config, tmp_path / "straight", progress=False)
    for a, b in zip(jax.tree.leaves(jax.device_get(resumed.params)), jax.tree.leaves(jax.device_get(straight.params))):
        np.testing.assert_array_equal(a, b)
    # The metrics file has each train log once (lines past the checkpoint were dropped).
    steps = [m["step"] for m in _metrics(killed) if m["split"] == "train"]
    assert steps == list(range(100, 1001, 100)), steps


@pytest.mark.slow
def test_authors_onet_agrees_with_our_targets(data_dir):
    """The released O-Net, run on our 48×48 windows, predicts our box and landmark targets
    far better than a constant would: the layout, the 0-based frame, the normalisation by
    the window side and the mirroring match the authors'."""
    from mtcnn_jax import pretrained  # noqa: PLC0415

    config = config_utils.get(
        "configs/onet.py:runlocal", [("data.root", str(data_dir)), ("data.wider_images", "20"), ("data.landmark_faces", "100")]
    )
    train_set, _ = samples.build(TrainSettings.from_config(config).data, 48, 0)
    alpha = dict(config.alpha)
    step = train.make_eval_step(models.create("onet"), alpha, config.threshold)
    m = train.evaluate(step, pretrained.load_pretrained()["onet"], train_set, alpha)
    t = train_set["type"]
    box = train_set["box"][(t == losses.POSITIVE) | (t == losses.PART)]
    lm = train_set["landmarks"][t == losses.LANDMARK].reshape(-1, 2, 5)
    mean_shape_err = np.mean(np.sqrt(np.sum((lm - lm.mean(0)) ** 2, axis=1)))
    assert m["accuracy"] > 0.9, m
    assert m["box_error"] < 0.7 * np.mean(np.abs(box)), (m, np.mean(np.abs(box)))
    assert m["landmark_error"] < 0.4 * mean_shape_err, (m, mean_shape_err)


_LOOP_4_DEVICES = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from mtcnn_jax import config_utils, train
    assert jax.device_count() == 4
    workdir, root = sys.argv[1], sys.argv[2]
    config = config_utils.get("configs/pnet.py:runlocal", [
        ("data.root", root), ("data.wider_images", "20"), ("data.landmark_faces", "100"),
        ("total_steps", "200"), ("checkpoint_every", "100"), ("eval_every", "100"), ("log_every", "100")])
    first, _ = train.train_and_evaluate(config, workdir, progress=False, max_steps=100)
    assert int(first.step) == 100
    assert first.params["conv1"]["kernel"].sharding.is_fully_replicated
    state, val = train.train_and_evaluate(config, workdir, progress=False)  # resumes at 100
    assert int(state.step) == 200, int(state.step)
    assert np.isfinite(val["loss"]), val
    print("OK", val["accuracy"])
    """
)


@pytest.mark.slow
def test_training_loop_on_4_devices_resumes(data_dir, tmp_path):
    """What one machine can test of the multi-device / multi-host path: the loop on a
    4-device mesh, with sharded batches, replicated state and a sharded restore."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-c", _LOOP_4_DEVICES, str(tmp_path / "w"), str(data_dir)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr[-3000:]


def test_merge_pretrained_keeps_fresh_heads_at_zero():
    from mtcnn_jax import pretrained  # noqa: PLC0415

    fresh = models.init_params("pnet", jax.random.key(0), landmarks=True)
    released = pretrained.load_pretrained()["pnet"]
    merged = train.merge_pretrained(fresh, released)
    for layer in released:
        for leaf in released[layer]:
            np.testing.assert_array_equal(merged[layer][leaf], released[layer][leaf])
    assert not np.any(merged["landmarks"]["kernel"]) and merged["landmarks"]["kernel"].shape == (1, 1, 32, 10)
    assert set(merged) == set(fresh)


def test_batches_hold_the_configured_mix_from_the_right_pools():
    # A sample set whose types are interleaved and whose "box" column records each sample's
    # own type, so a drawn batch can be checked both by index and by content.
    from mtcnn_jax import config_utils  # noqa: PLC0415
    from mtcnn_jax.data import samples  # noqa: PLC0415

    rng = np.random.default_rng(0)
    types = rng.permutation(np.repeat(np.arange(4, dtype=np.int32), [500, 300, 200, 150]))
    train_set = {"image": np.zeros((len(types), 12, 12, 3), np.uint8), "type": types,
                 "box": np.repeat(types[:, None].astype(np.float32), 4, axis=1),
                 "landmarks": np.zeros((len(types), 10), np.float32)}
    index_by_type = [np.flatnonzero(train_set["type"] == c) for c in range(4)]
    composition = dict(config_utils.base_config().batch)  # the paper's 3 : 1 : 1 : 2
    assert composition == {"negative": 192, "positive": 64, "part": 64, "landmark": 128}
    seen = []
    for step in (0, 1, 17):
        idx = train.sample_batch(index_by_type, composition, seed=3, step=step)
        batch = {f: train_set[f][idx] for f in samples.FIELDS}
        assert np.bincount(batch["type"], minlength=4).tolist() == [192, 64, 64, 128]
        np.testing.assert_array_equal(batch["box"][:, 0], batch["type"])  # each drawn from its own type's pool
        for code in range(4):  # pools large enough: drawn without replacement
            drawn = idx[batch["type"] == code]
            assert np.isin(drawn, index_by_type[code]).all() and len(np.unique(drawn)) == len(drawn)
        assert batch["type"][:192].tolist() != [0] * 192  # shuffled, not laid out type by type
        seen.append(idx)
    np.testing.assert_array_equal(seen[0], train.sample_batch(index_by_type, composition, seed=3, step=0))
    assert not np.array_equal(seen[0], seen[1])
    # Two hosts draw half of each type each; a pool smaller than its share is drawn with replacement.
    small = [index_by_type[0], index_by_type[1], index_by_type[2], index_by_type[3][:5]]
    for process in (0, 1):
        idx = train.sample_batch(small, {"negative": 6, "positive": 2, "part": 2, "landmark": 4}, seed=3, step=5,
                                 process=process, n_processes=2)
        assert np.bincount(train_set["type"][idx], minlength=4).tolist() == [3, 1, 1, 2]
        assert np.isin(idx[train_set["type"][idx] == 3], small[3]).all()
    idx = train.sample_batch(small, {"negative": 0, "positive": 0, "part": 0, "landmark": 40}, seed=3, step=5)
    assert len(idx) == 40 and np.isin(idx, small[3]).all() and len(np.unique(idx)) == 5


def test_workdir_keeps_its_cut_samples_and_cuts_again_when_the_settings_change(tmp_path, monkeypatch):
    """train.cut_samples: the samples go to workdir/samples as stores, in the order cut; the same
    settings read them back; other cut settings (not the number of workers) cut them again."""
    made = []

    def fake_build(data, size, seed, skipped=None, progress=True):
        made.append((data.negatives_per_image, size, seed))
        rng = np.random.default_rng([data.negatives_per_image, seed])

        def part(n):
            return {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                    "type": rng.integers(0, 4, n).astype(np.int32),
                    "box": rng.normal(size=(n, 4)).astype(np.float32),
                    "landmarks": rng.uniform(size=(n, 10)).astype(np.float32)}

        return part(40), part(9)

    def with_data(settings, **changes):
        return dataclasses.replace(settings, data=dataclasses.replace(settings.data, **changes))

    monkeypatch.setattr(samples, "build", fake_build)
    settings = TrainSettings.from_config(config_utils.base_config())
    first = train.cut_samples(settings, tmp_path)
    assert made == [(50, 12, 0)]
    expect = fake_build(settings.data, 12, 0)  # what the first cut gave, in its order
    made.pop()
    again = train.cut_samples(settings, tmp_path)
    fewer_workers = train.cut_samples(with_data(settings, workers=1), tmp_path)
    assert made == [(50, 12, 0)]
    for got in (first, again, fewer_workers):
        for a, b in zip(expect, got):
            for f in samples.FIELDS:
                np.testing.assert_array_equal(a[f], b[f])
    other = with_data(settings, negatives_per_image=7)
    recut = train.cut_samples(other, tmp_path)
    assert made == [(50, 12, 0), (7, 12, 0)] and len(recut[1]["type"]) == 9
    assert not np.array_equal(recut[0]["image"], first[0]["image"])
    assert json.loads((tmp_path / "samples" / "settings.json").read_text())["data"]["negatives_per_image"] == 7
    train.cut_samples(dataclasses.replace(other, seed=3), tmp_path, write=False)  # another host: cut, not written
    assert made[-1] == (7, 12, 3)
    assert json.loads((tmp_path / "samples" / "settings.json").read_text())["seed"] == 0


def test_resuming_a_run_started_with_other_settings_is_refused(data_dir, tmp_path, capsys):
    """A workdir with checkpoints resumes only under the settings it was started with; logging and data
    paths may change. Checked before anything is cut or trained (a fake checkpoint folder suffices)."""
    import json  # noqa: PLC0415

    from mtcnn_jax import cli, config_utils, files  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    over = _SMALL + [("data.root", str(data_dir))]
    config = TrainSettings.of(config_utils.get("configs/pnet.py:runlocal", over))
    work = tmp_path / "w"
    (work / train.CHECKPOINTS_DIR / "100").mkdir(parents=True)
    files.write_json(work / "config.json", config.to_dict(), indent=2)
    train.check_same_run(work, config)  # the same settings: resumes
    train.check_same_run(work, TrainSettings.of(config_utils.get("configs/pnet.py:runlocal", over + [
        ("log_every", "7"), ("eval_every", "50"), ("data.root", str(tmp_path))])))
    faster = TrainSettings.of(config_utils.get("configs/pnet.py:runlocal", over + [("optimizer.learning_rate", "0.5")]))
    with pytest.raises(UserError) as err:
        train.check_same_run(work, faster)
    assert str(err.value) == (
        f"{work} holds a run started with other settings (optimizer.learning_rate: "
        f"{json.dumps(config.optimizer.learning_rate)} -> 0.5): a rerun would resume it; use a new --workdir, "
        f"or delete {work / train.CHECKPOINTS_DIR} to start it again")
    # A key the run's config.json lacks (the schema grew since) is not a change.
    older = json.loads((work / "config.json").read_text())
    del older["samples"], older["data"]["seed"]
    files.write_json(work / "config.json", older, indent=2)
    train.check_same_run(work, config)
    files.write_json(work / "config.json", config.to_dict(), indent=2)
    # Without checkpoints there is nothing to resume.
    (work / train.CHECKPOINTS_DIR / "100").rmdir()
    train.check_same_run(work, faster)
    (work / train.CHECKPOINTS_DIR / "100").mkdir()

    # Through the command line: one line, a non-zero exit, the run's config.json untouched.
    before = (work / "config.json").read_text()
    capsys.readouterr()
    args = ["train", "--config", "configs/pnet.py:runlocal", "--workdir", str(work), "--no-progress"]
    args += [f"--config.{k}={v}" for k, v in over + [("optimizer.learning_rate", "0.5")]]
    assert cli.main(args) != 0
    assert capsys.readouterr().err.strip().splitlines() == [f"mtcnn-jax: {err.value}"]
    assert (work / "config.json").read_text() == before
