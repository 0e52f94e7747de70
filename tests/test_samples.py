"""Cutting training windows (mtcnn_jax.data.samples): IoU labels, box and landmark targets, the cut itself."""

import numpy as np
import pytest

from mtcnn_jax import losses
from mtcnn_jax.data import samples


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


def test_cutting_takes_the_data_settings(tmp_path):
    import dataclasses  # noqa: PLC0415

    from mtcnn_jax import config_utils  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415
    from mtcnn_jax.settings import DataSettings  # noqa: PLC0415

    data = DataSettings.from_config(config_utils.base_config().data)
    c = samples.cutting(dataclasses.replace(data, negatives_per_image=7, mirror=False), 24)
    assert (c.size, c.negatives_per_image, c.negatives_per_face, c.crops_per_face, c.mirror) == (24, 7, 5, 20, False)
    assert c.resize == "antialiased"  # the detector's resize
    with pytest.raises(UserError, match="training data not found"):
        samples.build(dataclasses.replace(data, root=str(tmp_path)), 12, 0)
    assert samples.counts({"type": np.array([3, 0, 0, 2], np.int32)}) == {
        "negative": 2, "positive": 0, "part": 1, "landmark": 1}


def test_mirror_box_targets_by_hand():
    # Window [10, 34) x [20, 44) (side 24) and face [12, 30) x [18, 40) in an image 50 wide: targets
    # (2, -2, -4, -4) / 24. Mirrored (x -> 50 - x): window [16, 40), face [20, 38): (4, -2, -2, -4) / 24.
    window, face = np.array([10.0, 20, 34, 44]), np.array([12.0, 18, 30, 40])
    t = samples.box_targets(window, face)
    np.testing.assert_allclose(t, np.array([2, -2, -4, -4]) / 24, atol=1e-7)
    mirrored = samples.box_targets(np.array([16.0, 20, 40, 44]), np.array([20.0, 18, 38, 40]))
    np.testing.assert_allclose(mirrored, np.array([4, -2, -2, -4]) / 24, atol=1e-7)
    np.testing.assert_allclose(samples.mirror_box_targets(t), mirrored, atol=1e-7)


class _FixedRng:
    """Stands in for a Generator: ``random`` gives set values, ``uniform`` its lower bounds."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def random(self, n):
        return self.values[:n]

    def uniform(self, lo, hi, size):
        return np.full(size, lo, np.float64)


def test_augment_flips_the_chosen_windows_with_their_targets():
    rng = np.random.default_rng(0)
    batch = dict(image=rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8), type=np.array([1, 3], np.int32),
                 box=np.array([[0.1, 0.2, -0.05, 0.15], [0.0, 0.0, 0.0, 0.0]], np.float32),
                 landmarks=np.array([[0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                                     [0.3, 0.75, 0.5, 0.35, 0.6, 0.4, 0.42, 0.6, 0.8, 0.81]], np.float32))
    out = samples.augment(batch, flip=True, colour=0.0, rng=_FixedRng([0.7, 0.2]))  # flips the second only
    np.testing.assert_array_equal(out["image"][0], batch["image"][0])
    np.testing.assert_array_equal(out["image"][1], batch["image"][1][:, ::-1])
    np.testing.assert_array_equal(out["box"], batch["box"])
    # x -> 1 - x with the eyes and the mouth corners swapped; y follows the swap.
    np.testing.assert_allclose(out["landmarks"][1], [0.25, 0.7, 0.5, 0.4, 0.65, 0.42, 0.4, 0.6, 0.81, 0.8], atol=1e-6)
    out = samples.augment(batch, flip=True, colour=0.0, rng=_FixedRng([0.1, 0.9]))  # the first only
    np.testing.assert_allclose(out["box"][0], [0.05, 0.2, -0.1, 0.15], atol=1e-7)
    assert out["image"] is not batch["image"] and batch["box"][0, 0] == np.float32(0.1)  # input untouched


def test_augment_colour_by_hand():
    image = np.array([[[[100, 200, 0]]]], np.uint8)
    batch = dict(image=image, type=np.array([0], np.int32), box=np.zeros((1, 4), np.float32),
                 landmarks=np.zeros((1, 10), np.float32))
    # colour 0.5 at the lower bounds: contrast 0.5, channel factor 0.75, brightness -32:
    # 100 * 0.375 - 32 = 5.5 -> 6 (rint: to even), 200 * 0.375 - 32 = 43, 0 -> -32 -> 0 (clipped).
    out = samples.augment(batch, flip=False, colour=0.5, rng=_FixedRng([]))
    np.testing.assert_array_equal(out["image"], [[[[6, 43, 0]]]])
