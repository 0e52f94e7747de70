"""The rotation search: the coordinate mapping by hand, the merge, and rotated copies of the bundled photo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax import align, cli, load_image
from mtcnn_jax.errors import UserError
from mtcnn_jax.rotations import Rotation, RotatedFaces, detect_rotated, merge, parse_angles

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"


# --------------------------------------------------------------------------- the mapping, by hand


def test_the_worked_example_of_the_module_docstring():
    """4 × 3 image rotated by 90: p' = (y, 4 - x) in the corner frame, back p = (4 - y', x')."""
    r = Rotation(90, width=4, height=3)
    assert r.size == (3, 4)
    np.testing.assert_array_equal(r.matrix, [[0, 1, 0], [-1, 0, 4]])
    np.testing.assert_array_equal(r.inverse, [[0, -1, 4], [1, 0, 0]])
    # the top-left pixel's centre (0, 0) goes to (0, 3), the bottom-left pixel of the copy, and back
    np.testing.assert_array_equal(r.points_to_rotated([[0.0, 0.0]]), [[0.0, 3.0]])
    np.testing.assert_array_equal(r.points_from_rotated([[0.0, 3.0]]), [[0.0, 0.0]])
    # box (0, 1, 2, 3) of the copy = columns 0-1, rows 1-2 → box (1, 0, 3, 2) of the input
    np.testing.assert_array_equal(r.boxes_from_rotated([[0, 1, 2, 3]]), [[1, 0, 3, 2]])
    np.testing.assert_array_equal(r.boxes_to_rotated([[1, 0, 3, 2]]), [[0, 1, 2, 3]])
    a = np.arange(12).reshape(3, 4)
    assert r.rotate(a)[3, 0] == a[0, 0]
    assert sorted(r.rotate(a)[1:3, 0:2].ravel()) == sorted(a[0:2, 1:3].ravel())


@pytest.mark.parametrize("angle, point, expected, box, expected_box", [
    # 180: p' = (4 - x, 3 - y): centre (0, 0) → frame (0.5, 0.5) → (3.5, 2.5) → (3, 2); pixel (0, 0) → pixel (3, 2)
    (180, (0, 0), (3, 2), (0, 0, 1, 1), (3, 2, 4, 3)),
    # 270: p' = (3 - y, x): (0, 0) → frame (0.5, 0.5) → (2.5, 0.5) → (2, 0); the top row becomes the right column
    (270, (0, 0), (2, 0), (0, 0, 4, 1), (2, 0, 3, 4)),
    # 0: nothing moves
    (0, (1.25, 2.5), (1.25, 2.5), (0.5, 1, 2, 3), (0.5, 1, 2, 3)),
])
def test_quarter_turns_by_hand(angle, point, expected, box, expected_box):
    r = Rotation(angle, width=4, height=3)
    np.testing.assert_allclose(r.points_to_rotated([point]), [expected], atol=1e-12)
    np.testing.assert_allclose(r.points_from_rotated([expected]), [point], atol=1e-12)
    np.testing.assert_allclose(r.boxes_to_rotated([box]), [expected_box], atol=1e-12)
    np.testing.assert_allclose(r.boxes_from_rotated([expected_box]), [box], atol=1e-12)


@pytest.mark.parametrize("angle", [0, 90, 180, 270, -90, 450])
def test_every_pixel_goes_where_rot90_puts_it(angle):
    rng = np.random.default_rng(angle % 7)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    r = Rotation(angle, 7, 5)
    copy = r.rotate(image)
    np.testing.assert_array_equal(copy, np.rot90(image, (angle % 360) // 90))
    ys, xs = np.mgrid[0:5, 0:7]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    moved = r.points_to_rotated(pts)
    cols, rows = np.rint(moved).astype(int).T
    np.testing.assert_allclose(moved, np.rint(moved), atol=1e-12)
    np.testing.assert_array_equal(copy[rows, cols], image[ys.ravel(), xs.ravel()])
    # a one-pixel box moves with its pixel
    boxes = np.concatenate([pts, pts + 1], axis=1)
    np.testing.assert_allclose(r.boxes_to_rotated(boxes), np.concatenate([moved, moved + 1], axis=1), atol=1e-12)


def test_45_degrees_by_hand():
    """A 2 × 2 image at 45°: canvas ceil(2 √2) = 3 × 3; the whole-image box (0, 0, 2, 2) has corners
    at (±1, ±1) from the centre, which go to (∓√2, 0) and (0, ∓√2) from the new centre (1.5, 1.5):
    the box holding them is (1.5 - √2, 1.5 - √2, 1.5 + √2, 1.5 + √2)."""
    r = Rotation(45, 2, 2)
    assert r.size == (3, 3)
    lo, hi = 1.5 - math.sqrt(2), 1.5 + math.sqrt(2)
    np.testing.assert_allclose(r.boxes_to_rotated([[0, 0, 2, 2]]), [[lo, lo, hi, hi]], atol=1e-12)
    # the top-left corner (0, 0) = (-1, -1) from the centre → (-√2, 0) → (1.5 - √2, 1.5): points_to
    # takes pixel centres, so the corner is the point (-0.5, -0.5)
    np.testing.assert_allclose(r.points_to_rotated([[-0.5, -0.5]]), [[lo - 0.5, 1.0]], atol=1e-12)


@pytest.mark.parametrize("angle", [30, 45, 200])
def test_any_angle_resamples_where_the_points_map(angle):
    """A bright 3 × 3 square centred on (40, 25) in a 90 × 60 image lands, after the warp, where
    points_to_rotated puts (40, 25); and the map and its inverse undo each other."""
    image = np.zeros((60, 90, 3), np.uint8)
    image[24:27, 39:42] = 255
    r = Rotation(angle, 90, 60)
    copy = r.rotate(image)
    assert copy.shape[:2] == (r.size[1], r.size[0])
    weights = copy[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0 : copy.shape[0], 0 : copy.shape[1]]
    centroid = [(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()]
    np.testing.assert_allclose(centroid, r.points_to_rotated([[40.0, 25.0]])[0], atol=0.05)
    pts = np.random.default_rng(1).uniform(0, 60, (10, 2))
    np.testing.assert_allclose(r.points_from_rotated(r.points_to_rotated(pts)), pts, atol=1e-9)


def test_parse_angles():
    assert parse_angles("0,90,180,270") == (0.0, 90.0, 180.0, 270.0)
    assert parse_angles(" -90, 450 ,30.5") == (270.0, 90.0, 30.5)
    assert parse_angles("0,360,720") == (0.0,)
    assert parse_angles([0, 180]) == (0.0, 180.0)
    for bad in ("", "a,b", "0,,90", "nan", "inf"):
        with pytest.raises(UserError) as err:
            parse_angles(bad)
        assert str(err.value).startswith("--rotations: ") and "\n" not in str(err.value)


def test_merge_keeps_the_most_confident_detection_of_each_face():
    pts = np.zeros((1, 5, 2))
    found = [
        (0.0, (np.array([[10, 10, 50, 50]]), np.array([0.80]), pts + 1)),
        # the same face seen in the 90° copy: 36 × 36 pixels inside the 40 × 40 box, IoU 1296 / 1600
        # = 0.81 > 0.5: one face, the more confident (0.95) kept
        (90.0, (np.array([[12, 12, 48, 48], [200, 200, 240, 240]]), np.array([0.95, 0.70]), np.concatenate([pts + 2, pts + 3]))),
    ]
    out = merge(found)
    assert isinstance(out, RotatedFaces)
    np.testing.assert_array_equal(out.boxes, [[12, 12, 48, 48], [200, 200, 240, 240]])
    np.testing.assert_allclose(out.scores, [0.95, 0.70])
    np.testing.assert_array_equal(out.angles, [90, 90])
    np.testing.assert_array_equal(out.landmarks[:, 0, 0], [2, 3])
    # with an overlap threshold above 0.81 both stay
    assert len(merge(found, overlap=0.85).boxes) == 3
    assert len(merge(found, overlap=0.80).boxes) == 2


# --------------------------------------------------------------------------- rotated copies of the photo


@pytest.fixture(scope="module")
def upright(det, photo):
    faces = det.detect(photo)
    assert len(faces.boxes) == 1
    return faces


def turned_clockwise(k: int, box, points, size: int = 512):
    """Box and landmarks of a ``size``² image after k clockwise quarter turns (np.rot90(a, -k)),
    by hand: one clockwise turn sends pixel (x, y) to (size - 1 - y, x) and the box
    (x1, y1, x2, y2) to (size - y2, x1, size - y1, x2)."""
    box, points = np.asarray(box, np.float64), np.asarray(points, np.float64)
    for _ in range(k):
        box = np.array([size - box[3], box[0], size - box[1], box[2]])
        points = np.stack([size - 1 - points[:, 1], points[:, 0]], axis=1)
    return box, points


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_turned_photo_is_found_at_the_angle_that_undoes_the_turn(det, photo, upright, k):
    image = np.ascontiguousarray(np.rot90(photo, -k))  # turned k × 90° clockwise
    faces = detect_rotated(det, image)
    best = int(np.argmax(faces.scores))
    assert faces.angles[best] == 90 * k
    # the copy at 90 k is the upright photo itself, pixel for pixel: its face, mapped back by hand
    box, points = turned_clockwise(k, upright.boxes[0], upright.landmarks[0])
    np.testing.assert_allclose(faces.boxes[best], box, atol=1e-3)
    np.testing.assert_allclose(faces.landmarks[best], points, atol=1e-3)
    assert faces.scores[best] == upright.scores[0]
    # "left eye" stays the face's own: an upright crop, equal to the crop of the upright photo
    crop = align(image, faces.landmarks[best])
    assert np.abs(crop.astype(int) - align(photo, upright.landmarks[0]).astype(int)).mean() < 1.0


def test_upside_down_face_needs_the_search(det, photo):
    image = np.ascontiguousarray(np.rot90(photo, 2))
    assert len(det.detect(image).boxes) == 0  # MTCNN alone does not find it
    faces = detect_rotated(det, image, "0,180", keep="best")
    assert len(faces.boxes) == 1 and faces.angles[0] == 180


def test_lists_and_keep(det, photo, upright):
    turned = np.ascontiguousarray(np.rot90(photo, -1))
    out = detect_rotated(det, [photo, turned], [0, 90], keep="largest")
    assert isinstance(out, list) and [len(f.boxes) for f in out] == [1, 1]
    np.testing.assert_allclose(out[0].boxes[0], upright.boxes[0], atol=1e-3)
    assert out[1].angles[0] == 90
    with pytest.raises(UserError, match="keep"):
        detect_rotated(det, photo, keep="biggest")


def test_cli_rotations_and_crops_of_a_turned_photo(tmp_path, capsys, upright):
    turned = tmp_path / "turned.png"
    cv2.imwrite(str(turned), np.rot90(cv2.imread(str(ASTRONAUT)), -1))
    out, crops = tmp_path / "out.json", tmp_path / "crops"
    code = cli.main(["detect", str(turned), "--rotations", "0,90,180,270", "--keep", "best",
                     "--json", str(out), "--crops", str(crops)])
    assert code == 0, capsys.readouterr().err
    (entry,) = json.loads(out.read_text())
    (face,) = entry["faces"]
    assert face["angle"] == 90.0 and face["crop"] == str(crops / "turned_0.png")
    box, _ = turned_clockwise(1, upright.boxes[0], upright.landmarks[0])
    np.testing.assert_allclose(face["box"], box, atol=0.01)
    crop = cv2.imread(face["crop"])[:, :, ::-1]
    upright_crop = align(load_image(ASTRONAUT), upright.landmarks[0])
    assert np.abs(crop.astype(int) - upright_crop.astype(int)).mean() < 1.5  # upright, as from the photo


def test_cli_bad_rotations_is_one_line(capsys):
    code = cli.main(["detect", str(ASTRONAUT), "--rotations", "0,ninety"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == "mtcnn-jax: --rotations: expected angles in degrees separated by commas (like 0,90,180,270), got '0,ninety'\n"
