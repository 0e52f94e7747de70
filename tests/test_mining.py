"""Hard-sample mining: IoU labelling of detector windows, crops and targets, caps, determinism, skip-and-count."""

import dataclasses

import cv2
import numpy as np
import pytest

from mtcnn_jax import boxes as bx
from mtcnn_jax.data import mining
from mtcnn_jax.data import samples as sp
from mtcnn_jax.losses import NEGATIVE, PART, POSITIVE
from mtcnn_jax.settings import MiningSettings

MINING = MiningSettings(negative_iou=0.3, part_iou=0.4, positive_iou=0.65, negatives_per_image=3, min_face_size=20,
                        factor=0.709, pnet_threshold=0.6, rnet_threshold=0.7, resize="antialiased")


def _cand(half_open):
    """Half-open 0-based boxes → the detector's inclusive 1-based candidates (score 0.9)."""
    b = np.asarray(half_open, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2] + 1, b[:, 2:], np.full((len(b), 1), 0.9)], axis=1)


def test_windows_from_candidates_are_the_detector_crops():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    cand = np.array([[5, 7, 24, 26, 0.9], [-3, 50, 16, 69, 0.8]])  # 20×20, the second leaves the image
    w = mining.windows_from_candidates(cand)
    np.testing.assert_array_equal(w, [[4, 6, 24, 26], [-4, 49, 16, 69]])
    # The detector crops cand[:, :4] - 1 (inclusive 0-based); mining's crop of the window is the same.
    ref = bx.crop_and_resize(image, cand[:, :4] - 1, 24)
    got = mining.mine_image(image, cand, np.zeros((0, 4)), np.zeros(0, bool), 24, np.random.default_rng(0), 10)
    np.testing.assert_array_equal(got["image"], ref)
    # Zero padding where the box leaves the image (top-left corner of the second crop is outside).
    assert bx.crop(image, cand[1, :4] - 1)[:, :3].max() == 0


def test_no_candidates_give_no_samples():
    image = np.zeros((40, 40, 3), np.uint8)
    out = mining.mine_image(image, np.zeros((0, 5)), np.array([[5, 5, 30, 30.0]]), np.array([True]), 48,
                            np.random.default_rng(0), 5)
    assert out["image"].shape == (0, 48, 48, 3) and out["type"].shape == (0,)


def test_label_windows_by_iou():
    faces = np.array([[10, 10, 50, 50]], np.float64)  # 40×40
    windows = np.array(
        [
            [10, 10, 50, 50],  # IoU 1 → positive
            [15, 10, 55, 50],  # 35·40 / (3200 - 1400) = 0.78 → positive
            [22, 10, 62, 50],  # 28·40 / (3200 - 1120) = 0.54 → part
            [26, 10, 66, 50],  # 24·40 / (3200 - 960) = 0.43 → part
            [30, 10, 70, 50],  # 20·40 / 2400 = 0.33 → discarded band
            [36, 10, 76, 50],  # 14·40 / 2640 = 0.21 → negative
            [100, 100, 140, 140],  # no overlap → negative
        ],
        np.float64,
    )
    t, best, o = mining.label_windows(windows, faces)
    assert list(t) == [POSITIVE, POSITIVE, PART, PART, mining.DISCARD, NEGATIVE, NEGATIVE]
    np.testing.assert_allclose(o[:4], [1.0, 1400 / 1800, 1120 / 2080, 960 / 2240])
    # Thresholds come from the caller: with a part band starting at 0.5, the 0.43 window is discarded.
    t2, _, _ = mining.label_windows(windows, faces, mining.Thresholds(0.3, 0.5, 0.65))
    assert t2[3] == mining.DISCARD and t2[2] == PART
    # No faces: everything is negative.
    t3, best3, _ = mining.label_windows(windows, np.zeros((0, 4)))
    assert (t3 == NEGATIVE).all() and (best3 == -1).all()


def test_mine_image_targets_counts_and_negative_cap():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    faces = np.array([[20, 20, 60, 60], [100, 30, 130, 60], [140, 100, 145, 105]], np.float64)
    usable = np.array([True, True, False])  # the third is too small to regress to
    windows = [
        [22, 18, 62, 58],  # positive, face 0
        [100, 31, 130, 61],  # positive, face 1
        [30, 20, 70, 60],  # part of face 0 (IoU 0.6)
        [139, 99, 146, 106],  # positive of the unusable face → dropped
        [0, 70, 30, 100], [40, 75, 70, 105], [70, 80, 90, 100], [5, 100, 20, 115], [60, 0, 90, 15],  # 5 negatives
    ]
    summary = mining.MiningSummary()
    out = mining.mine_image(image, _cand(windows), faces, usable, 24, np.random.default_rng(0), 3,
                            summary=summary)
    t = out["type"]
    assert int(np.sum(t == POSITIVE)) == 2 and int(np.sum(t == PART)) == 1
    assert int(np.sum(t == NEGATIVE)) == 3  # capped at negatives_per_image
    assert summary.counts == {"negative": 3, "positive": 2, "part": 1} and summary.negatives_dropped == 2
    assert summary.proposals == 9
    assert out["image"].shape == (6, 24, 24, 3) and out["image"].dtype == np.uint8
    assert np.all(out["landmarks"] == 0)
    # Box targets give the face back through the inverse of samples.box_targets (the detector's calibration).
    w = np.asarray(windows, np.float64)
    for row in np.flatnonzero(t != NEGATIVE):
        face = faces[[0, 1, 0][list(np.flatnonzero(t != NEGATIVE)).index(row)]]
        match = [k for k in range(3) if np.allclose(sp.box_to_pixels(w[k], out["box"][row]), face, atol=1e-4)]
        assert match, (row, out["box"][row])
    assert np.all(out["box"][t == NEGATIVE] == 0)
    # A positive crop is the window's pixels resized: compare with a direct crop.
    pos_row = int(np.flatnonzero(t == POSITIVE)[0])
    expect = bx.resize(bx.crop(image, [22, 18, 61, 57]), (24, 24))
    np.testing.assert_array_equal(out["image"][pos_row], expect)


# ----------------------------------------------------------------------------- a WIDER folder


class FakeDetector:
    """Proposes fixed windows around each image's faces (by image height); refine keeps the first half."""

    def __init__(self):
        self.calls = 0

    def proposals(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        boxes = [[10, 10, 50, 50], [14, 12, 54, 52], [22, 10, 62, 50], [0, 0, 30, 30], [60, 60, 100, 100],
                 [w - 30, h - 30, w + 10, h + 10], [70, 5, 110, 45]]
        return _cand(boxes)

    def refine(self, image, cand):
        return cand[: (len(cand) + 1) // 2]


def _wider_folder(tmp_path, corrupt=True, bad_line=True):
    d = tmp_path / "wider"
    (d / "images" / "0--a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    names = ["0--a/one.jpg", "0--a/two.jpg", "0--a/broken.jpg", "0--a/three.jpg"]
    for k, name in enumerate(names):
        if name.endswith("broken.jpg"):
            if corrupt:
                (d / "images" / name).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
            else:
                cv2.imwrite(str(d / "images" / name), rng.integers(0, 256, (120, 130, 3), dtype=np.uint8))
        else:
            cv2.imwrite(str(d / "images" / name), rng.integers(0, 256, (120 + 10 * k, 130, 3), dtype=np.uint8))
        lines += [name, "1", "10 10 40 40 0 0 0 0 0 0"]
        if k == 1 and bad_line:
            lines[-2] = "2"
            lines.append("12 x 40 40 0 0 0 0 0 0")  # malformed second face line
    (d / "wider_face_train_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    return d


def _mine(d, stage="rnet", seed=0, detector=None):
    summary = mining.MiningSummary()
    gt = mining.find_gt(d)
    records, line_of = mining.read_gt(gt, summary)
    out = mining.mine(detector or FakeDetector(), stage, d, records, range(len(records)), seed, MINING,
                      min_face=20, line_of=line_of, gt_file=str(gt), summary=summary)
    return out, summary


def test_mine_folder_counts_per_type_and_skips_corrupt_image_and_bad_line(tmp_path, capsys):
    d = _wider_folder(tmp_path)
    out, summary = _mine(d)
    err = capsys.readouterr().err
    # The corrupt image is reported with its path and its gt line (line 8; the malformed face line is line 7).
    assert summary.images == 3 and len(summary.skipped_images) == 1
    assert "broken.jpg" in summary.skipped_images[0] and "wider_face_train_bbx_gt.txt:8" in summary.skipped_images[0]
    assert len(summary.skipped_lines) == 1 and "wider_face_train_bbx_gt.txt:7:" in summary.skipped_lines[0]
    assert "broken.jpg" in err and ":7:" in err
    # Per image: windows 0 and 1 are positives of the face (10,10,50,50), 2 a part face; the others are
    # negatives (4 per image, capped at 3).
    t = out["type"]
    assert out["image"].shape[1:] == (24, 24, 3)
    assert int(np.sum(t == POSITIVE)) == 2 * 3 and int(np.sum(t == PART)) == 3
    assert int(np.sum(t == NEGATIVE)) == 3 * 3
    assert summary.counts == {"negative": 9, "positive": 6, "part": 3}
    d = summary.to_dict()
    assert d["n_skipped_images"] == 1 and d["n_skipped_lines"] == 1


def test_mine_onet_uses_refined_candidates(tmp_path):
    d = _wider_folder(tmp_path, corrupt=False, bad_line=False)
    out, summary = _mine(d, stage="onet")
    assert out["image"].shape[1:] == (48, 48, 3)
    assert summary.images == 4 and summary.proposals == 4 * 4  # refine kept 4 of 7 windows per image
    assert summary.counts == {"negative": 4, "positive": 8, "part": 4}


def test_mining_is_deterministic_for_a_seed(tmp_path):
    d = _wider_folder(tmp_path, corrupt=False, bad_line=False)
    a, _ = _mine(d, seed=3)
    b, _ = _mine(d, seed=3)
    c, _ = _mine(d, seed=4)
    for k in sp.FIELDS:
        np.testing.assert_array_equal(a[k], b[k])
    # Another seed draws other negatives under the cap (4 candidates, 3 kept, per image).
    assert not np.array_equal(a["image"][a["type"] == NEGATIVE], c["image"][c["type"] == NEGATIVE])
    np.testing.assert_array_equal(a["image"][a["type"] != NEGATIVE], c["image"][c["type"] != NEGATIVE])


def test_mine_rejects_pnet_stage(tmp_path):
    with pytest.raises(ValueError, match="rnet or onet"):
        mining.mine(FakeDetector(), "pnet", tmp_path, [], [], 0, MINING)


def test_mining_with_the_authors_detector_on_a_wider_image(data_dir):
    """Real proposals (the authors' P-Net, then R-Net): each mined sample comes from one of the
    detector's windows, its label agrees with that window's IoU, its target maps it onto the face."""
    from mtcnn_jax.images import load_image

    cfg = dataclasses.replace(MINING, negatives_per_image=10)
    wider = data_dir / "widerface_train_mini"
    records, line_of = mining.read_gt(mining.find_gt(wider))
    big = lambda r: np.any(~r.invalid & (np.min(r.boxes[:, 2:] - r.boxes[:, :2], axis=1) >= 40))  # noqa: E731
    i = next(k for k, r in enumerate(records) if big(r))
    r = records[i]
    image = load_image(wider / "images" / r.path)
    faces = r.boxes.astype(np.float64)
    usable = ~r.invalid & (np.min(faces[:, 2:] - faces[:, :2], axis=1) >= 20)
    det = mining.make_detector({}, "onet", cfg)
    cand = det.proposals(image)
    for stage, size, c in (("rnet", 24, cand), ("onet", 48, det.refine(image, cand))):
        out = mining.mine(det, stage, wider, records, [i], 0, cfg, 20, line_of, "gt")
        direct = mining.mine_image(image, c, faces, usable, size, np.random.default_rng([0, mining.STAGE_CODE[stage], i]),
                                   10, resize=cfg.resize)
        for k in sp.FIELDS:  # mine() = the detector's stage output through mine_image
            np.testing.assert_array_equal(out[k], direct[k])
        t = out["type"]
        assert np.sum(t == POSITIVE) >= 1 and np.sum(t == NEGATIVE) <= 10
        windows = mining.windows_from_candidates(c)
        crops = bx.crop_and_resize(image, np.c_[windows[:, :2], windows[:, 2:] - 1].astype(int), size)
        for k in range(len(t)):
            src = [j for j in range(len(windows)) if np.array_equal(crops[j], out["image"][k])]
            assert src, k
            o = np.array([sp.iou(windows[j], faces).max() for j in src])
            if t[k] == NEGATIVE:
                assert np.any(o < 0.3)
            else:
                w = windows[src[int(np.argmax(o))]]
                back = sp.box_to_pixels(w, out["box"][k])
                j = int(np.argmax(sp.iou(w, faces)))
                np.testing.assert_allclose(back, faces[j], atol=1e-3)
                assert usable[j] and (o.max() > 0.65 if t[k] == POSITIVE else 0.4 <= o.max() <= 0.65)
