"""FDDB: ellipse and detection-list readers, pixel overlaps of boxes and ellipses, the
bipartite matching and the discrete/continuous ROC, on hand-made shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtcnn_jax.errors import UserError
from mtcnn_jax.evaluation import fddb

# A vertical ellipse: semi-axes 20 (major, along y since the angle is pi/2) and 10, centre
# (50, 50). The box (left 40, top 30, width 20, height 40) exactly covers it.
VERTICAL = np.array([20.0, 10.0, math.pi / 2, 50.0, 50.0])
COVER = np.array([40.0, 30.0, 20.0, 40.0])


def pixels_in_vertical_ellipse(cx=50.0, cy=50.0):
    """Count by hand (loop over pixel centres) the pixels of VERTICAL moved to (cx, cy)."""
    n = 0
    for row in range(0, 120):
        for col in range(0, 120):
            x, y = col + 0.5, row + 0.5
            if ((x - cx) / 10) ** 2 + ((y - cy) / 20) ** 2 <= 1:
                n += 1
    return n


def test_box_exactly_covering_an_ellipse():
    n_ellipse = pixels_in_vertical_ellipse()
    # The box holds 20 x 40 = 800 pixel centres and contains every pixel of the ellipse,
    # so the overlap is |E| / 800, close to the area ratio pi / 4.
    assert fddb.box_mask(COVER, 0, 0, 120, 120).sum() == 800
    want = n_ellipse / 800
    got = fddb.overlaps(COVER[None], VERTICAL[None])
    assert got.shape == (1, 1) and got[0, 0] == pytest.approx(want, abs=1e-12)
    assert want == pytest.approx(math.pi / 4, abs=0.01)


def test_angle_turns_the_major_axis():
    horizontal = VERTICAL.copy()
    horizontal[2] = 0.0  # major axis along x: covered by a 40 x 20 box
    wide = np.array([30.0, 40.0, 40.0, 20.0])
    ov = fddb.overlaps(np.stack([wide, COVER]), horizontal[None])
    assert ov[0, 0] == pytest.approx(pixels_in_vertical_ellipse() / 800, abs=1e-12)  # same shape turned
    # the tall box keeps only the middle of the wide ellipse: well below a match
    assert ov[1, 0] < 0.5
    np.testing.assert_allclose(fddb.ellipse_bounds(VERTICAL), [40, 30, 60, 70], atol=1e-9)
    np.testing.assert_allclose(fddb.ellipse_bounds(horizontal), [30, 40, 70, 60], atol=1e-9)


def test_disjoint_and_clipped_regions():
    far = np.array([200.0, 200.0, 20.0, 40.0])
    assert fddb.overlaps(far[None], VERTICAL[None])[0, 0] == 0.0
    # Cut by a 50 x 120 image, the ellipse and the box keep their left halves (cols 40..49):
    # the ellipse's left half against 10 x 40 = 400 box pixels.
    left_half = sum(1 for row in range(120) for col in range(50)
                    if ((col + 0.5 - 50) / 10) ** 2 + ((row + 0.5 - 50) / 20) ** 2 <= 1)
    got = fddb.overlaps(COVER[None], VERTICAL[None], image_size=(120, 50))[0, 0]
    assert got == pytest.approx(left_half / 400, abs=1e-12)


def test_matching_is_bipartite_not_greedy():
    # D1 (higher score) overlaps F1 0.8 and F2 0.6; D2 overlaps F1 0.7 and F2 0.1.
    # Greedy (D1 takes its best face F1) leaves D2 unmatched: 1 true positive. The
    # maximum-weight matching pairs D1-F2 and D2-F1: 2 true positives, total 1.3.
    tp = fddb.match(np.array([[0.8, 0.6], [0.7, 0.1]]))
    np.testing.assert_allclose(np.sort(tp), [0.6, 0.7])
    # overlaps <= 0.5 never match, even when they would raise the total
    np.testing.assert_allclose(fddb.match(np.array([[0.5, 0.9], [0.45, 0.0]])), [0.9])
    assert fddb.match(np.zeros((0, 3))).size == 0 and fddb.match(np.zeros((2, 0))).size == 0


def test_roc_by_hand():
    r = pixels_in_vertical_ellipse() / 800  # overlap of a covering box with its ellipse
    shift = lambda e, dx: e + np.array([0, 0, 0, dx, 0])  # noqa: E731
    box = lambda dx: COVER + np.array([dx, 0, 0, 0])  # noqa: E731
    faces = [
        fddb.FddbImage("a", np.stack([VERTICAL, shift(VERTICAL, 100)])),  # two faces
        fddb.FddbImage("b", VERTICAL[None]),
    ]
    dets = {
        "a": fddb.FddbDetections(
            np.stack([box(0), box(300), box(0)]),  # face 1, nothing (FP), face 1 again (FP)
            np.array([0.9, 0.8, 0.6]),
        ),
        "b": fddb.FddbDetections(box(0)[None], np.array([0.7])),
        "not annotated": fddb.FddbDetections(box(0)[None], np.array([0.95])),
    }
    curve = fddb.roc(dets, faces)
    # threshold  FP  TP  (3 faces)
    #   0.9       0   1
    #   0.8       1   1
    #   0.7       1   2
    #   0.6       2   2   (a duplicate of a matched face is a false positive)
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_array_equal(curve.false_positives, [0, 1, 1, 2])
    np.testing.assert_allclose(curve.tp_discrete, [1, 1, 2, 2])
    np.testing.assert_allclose(curve.tp_continuous, [r, r, 2 * r, 2 * r])
    np.testing.assert_allclose(curve.tpr_discrete, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert curve.n_faces == 3
    assert fddb.tpr_at(curve, 1) == pytest.approx(2 / 3)
    assert fddb.tpr_at(curve, 0) == pytest.approx(1 / 3)
    assert fddb.tpr_at(curve, 0, continuous=True) == pytest.approx(r / 3)


def test_matching_is_redone_at_each_threshold():
    # One face; the best-scoring detection overlaps it 0.6 and a lower one 0.9.
    # Threshold high: 1 TP (0.6). Threshold low: the matching keeps one detection, the
    # one of larger overlap, and the other one becomes the false positive.
    img = fddb.FddbImage("a", VERTICAL[None])
    loose = np.array([40.0, 30.0, 20.0, 60.0])  # taller box: lower overlap
    ov = fddb.overlaps(np.stack([loose, COVER]), VERTICAL[None])[:, 0]
    assert 0.5 < ov[0] < ov[1]
    curve = fddb.roc({"a": fddb.FddbDetections(np.stack([loose, COVER]), np.array([0.9, 0.5]))}, [img])
    np.testing.assert_array_equal(curve.false_positives, [0, 1])
    np.testing.assert_allclose(curve.tp_continuous, [ov[0], ov[1]])


def test_no_detections():
    curve = fddb.roc({}, [fddb.FddbImage("a", VERTICAL[None])])
    assert curve.thresholds.size == 0 and curve.n_faces == 1
    assert fddb.tpr_at(curve, 1000) == 0.0


ELLIPSES = """\
2002/08/11/big/img_591
1
123.583300 85.549500 1.265839 269.693400 161.781200  1
2002/08/26/big/img_265
2
67.363819 44.511485 -1.476417 105.249970 87.209036  1
41.936870 27.064477 1.471906 184.070915 129.345601  1
"""


def test_read_ellipses_and_detections(tmp_path):
    f = tmp_path / "FDDB-fold-01-ellipseList.txt"
    f.write_text(ELLIPSES)
    images = fddb.read_ellipses([f])
    assert [im.path for im in images] == ["2002/08/11/big/img_591", "2002/08/26/big/img_265"]
    np.testing.assert_allclose(images[0].ellipses, [[123.5833, 85.5495, 1.265839, 269.6934, 161.7812]])
    assert len(images[1]) == 2

    dets = {"2002/08/11/big/img_591": fddb.from_corners(np.array([[10, 20, 110, 220.5]]), np.array([0.99])),
            "2002/08/26/big/img_265": fddb.from_corners(np.zeros((0, 4)), np.zeros(0))}
    text = fddb.format_detections(dets)
    assert text.splitlines()[:3] == ["2002/08/11/big/img_591", "1", "10.00 20.00 100.00 200.50 0.990000"]
    back = fddb.parse_detections(text.splitlines())
    np.testing.assert_allclose(back["2002/08/11/big/img_591"].boxes, [[10, 20, 100, 200.5]])
    assert back["2002/08/26/big/img_265"].boxes.shape == (0, 4)


@pytest.mark.parametrize("text, line, words", [
    ("img\n1\n1 2 3 4 5\n", 3, "expected 6"),
    ("img\n2\n1 2 3 4 5 1\n", 2, "announces 2 faces"),
    ("img\nx\n", 2, "number of faces"),
    ("img\n1\n0 2 3 4 5 1\n", 1, "radius"),
    ("img\n1\n1 2 nan 4 5 1\n", 3, "not finite"),
    ("img\n", 1, "ends after"),
])
def test_malformed_ellipses_name_file_and_line(text, line, words):
    with pytest.raises(UserError, match=f"^folds.txt:{line}: .*{words}"):
        fddb.parse_ellipses(text.splitlines(), "folds.txt")


def test_malformed_detections():
    with pytest.raises(UserError, match="^d.txt:3: .*not a number"):
        fddb.parse_detections(["img", "1", "1 2 3 four 0.5"], "d.txt")
    with pytest.raises(UserError, match="^d.txt:4: .*listed twice"):
        fddb.parse_detections(["img", "0", "", "img", "0"], "d.txt")
    with pytest.raises(UserError, match="negative width"):
        fddb.parse_detections(["img", "1", "1 2 -3 4 0.5"], "d.txt")
