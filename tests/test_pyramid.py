"""Pyramid scales and level sizes, worked out by hand."""

import numpy as np
import pytest

from mtcnn_jax import detector, pyramid


def test_scales_default_100px():
    # m = 12/20 = 0.6; short side 60, 42.54, 30.16, 21.39, 15.16 ≥ 12; next 10.75 < 12.
    s = pyramid.scales(100, 120)
    np.testing.assert_allclose(s, [0.6, 0.6 * 0.709, 0.6 * 0.709**2, 0.6 * 0.709**3, 0.6 * 0.709**4])


def test_scales_edge_cases():
    assert pyramid.scales(11, 500) == []  # shorter side below the window at scale 0.6 → none
    assert pyramid.scales(20, 20) == [0.6]  # 20*0.6 = 12 exactly counts
    # min face 12 → m = 1: a 12-px image has exactly the original scale
    assert pyramid.scales(12, 30, min_face_size=12) == [1.0]
    # min face 10 (the WIDER setting) upsamples: m = 1.2
    assert pyramid.scales(10, 10, min_face_size=10)[0] == pytest.approx(1.2)


def test_level_size_rounds_up():
    assert pyramid.level_size(100, 120, 0.6) == (60, 72)
    assert pyramid.level_size(101, 121, 0.6) == (61, 73)  # 60.6 → 61, 72.6 → 73


def test_resize_output_shape():
    im = np.zeros((100, 120, 3), np.uint8)
    assert pyramid.resize(im, (61, 73)).shape == (61, 73, 3)
    assert pyramid.resize(im, (61, 73), "bilinear").shape == (61, 73, 3)


def test_pnet_output_size():
    # conv3 → ceil-pool2 → conv3 → conv3: 61 → 59 → 30 → 28 → 26; 12 → 10 → 5 → 3 → 1
    assert detector.pnet_output_size(61, 83) == (26, 37)
    assert detector.pnet_output_size(12, 12) == (1, 1)
    assert detector.pnet_output_size(30, 24) == (10, 7)


def test_buckets_are_bounded_and_cover():
    assert [detector.bucket(n) for n in (12, 16, 17, 100, 130, 300, 614)] == [16, 16, 32, 112, 160, 320, 640]
    sizes = {detector.bucket(n) for n in range(12, 4097)}
    # 16..128 in steps of 16 (8), then 4 steps an octave: 160..256, 320..512, ... → 8 + 4*5 = 28
    assert len(sizes) == 28
    for n in range(12, 4097):
        assert n <= detector.bucket(n) < n + 16 or detector.bucket(n) <= n * 1.25
    assert [detector.batch_bucket(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
