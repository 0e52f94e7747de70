"""Five-point alignment: similarity_transform (Umeyama) and align, with hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from mtcnn_jax.align import ARCFACE_TEMPLATE, align, similarity_transform, template

SQUARE = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], np.float64)


def _apply(matrix, points):
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _similarity(scale, degrees, tx, ty):
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_pure_translation():
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src + [10.0, -5.0]
    np.testing.assert_allclose(similarity_transform(src, dst), [[1, 0, 10], [0, 1, -5]], atol=1e-9)


def test_rotation_90_degrees_with_scale_2():
    # (x, y) -> (-2y + 3, 2x + 1): rotate by 90 degrees (x axis onto y axis), scale 2, shift (3, 1).
    dst = np.array([[3, 1], [3, 3], [1, 1], [1, 3], [2, 2]], np.float64)  # worked by hand
    expected = np.array([[0.0, -2.0, 3.0], [2.0, 0.0, 1.0]])
    np.testing.assert_allclose(similarity_transform(SQUARE, dst), expected, atol=1e-9)


def test_template_onto_itself_is_identity():
    np.testing.assert_allclose(similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_known_similarity_is_recovered(seed):
    rng = np.random.default_rng(seed)
    scale, degrees = rng.uniform(0.2, 5.0), rng.uniform(-180, 180)
    truth = _similarity(scale, degrees, *rng.uniform(-300, 300, 2))
    src = rng.uniform(0, 500, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, _apply(truth, src)), truth, atol=1e-5)


def test_least_squares_optimum_with_noise():
    """With noisy points the result is the least-squares fit over [[a, -b, tx], [b, a, ty]]."""
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 100, (5, 2))
    dst = _apply(_similarity(1.3, 25, 4, -2), src) + rng.normal(0, 2.0, (5, 2))
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    np.testing.assert_allclose(similarity_transform(src, dst), [[a, -b, tx], [b, a, ty]], atol=1e-8)


def test_no_reflection():
    mirrored = SQUARE * [-1, 1]  # a mirror image cannot be reached by a similarity
    matrix = similarity_transform(SQUARE, mirrored)
    linear = matrix[:, :2]
    assert np.linalg.det(linear) >= 0
    np.testing.assert_allclose(linear[0, 0], linear[1, 1], atol=1e-12)  # [[a, -b], [b, a]]
    np.testing.assert_allclose(linear[0, 1], -linear[1, 0], atol=1e-12)


def test_bad_points_raise():
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)  # all points equal
    with pytest.raises(ValueError):
        similarity_transform(SQUARE, SQUARE[:4])
    with pytest.raises(ValueError):
        similarity_transform(SQUARE * np.nan, SQUARE)


def test_template_scales_with_size():
    np.testing.assert_array_equal(template(112), ARCFACE_TEMPLATE)
    np.testing.assert_allclose(template(224), ARCFACE_TEMPLATE * 2, rtol=1e-6)
    assert template(56, mode="scaled").dtype == np.float32  # 56: no arcface rule (not a multiple of 112 or 128)


@pytest.mark.parametrize("size", [112, 224])
def test_align_sends_a_marked_pixel_where_it_must_land(size):
    """Face = template scaled by 2, rotated 90 degrees, shifted; one white pixel in a black image.

    The image -> crop map is then the inverse: p_crop = 1/2 R(-90) (p_image - t) (times
    size/112). A pixel at image point S(u, v) must appear at crop pixel (u, v).
    """
    forward = np.array([[0.0, -2.0, 300.0], [2.0, 0.0, 40.0]])  # crop(112) -> image
    landmarks = _apply(forward, ARCFACE_TEMPLATE)
    u, v = 60, 70  # crop pixel, in the 112 frame
    x, y = _apply(forward, [[u, v]])[0]
    assert (x, y) == (160.0, 160.0)  # -2 * 70 + 300, 2 * 60 + 40
    image = np.zeros((400, 400, 3), np.uint8)
    image[int(y), int(x)] = (255, 128, 7)
    crops = align(image, landmarks[None], size=size)
    assert crops.shape == (1, size, size, 3) and crops.dtype == np.uint8
    k = size // 112
    if k == 1:  # downscaled by 2 exactly onto the pixel grid: the mark is sampled exactly
        assert crops[0, v, u].tolist() == [255, 128, 7]
        assert np.count_nonzero(crops[0].sum(-1)) == 1
    else:  # scale 1: the crop is an exact rotated copy, the mark at (2u, 2v)
        assert crops[0, k * v, k * u].tolist() == [255, 128, 7]
        assert np.count_nonzero(crops[0].sum(-1)) == 1


def test_align_identity_and_shapes():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    single = align(image, ARCFACE_TEMPLATE)  # landmarks already on the template
    assert single.shape == (112, 112, 3)
    np.testing.assert_array_equal(single, image)
    batch = align(image, np.stack([ARCFACE_TEMPLATE] * 3))
    assert batch.shape == (3, 112, 112, 3)
    np.testing.assert_array_equal(batch[2], image)
    assert align(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)


def test_align_outside_the_image_is_black():
    image = np.full((50, 50, 3), 200, np.uint8)
    # a face far to the right of the image: the crop samples nothing but border
    crops = align(image, ARCFACE_TEMPLATE + [1000.0, 0.0])
    assert crops.max() == 0


def test_align_rejects_bad_shapes():
    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError):
        align(image, np.zeros((2, 4, 2)))
    with pytest.raises(ValueError):
        align(image.astype(np.float32), ARCFACE_TEMPLATE)


# --------------------------------------------------------------------------- sizes: insightface's convention


def test_arcface_template_at_128_is_the_112_template_moved_8_px_right():
    """insightface's estimate_norm: 128 % 112 != 0, so ratio = 128 / 128 = 1 and diff_x = 8 * 1:
    left eye (38.2946 + 8, 51.6963) = (46.2946, 51.6963), right mouth corner (78.7299, 92.2041)."""
    t = template(128)
    np.testing.assert_allclose(t[0], [46.2946, 51.6963], atol=1e-4)
    np.testing.assert_allclose(t[4], [78.7299, 92.2041], atol=1e-4)
    np.testing.assert_array_equal(t, template(128, mode="arcface"))
    np.testing.assert_allclose(t, ARCFACE_TEMPLATE + [8.0, 0.0], atol=1e-5)


def test_arcface_template_at_multiples():
    # 256: ratio 2, diff_x 16: left eye (2 * 38.2946 + 16, 2 * 51.6963) = (92.5892, 103.3926)
    np.testing.assert_allclose(template(256)[0], [92.5892, 103.3926], atol=1e-4)
    # 224 = 2 * 112: ratio 2, no shift: (76.5892, 103.3926), as the scaled template
    np.testing.assert_allclose(template(224)[0], [76.5892, 103.3926], atol=1e-4)
    np.testing.assert_array_equal(template(224), template(224, mode="scaled"))
    # 896 is a multiple of both: the 112 rule comes first (ratio 8, no shift)
    np.testing.assert_allclose(template(896), ARCFACE_TEMPLATE * 8, rtol=1e-6)


def test_scaled_template_keeps_the_old_rule():
    """128 / 112 = 8 / 7: left eye (38.2946 * 8 / 7, 51.6963 * 8 / 7) = (43.765257, 59.081486)."""
    np.testing.assert_allclose(template(128, mode="scaled")[0], [43.765257, 59.081486], atol=1e-4)
    np.testing.assert_allclose(template(160, mode="scaled"), ARCFACE_TEMPLATE * 160 / 112, rtol=1e-6)


def test_sizes_and_modes_outside_the_conventions_are_refused():
    with pytest.raises(ValueError, match="multiples of 112 or 128; pass mode='scaled'"):
        template(160)
    with pytest.raises(ValueError, match="multiples of 112 or 128"):
        align(np.zeros((20, 20, 3), np.uint8), ARCFACE_TEMPLATE, size=150)
    with pytest.raises(ValueError, match="mode must be one of 'arcface', 'scaled'"):
        template(112, mode="insightface")
    for bad in (0, -112, 112.5, "112", None, True):
        with pytest.raises(ValueError, match="size must be a positive whole number"):
            template(bad)


def test_alignment_matrix_by_hand():
    """Landmarks = the 112 template shifted by (100, 50) (a face at the template's scale).
    arcface 128: the map onto template + (8, 0) is the translation (-92, -50);
    scaled 128: scale 8/7 and translation -(100, 50) * 8/7 = (-114.285714, -57.142857)."""
    from mtcnn_jax.align import alignment_matrix

    face = ARCFACE_TEMPLATE.astype(np.float64) + [100.0, 50.0]
    np.testing.assert_allclose(alignment_matrix(face, 128), [[1, 0, -92], [0, 1, -50]], atol=1e-4)
    np.testing.assert_allclose(alignment_matrix(face, 128, mode="scaled"),
                               [[8 / 7, 0, -800 / 7], [0, 8 / 7, -400 / 7]], atol=1e-4)
    np.testing.assert_allclose(alignment_matrix(face, 112), [[1, 0, -100], [0, 1, -50]], atol=1e-4)


def test_align_128_arcface_is_a_shifted_window_of_the_image():
    """With the face at the template's scale the arcface 128 crop is the image window starting at
    (100 - 8, 50): crop[y, x] = image[y + 50, x + 92], pixel for pixel (a pure translation)."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    face = ARCFACE_TEMPLATE.astype(np.float64) + [100.0, 50.0]
    crop = align(image, face, size=128)
    assert crop.shape == (128, 128, 3)
    # float32 template values leave the translation a few 1e-6 px off integers: bilinear weights of
    # that size change no uint8 value by more than 1
    assert np.abs(crop.astype(int) - image[50:178, 92:220].astype(int)).max() <= 1
    np.testing.assert_array_equal(crop, align(image, face, size=128, mode="arcface"))  # the default
    scaled = align(image, face, size=128, mode="scaled")
    assert not np.array_equal(scaled, crop)


def test_align_takes_named_tuples_with_landmarks():
    from mtcnn_jax.rotations import RotatedFaces

    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    faces = RotatedFaces(np.zeros((1, 4), np.float32), np.ones(1, np.float32), ARCFACE_TEMPLATE[None],
                         np.zeros(1, np.float32))
    np.testing.assert_array_equal(align(image, faces)[0], image)
