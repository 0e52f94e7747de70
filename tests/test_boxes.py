"""Box arithmetic with numbers worked out by hand (inclusive boxes: width = x2 - x1 + 1)."""

import numpy as np
import pytest

from mtcnn_jax import boxes as bx


def test_area_is_inclusive():
    # 0..9 is 10 pixels wide, 0..4 is 5 pixels tall.
    assert bx.area(np.array([[0, 0, 9, 4]])).tolist() == [50.0]


def test_iou_union_and_min():
    a = np.array([0, 0, 9, 9])  # 10×10 = 100
    b = np.array([[5, 0, 14, 9],  # overlaps columns 5..9: 5×10 = 50; union 150
                  [0, 0, 4, 4],  # 5×5 = 25 inside a: union 100
                  [20, 20, 29, 29]])  # disjoint
    np.testing.assert_allclose(bx.iou(a, b), [50 / 150, 25 / 100, 0.0])
    # "min": intersection over the smaller area.
    np.testing.assert_allclose(bx.iou(a, b, "min"), [50 / 100, 25 / 25, 0.0])
    with pytest.raises(ValueError):
        bx.iou(a, b, "bogus")
    # half-open boxes: a is 9×9 = 81; b[0] overlaps columns 5..9 = 4×9 = 36, union 126;
    # b[1] is 4×4 = 16 inside a: 16/81
    np.testing.assert_allclose(bx.iou(a, b, inclusive=False), [36 / 126, 16 / 81, 0.0])
    np.testing.assert_allclose(bx.iou(a, b, "min", inclusive=False), [36 / 81, 1.0, 0.0])


def test_nms_union_keeps_best_and_drops_overlaps_above_threshold():
    boxes = np.array([[0, 0, 9, 9],     # 0: score .9
                      [1, 0, 10, 9],    # 1: IoU with 0 = 90/110 = .818 → dropped at .7
                      [5, 0, 14, 9],    # 2: IoU with 0 = 50/150 = .333 → kept
                      [30, 30, 39, 39]])  # 3: disjoint → kept
    scores = np.array([0.9, 0.95, 0.8, 0.1])
    # Highest is box 1; box 0 overlaps it by .818 (> .7) → dropped; box 2 vs box 1:
    # columns 5..10 = 6×10 = 60, union 140 → .4286 → kept.
    assert bx.nms(boxes, scores, 0.7).tolist() == [1, 2, 3]
    # At threshold .3 box 2 (.4286 with box 1) goes too.
    assert bx.nms(boxes, scores, 0.3).tolist() == [1, 3]
    # Overlap exactly at the threshold is kept (drop only when greater).
    assert bx.nms(boxes[[0, 2]], scores[[0, 2]], 50 / 150).tolist() == [0, 1]


def test_nms_min_mode_drops_box_inside_another():
    boxes = np.array([[0, 0, 19, 19], [5, 5, 9, 9]])  # the small box lies inside: min-overlap 1
    scores = np.array([0.99, 0.98])
    # union IoU is 25/400 = .0625 → both kept; min overlap is 1 → the small one is dropped.
    assert bx.nms(boxes, scores, 0.7, "union").tolist() == [0, 1]
    assert bx.nms(boxes, scores, 0.7, "min").tolist() == [0]


def test_nms_ties_take_the_later_box_first_and_empty_input():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 9]])
    assert bx.nms(boxes, np.array([0.5, 0.5]), 0.5).tolist() == [1]
    assert bx.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_calibrate_inclusive_and_not():
    box = np.array([[10, 20, 19, 39]])  # inclusive: w = 10, h = 20
    reg = np.array([[0.1, -0.05, 0.2, 0.5]])
    # x1 = 10 + .1*10 = 11; y1 = 20 - .05*20 = 19; x2 = 19 + .2*10 = 21; y2 = 39 + .5*20 = 49
    np.testing.assert_allclose(bx.calibrate(box, reg), [[11, 19, 21, 49]])
    # Without +1: w = 9, h = 19 → 10.9, 19.05, 20.8, 48.5
    np.testing.assert_allclose(bx.calibrate(box, reg, inclusive=False), [[10.9, 19.05, 20.8, 48.5]])


def test_square_about_centre():
    # w = 10, h = 40 → side 40; x1 = 0 + 5 - 20 = -15, y1 = 0 + 20 - 20 = 0
    np.testing.assert_allclose(bx.square(np.array([[0, 0, 10, 40]])), [[-15, 0, 25, 40]])
    # already square stays
    np.testing.assert_allclose(bx.square(np.array([[3, 4, 13, 14]])), [[3, 4, 13, 14]])
    # wide box: w = 30, h = 10 → side 30, y1 = 5 + 5 - 15 = -5
    np.testing.assert_allclose(bx.square(np.array([[0, 5, 30, 15]])), [[0, -5, 30, 25]])


def test_crop_zero_pads_outside_the_image():
    image = np.arange(1, 4 * 5 + 1, dtype=np.uint8).reshape(4, 5, 1)  # rows of 1..5, 6..10, ...
    # box from (-1, -1) to (1, 1), inclusive: 3×3, top row and left column outside.
    out = bx.crop(image, (-1, -1, 1, 1))[:, :, 0]
    assert out.tolist() == [[0, 0, 0], [0, 1, 2], [0, 6, 7]]
    # bottom-right corner leaving the image by 2: rows 3..5, cols 3..5
    out = bx.crop(image, (3, 3, 5, 5))[:, :, 0]
    assert out.tolist() == [[19, 20, 0], [0, 0, 0], [0, 0, 0]]
    # fully outside: all zeros, right shape
    assert bx.crop(image, (10, 10, 12, 13)).shape == (4, 3, 1)
    assert not bx.crop(image, (10, 10, 12, 13)).any()


def test_crop_and_resize_shapes_and_constant_patch():
    image = np.full((20, 20, 3), 200, np.uint8)
    out = bx.crop_and_resize(image, np.array([[0, 0, 9, 9], [5, 5, 14, 24]]), 24)
    assert out.shape == (2, 24, 24, 3)
    assert (out[0] == 200).all()  # a crop inside a constant image stays constant
    # second box: rows 5..24 of which 20..24 are outside → bottom quarter of the crop is 0
    assert (out[1, :16] == 200).all() and (out[1, -4:] == 0).all()


def test_to_half_open():
    # 1-based inclusive pixels 1..10 = 0-based pixels 0..9 = [0, 10)
    np.testing.assert_allclose(bx.to_half_open(np.array([[1, 2, 10, 20]])), [[0, 1, 10, 20]])


# One worked example in every convention. Box 0: the authors' pixels 1..10 (columns) and
# 2..20 (rows), counted from 1 = 0-based pixels 0..9 and 1..19 = [0, 10) × [1, 20) = corner
# (0, 1), size 10 × 19. Box 1 has fractional edges (after a regression): 1-based 3.5..8 and 4..6.25.
WORKED = {
    bx.BoxMode.AUTHORS: [[1, 2, 10, 20], [3.5, 4, 8, 6.25]],
    bx.BoxMode.INCLUSIVE: [[0, 1, 9, 19], [2.5, 3, 7, 5.25]],
    bx.BoxMode.HALF_OPEN: [[0, 1, 10, 20], [2.5, 3, 8, 6.25]],
    bx.BoxMode.XYWH: [[0, 1, 10, 19], [2.5, 3, 5.5, 3.25]],
}


@pytest.mark.parametrize("src", list(bx.BoxMode))
@pytest.mark.parametrize("dst", list(bx.BoxMode))
def test_convert_every_pair_on_the_worked_example(src, dst):
    got = bx.convert(np.array(WORKED[src]), src, dst)
    assert got.dtype == np.float64 and got.shape == (2, 4)
    np.testing.assert_array_equal(got, WORKED[dst])
    # and back again, exactly (the shifts are by whole pixels)
    np.testing.assert_array_equal(bx.convert(got, dst, src), WORKED[src])


def test_convert_round_trips_random_boxes_and_accepts_mode_names():
    rng = np.random.default_rng(5)
    xy = rng.uniform(-50, 500, (100, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (100, 2))], axis=1)
    for a in bx.BoxMode:
        for b in bx.BoxMode:
            np.testing.assert_allclose(bx.convert(bx.convert(boxes, a, b), b, a), boxes, rtol=0, atol=1e-9)
    # the enum's values name the modes too; one box float[4] is read as [1, 4]
    np.testing.assert_array_equal(bx.convert([1, 2, 10, 20], "authors", "xywh"), [[0, 1, 10, 19]])
    assert bx.convert(np.zeros((0, 4)), bx.BoxMode.AUTHORS, bx.BoxMode.HALF_OPEN).shape == (0, 4)
    with pytest.raises(ValueError):
        bx.convert(boxes, "one-based", bx.BoxMode.HALF_OPEN)
    # to_half_open is the AUTHORS → HALF_OPEN conversion
    np.testing.assert_array_equal(bx.to_half_open(np.array(WORKED[bx.BoxMode.AUTHORS])), WORKED[bx.BoxMode.HALF_OPEN])


# A 2 × 2 example for iou_matrix: a0 = (0, 0, 10, 10), a1 = (2, 2, 8, 6); b0 = (5, 0, 15, 10), b1 = (0, 5, 4, 12).
IOU_A = np.array([[0, 0, 10, 10], [2, 2, 8, 6]])
IOU_B = np.array([[5, 0, 15, 10], [0, 5, 4, 12]])


def test_iou_matrix_half_open_by_hand():
    # areas (x2 - x1)(y2 - y1): a0 100, a1 6·4 = 24, b0 100, b1 4·7 = 28.
    # a0∩b0: x 5..10 = 5, y 0..10 = 10 → 50; union 150.   a0∩b1: x 0..4 = 4, y 5..10 = 5 → 20; union 108.
    # a1∩b0: x 5..8 = 3, y 2..6 = 4 → 12; union 112.      a1∩b1: x 2..4 = 2, y 5..6 = 1 → 2; union 50.
    np.testing.assert_allclose(
        bx.iou_matrix(IOU_A, IOU_B, inclusive=False), [[50 / 150, 20 / 108], [12 / 112, 2 / 50]], rtol=1e-12
    )
    # "min": intersection over the smaller area
    np.testing.assert_allclose(
        bx.iou_matrix(IOU_A, IOU_B, "min", inclusive=False), [[50 / 100, 20 / 28], [12 / 24, 2 / 24]], rtol=1e-12
    )


def test_iou_matrix_inclusive_by_hand():
    # The same numbers read as inclusive boxes (width x2 - x1 + 1): areas a0 121, a1 7·5 = 35, b0 121, b1 5·8 = 40.
    # a0∩b0: 6 × 11 = 66; union 176.   a0∩b1: 5 × 6 = 30; union 131.
    # a1∩b0: 4 × 5 = 20; union 136.    a1∩b1: 3 × 2 = 6; union 69.
    np.testing.assert_allclose(bx.iou_matrix(IOU_A, IOU_B), [[66 / 176, 30 / 131], [20 / 136, 6 / 69]], rtol=1e-12)
    np.testing.assert_allclose(bx.iou_matrix(IOU_A, IOU_B, "min"), [[66 / 121, 30 / 40], [20 / 35, 6 / 35]], rtol=1e-12)
    # iou is one row of it; boxes that only touch share a column of pixels when inclusive, nothing when half-open
    np.testing.assert_allclose(bx.iou(IOU_A[1], IOU_B, "min"), [20 / 35, 6 / 35], rtol=1e-12)
    touching = np.array([[10, 0, 20, 10]])
    assert bx.iou_matrix(IOU_A[:1], touching, inclusive=False).tolist() == [[0.0]]
    np.testing.assert_allclose(bx.iou_matrix(IOU_A[:1], touching), [[11 / 231]], rtol=1e-12)
    assert bx.iou_matrix(np.zeros((0, 4)), IOU_B).shape == (0, 2)
    with pytest.raises(ValueError):
        bx.iou_matrix(IOU_A, IOU_B, "bogus")


def test_iou_matrix_is_the_same_for_the_same_pixels_in_either_convention():
    # Half-open boxes with inclusive=False and their INCLUSIVE conversion with inclusive=True cover the same pixels.
    inc_a = bx.convert(IOU_A, bx.BoxMode.HALF_OPEN, bx.BoxMode.INCLUSIVE)
    inc_b = bx.convert(IOU_B, bx.BoxMode.HALF_OPEN, bx.BoxMode.INCLUSIVE)
    for mode in ("union", "min"):
        np.testing.assert_allclose(
            bx.iou_matrix(inc_a, inc_b, mode), bx.iou_matrix(IOU_A, IOU_B, mode, inclusive=False), rtol=1e-12
        )
