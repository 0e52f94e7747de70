"""The whole recipe (configs/cascade.py:tiny, shortened): trains, loads into the detector, resumes."""

import json

import numpy as np
import pytest

from mtcnn_jax import cli, config_utils
from mtcnn_jax import recipe
from mtcnn_jax.commands import train_cascade as cmd
from mtcnn_jax.data import store
from mtcnn_jax.errors import UserError
from mtcnn_jax.losses import SAMPLE_TYPES

# The tiny recipe with fewer steps and eval images: the pipeline, not the accuracy, is under test.
SHORT = [("pnet.total_steps", "300"), ("rnet.total_steps", "24"), ("onet.total_steps", "16"), ("eval.images", "3")]


def test_variants_load_and_validate():
    for variant in ("mini", "tiny", "paper"):
        c = cmd.load(f"configs/cascade.py:{variant}")
        assert c.pnet.stage == "pnet" and c.rnet.stage == "rnet" and c.onet.stage == "onet"
        assert (c.mining.negative_iou, c.mining.part_iou, c.mining.positive_iou) == (0.3, 0.4, 0.65)
    paper = cmd.load("configs/cascade.py:paper")
    assert paper.onet.alpha.landmarks == 1.0 and paper.pnet.alpha.landmarks == 0.5
    with pytest.raises(UserError, match="unknown config variant"):
        cmd.load("configs/cascade.py:huge")
    c = cmd.load("configs/cascade.py:tiny", [("rnet.total_steps", "7"), ("mining.negatives_per_image", "9")])
    assert c.rnet.total_steps == 7 and c.mining.negatives_per_image == 9
    with pytest.raises(UserError, match="rnet"):
        cmd.load("configs/cascade.py:tiny", [("rnet.total_steps", "0")])
    with pytest.raises(UserError, match="IoU"):
        cmd.load("configs/cascade.py:tiny", [("mining.part_iou", "0.2")])
    with pytest.raises(UserError, match="unknown config key"):
        cmd.load("configs/cascade.py:tiny", [("mining.nope", "1")])


def test_stage_config_takes_root_and_seed():
    c = cmd.load("configs/cascade.py:tiny", [("seed", "5"), ("data_root", "/somewhere")])
    s = recipe.stage_config(c, "onet")
    assert s.seed == 5 and s.data.root == "/somewhere" and s.stage == "onet"
    cs = recipe.cascade_settings(c)
    assert cs.onet == s and cs.stage("pnet").seed == 5 and cs.eval.root == "/somewhere"
    assert cs.mining.pyramid == "original" and cs.eval.thresholds == (0.6, 0.7, 0.7)


@pytest.mark.slow
def test_tiny_cascade_trains_loads_and_resumes(tmp_path, data_dir, capsys):
    from mtcnn_jax import MTCNN, load_image

    work = tmp_path / "cascade"
    config = cmd.load("configs/cascade.py:tiny", SHORT + [("data_root", str(data_dir))])
    logs = []
    summary = recipe.train_cascade(config, work, progress=False, log=logs.append)
    for step in recipe.STEPS:
        assert (work / step / "done.json").is_file(), step
        assert summary[step]["seconds"] > 0
    assert logs[0] == "pnet_samples: running" and logs[-1].startswith("eval: finished")
    # Sample stores: P-Net windows 12×12, mined R-Net / O-Net windows 24×24 / 48×48 with every type.
    for stage, size in (("pnet", 12), ("rnet", 24), ("onet", 48)):
        train, val = store.read_sets(work / f"{stage}_samples", stage)
        assert train["image"].shape[1:] == (size, size, 3) and len(val["type"])
        counts = summary[f"{stage}_samples"]["counts"]["train"]
        assert counts == {name: int(np.sum(train["type"] == k)) for k, name in enumerate(SAMPLE_TYPES)}
    mined = summary["rnet_samples"]["mining"]["train"]
    assert mined["images"] == 9 and mined["n_skipped_images"] == 0 and mined["proposals"] > 0
    # Evaluation in the workdir, AP per setting.
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert set(metrics["ap"]) == {"all", ">=20", ">=40"} and metrics["images"] == 3
    assert all(0.0 <= v <= 1.0 for v in metrics["ap"].values())
    # Stage diagnostics: each trained stage inside the authors' cascade, and its held-out recall.
    stages = metrics["stages"]
    assert set(stages) == {"pnet", "rnet", "onet"} and stages == summary["eval"]["stages"]
    for stage, d in stages.items():
        assert set(d["ap_in_authors_cascade"]) == {"all", ">=20", ">=40"}
        assert d["recall"] == summary[stage]["val"]["recall"] and 0.0 <= d["recall"] <= 1.0
        assert d["threshold"] == (0.6 if stage == "pnet" else 0.7)
    # Calibration: R-Net / O-Net's operating point chosen on the 3 held-out training images.
    cal = summary["calibrate"]
    assert cal["operating_point"] in (0.7, 0.1) and cal["images"] == 3 and set(cal["validation_ap"]) == {"0.7", "0.1"}
    best = cal["validation_ap"][str(cal["operating_point"])]
    assert all((best[">=20"] + best[">=40"]) >= (ap[">=20"] + ap[">=40"]) for ap in cal["validation_ap"].values())
    lines = recipe.summary_lines(summary)
    assert lines[1].startswith("WIDER AP: all ") and lines[-1].startswith("onet: AP all ")
    assert lines[2].startswith(f"calibrated R-Net / O-Net: the default thresholds act as {cal['operating_point']:g}")
    assert "authors' P/R + trained O; held-out mined windows: recall" in lines[-1]
    # The cascade loads like the authors' weights, and detects. A small image and min face 40: an
    # undertrained P-Net proposes tens of thousands of windows on a large photo (minutes of NMS).
    import cv2

    image = load_image(data_dir / "demo_multiface" / "test_input_2.jpg")
    small = np.ascontiguousarray(cv2.resize(image, (320, 167), interpolation=cv2.INTER_AREA))
    det = MTCNN(weights=work, min_face_size=40)
    faces = det.detect(small)
    assert faces.boxes.shape[1:] == (4,) and faces.landmarks.shape[1:] == (5, 2)
    assert len(faces.scores) == len(faces.boxes)
    small_path = tmp_path / "small.png"
    cv2.imwrite(str(small_path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    out = tmp_path / "det.json"
    assert cli.main(["detect", str(small_path), "--weights", str(work), "--min-face", "40", "--json", str(out)]) == 0
    assert json.loads(out.read_text())
    # The trained params, not the authors': O-Net's conv1 differs from the shipped one.
    from mtcnn_jax.pretrained import load_pretrained, load_params

    trained = load_params(work / "params.msgpack")
    assert not np.allclose(trained["onet"]["conv1"]["kernel"], load_pretrained()["onet"]["conv1"]["kernel"])
    assert "landmarks" in trained["pnet"]  # our P-Net has the landmark head the release lacks

    # Rerun: every finished step is skipped, nothing is retrained or rewritten.
    stamps = {s: (work / s / "done.json").stat().st_mtime_ns for s in recipe.STEPS}
    logs.clear()
    again = recipe.train_cascade(config, work, progress=False, log=logs.append)
    assert logs == [f"{s}: done before ({summary[s]['seconds']:.0f} s), skipped" for s in recipe.STEPS]
    assert {s: (work / s / "done.json").stat().st_mtime_ns for s in recipe.STEPS} == stamps
    assert again["eval"]["ap"] == summary["eval"]["ap"]

    # An interrupted stage (no done marker) resumes from its checkpoint: O-Net's last checkpoint is
    # restored, no step is redone, and the saved params come out the same; later steps run again.
    before = (work / "onet" / "params.msgpack").read_bytes()
    (work / "onet" / "done.json").unlink()
    (work / "eval" / "done.json").unlink()
    lines = (work / "onet" / "metrics.jsonl").read_text().splitlines()
    logs.clear()
    recipe.train_cascade(config, work, progress=False, log=logs.append)
    assert logs[:5] == [f"{s}: done before ({summary[s]['seconds']:.0f} s), skipped" for s in recipe.STEPS[:5]]
    assert logs[5] == "onet: running" and logs[7].startswith("calibrate: done before")
    assert logs[8] == "eval: running" and logs[-1].startswith("eval: finished")
    assert (work / "onet" / "params.msgpack").read_bytes() == before
    assert (work / "onet" / "metrics.jsonl").read_text().splitlines() == lines  # no new training steps logged


@pytest.mark.slow
def test_stage_diagnostics_swap_one_stage_into_the_authors_cascade(tmp_path, data_dir):
    """With the authors' own params as the "trained" stages every swap is the authors' cascade; with
    a P-Net whose face score never passes, the P-Net swap finds nothing and the others are unchanged."""
    import jax

    from mtcnn_jax.pretrained import load_pretrained, save_params

    config = cmd.load("configs/cascade.py:tiny", [("data_root", str(data_dir))])
    cs = recipe.cascade_settings(config)
    authors = load_pretrained()
    blind = jax.tree_util.tree_map(np.asarray, authors["pnet"])
    blind["face"] = dict(blind["face"], bias=np.array([50.0, -50.0], np.float32))  # "no face" everywhere
    save_params(tmp_path / "params.msgpack", dict(authors, pnet=blind))
    summary = {"rnet": {"val": {"recall": 0.5, "accuracy": 0.9}}}
    d = recipe.stage_diagnostics(cs, tmp_path, summary)
    full = recipe.evaluate_cascade(None, cs.eval)["ap"]
    assert full[">=40"] > 0.3, full
    assert d["rnet"]["ap_in_authors_cascade"] == full and d["onet"]["ap_in_authors_cascade"] == full
    assert d["pnet"]["ap_in_authors_cascade"] == {k: 0.0 for k in full}
    assert (d["rnet"]["recall"], d["rnet"]["accuracy"], d["pnet"]["recall"]) == (0.5, 0.9, None)


def test_calibrated_face_bias_by_hand():
    """R-Net / O-Net's face bias (index 1) gains logit(threshold) - logit(point): a window the raw
    network scores exactly ``point`` then scores the detector's threshold."""
    def net(b0, b1):
        return {"face": {"kernel": np.zeros((2, 2), np.float32), "bias": np.array([b0, b1], np.float32)},
                "box": {"bias": np.zeros(4, np.float32)}}

    params = {"pnet": net(0.0, 0.0), "rnet": net(0.0, 0.0), "onet": net(1.0, 0.5)}
    out = recipe.calibrated(params, (0.6, 0.7, 0.8), 0.2)
    # logit(0.7) - logit(0.2) = ln(7/3) + ln 4 = 0.8473 + 1.3863 = 2.2336; logit(0.8) - logit(0.2) = 2 ln 4 = 2.7726
    np.testing.assert_allclose(out["rnet"]["face"]["bias"], [0.0, 2.2336], atol=1e-4)
    np.testing.assert_allclose(out["onet"]["face"]["bias"], [1.0, 0.5 + 2.7726], atol=1e-4)
    assert out["pnet"] is params["pnet"] and params["rnet"]["face"]["bias"][1] == 0.0  # the input is untouched
    # A window the raw R-Net scores 0.2 (face - non-face logit = logit(0.2)) now scores 0.7.
    d = np.log(0.2 / 0.8) + out["rnet"]["face"]["bias"][1] - out["rnet"]["face"]["bias"][0]
    assert 1 / (1 + np.exp(-d)) == pytest.approx(0.7, abs=1e-5)


def test_calibration_setting_is_checked():
    with pytest.raises(UserError, match="config.calibration"):
        cmd.load("configs/cascade.py:mini", [("calibration", "(0.7, 1.5)")])
    assert recipe.cascade_settings(cmd.load("configs/cascade.py:mini", [])).calibration == (0.7, 0.3, 0.1, 0.05, 0.02)


def test_held_out_images_are_those_no_stage_trained_on():
    cs = recipe.cascade_settings(cmd.load("configs/cascade.py:mini", [("data_root", "/data")]))
    folder, idx = recipe.held_out_images(cs)
    assert str(folder) == "/data/widerface_train_mini"
    assert list(idx) == list(range(9, 640, 10))  # every 10th of the 640 images, as each stage's split
    # R-Net holds out images 3, 7 and 11 of its first 12, P-Net and O-Net image 9 of those: none by all.
    cs = recipe.cascade_settings(cmd.load("configs/cascade.py:mini", [("rnet.data.val_every", "4"),
                                                                     ("rnet.data.wider_images", "12")]))
    assert list(recipe.held_out_images(cs)[1]) == []
    cs = recipe.cascade_settings(cmd.load("configs/cascade.py:mini", [("onet.data.val_every", "5")]))
    assert list(recipe.held_out_images(cs)[1]) == list(range(9, 640, 10))  # 9 mod 10 is 4 mod 5


def _data_root(tmp_path):
    """A WIDER folder (one corrupt image, one malformed face line) and a CUHK landmark list (one missing image)."""
    import cv2

    rng = np.random.default_rng(0)
    wider = tmp_path / "data" / "wider"
    (wider / "images" / "0--a").mkdir(parents=True)
    lines = []
    for k in range(6):
        name = f"0--a/{k}.jpg"
        if k == 2:
            (wider / "images" / name).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
        else:
            cv2.imwrite(str(wider / "images" / name), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
        lines += [name, "1", "30 30 50 50 0 0 0 0 0 0"]
    lines[4] = "2"
    lines.insert(6, "1 2 three 4 0 0 0 0 0 0")  # line 7: malformed face line of 0--a/1.jpg; 2.jpg on line 8
    (wider / "wider_face_train_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    lm = tmp_path / "data" / "lm"
    lm.mkdir()
    cv2.imwrite(str(lm / "a.jpg"), rng.integers(0, 256, (100, 100, 3), dtype=np.uint8))
    pts = "35 40 65 40 50 55 38 70 62 70"
    (lm / "list.txt").write_text(f"a.jpg 20 80 20 80 {pts}\nmissing.jpg 20 80 20 80 {pts}\na.jpg 20 80 20 80 {pts}\n")
    return tmp_path / "data"


def test_pnet_samples_skip_and_count_corrupt_image_and_bad_line(tmp_path, capsys):
    root = _data_root(tmp_path)
    over = [("data_root", str(root)), ("pnet.data.wider", "wider"), ("pnet.data.landmarks", "lm"),
            ("pnet.data.landmark_list", "list.txt"), ("pnet.data.val_every", "3")]
    config = cmd.load("configs/cascade.py:tiny", over)
    summary = recipe.train_cascade(config, tmp_path / "work", progress=False, log=None, stop_after="pnet_samples")
    s = summary["pnet_samples"]
    assert s["n_skipped_images"] == 2 and s["n_skipped_lines"] == 1
    gt = str(root / "wider" / "wider_face_train_bbx_gt.txt")
    assert s["skipped_lines"][0].startswith(f"{gt}:7:")
    assert any("2.jpg" in m and f"{gt}:8): cannot read image" in m for m in s["skipped_images"])  # path and its gt line
    assert any("missing.jpg" in m for m in s["skipped_images"])
    assert s["counts"]["train"]["landmark"] > 0 and s["counts"]["train"]["negative"] > 0
    err = capsys.readouterr().err
    assert "skipped:" in err and "2.jpg" in err and ":7:" in err
    assert not (tmp_path / "work" / "pnet").exists()  # stopped after the samples


def test_proposal_cache_round_trip_and_key(tmp_path):
    """O-Net mining reuses R-Net mining's P-Net proposals only when P-Net's settings are the same."""
    a = np.array([[1.0, 2.0, 30.0, 31.0, 0.9], [5.0, 6.0, 20.0, 21.0, 0.7]])
    cache = {"0--Parade/a.jpg": a, "1--Handshaking/b.jpg": np.zeros((0, 5))}
    path = tmp_path / "proposals.npz"
    recipe.save_proposals(path, cache, "key-1")
    back = recipe.load_proposals(path, "key-1")
    assert sorted(back) == sorted(cache)
    np.testing.assert_array_equal(back["0--Parade/a.jpg"], a)
    assert back["1--Handshaking/b.jpg"].shape == (0, 5)
    assert recipe.load_proposals(path, "key-2") == {}  # other P-Net settings: run P-Net again
    assert recipe.load_proposals(tmp_path / "absent.npz", "key-1") == {}
    config = cmd.load("configs/cascade.py:tiny")
    other = cmd.load("configs/cascade.py:tiny")
    other.mining.pnet_threshold = 0.5
    key = lambda c: recipe._proposal_key(recipe.cascade_settings(c).mining)  # noqa: E731
    assert key(config) != key(other)
    other.mining.pnet_threshold = 0.6
    other.mining.negatives_per_image = 1  # not a P-Net setting
    assert key(config) == key(other)


def test_cli_stop_after_leaves_later_steps_for_the_next_call(tmp_path, data_dir, capsys):
    from mtcnn_jax import cli

    work = tmp_path / "cascade"
    args = ["train-cascade", "--config", "configs/cascade.py:tiny", "--workdir", str(work), "--no-progress",
            f"--config.data_root={data_dir}"] + [f"--config.{k}={v}" for k, v in SHORT]
    assert cli.main(args + ["--stop-after", "pnet_samples"]) == 0
    assert (work / "pnet_samples" / "done.json").is_file() and not (work / "pnet").exists()
    assert f"stopped after pnet_samples: {work}/pnet_samples" in capsys.readouterr().out
    assert cli.main(args + ["--stop-after", "rnet_sample"]) == 2
    assert "--stop-after: unknown step 'rnet_sample' (one of pnet_samples, pnet," in capsys.readouterr().err


def test_step_settings_by_hand():
    """A step's settings are the config keys its result depends on, dotted, less the neutral ones."""
    config = cmd.load("configs/cascade.py:tiny", [])
    cut = recipe.step_settings(config, "pnet_samples")
    assert cut["seed"] == 0 and cut["pnet.data.wider"] == "widerface_train_mini" and "pnet.data.root" not in cut
    assert not any(k.startswith(("rnet.", "mining.", "eval.", "pnet.optimizer.")) for k in cut)
    pnet = recipe.step_settings(config, "pnet")
    assert pnet["pnet.total_steps"] == 400 and pnet["pnet.alpha.landmarks"] == 0.5 and "pnet.log_every" not in pnet
    assert "data_root" not in pnet and set(cut) < set(pnet)
    mined = recipe.step_settings(config, "onet_samples")
    assert mined["rnet.optimizer.name"] == "adam" and "onet.data.crops_per_face" in mined
    assert "onet.total_steps" not in mined  # O-Net's training does not change its samples
    assert mined["mining.rnet_threshold"] == 0.7 and mined["mining.pnet_threshold"] == 0.6
    for step in ("rnet_samples", "rnet"):  # mined before R-Net proposes anything
        rnet = recipe.step_settings(config, step)
        assert "mining.rnet_threshold" not in rnet and rnet["mining.pnet_threshold"] == 0.6
    onet = recipe.step_settings(config, "onet")
    assert onet["mining.pnet_threshold"] == 0.6 and onet["onet.alpha.landmarks"] == 1.0
    assert not any(k.startswith("eval.") for k in onet)
    assert recipe.step_settings(config, "eval")["eval.thresholds"] == [0.6, 0.7, 0.7]
    # Keys only one side has (the schema grew) are not compared.
    assert config_utils.settings_change({"a": 1, "b": [1, 2], "d": "x"}, {"a": 1.5, "b": [1, 3], "c": "x"}) == [
        "a: 1 -> 1.5", "b: [1, 2] -> [1, 3]"]
    calibrate = recipe.step_settings(config, "calibrate")
    assert calibrate["eval.thresholds"] == [0.6, 0.7, 0.7] and "eval.wider" not in calibrate


def test_rerun_with_other_settings_is_refused(tmp_path, capsys):
    """A step made with other settings is neither skipped nor resumed: the rerun stops in one line that
    names the step and the setting; a change that no made step depends on, or a neutral one, runs."""
    root = _data_root(tmp_path)
    over = [("data_root", str(root)), ("pnet.data.wider", "wider"), ("pnet.data.landmarks", "lm"),
            ("pnet.data.landmark_list", "list.txt"), ("pnet.data.val_every", "3")]
    work = tmp_path / "work"
    recipe.train_cascade(cmd.load("configs/cascade.py:tiny", over), work, progress=False, log=None,
                         stop_after="pnet_samples")
    made = json.loads((work / "pnet_samples" / recipe.SETTINGS_FILE).read_text())
    assert made["pnet.data.val_every"] == 3 and "pnet.total_steps" not in made
    stamp = (work / "pnet_samples" / "done.json").stat().st_mtime_ns

    changed = cmd.load("configs/cascade.py:tiny", over + [("pnet.data.val_every", "4")])
    with pytest.raises(UserError) as err:
        recipe.train_cascade(changed, work, progress=False, log=None, stop_after="pnet_samples")
    assert str(err.value) == (f"{work / 'pnet_samples'} was made with other settings than this config "
                              "(pnet.data.val_every: 3 -> 4): run it in a new --workdir")
    assert (work / "pnet_samples" / "done.json").stat().st_mtime_ns == stamp  # nothing was touched

    # P-Net's training and logging and R-Net's settings do not touch the P-Net samples: they are reused.
    logs: list = []
    fine = cmd.load("configs/cascade.py:tiny", over + [("rnet.alpha.landmarks", "0"), ("pnet.log_every", "7"),
                                                       ("pnet.total_steps", "500")])
    recipe.train_cascade(fine, work, progress=False, log=logs.append, stop_after="pnet_samples")
    assert logs == [logs[0]] and logs[0].startswith("pnet_samples: done before")

    # The CLI says the same in one line and exits non-zero.
    capsys.readouterr()
    args = ["train-cascade", "--config", "configs/cascade.py:tiny", "--workdir", str(work), "--no-progress",
            "--stop-after", "pnet_samples"]
    args += [f"--config.{k}={v}" for k, v in over + [("pnet.data.val_every", "4")]]
    assert cli.main(args) != 0
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [f"mtcnn-jax: {err.value}"]

    # A step made before steps kept a record is taken as it is, but not offered for copying.
    for step in ("pnet_samples", "pnet"):
        (work / step).mkdir(exist_ok=True)
    (work / "pnet_samples" / recipe.SETTINGS_FILE).rename(work / "pnet" / recipe.SETTINGS_FILE)
    with pytest.raises(UserError) as err:
        recipe.train_cascade(changed, work, progress=False, log=None, stop_after="pnet_samples")
    assert str(err.value).startswith(f"{work / 'pnet'} was made with other settings than this config "
                                     "(pnet.data.val_every: 3 -> 4)")
    assert str(err.value).endswith("run it in a new --workdir")  # pnet_samples has no record: not offered
    (work / "pnet" / recipe.SETTINGS_FILE).rename(work / "pnet_samples" / recipe.SETTINGS_FILE)
    (work / "pnet").rmdir()

    (work / "pnet_samples" / recipe.SETTINGS_FILE).write_text("{not json")
    with pytest.raises(UserError, match="step_settings.json is damaged: cannot tell which settings pnet_samples"):
        recipe.train_cascade(changed, work, progress=False, log=None, stop_after="pnet_samples")
