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
