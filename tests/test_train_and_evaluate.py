"""The whole training loop on synthetic data, as flax's ``examples/*/train_test.py``: no shared data needed.

A WIDER-format folder and a CUHK landmark list are made here from the bundled
public-domain portrait (``mtcnn_jax/assets/astronaut.jpg``): its face, resized and
pasted at known places on smooth random backgrounds, with its box and five points
moved along. P-Net then trains on windows cut from them through the same
``train_and_evaluate`` the ``mtcnn-jax train`` command runs (cutting into the sample
store, the ``shard_map`` step, held-out evaluation, metrics log, Orbax checkpoints),
and must learn to tell the faces from the background.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

from mtcnn_jax import config_utils, train

ASTRONAUT = Path(__file__).resolve().parents[1] / "mtcnn_jax" / "assets" / "astronaut.jpg"
#: The portrait's face: a square crop around it (x0, y0, side) and, inside the
#: photo, its half-open box and five points (left eye, right eye, nose, mouth corners),
#: as the authors' weights find them (`mtcnn-jax detect` on the photo, rounded).
CROP = (166, 50, 112)
FACE = np.array([179.0, 60.0, 268.0, 174.0])
POINTS = np.array([[204.0, 101.0], [246.5, 103.0], [224.5, 129.0], [201.5, 139.5], [245.0, 142.0]])


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _paste(canvas, face_rgb, x, y, side):
    """Paste the face crop resized to ``side`` at (x, y); return its box and points in the canvas."""
    canvas[y : y + side, x : x + side] = cv2.resize(face_rgb, (side, side), interpolation=cv2.INTER_AREA)
    x0, y0, s0 = CROP
    scale = side / s0
    box = (FACE - [x0, y0, x0, y0]) * scale + [x, y, x, y]
    points = (POINTS - [x0, y0]) * scale + [x, y]
    return box, points


def make_synthetic_data(root: Path, n_images: int = 48, n_landmark_faces: int = 160, seed: int = 0) -> None:
    """``root/synthetic`` (WIDER format: images/ + gt file) and ``root/landmarks`` (CUHK list)."""
    rng = np.random.default_rng(seed)
    photo = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    x0, y0, s0 = CROP
    face = photo[y0 : y0 + s0, x0 : x0 + s0]
    images = root / "synthetic" / "images" / "0--Synthetic"
    images.mkdir(parents=True)
    lines = []
    for i in range(n_images):
        canvas = _background(rng, 160, 200)
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(30, 70))
            x, y = int(rng.integers(0, 200 - side)), int(rng.integers(0, 160 - side))
            box, _ = _paste(canvas, face, x, y, side)
            boxes.append(box)
        name = f"0--Synthetic/{i:03d}.jpg"
        cv2.imwrite(str(root / "synthetic" / "images" / name), canvas[:, :, ::-1])
        lines += [name, str(len(boxes))]
        lines += [f"{b[0]:.1f} {b[1]:.1f} {b[2] - b[0]:.1f} {b[3] - b[1]:.1f} 0 0 0 0 0 0" for b in boxes]
    (root / "synthetic" / "wider_face_train_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    lm = root / "landmarks"
    (lm / "faces").mkdir(parents=True)
    rows = []
    for i in range(n_landmark_faces):
        canvas = _background(rng, 96, 96)
        side = int(rng.integers(50, 80))
        x, y = int(rng.integers(0, 96 - side)), int(rng.integers(0, 96 - side))
        box, points = _paste(canvas, face, x, y, side)
        cv2.imwrite(str(lm / "faces" / f"{i:03d}.jpg"), canvas[:, :, ::-1])
        # CUHK: path left right top bottom x1 y1 ... x5 y5 (0-based pixels)
        rows.append(" ".join([f"faces\\{i:03d}.jpg", *(f"{v:.1f}" for v in (box[0], box[2], box[1], box[3])),
                              *(f"{v:.1f}" for v in points.reshape(-1))]))
    (lm / "list.txt").write_text("\n".join(rows) + "\n")


def synthetic_config(root: Path, steps: int = 300):
    c = config_utils.base_config()
    c.stage = "pnet"
    c.data.root = str(root)
    c.data.wider, c.data.landmarks, c.data.landmark_list = "synthetic", "landmarks", "list.txt"
    c.data.wider_images, c.data.landmark_faces = 48, 160
    c.data.negatives_per_image, c.data.negatives_per_face, c.data.crops_per_face = 20, 3, 10
    c.data.crops_per_landmark_face, c.data.min_face, c.data.workers = 2, 12, 1
    c.data.val_every = 6
    c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 48, 16, 16, 32
    c.total_steps = steps
    c.log_every, c.eval_every, c.checkpoint_every = 50, 100, 100
    c.optimizer.learning_rate = 0.01
    c.optimizer.decay_at = (0.7,)
    return config_utils.validate(c)


@pytest.mark.slow
def test_train_and_evaluate_learns_faces_from_synthetic_data(tmp_path):
    make_synthetic_data(tmp_path / "data")
    config = synthetic_config(tmp_path / "data")
    workdir = tmp_path / "run"
    state, val = train.train_and_evaluate(config, workdir, progress=False)

    assert int(state.step) == config.total_steps
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    held_out = [r for r in log if r["split"] == "val"]
    assert [r["step"] for r in held_out] == [0, 100, 200, 300]
    first, last = held_out[0], held_out[-1]
    # The untrained net guesses; after 300 steps it separates faces from background
    # and its held-out loss has fallen by more than half.
    assert last["loss"] < 0.5 * first["loss"], (first["loss"], last["loss"])
    assert last["accuracy"] > 0.9 and last["recall"] > 0.8, last
    assert val["accuracy"] == pytest.approx(last["accuracy"])
    assert all(np.isfinite(r["loss"]) for r in log)
    # What the run leaves: samples (stores + their settings), checkpoints, TensorBoard events.
    assert (workdir / "samples" / "settings.json").is_file()
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())[-1] == 300
    assert any((workdir / "tensorboard").iterdir())

    # Rerun on the finished workdir: restores step 300, trains nothing, same params.
    again, _ = train.train_and_evaluate(config, workdir, progress=False)
    assert int(again.step) == 300
    same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), state.params, again.params)
    assert all(jax.tree.leaves(same))
