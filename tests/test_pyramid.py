"""Pyramid scales and level sizes, worked out by hand."""

import numpy as np
import pytest

from mtcnn_jax import pyramid, tiles


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
    assert tiles.pnet_output_size(61, 83) == (26, 37)
    assert tiles.pnet_output_size(12, 12) == (1, 1)
    assert tiles.pnet_output_size(30, 24) == (10, 7)


def test_chain_step_is_the_level_about_twice_as_large():
    # round(log 0.5 / log f): 0.709 → 2.015 → 2; 0.79 → 2.94 → 3; 0.5 → 1; 0.9 → 6.58 → 7; 0.3 → 0.58 → 1 (at least 1)
    assert [pyramid.chain_step(f) for f in (0.709, 0.79, 0.5, 0.9, 0.3)] == [2, 3, 1, 7, 1]


def test_sources_of_the_levels():
    s = pyramid.scales(100, 120)  # 0.6, 0.425, 0.302, 0.214, 0.152
    assert pyramid.sources(s, 0.709) == [-1, -1, 0, 1, 2]
    assert pyramid.sources(s, 0.709, "original") == [-1] * 5
    # min face 10 → m = 1.2: short sides 48, 34, 24.1, 17.1, 12.1; level 2's source would be level 0, enlarged → the image
    s = pyramid.scales(40, 40, min_face_size=10)
    np.testing.assert_allclose(s, [1.2 * 0.709**k for k in range(5)])
    assert pyramid.sources(s, 0.709) == [-1, -1, -1, 1, 2]
    assert pyramid.sources(s[:4], 0.79) == [-1] * 4  # step 3: level 3's source, level 0 (1.2), is enlarged
    # factor 0.79, step 3: 0.6, 0.474, 0.374, 0.296, 0.234, 0.185, 0.146 (14.6 px; next 11.5 < 12)
    s = pyramid.scales(100, 100, 20, 0.79)
    assert len(s) == 7 and pyramid.sources(s, 0.79) == [-1, -1, -1, 0, 1, 2, 3]
    assert pyramid.sources(s, 0.79, "summed") == [-1] * 7  # every level from the image (its running sums)
    with pytest.raises(ValueError, match="pyramid mode"):
        pyramid.sources(s, 0.709, "bilinear")


def test_area_level_by_hand():
    # 5 rows × 2 columns → 2 × 1: output row 0 averages rows [0, 2.5), row 1 rows [2.5, 5) (each cut row
    # by half); across, the two columns are averaged. Rows 0, 10, 20, 30, 40 (column 2: +2):
    # (0 + 10 + 20 / 2) / 2.5 = 8 (+1 for the column mean), (20 / 2 + 30 + 40) / 2.5 = 32 (+1).
    image = np.array([[[v], [v + 2]] for v in (0, 10, 20, 30, 40)], np.uint8)
    sums = pyramid.row_sums(image)
    assert sums.dtype == np.int32 and sums[:, 0, 0].tolist() == [0, 0, 10, 30, 60, 100]
    assert pyramid.area_level(image, sums, (2, 1))[:, 0, 0].tolist() == [9, 33]
    np.testing.assert_array_equal(pyramid.area_level(image, sums, (2, 1)), pyramid.resize(image, (2, 1)))


@pytest.mark.parametrize("min_face, factor", [(20, 0.709), (10, 0.79), (40, 0.5)])
def test_summed_levels_are_the_original_levels(min_face, factor):
    """The default pyramid is the authors' (every level the area average of the image, as "original"),
    computed from running sums of the image's rows: equal up to one grey level where float rounding
    lands on the other side of .5; with bilinear resizing (no averaging) it is "original" exactly."""
    from mtcnn_jax.images import load_image
    from conftest import REPO

    photo = load_image(REPO / "mtcnn_jax/assets/astronaut.jpg")[:, 7:]  # 512 × 505: not square
    wide = np.ascontiguousarray(np.concatenate([photo, photo[:, ::-1]], axis=1)[::3])  # 171 × 1010
    summed = pyramid.Levels([photo, wide], min_face, factor, "summed")
    original = pyramid.Levels([photo, wide], min_face, factor, "original")
    assert summed.sizes == original.sizes and summed._source.count(-2) >= 3  # the running sums are used
    for i in range(len(summed.sizes)):
        a, b = summed.make(i).astype(int), original.make(i).astype(int)
        assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 1e-2, i  # ties of .5, rounded apart
    bilinear = pyramid.Levels([photo], min_face, factor, "summed", "bilinear")
    assert set(bilinear._source) == {-1}


def _imresize_antialiased_bilinear(image, size_hw):
    """Matlab ``imresize`` (bilinear, antialiased when shrinking), separable, in NumPy.

    Output pixel i (0-based) is centred on source coordinate u = (i + 0.5) / s - 0.5; weights are the
    triangle kernel widened by 1 / s (support 2 / s), normalised, indices clamped at the borders.
    """
    out = image.astype(np.float64)
    for axis, n_out in ((0, size_hw[0]), (1, size_hw[1])):
        n_in = out.shape[axis]
        s = n_out / n_in
        u = (np.arange(n_out) + 0.5) / s - 0.5
        j = np.arange(n_in)
        w = np.maximum(0.0, 1.0 - np.abs(u[:, None] - j[None, :]) * min(s, 1.0))
        w /= w.sum(axis=1, keepdims=True)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return np.clip(np.rint(out), 0, 255)


def test_antialiased_reference_by_hand():
    # 1 × 4 → 1 × 2 (s = 1/2): output 0 is centred on u = 0.5, weights 1 - |u - j| / 2 for j = 0..3:
    # 0.75, 0.75, 0.25, 0 → normalised 3/7, 3/7, 1/7; over 0, 70, 140, 210: (0 + 210 + 140) / 7 = 50.
    row = np.array([[[0], [70], [140], [210]]], np.uint8)
    assert _imresize_antialiased_bilinear(row, (1, 2))[0, :, 0].tolist() == [50, 160]


def test_chained_levels_are_closer_to_matlab_imresize():
    """Chained levels (from the level two steps up) differ from levels averaged straight from the image,
    but towards Matlab's ``imresize``: its antialiased bilinear kernel is wider than the box that area
    averaging uses, and two boxes in a row are closer to it than one. (The authors' ``detect_face.m``
    calls Piotr's toolbox ``imResample`` instead, a single box when shrinking, which the direct levels
    match: ``benchmarks/defaults_study.py``, and why "chained" is no longer the default.)"""
    from mtcnn_jax.images import load_image
    from conftest import REPO

    photo = load_image(REPO / "mtcnn_jax/assets/astronaut.jpg")
    h, w = photo.shape[:2]
    s = pyramid.scales(h, w)
    src = pyramid.sources(s, 0.709)
    chained, err_direct, err_chained = [], [], []
    for k, scale in enumerate(s):
        size = pyramid.level_size(h, w, scale)
        chained.append(pyramid.resize(photo if src[k] < 0 else chained[src[k]], size))
        direct = pyramid.resize(photo, size).astype(np.float64)
        if k < 2:
            np.testing.assert_array_equal(chained[k], direct)  # made from the image itself
            continue
        authors = _imresize_antialiased_bilinear(photo, size)
        err_direct.append(np.abs(direct - authors).mean())
        err_chained.append(np.abs(chained[k] - authors).mean())
    assert len(err_chained) == len(s) - 2 >= 6
    assert np.mean(err_chained) < 0.75 * np.mean(err_direct), (err_chained, err_direct)
