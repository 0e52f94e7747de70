"""WIDER FACE AP and landmark NME: hand-made cases worked out by hand, and parity with the
reference numbers of ``shared/reference/README.md``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtcnn_jax.boxes import iou_matrix
from mtcnn_jax.data.wider import parse_wider_gt, read_wider_gt
from mtcnn_jax.errors import FormatError, UserError
from mtcnn_jax.evaluation.nme import (
    cumulative_error_distribution,
    evaluate_landmarks,
    parse_mtfl,
    read_mtfl,
)
from mtcnn_jax.evaluation.predictions import (
    match_paths,
    parse_predictions,
    read_predictions,
)
from mtcnn_jax.evaluation.wider_ap import (
    evaluate,
    evaluate_settings,
    match_image,
    read_face_lists,
    voc_ap,
)


def gt_from(text: str):
    return parse_wider_gt(text.strip().splitlines())


def preds_from(images: dict) -> dict:
    """``{path: [(box, score), ...]}`` -> Faces via the CLI's JSON layout."""
    return parse_predictions([
        {"path": p, "faces": [{"box": list(b), "score": s} for b, s in faces]}
        for p, faces in images.items()
    ])


# Image a: faces F1 = [0, 0, 99, 99] and F2 = [200, 0, 299, 99]; image b: F3 = [0, 0, 49, 49].
GT_SMALL = """
ev/a.jpg
2
0 0 99 99 0 0 0 0 0 0
200 0 99 99 0 0 0 0 0 0
ev/b.jpg
1
0 0 49 49 0 0 0 0 0 0
"""

DETS_SMALL = {
    "ev/a.jpg": [
        ((0, 0, 99, 99), 0.9),  # F1: true positive
        ((400, 400, 450, 450), 0.8),  # nothing: false positive
        ((200, 0, 299, 99), 0.6),  # F2: true positive
    ],
    "ev/b.jpg": [
        ((100, 100, 149, 149), 0.7),  # nothing: false positive
        ((0, 0, 49, 49), 0.5),  # F3: true positive
    ],
}


# ----------------------------------------------------------------------------- WIDER AP


def test_iou_counts_one_extra_pixel():
    gt = [[0, 0, 9, 9], [5, 0, 14, 9], [20, 20, 30, 30]]
    # [5, 0, 14, 9]: intersection 5 x 10 = 50, union 100 + 100 - 50 = 150
    np.testing.assert_allclose(iou_matrix([[0, 0, 9, 9]], gt, inclusive=True), [[1.0, 50 / 150, 0.0]])
    # 11 x 11 inside 11 x 22: IoU exactly 0.5 with +1 areas (it would be 100/210 without)
    assert iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 21]], inclusive=True)[0, 0] == 0.5
    gt = gt_from("e/x.jpg\n1\n0 0 10 21 0 0 0 0 0 0")
    assert evaluate(preds_from({"e/x.jpg": [((0, 0, 10, 10), 1.0)]}), gt)["ap"] == 1.0


@pytest.mark.parametrize("sampling", ["official", "distinct"])
def test_perfect_predictions_give_ap_one(sampling):
    gt = gt_from(GT_SMALL)
    perfect = {r.path: [(tuple(b), 0.9 - 0.1 * i) for i, b in enumerate(r.boxes)] for r in gt}
    res = evaluate(preds_from(perfect), gt, sampling=sampling)
    assert res["ap"] == 1.0 and res["n_faces"] == 3 and res["n_detections"] == 3


@pytest.mark.parametrize("sampling", ["official", "distinct"])
def test_small_case_by_hand(sampling):
    # Detections in descending score order over both images (3 faces):
    #   score 0.9 TP  -> P = 1/1, R = 1/3
    #         0.8 FP  -> P = 1/2, R = 1/3
    #         0.7 FP  -> P = 1/3, R = 1/3
    #         0.6 TP  -> P = 2/4, R = 2/3
    #         0.5 TP  -> P = 3/5, R = 3/3
    # Precision envelope (max to the right): 1, .6, .6, .6, .6.
    # AP = (1/3 - 0) * 1 + (2/3 - 1/3) * .6 + (1 - 2/3) * .6 = 1/3 + .2 + .2 = 0.7333...
    # The official sampling normalises the scores to 1, .75, .5, .25, 0 and reaches the
    # same five operating points (repeated), so the AP is the same.
    res = evaluate(preds_from(DETS_SMALL), gt_from(GT_SMALL), sampling=sampling)
    assert res["ap"] == pytest.approx(1 / 3 + 0.2 + 0.2, abs=1e-12)
    if sampling == "distinct":
        np.testing.assert_allclose(res["thresholds"], [0.9, 0.8, 0.7, 0.6, 0.5])
        np.testing.assert_allclose(res["precision"], [1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
        np.testing.assert_allclose(res["recall"], [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    else:
        assert res["thresholds"].shape == (1000,)
        assert res["thresholds"][0] == pytest.approx(0.999) and res["thresholds"][-1] == 0.0
        assert res["recall"][-1] == 1.0 and res["precision"][-1] == pytest.approx(0.6)
        assert res["precision"][0] == 1.0 and res["recall"][0] == pytest.approx(1 / 3)


def test_detections_on_ignored_faces_neither_count_nor_cost():
    # F2 marked invalid; plus a 10 x 10 face that only the ">= 20" setting ignores.
    gt = gt_from("""
ev/a.jpg
3
0 0 99 99 0 0 0 0 0 0
200 0 99 99 0 0 0 1 0 0
400 0 10 10 0 0 0 0 0 0
""")
    dets = {"ev/a.jpg": [((200, 0, 299, 99), 0.95),  # on the invalid face: removed
                         ((0, 0, 99, 99), 0.9),  # TP
                         ((400, 0, 410, 10), 0.8)]}  # TP for "all", removed for ">= 20"
    res = evaluate(preds_from(dets), gt, min_size=1, sampling="distinct")
    assert res["ap"] == 1.0 and res["n_faces"] == 2
    np.testing.assert_allclose(res["precision"], [0, 1, 1])  # no counted detection at 0.95
    np.testing.assert_allclose(res["recall"], [0, 0.5, 1])
    res20 = evaluate(preds_from(dets), gt, min_size=20, sampling="distinct")
    assert res20["ap"] == 1.0 and res20["n_faces"] == 1
    np.testing.assert_allclose(res20["precision"], [0, 1, 1])
    # per detection: counts / recalls
    boxes = np.array([[200, 0, 299, 99], [0, 0, 99, 99], [400, 0, 410, 10]], np.float32)
    _, counts, recalls = match_image(
        boxes, [0.95, 0.9, 0.8], gt[0].boxes, np.array([True, False, False]))
    np.testing.assert_array_equal(counts, [False, True, False])
    np.testing.assert_array_equal(recalls, [False, True, False])


def test_ignored_detection_leaves_small_case_unchanged():
    gt = gt_from(GT_SMALL.replace("ev/b.jpg\n1\n", "ev/b.jpg\n2\n300 300 40 40 0 0 0 1 0 0\n"))
    dets = {k: list(v) for k, v in DETS_SMALL.items()}
    dets["ev/b.jpg"].append(((300, 300, 340, 340), 0.85))  # matches the invalid face
    for sampling in ("official", "distinct"):
        assert evaluate(preds_from(dets), gt, sampling=sampling)["ap"] == pytest.approx(0.7 + 1 / 30)


def test_detection_matches_face_of_highest_iou_even_if_ignored():
    # The detection overlaps the counted face at IoU >= 0.5 but the ignored one more: removed.
    gt = gt_from("e/x.jpg\n2\n0 0 99 99 0 0 0 0 0 0\n10 0 99 99 0 0 0 1 0 0")
    _, counts, recalls = match_image(np.array([[8, 0, 107, 99]]), [1.0], gt[0].boxes, ~gt[0].invalid)
    assert not counts[0] and not recalls[0]


def test_duplicate_detection_is_false_positive():
    gt = gt_from(GT_SMALL)
    dets = {"ev/a.jpg": [((0, 0, 99, 99), 0.9), ((1, 1, 99, 99), 0.8), ((200, 0, 299, 99), 0.7)]}
    # Faces F1, F2, F3 (F3 never found). Scores: .9 TP (F1), .8 duplicate of F1 -> FP, .7 TP (F2):
    #   P = 1, 1/2, 2/3;  R = 1/3, 1/3, 2/3;  envelope 1, 2/3, 2/3
    #   AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    res = evaluate(preds_from(dets), gt, sampling="distinct")
    np.testing.assert_allclose(res["precision"], [1, 1 / 2, 2 / 3])
    assert res["ap"] == pytest.approx(5 / 9)


def test_images_without_faces_and_unknown_paths():
    gt = gt_from("e/x.jpg\n1\n0 0 99 99 0 0 0 0 0 0\ne/empty.jpg\n0\n0 0 0 0 0 0 0 0 0 0")
    dets = {"e/x.jpg": [((0, 0, 99, 99), 0.5)], "e/empty.jpg": [((0, 0, 50, 50), 0.9)],
            "other/y.jpg": [((0, 0, 9, 9), 1.0)]}
    res = evaluate(preds_from(dets), gt, sampling="distinct")
    # a detection on an image with no face is a false positive: P = 0, then 1/2 at R = 1
    np.testing.assert_allclose(res["precision"], [0, 0.5])
    assert res["ap"] == pytest.approx(0.5) and res["unmatched"] == ["other/y.jpg"]
    assert res["n_images"] == 2 and res["n_detections"] == 2


def test_keep_lists_replace_invalid_flag(tmp_path):
    gt = gt_from(GT_SMALL)
    lists = tmp_path / "hard.txt"
    lists.write_text("# path, 1-based face indices\nev/a.jpg 2\nev/b.jpg\n")
    keep = read_face_lists(lists)
    np.testing.assert_array_equal(keep["ev/a.jpg"], [1])
    res = evaluate(preds_from(DETS_SMALL), gt, keep=keep, sampling="distinct")
    # only F2 counts; F1 and F3 are ignored and their detections removed:
    # .8 FP, .7 FP, .6 TP -> P = 0, 0, 1/3 at R = 0, 0, 1 -> AP = 1/3
    assert res["n_faces"] == 1 and res["ap"] == pytest.approx(1 / 3)


def test_evaluate_settings_names():
    gt = gt_from(GT_SMALL)
    out = evaluate_settings(preds_from(DETS_SMALL), gt, sizes=(1, 20, 60), sampling="distinct")
    assert list(out) == ["all", ">=20", ">=60"]
    # >= 60 px: F3 (50 px) is ignored, its detection (.5) removed; 2 faces left:
    # .9 TP, .8 FP, .7 FP (matches nothing), .6 TP
    # P = 1, 1/2, 1/3, 1/2; R = 1/2, 1/2, 1/2, 1; envelope 1, 1/2, 1/2, 1/2
    # AP = 1/2 * 1 + 1/2 * 1/2 = 3/4
    assert out[">=60"] == pytest.approx(3 / 4)
    assert out["all"] == pytest.approx(0.7 + 1 / 30) and out[">=20"] == out["all"]


def test_voc_ap_envelope():
    assert voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == 1.0
    assert voc_ap(np.array([0.5, 0.5]), np.array([1.0, 0.2])) == 0.5


# ---------------------------------------------------------------------- predictions JSON


def test_both_json_layouts_read_the_same(tmp_path):
    images = [{"path": "ev\\a.jpg", "width": 10, "height": 10,
               "faces": [{"box": [1, 2, 3, 4], "score": 0.5,
                          "landmarks": [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]}]},
              {"path": "ev/b.jpg", "width": 10, "height": 10, "faces": []}]
    (tmp_path / "list.json").write_text(json.dumps(images))
    (tmp_path / "ref.json").write_text(json.dumps({"detector": {"library": "x"}, "images": images}))
    a, b = read_predictions(tmp_path / "list.json"), read_predictions(tmp_path / "ref.json")
    assert list(a) == list(b) == ["ev/a.jpg", "ev/b.jpg"]
    det = a["ev/a.jpg"]
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (1, 4)
    assert det.landmarks.shape == (1, 5, 2) and det.landmarks[0, 4, 1] == 5
    assert a["ev/b.jpg"].boxes.shape == (0, 4) and a["ev/b.jpg"].landmarks.shape == (0, 5, 2)
    no_lm = parse_predictions([{"path": "x.jpg", "faces": [{"box": [0, 0, 1, 1], "score": 1}]}])
    assert no_lm["x.jpg"].landmarks is None


def test_malformed_predictions_raise_one_line(tmp_path):
    with pytest.raises(FormatError, match=r"image 0 \(x.jpg\), face 0"):
        parse_predictions([{"path": "x.jpg", "faces": [{"box": [0, 0, 1], "score": 1}]}])
    with pytest.raises(FormatError, match="listed twice"):
        parse_predictions([{"path": "x.jpg", "faces": []}, {"path": "./x.jpg", "faces": []}])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_predictions(bad)


def test_match_paths_by_suffix():
    gt = ["0--Parade/a.jpg", "1--Handshaking/a.jpg"]
    m = match_paths(["/data/images/0--Parade/a.jpg", "1--Handshaking/a.jpg", "zz/a.jpg"], gt)
    assert m == {"/data/images/0--Parade/a.jpg": "0--Parade/a.jpg",
                 "1--Handshaking/a.jpg": "1--Handshaking/a.jpg"}
    with pytest.raises(UserError, match="both match"):
        match_paths(["0--Parade/a.jpg", "/x/0--Parade/a.jpg"], gt)


# ---------------------------------------------------------------------------- landmarks

# One MTFL line, 1-based: points (0-based) LE (10, 10), RE (20, 10), nose (15, 15),
# mouth (12, 20) and (18, 20).
MTFL_LINE = "{} 11 21 16 13 19 11 11 16 21 21 1 2 2 3"
GT_POINTS = np.array([[10, 10], [20, 10], [15, 15], [12, 20], [18, 20]], np.float64)


def test_mtfl_one_based_conversion(tmp_path):
    path = tmp_path / "testing.txt"
    path.write_text(MTFL_LINE.format("AFLW\\1.jpg") + "\n\n" + MTFL_LINE.format("AFLW/2.jpg") + "\n")
    ann = read_mtfl(path)
    assert ann.paths == ["AFLW/1.jpg", "AFLW/2.jpg"]
    assert ann.points.dtype == np.float32 and ann.points.shape == (2, 5, 2)
    np.testing.assert_array_equal(ann.points[0], GT_POINTS)
    np.testing.assert_array_equal(read_mtfl(path, one_based=False).points[0], GT_POINTS + 1)
    np.testing.assert_array_equal([ann.gender[0], ann.smile[0], ann.glasses[0], ann.pose[0]], [1, 2, 2, 3])
    path.write_text(MTFL_LINE.format("a.jpg") + "\n\nb.jpg 1 2 3\n")
    with pytest.raises(FormatError, match=r"testing.txt:3: expected 15 fields 'path x1..x5 y1..y5"):
        read_mtfl(path)


def test_nme_by_hand():
    ann = parse_mtfl([MTFL_LINE.format(f"AFLW/{i}.jpg") for i in range(4)])
    off = GT_POINTS.copy()
    off[1] += (3, 4)  # right eye 5 px off -> 5 / 10 (inter-ocular distance) = 0.5
    off[2] += (0, 1)  # nose 1 px off -> 0.1
    # image 0: NME = (0 + 0.5 + 0.1 + 0 + 0) / 5 = 0.12 (a failure, > 0.1)
    # image 1: perfect, NME 0
    # image 2: no detection (a miss)
    # image 3: two detections, the higher-scoring one perfect -> NME 0
    face = lambda pts, s: {"box": [0, 0, 30, 30], "score": s, "landmarks": pts.tolist()}  # noqa: E731
    preds = parse_predictions({"detector": {}, "images": [
        {"path": "AFLW/0.jpg", "faces": [face(off, 0.9)]},
        {"path": "AFLW/1.jpg", "faces": [face(GT_POINTS, 0.9)]},
        {"path": "AFLW/2.jpg", "faces": []},
        {"path": "AFLW/3.jpg", "faces": [face(off + 7, 0.8), face(GT_POINTS, 0.99)]},
    ]})
    res = evaluate_landmarks(preds, ann)
    assert res["n_images"] == 4 and res["n_detected"] == 3 and res["detection_rate"] == 0.75
    assert res["nme_mean"] == pytest.approx(0.12 / 3)  # (0.12 + 0 + 0) / 3
    assert res["nme_median"] == 0.0
    assert res["failure_rate"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(res["nme_per_point"], [0, 0.5 / 3, 0.1 / 3, 0, 0], atol=1e-12)
    np.testing.assert_allclose(res["errors"], [0.12, 0, np.nan, 0], atol=1e-12)
    ced = cumulative_error_distribution(res["errors"], [0.0, 0.1, 0.2])
    np.testing.assert_allclose(ced, [2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(
        cumulative_error_distribution(res["errors"], [0.2], include_misses=True), [0.75])


def test_landmarks_required():
    ann = parse_mtfl([MTFL_LINE.format("a.jpg")])
    preds = parse_predictions([{"path": "a.jpg", "faces": [{"box": [0, 0, 1, 1], "score": 1}]}])
    with pytest.raises(UserError, match="no landmarks"):
        evaluate_landmarks(preds, ann)


# ------------------------------------------------------------- parity with the reference

# shared/reference/README.md, "Scores on ../data/widerface_val_subset": (all, >=20, >=40)
README_AP_OFFICIAL = {
    "facenet": (0.4330, 0.7417, 0.7886),
    "ipazc": (0.4279, 0.7109, 0.7523),
    "haar": (0.1591, 0.3363, 0.3870),
    "facenet_widermode": (0.5446, 0.7801, 0.7910),
}
README_AP_DISTINCT = {
    "facenet": (0.4337, 0.7433, 0.7934),
    "ipazc": (0.4281, 0.7113, 0.7535),
    "haar": (0.1592, 0.3365, 0.3873),
    "facenet_widermode": (0.5462, 0.7839, 0.8014),
}
# "Landmarks on ../data/mtfl_aflw_test_landmarks": detected, rate, NME mean, median, failure
README_LANDMARKS = {
    "facenet": (2969, 0.9913, 0.1197, 0.0783, 0.3799),
    "ipazc": (2929, 0.9780, 0.0755, 0.0644, 0.1314),
}
TOL = 0.002


@pytest.fixture(scope="module")
def wider_gt(data_dir):
    return read_wider_gt(data_dir / "widerface_val_subset" / "wider_face_val_bbx_gt_subset.txt")


@pytest.mark.parametrize("detector", sorted(README_AP_OFFICIAL))
def test_wider_ap_matches_reference(detector, wider_gt, reference_dir):
    preds = read_predictions(reference_dir / f"widerface_val_subset.{detector}.json")
    for sampling, table in (("official", README_AP_OFFICIAL), ("distinct", README_AP_DISTINCT)):
        got = evaluate_settings(preds, wider_gt, sizes=(1, 20, 40), sampling=sampling)
        want = dict(zip(["all", ">=20", ">=40"], table[detector]))
        for name in want:
            assert got[name] == pytest.approx(want[name], abs=TOL), (sampling, name, got)


def test_wider_face_counts_match_reference(wider_gt, reference_dir):
    preds = read_predictions(reference_dir / "widerface_val_subset.facenet.json")
    counts = [evaluate(preds, wider_gt, min_size=s)["n_faces"] for s in (1, 20, 40)]
    assert counts == [4117, 1817, 703]


@pytest.mark.parametrize("detector", sorted(README_LANDMARKS))
def test_landmarks_match_reference(detector, data_dir, reference_dir):
    ann = read_mtfl(data_dir / "mtfl_aflw_test_landmarks" / "testing.txt")
    preds = read_predictions(reference_dir / f"mtfl_aflw_test.{detector}.json")
    res = evaluate_landmarks(preds, ann)
    n_det, rate, mean, median, failure = README_LANDMARKS[detector]
    assert res["n_images"] == 2995 and res["n_detected"] == n_det and res["unmatched"] == []
    assert res["detection_rate"] == pytest.approx(rate, abs=TOL)
    assert res["nme_mean"] == pytest.approx(mean, abs=TOL)
    assert res["nme_median"] == pytest.approx(median, abs=TOL)
    assert res["failure_rate"] == pytest.approx(failure, abs=TOL)


# ------------------------------------------------------------------------------- runner


class _OneFace:
    """Finds the face box (10, 20, 50, 70) in every image."""

    def detect(self, image):
        return (np.array([[10, 20, 50, 70]], np.float32), np.array([0.9], np.float32),
                np.zeros((1, 5, 2), np.float32))


def test_evaluate_wider_folder_skips_unreadable_images_and_counts_their_faces(tmp_path, capsys):
    import cv2

    from mtcnn_jax.evaluation.runner import evaluate_wider_folder

    images = tmp_path / "images"
    (images / "ev").mkdir(parents=True)
    assert cv2.imwrite(str(images / "ev" / "a.png"), np.full((100, 80, 3), 128, np.uint8))
    gt = gt_from("ev/a.png\n1\n10 20 40 50 0 0 0 0 0 0\nev/gone.png\n1\n10 20 40 50 0 0 0 0 0 0")
    out = evaluate_wider_folder(_OneFace(), images, gt)
    # a's face found, gone.png's missed: precision 1 up to recall 1/2
    assert out["ap"] == {"all": 0.5, ">=20": 0.5, ">=40": 0.5}
    assert out["images"] == 1 and out["n_skipped_images"] == 1
    assert out["skipped_images"][0].endswith("gone.png: no such file")
    assert capsys.readouterr().err == f"skipped: {out['skipped_images'][0]}\n"


def test_runner_predictions_are_what_predictions_json_reads_back(tmp_path):
    import cv2

    from mtcnn_jax.evaluation.predictions import format_json
    from mtcnn_jax.evaluation.runner import detect_images

    assert cv2.imwrite(str(tmp_path / "a.png"), np.full((30, 40, 3), 128, np.uint8))
    run = detect_images(_OneFace(), str(tmp_path), ["a.png"], progress=False)
    assert run.entries == [{"path": "a.png", "width": 40, "height": 30, "faces": [
        {"box": [10.0, 20.0, 50.0, 70.0], "score": float(np.float32(0.9)),  # the float32 score, exactly
         "landmarks": [[0.0, 0.0]] * 5}]}]
    faces = run.predictions["a.png"]
    assert faces.boxes.dtype == np.float32 and faces.scores.dtype == np.float64
    back = parse_predictions(json.loads(format_json(run.entries)))["a.png"]
    np.testing.assert_array_equal(back.boxes, faces.boxes)
    np.testing.assert_array_equal(back.scores, faces.scores)


def test_ap_from_predictions_json_is_the_ap_of_the_detections(data_dir, reference_dir, tmp_path):
    """Scores written by faces_to_json and read back give exactly the AP of the detections in
    memory. The detections: facenet-pytorch's on the shared WIDER subset, their scores made
    float32 and crowded just below 1.0 as MTCNN's are; at 4 decimals (what predictions.json
    used to keep) many of them tie and the AP moves."""
    from mtcnn_jax.evaluation.predictions import PredictionsWriter, faces_to_json
    from mtcnn_jax.evaluation.runner import wider_metrics
    from mtcnn_jax.faces import Faces

    root = data_dir / "widerface_val_subset"
    records = read_wider_gt(root / "wider_face_val_bbx_gt_subset.txt")
    reference = read_predictions(reference_dir / "widerface_val_subset.facenet.json")
    memory = {}
    for path, f in reference.items():
        scores = (1 - (1 - f.scores) / 100).astype(np.float32)  # 0.7 -> 0.997, as MTCNN's crowd
        memory[path] = Faces(f.boxes, scores.astype(np.float64), f.landmarks)
    writer = PredictionsWriter(tmp_path / "predictions.json")
    for path, f in memory.items():
        writer.write(faces_to_json(path, np.zeros((1, 1, 3), np.uint8), f))
    writer.close()
    back = read_predictions(tmp_path / "predictions.json")
    for path in memory:
        np.testing.assert_array_equal(back[path].scores, memory[path].scores)
    expected, _ = wider_metrics(memory, records)
    got, _ = wider_metrics(back, records)
    assert got == expected
    rounded = {p: f._replace(scores=np.round(f.scores, 4)) for p, f in memory.items()}
    assert wider_metrics(rounded, records)[0] != expected  # what full precision is for
