"""The cascade end to end on the bundled photo, its inputs and its settings."""

import numpy as np
import pytest

from mtcnn_jax import MTCNN, detect
from mtcnn_jax.detector import as_rgb_uint8
from mtcnn_jax.models import mirror_landmarks
from mtcnn_jax.errors import UserError
from conftest import REPO

ASTRONAUT = REPO / "mtcnn_jax/assets/astronaut.jpg"


def test_finds_the_one_face_with_ordered_landmarks(det, photo):
    faces = det.detect(photo)
    assert faces.boxes.shape == (1, 4) and faces.scores.shape == (1,) and faces.landmarks.shape == (1, 5, 2)
    assert faces.boxes.dtype == np.float32
    x1, y1, x2, y2 = faces.boxes[0]
    # Eileen Collins' face lies around x 180..270, y 60..175 of the 512×512 photo.
    assert 160 < x1 < 200 and 240 < x2 < 290 and 40 < y1 < 80 and 150 < y2 < 200
    assert faces.scores[0] > 0.99
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = faces.landmarks[0]
    assert lex < nx < rex and lmx < rmx  # image-left before image-right
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above nose above mouth
    assert (faces.landmarks[0, :, 0] > x1).all() and (faces.landmarks[0, :, 0] < x2).all()


def test_list_of_images_of_different_sizes(det, photo):
    small = photo[::2, ::2].copy()  # 256×256
    wide = np.zeros((600, 800, 3), np.uint8)
    wide[40:552, 100:612] = photo
    results = det.detect([photo, small, wide])
    assert isinstance(results, list) and len(results) == 3
    for res, im in zip(results, [photo, small, wide]):
        one = det.detect(im)
        np.testing.assert_array_equal(res.boxes, one.boxes)
    # the half-size copy finds the face at half the coordinates (within a few pixels)
    np.testing.assert_allclose(results[1].boxes[0], results[0].boxes[0] / 2, atol=4)
    # the copy pasted at (100, 40) on a larger canvas finds it shifted by that much
    np.testing.assert_allclose(results[2].boxes[0], results[0].boxes[0] + [100, 40, 100, 40], atol=4)


def test_grayscale_and_rgba_arrays(det, photo):
    gray = photo.mean(axis=2).astype(np.uint8)
    g = det.detect(gray)
    np.testing.assert_array_equal(g.boxes, det.detect(np.repeat(gray[:, :, None], 3, axis=2)).boxes)
    assert len(g.boxes) == 1
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(det.detect(rgba).boxes, det.detect(photo).boxes)
    # alpha 0 composites to black: nothing left to find
    rgba[:, :, 3] = 0
    assert len(det.detect(rgba).boxes) == 0


def test_as_rgb_uint8_conversions_and_errors():
    rgba = np.array([[[200, 100, 50, 128]]], np.uint8)
    # 200*128/255 = 100.39 → 100; 100*128/255 = 50.2 → 50; 50*128/255 = 25.1 → 25
    assert as_rgb_uint8(rgba).tolist() == [[[100, 50, 25]]]
    assert as_rgb_uint8(np.array([[7]], np.uint8)).tolist() == [[[7, 7, 7]]]
    with pytest.raises(UserError, match="uint8"):
        as_rgb_uint8(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(UserError, match=r"shape \[H, W, 3\]"):
        as_rgb_uint8(np.zeros((20, 20, 5), np.uint8))


def test_images_smaller_than_the_window_give_no_faces(det):
    for shape in [(11, 500, 3), (500, 11, 3), (1, 1, 3)]:
        faces = det.detect(np.zeros(shape, np.uint8))
        assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)


def test_blank_image_gives_empty_result(det):
    faces = det.detect(np.full((200, 300, 3), 128, np.uint8))
    assert faces.boxes.shape == (0, 4) and faces.scores.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"factor": 1.0}, "factor"), ({"factor": 0}, "factor"), ({"thresholds": (0.6, 0.7)}, "thresholds"),
     ({"thresholds": (0.6, 0.7, 1.5)}, "thresholds"), ({"min_face_size": -3}, "min_face_size"),
     ({"resize": "cubic"}, "resize"), ({"pyramid": "bilinear"}, "pyramid")],
)
def test_invalid_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        MTCNN(**kwargs)
    assert "\n" not in str(err.value)


def test_mirror_landmarks_by_hand():
    # mirrored crop: left eye at x .3, right eye at .7 → unmirrored: the mirrored right eye (.7)
    # becomes the left eye at 1 - .7 = .3, and the mirrored left eye (.3) the right eye at .7.
    lms = np.array([[0.3, 0.7, 0.5, 0.35, 0.6, 0.4, 0.41, 0.6, 0.8, 0.81]])
    out = mirror_landmarks(lms)
    np.testing.assert_allclose(out, [[0.3, 0.7, 0.5, 0.4, 0.65, 0.41, 0.4, 0.6, 0.81, 0.8]])


def test_flip_averaged_landmarks_stay_close(det, photo):
    assert det.flip_landmarks  # the default, as the authors' first release (MTCNNv1 detect_face.m)
    flipped = det.detect(photo)
    plain = MTCNN(flip_landmarks=False).detect(photo)
    np.testing.assert_array_equal(plain.boxes, flipped.boxes)  # boxes do not change
    diff = np.abs(plain.landmarks - flipped.landmarks).max()
    assert 0 < diff < 5  # averaging moves the points, by a few pixels at most


def _onet_by_hand(det, photo):
    """The one face of ``photo``: its box before O-Net's regression (AUTHORS), that regression, and a
    function giving O-Net's flip-averaged landmark fractions on a box."""
    from mtcnn_jax import boxes as bx, tiles

    cand = det.refine(photo, det.proposals(photo))
    box = np.fix(cand[:, :4])
    onet = det.networks.onet
    run = lambda fn, b: tiles.run_crops(fn, [photo], [bx.convert(b, bx.BoxMode.AUTHORS, bx.BoxMode.INCLUSIVE)],
                                        48, det.resize, det.networks.onet_batch)  # noqa: E731
    prob, reg, _ = (np.asarray(a) for a in run(onet, box))
    best = int(np.argmax(prob))

    def flip_mean(b):
        u = np.asarray(run(onet, b)[2], np.float64)
        um = np.asarray(run(lambda c: onet(np.ascontiguousarray(c[:, :, ::-1])), b)[2], np.float64)
        return 0.5 * (u + tiles.mirror_landmarks(um))

    return cand, box[best][None], reg[best][None], flip_mean


def test_flip_averages_with_the_mirrored_crop(photo):
    """The landmarks are the mean of O-Net's on the face's crop and on the mirrored crop (x -> 1 - x,
    left and right swapped), taken on the box O-Net saw, as MTCNNv1's detect_face.m."""
    from mtcnn_jax.detector import _landmarks

    det = MTCNN(refine_landmarks=False)
    cand, best, _, flip_mean = _onet_by_hand(det, photo)
    np.testing.assert_allclose(det.output(photo, cand).landmarks, _landmarks(best, flip_mean(best)), atol=1e-3)


def test_refine_averages_with_onet_on_the_square_of_the_final_box(det, photo):
    """With refine_landmarks (the default), O-Net runs again on the square around the face's final
    box, truncated: the landmarks are the mean of both passes' (each flip-averaged), in pixels."""
    from mtcnn_jax import boxes as bx
    from mtcnn_jax.detector import _landmarks

    assert det.refine_landmarks and det.flip_landmarks
    cand, best, reg, flip_mean = _onet_by_hand(det, photo)
    final = bx.calibrate(best, reg, inclusive=True)  # AUTHORS: x1 + dx1 w, ... (w = x2 - x1 + 1)
    x1, y1, x2, y2 = final[0]
    side = max(x2 - x1, y2 - y1)  # the square of the same centre, as the authors' rerec.m (no +1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sq = np.fix([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]])
    np.testing.assert_allclose(np.fix(bx.square(final)), sq)
    faces = det.output(photo, cand)
    np.testing.assert_allclose(faces.boxes, bx.convert(final, bx.BoxMode.AUTHORS, bx.BoxMode.HALF_OPEN), atol=1e-3)
    want = 0.5 * (_landmarks(best, flip_mean(best)) + _landmarks(sq, flip_mean(sq)))
    np.testing.assert_allclose(faces.landmarks, want, atol=1e-3)
    plain = MTCNN(refine_landmarks=False).output(photo, cand).landmarks
    assert 0.2 < np.abs(plain - faces.landmarks).max() < 5  # the second pass moves the points a little


def test_functional_detect_matches_class(photo, det):
    np.testing.assert_array_equal(detect(photo).boxes, det.detect(photo).boxes)


def test_pyramid_from_the_image_finds_the_same_face(det, photo):
    chained = MTCNN(pyramid="chained").detect(photo)
    original = MTCNN(pyramid="original").detect(photo)
    assert det.pyramid == "summed" and len(chained.boxes) == len(original.boxes) == 1
    np.testing.assert_array_equal(det.detect(photo).boxes, original.boxes)  # the same levels here
    # Only P-Net sees the pyramid; R-Net and O-Net crop the image itself, so the same surviving
    # proposal gives the same face to the last digit.
    np.testing.assert_allclose(chained.boxes, original.boxes, atol=1e-3)
    np.testing.assert_allclose(chained.landmarks, original.landmarks, atol=1e-3)
