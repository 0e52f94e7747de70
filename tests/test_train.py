"""Train state, optimizer, the data-parallel step, eval metrics (mtcnn_jax.train)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtcnn_jax import losses, models, train

REPO = Path(__file__).resolve().parents[1]


def _opt(**kw):
    c = ml_collections.ConfigDict(
        dict(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
             warmup_steps=0, decay_at=(0.5, 0.75), decay_factor=0.1, clip_grad_norm=0.0)
    )
    c.update(kw)
    return c


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
    import jax, numpy as np, ml_collections
    from mtcnn_jax import losses, models, train
    assert jax.device_count() == 4, jax.devices()
    jax.config.update("jax_default_matmul_precision", "highest")
    opt = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.9,
        weight_decay=5e-4, schedule="constant", warmup_steps=0, decay_at=(), decay_factor=0.1,
        clip_grad_norm=0.0))
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
    for nd in (1, 4):
        mesh = train.make_mesh(jax.devices()[:nd])
        step = train.make_train_step(model, tx, alpha, k, mesh)
        state = train.replicate(train.create_train_state(params, tx), mesh)
        for _ in range(2):  # two steps: the second one exercises the momentum state
            state, m = step(state, train.shard_batch(batch, mesh))
        out[nd] = (jax.device_get(state.params), float(m["loss"]), float(m["n_det"]))
    (p1, l1, c1), (p4, l4, c4) = out[1], out[4]
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(params)))
    print("DIFF", diff, "MOVED", moved, "LOSS", l1, l4, "NDET", c1, c4)
    assert c1 == c4 == k, (c1, c4, k)
    assert abs(l1 - l4) < 1e-5, (l1, l4)
    assert moved > 1e-3, moved
    assert diff < 1e-6, diff
    """
)


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


# ----------------------------------------------------------------------------- samples (P-Net windows)

from mtcnn_jax.data import samples  # noqa: E402


def test_iou_hand_worked():
    w = np.array([0.0, 0.0, 10.0, 10.0])
    faces = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]], float)
    np.testing.assert_allclose(samples.iou(w, faces), [1.0, 50 / 150, 0.0, 25 / 100])


def test_labels_by_iou():
    face = np.array([[100.0, 100.0, 200.0, 200.0]])  # 100 × 100
    lab = lambda x1, y1, x2, y2: samples.label(np.array([x1, y1, x2, y2], float), face)[0]
    # Shift right by d: IoU = (100 - d) / (100 + d).
    assert lab(110, 100, 210, 200) == losses.POSITIVE  # 90/110 = 0.818
    assert lab(120, 100, 220, 200) == losses.POSITIVE  # 80/120 = 0.667 > 0.65
    assert lab(125, 100, 225, 200) == losses.PART  # 75/125 = 0.6
    assert lab(140, 100, 240, 200) == losses.PART  # 60/140 = 0.4286
    assert lab(150, 100, 250, 200) is None  # 50/150 = 0.333: discarded band
    assert lab(160, 100, 260, 200) == losses.NEGATIVE  # 40/160 = 0.25
    assert samples.label(np.array([0.0, 0, 12, 12]), np.zeros((0, 4)))[0] == losses.NEGATIVE


def test_box_targets_hand_worked_and_round_trip():
    window = np.array([90.0, 80.0, 130.0, 120.0])  # s = 40
    face = np.array([100.0, 90.0, 130.0, 126.0])
    t = samples.box_targets(window, face)
    np.testing.assert_allclose(t, [10 / 40, 10 / 40, 0.0, 6 / 40], rtol=1e-6)
    np.testing.assert_allclose(samples.box_to_pixels(window, t), face, atol=1e-4)


def test_box_targets_match_the_detectors_calibration():
    """The detector's calibration (inclusive 1-based boxes, w = x2 - x1 + 1) inverts the targets."""
    B = pytest.importorskip("mtcnn_jax.boxes")
    window = np.array([90.0, 80.0, 130.0, 120.0])
    t = samples.box_targets(window, np.array([100.0, 90.0, 130.0, 126.0]))
    incl = np.array([[91.0, 81.0, 130.0, 120.0]])  # the window's pixels 90..129 in 1-based inclusive form
    np.testing.assert_allclose(B.calibrate(incl, t[None])[0], [101, 91, 130, 126], atol=1e-4)


def test_landmark_targets_round_trip_and_mirror():
    window = np.array([50.0, 60.0, 150.0, 160.0])  # s = 100
    pts = np.array([[75, 90], [125, 91], [100, 110], [80, 130], [120, 131]], float)
    t = samples.landmark_targets(window, pts)
    np.testing.assert_allclose(t, [0.25, 0.75, 0.5, 0.3, 0.7, 0.3, 0.31, 0.5, 0.7, 0.71], rtol=1e-6)
    np.testing.assert_allclose(samples.landmarks_to_pixels(window, t), pts, atol=1e-4)
    m = samples.mirror_landmarks(t)  # left eye of the mirror = mirrored right eye
    np.testing.assert_allclose(m, [0.25, 0.75, 0.5, 0.3, 0.7, 0.31, 0.3, 0.5, 0.71, 0.7], rtol=1e-6)


def test_mtfl_is_one_based(tmp_path):
    (tmp_path / "mtfl.txt").write_text("a.jpg 11 21 31 41 51 12 22 32 42 52 1 2 2 3\n")
    (tmp_path / "cuhk.txt").write_text("a.jpg 5 60 6 70 10 11 20 21 30 31 40 41 50 51\n")
    m = samples.read_mtfl(tmp_path / "mtfl.txt")[0]
    c = samples.read_cuhk_list(tmp_path / "cuhk.txt")[0]
    np.testing.assert_array_equal(m.points, c.points)
    np.testing.assert_array_equal(c.box, [5, 6, 60, 70])


def test_sample_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a = {"image": rng.integers(0, 256, (3, 12, 12, 3), dtype=np.uint8), "type": np.array([0, 1, 3], np.int32),
         "box": rng.normal(size=(3, 4)).astype(np.float32), "landmarks": rng.uniform(size=(3, 10)).astype(np.float32)}
    samples.save(tmp_path / "s.npz", a, samples.concat([a, a], 12), recipe='{"seed": 1}')
    tr, va, recipe = samples.load(tmp_path / "s.npz")
    assert recipe == '{"seed": 1}' and len(va["type"]) == 6
    for k in samples.FIELDS:
        np.testing.assert_array_equal(tr[k], a[k])
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_cutting_is_deterministic_and_consistent():
    rng_img = np.random.default_rng(0)
    image = rng_img.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    faces = np.array([[50.0, 40.0, 110.0, 110.0], [200.0, 100.0, 240.0, 150.0], [10.0, 10.0, 15.0, 15.0]])
    usable = np.array([True, True, False])
    c = samples.Cutting(size=12, negatives_per_image=20, crops_per_face=30)
    a = samples.cut_detection_samples(image, faces, usable, np.random.default_rng([3, 0, 7]), c)
    b = samples.cut_detection_samples(image, faces, usable, np.random.default_rng([3, 0, 7]), c)
    for k in samples.FIELDS:
        np.testing.assert_array_equal(a[k], b[k])
    n = samples.counts(a)
    assert n["negative"] > 0 and n["positive"] > 0 and n["part"] > 0 and n["landmark"] == 0
    assert a["image"].shape[1:] == (12, 12, 3)
    # Every positive's target maps back to a face that its window overlaps by > 0.65: the
    # window is (face - s·t) and must be square.
    for t in a["box"][a["type"] == losses.POSITIVE]:
        ok = False
        for f in faces[:2]:
            # window corners from the targets: x1 = f.x1 - s·t0, x2 = f.x2 - s·t2 with x2 - x1 = s
            s = (f[2] - f[0]) / (1 + t[2] - t[0])
            w = f - s * t
            ok |= abs((w[2] - w[0]) - (w[3] - w[1])) < 1e-3 and samples.iou(w, f[None])[0] > 0.65
        assert ok
    assert np.all(a["box"][a["type"] == losses.NEGATIVE] == 0)


# ----------------------------------------------------------------------------- acceptance: the real loop

import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

from mtcnn_jax import config_utils  # noqa: E402
from conftest import sigkill_when  # noqa: E402


def _metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


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
    # Held-out samples come from other images than the training samples.
    train_set, val_set, _ = samples.load(tmp_path / "w" / "samples.npz")
    assert len(val_set["type"]) > 1000 and len(train_set["type"]) > 2 * len(val_set["type"])
    for f in ("samples.npz", "config.json", "metrics.jsonl"):
        assert (tmp_path / "w" / f).is_file()
    assert list((tmp_path / "w" / "tensorboard").glob("events.out.tfevents.*"))
    assert int(state.step) == config.total_steps


_SMALL = [
    ("total_steps", "1000"), ("checkpoint_every", "100"), ("eval_every", "1000"), ("log_every", "100"),
    ("data.wider_images", "30"), ("data.landmark_faces", "200"),
]


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
    # Same cut samples (deterministic, see test_cutting_is_deterministic_and_consistent): reuse them.
    (tmp_path / "straight").mkdir()
    shutil.copy(killed / "samples.npz", tmp_path / "straight" / "samples.npz")
    straight, _ = train.train_and_evaluate(config, tmp_path / "straight", progress=False)
    for a, b in zip(jax.tree.leaves(jax.device_get(resumed.params)), jax.tree.leaves(jax.device_get(straight.params))):
        np.testing.assert_array_equal(a, b)
    # The metrics file has each train log once (lines past the checkpoint were dropped).
    steps = [m["step"] for m in _metrics(killed) if m["split"] == "train"]
    assert steps == list(range(100, 1001, 100)), steps


def test_authors_onet_agrees_with_our_targets(data_dir):
    """The released O-Net, run on our 48×48 windows, predicts our box and landmark targets
    far better than a constant would: the layout, the 0-based frame, the normalisation by
    the window side and the mirroring match the authors'."""
    from mtcnn_jax import pretrained  # noqa: PLC0415

    config = config_utils.get(
        "configs/onet.py:runlocal", [("data.root", str(data_dir)), ("data.wider_images", "20"), ("data.landmark_faces", "100")]
    )
    train_set, _ = samples.build(config.data, 48, 0)
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


def test_cut_averages_like_the_detectors_crops():
    """Training windows are shrunk by area averaging (the detector's "antialiased" resize), not bilinear."""
    block = np.zeros((6, 6), np.uint8)
    block[0:3, 0:3] = 0
    block[1, 1] = 9  # top-left 3×3 block: eight 0s and a 9 → mean 1
    block[0:3, 3:6] = 3  # → 3
    block[3:6, 0:3] = 9
    block[4, 1] = 0  # eight 9s and a 0 → mean 8
    block[3:6, 3:6] = 6  # → 6
    image = np.zeros((8, 8, 3), np.uint8)
    image[1:7, 1:7, 0] = block
    window = np.array([1, 1, 7, 7])  # half-open: pixels 1..6, shrunk 3× to 2×2
    patch = samples.cut(image, window, 2)
    np.testing.assert_array_equal(patch[..., 0], [[1, 3], [8, 6]])
    assert not patch[..., 1:].any()
    # bilinear (the old method) samples each block's centre pixel instead: 9, 3, 0, 6
    np.testing.assert_array_equal(samples.cut(image, window, 2, "bilinear")[..., 0], [[9, 3], [0, 6]])
