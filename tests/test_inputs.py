"""What ``MTCNN.detect`` takes (paths, PIL images, 4-D batches, lists) and ``keep``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtcnn_jax import detect
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.faces import Faces
from mtcnn_jax.inputs import as_batch, from_pil, select

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def reference(det, photo):
    return det.detect(photo)


def same(a: Faces, b: Faces) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


@pytest.mark.parametrize("kind", ["str", "Path", "bytes"])
def test_a_path_is_read_as_load_image_reads_it(det, reference, kind):
    path = {"str": str(ASTRONAUT), "Path": ASTRONAUT, "bytes": str(ASTRONAUT).encode()}[kind]
    faces = det.detect(path)
    assert isinstance(faces, Faces)
    same(faces, reference)


def test_a_missing_or_broken_path_is_one_line(det, tmp_path):
    with pytest.raises(ImageError, match="no such file") as err:
        det.detect(str(tmp_path / "missing.jpg"))
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="not a supported image"):
        det.detect([ASTRONAUT, bad])


def test_pil_images(det, photo, reference):
    same(det.detect(Image.open(ASTRONAUT)), reference)  # a JPEG as opened: RGB
    same(det.detect(Image.fromarray(photo)), reference)
    gray = photo.mean(axis=2).astype(np.uint8)
    same(det.detect(Image.fromarray(gray)), det.detect(gray))  # L: replicated
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    same(det.detect(Image.fromarray(rgba, "RGBA")), reference)


def test_pil_conversions_by_hand():
    # RGBA composited on black: 200 * 128 / 255 = 100.39 -> 100, 100 * 128 / 255 = 50.2 -> 50, 25.1 -> 25
    rgba = Image.fromarray(np.array([[[200, 100, 50, 128]]], np.uint8), "RGBA")
    assert from_pil(rgba).tolist() == [[[100, 50, 25]]]
    # 16-bit grayscale: round(v * 255 / 65535) = round(v / 257): 0 -> 0, 257 -> 1, 32896 -> 128, 65535 -> 255
    wide = Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16))
    assert wide.mode.startswith("I")
    assert from_pil(wide)[0, :, 0].tolist() == [0, 1, 128, 255]
    # a palette image: its colours
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 40, 50, 60])
    pal.putdata([1, 0])
    assert from_pil(pal).tolist() == [[[40, 50, 60], [10, 20, 30]]]
    # 1-bit: 0 / 255
    bits = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    assert from_pil(bits)[0, :, 0].tolist() == [0, 255]
    with pytest.raises(UserError, match="floating-point"):
        from_pil(Image.fromarray(np.zeros((2, 2), np.float32)))


def test_a_4d_batch_is_several_images(det, photo, reference):
    small = photo[::2, ::2]
    batch = np.stack([photo, np.zeros_like(photo), photo])
    out = det.detect(batch)
    assert isinstance(out, list) and len(out) == 3
    same(out[0], reference)
    assert len(out[1].boxes) == 0
    same(out[2], reference)
    one = det.detect(photo[None])  # a batch of one is still a list
    assert isinstance(one, list) and len(one) == 1
    grays = det.detect(np.stack([small.mean(axis=2).astype(np.uint8)[:, :, None]] * 2))  # [B, H, W, 1]
    assert len(grays) == 2 and len(grays[0].boxes) == 1


def test_mixed_lists_and_tuples(det, photo, reference):
    out = det.detect([ASTRONAUT, Image.fromarray(photo), photo, str(ASTRONAUT)])
    assert len(out) == 4
    for faces in out:
        same(faces, reference)
    assert len(det.detect((photo,))) == 1
    assert det.detect([]) == []


def test_refusals_name_the_image(det, photo):
    with pytest.raises(UserError, match=r"^image 1: expected uint8 pixels, got float32$"):
        det.detect([photo, photo.astype(np.float32)])
    with pytest.raises(UserError, match=r"^image: expected an array"):
        det.detect(object())
    with pytest.raises(UserError, match=r"^image 0: expected an array"):
        det.detect([{"not": "an image"}])
    with pytest.raises(UserError, match=r"shape \[H, W, 3\]"):
        det.detect(np.zeros((1, 2, 20, 20, 3), np.uint8))


def test_as_batch_splits_without_converting(photo):
    items, single = as_batch(photo)
    assert single and items[0] is photo
    items, single = as_batch(np.stack([photo, photo]))
    assert not single and len(items) == 2
    items, single = as_batch("x.jpg")
    assert single and items == ["x.jpg"]  # read later, when its group runs


# --------------------------------------------------------------------------- keep


def faces_by_hand():
    """Three faces, scores descending: the second has the largest box (30 × 40 = 1200 px²)."""
    boxes = np.array([[0, 0, 20, 20], [50, 50, 80, 90], [100, 100, 130, 130]], np.float32)  # 400, 1200, 900
    scores = np.array([0.99, 0.95, 0.90], np.float32)
    landmarks = np.arange(30, dtype=np.float32).reshape(3, 5, 2)
    return Faces(boxes, scores, landmarks)


def test_select_by_hand():
    faces = faces_by_hand()
    assert select(faces, "all") is faces
    best = select(faces, "best")
    assert isinstance(best, Faces)
    np.testing.assert_array_equal(best.boxes, [[0, 0, 20, 20]])
    np.testing.assert_array_equal(best.landmarks, faces.landmarks[:1])
    largest = select(faces, "largest")
    np.testing.assert_array_equal(largest.boxes, [[50, 50, 80, 90]])
    np.testing.assert_array_equal(largest.scores, np.float32([0.95]))
    # equal areas: the more confident of them
    tie = faces._replace(boxes=np.array([[0, 0, 30, 30], [0, 0, 30, 30], [0, 0, 10, 10]], np.float32))
    np.testing.assert_array_equal(select(tie, "largest").scores, np.float32([0.99]))
    empty = Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    assert select(empty, "largest").boxes.shape == (0, 4)
    no_points = faces._replace(landmarks=None)
    assert select(no_points, "best").landmarks is None
    with pytest.raises(UserError, match="keep must be one of 'all', 'largest', 'best'"):
        select(faces, "first")


def test_keep_with_the_detector(det, photo, reference):
    # the photo, and beside it a copy at half size: the full-size face is the largest
    canvas = np.zeros((512, 800, 3), np.uint8)
    canvas[:, :512] = photo
    canvas[100:356, 530:786] = photo[::2, ::2]
    every = det.detect(canvas)
    assert len(every.boxes) >= 2
    largest = det.detect(canvas, keep="largest")
    area = (every.boxes[:, 2] - every.boxes[:, 0]) * (every.boxes[:, 3] - every.boxes[:, 1])
    np.testing.assert_array_equal(largest.boxes, every.boxes[[np.argmax(area)]])
    np.testing.assert_allclose(largest.boxes, reference.boxes, atol=1)  # the full-size face
    best = det.detect(canvas, keep="best")
    np.testing.assert_array_equal(best.boxes, every.boxes[:1])
    assert [len(f.boxes) for f in det.detect([canvas, np.zeros((50, 50, 3), np.uint8)], keep="best")] == [1, 0]
    same(detect(ASTRONAUT, keep="largest"), reference)  # the functional form takes it too
    with pytest.raises(UserError, match="keep"):
        det.detect(photo, keep="biggest")
