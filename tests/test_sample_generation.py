"""Sample generation: parallel cutting equals the serial run; landmark lists in each format feed build()."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax import boxes as boxes_lib
from mtcnn_jax import config_utils
from mtcnn_jax import recipe
from mtcnn_jax.data import samples
from mtcnn_jax.errors import UserError
from mtcnn_jax.losses import LANDMARK
from mtcnn_jax.settings import TrainSettings


def _config(root, wider, landmarks, landmark_list, **data) -> TrainSettings:
    c = config_utils.base_config()
    c.data.root, c.data.wider, c.data.landmarks, c.data.landmark_list = str(root), str(wider), str(landmarks), landmark_list
    for k, v in data.items():
        c.data[k] = v
    return TrainSettings.from_config(c)


def test_two_workers_give_the_serial_arrays_and_reports(data_dir, tmp_path):
    # 20 real WIDER images and 20 real LFW faces (absolute paths in a list of our own),
    # plus one missing image and one malformed line: both reported the same way.
    real = data_dir / "mtfl_lfw_train_landmarks"
    lines = (real / "cuhk_trainImageList_lfw.txt").read_text().splitlines()[:20]
    lines = [f"{real / ln.split()[0]} {' '.join(ln.split()[1:])}" for ln in lines]
    lines.insert(3, "missing.jpg 84 161 92 169 106 107 146 112 125 142 105 157 139 161")
    lines.insert(7, "short.jpg 1 2 3")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    c = _config(tmp_path, data_dir / "widerface_train_mini", tmp_path, "list.txt", wider_images=20, landmark_faces=21,
                val_every=5, negatives_per_image=10, crops_per_face=4)
    out = {}
    for workers in (1, 2):
        skipped: dict = {}
        out[workers] = samples.build(dataclasses.replace(c.data, workers=workers), 12, 7, skipped, progress=True), skipped
    (a, skip_a), (b, skip_b) = out[1], out[2]
    for x, y in zip(a, b):
        assert set(x) == set(y) == set(samples.FIELDS)
        for k in samples.FIELDS:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
            assert x[k].tobytes() == y[k].tobytes(), k
    n = samples.counts(a[0])
    assert min(n.values()) > 0 and a[0]["image"].shape[1:] == (12, 12, 3)
    assert skip_a == skip_b
    assert skip_a["lines"] == [f"{tmp_path / 'list.txt'}:8: expected 15 fields "
                               "'path left right top bottom x1 y1 ... x5 y5', got 4"]
    assert skip_a["images"] == [f"{tmp_path / 'missing.jpg'} ({tmp_path / 'list.txt'}:4): cannot read image"]


def test_run_tasks_keeps_task_order_over_processes(tmp_path):
    # Images whose only content is their index: the landmark windows must come back in task order.
    c = samples.Cutting(size=12, crops_per_landmark_face=1, mirror=False)
    pts = np.array([[35, 40], [65, 40], [50, 55], [38, 70], [62, 70]], np.float64)
    faces = []
    for i in range(7):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((100, 100, 3), 10 * i, np.uint8))
        faces.append(samples.LandmarkFace(f"{i}.png", np.array([20.0, 20.0, 80.0, 80.0]), pts, f"l:{i + 1}"))
    got = samples.landmark_samples(tmp_path, faces, np.arange(7), 0, c, workers=2)
    assert got["image"][:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 50, 60]


def _celeba(tmp_path) -> Path:
    """A CelebA-format folder: three 120×120 images, one listed but absent, one bad line."""
    folder = tmp_path / "celeba"
    (folder / "img_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("000001.jpg", "000002.jpg", "000003.jpg"):
        cv2.imwrite(str(folder / "img_celeba" / name), rng.integers(0, 256, (120, 120, 3), dtype=np.uint8))
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    pts = "35 40 65 40 50 55 38 70 62 70"
    (folder / "list_landmarks_celeba.txt").write_text(
        f"5\n{header}\n000001.jpg {pts}\n000002.jpg {pts}\n000009.jpg {pts}\n000003.jpg 1 2\n000003.jpg {pts}\n")
    (folder / "list_bbox_celeba.txt").write_text(
        "4\nimage_id x_1 y_1 width height\n"
        "000001.jpg 20 20 60 60\n000002.jpg 20 20 60 60\n000003.jpg 20 20 60 60\n000009.jpg 20 20 60 60\n")
    return folder


def test_build_reads_celeba_and_reports_bad_lines_and_images(data_dir, tmp_path):
    folder = _celeba(tmp_path)
    c = _config(tmp_path, data_dir / "widerface_train_mini", "celeba", ".", landmark_format="celeba",
                wider_images=2, landmark_faces=10, val_every=2, crops_per_landmark_face=1, mirror=False, workers=1)
    skipped: dict = {}
    train, val = samples.build(c.data, 12, 0, skipped)
    lm_file = folder / "list_landmarks_celeba.txt"
    assert skipped["lines"] == [f"{lm_file}:6: expected 11 fields (image id and 10 numbers), got 3"]
    # Faces in list order: 000001 (train), 000002 (val), 000009 (train, absent), 000003 (val).
    assert skipped["images"] == [f"{folder / 'img_celeba' / '000009.jpg'} ({lm_file}:5): cannot read image"]
    # One landmark window per face: the box itself (square, 60 px), targets (p - 20) / 60.
    want = np.array([15, 45, 30, 18, 42, 20, 20, 35, 50, 50], np.float32) / 60
    for s, n in ((train, 1), (val, 2)):
        lmk = s["type"] == LANDMARK
        assert lmk.sum() == n
        np.testing.assert_allclose(s["landmarks"][lmk], np.tile(want, (n, 1)), rtol=1e-6)
    image = cv2.cvtColor(cv2.imread(str(folder / "img_celeba" / "000001.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(train["image"][train["type"] == LANDMARK][0],
                                  boxes_lib.resize(image[20:80, 20:80], (12, 12)))
    # Strict (no skipped dict): the first bad line stops the build with its file:line.
    with pytest.raises(UserError, match=r"list_landmarks_celeba\.txt:6: expected 11 fields"):
        samples.build(c.data, 12, 0)


def test_cascade_landmark_part_counts_what_it_skipped(tmp_path, capsys):
    _celeba(tmp_path)
    c = _config(tmp_path, "unused", "celeba", ".", landmark_format="celeba", landmark_faces=10,
                crops_per_landmark_face=1, mirror=False, workers=1)
    summary: dict = {}
    faces = recipe._landmark_faces(c, summary)  # read once for both splits
    out = recipe._landmark_part(c, "rnet", faces, np.array([0, 2]), summary)  # 000001 and the absent 000009
    assert out["image"].shape == (1, 24, 24, 3) and out["type"].tolist() == [LANDMARK]
    assert summary["n_skipped_landmark_lines"] == 1 and summary["skipped_landmark_lines"][0].endswith(
        "list_landmarks_celeba.txt:6: expected 11 fields (image id and 10 numbers), got 3")
    assert len(summary["skipped_landmark_images"]) == 1
    assert summary["skipped_landmark_images"][0].endswith("list_landmarks_celeba.txt:5): cannot read image")
    recipe._landmark_part(c, "rnet", faces, np.array([1, 3]), summary)  # the other split: lines not counted twice
    assert summary["n_skipped_landmark_lines"] == 1 and len(summary["skipped_landmark_images"]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped:") == 2 and "000009.jpg" in err
