"""Landmark list readers (CUHK, MTFL, CelebA) and the TFDS example conversions, on hand-written inputs."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from mtcnn_jax import config_utils
from mtcnn_jax.data import samples
from mtcnn_jax.data import landmarks as lm
from mtcnn_jax.data import tfds_sources
from mtcnn_jax.errors import FormatWarning, UserError

CUHK = (
    "a.jpg 5 60 6 70 10 11 20 21 30 31 40 41 50 51\n"  # 1: good
    "b.jpg 5 60 6 70 10 11\n"  # 2: 7 fields
    "\n"  # 3: blank, ignored
    "c.jpg 5 60 6 x 10 11 20 21 30 31 40 41 50 51\n"  # 4: not a number
    "d.jpg 60 5 6 70 10 11 20 21 30 31 40 41 50 51\n"  # 5: right < left
    "e.jpg 1.5 9.5 2 12 3 4 5 6 7 8 9 10 11 12\n"  # 6: good
)


def test_cuhk_good_lines_parsed_to_the_numbers(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(CUHK)
    skipped = []
    faces = lm.read_cuhk_list(path, strict=False, skipped=skipped)
    assert [f.path for f in faces] == ["a.jpg", "e.jpg"]
    np.testing.assert_array_equal(faces[0].box, [5, 6, 60, 70])  # (left, top, right, bottom)
    np.testing.assert_array_equal(faces[0].points, [[10, 11], [20, 21], [30, 31], [40, 41], [50, 51]])
    np.testing.assert_array_equal(faces[1].box, [1.5, 2, 9.5, 12])
    np.testing.assert_array_equal(faces[1].points, [[3, 4], [5, 6], [7, 8], [9, 10], [11, 12]])
    assert faces[0].where == f"{path}:1" and faces[1].where == f"{path}:6"
    assert skipped == [
        f"{path}:2: expected 15 fields 'path left right top bottom x1 y1 ... x5 y5', got 7",
        f"{path}:4: not a number: 'x'",
        f"{path}:5: face box has non-positive size (-55 × 64)",
    ]


def test_cuhk_strict_raises_one_line_naming_the_first_bad_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(CUHK)
    with pytest.raises(UserError) as err:
        lm.read_cuhk_list(path)
    assert str(err.value) == f"{path}:2: expected 15 fields 'path left right top bottom x1 y1 ... x5 y5', got 7"
    assert "\n" not in str(err.value)
    # The name kept in samples delegates to the same reader.
    with pytest.raises(UserError, match=r"list\.txt:2: "):
        samples.read_cuhk_list(path)


def test_non_strict_without_a_list_warns_per_bad_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(CUHK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        faces = lm.read_cuhk_list(path, strict=False)
    assert len(faces) == 2
    got = [str(w.message).split(": ")[0] for w in caught if w.category is FormatWarning]
    assert got == [f"{path}:2", f"{path}:4", f"{path}:5"]


def test_mtfl_one_based_becomes_zero_based(tmp_path):
    path = tmp_path / "training.txt"
    path.write_text(
        "a.jpg 11 21 31 41 51 12.5 22 32 42 52 1 2 2 3\n"
        "b.jpg 11 21 31 41 51 12 22 32 42 52 1 2\n"  # 13 fields
        "c.jpg 1 2 3 4 5 6 7 8 9 10\n"  # 11 fields: the points alone are accepted
    )
    skipped = []
    faces = lm.read_mtfl(path, strict=False, skipped=skipped)
    assert [f.path for f in faces] == ["a.jpg", "c.jpg"]
    np.testing.assert_array_equal(faces[0].points, [[10, 11.5], [20, 21], [30, 31], [40, 41], [50, 51]])
    np.testing.assert_array_equal(faces[1].points, [[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]])
    assert faces[0].box is None
    assert len(skipped) == 1 and skipped[0].startswith(f"{path}:2: expected 15 fields")
    assert skipped[0].endswith("got 13")


LM_HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"


def _celeba(folder, aligned=False):
    folder.mkdir(exist_ok=True)
    name = "list_landmarks_align_celeba.txt" if aligned else "list_landmarks_celeba.txt"
    (folder / name).write_text(
        "4\n"
        f"{LM_HEADER}\n"
        "000002.jpg 10 20 30 21 20 30 12 40 28 41\n"  # 3
        "000001.jpg  69  109  106  113   77  142   73  152  108  154\n"  # 4 (CelebA pads with spaces)
        "000003.jpg 1 2 3\n"  # 5: 4 fields
        "000004.jpg 5 6 7 8 9 10 11 12 13 14\n"  # 6: its box has zero width
    )
    (folder / "list_bbox_celeba.txt").write_text(
        "4\n"
        "image_id x_1 y_1 width height\n"
        "000001.jpg    95  71 226 313\n"  # 3
        "000004.jpg 10 10 0 20\n"  # 4
        "000002.jpg 72 94 221 306\n"  # 5
    )
    return folder


def test_celeba_joins_landmarks_and_boxes_by_image_id(tmp_path):
    folder = _celeba(tmp_path / "celeba")
    skipped = []
    faces = lm.read_celeba(folder, strict=False, skipped=skipped)
    # Landmark file order, boxes found by id although the box file has another order.
    assert [f.path for f in faces] == ["img_celeba/000002.jpg", "img_celeba/000001.jpg"]
    np.testing.assert_array_equal(faces[0].box, [72, 94, 72 + 221, 94 + 306])
    np.testing.assert_array_equal(faces[0].points, [[10, 20], [30, 21], [20, 30], [12, 40], [28, 41]])
    np.testing.assert_array_equal(faces[1].box, [95, 71, 321, 384])
    np.testing.assert_array_equal(faces[1].points, [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]])
    lm_file, box_file = folder / "list_landmarks_celeba.txt", folder / "list_bbox_celeba.txt"
    assert faces[0].where == f"{lm_file}:3" and faces[1].where == f"{lm_file}:4"
    assert skipped == [
        f"{lm_file}:5: expected 11 fields (image id and 10 numbers), got 4",
        f"{box_file}:4: face box has non-positive size (0 × 20)",
        f"{lm_file}:6: no usable box for 000004.jpg in list_bbox_celeba.txt",
    ]
    # The dispatcher reads the same, and the aligned list comes without boxes.
    via = lm.read_landmark_list(folder, "celeba", strict=False, skipped=[])
    assert [f.path for f in via] == [f.path for f in faces]
    aligned = lm.read_celeba(_celeba(tmp_path / "aligned", aligned=True), strict=False, skipped=[], aligned=True)
    assert [f.path for f in aligned][:2] == ["img_align_celeba/000002.jpg", "img_align_celeba/000001.jpg"]
    assert all(f.box is None for f in aligned)


def test_celeba_bad_header_is_reported_with_its_line(tmp_path):
    folder = _celeba(tmp_path / "celeba")
    box_file = folder / "list_bbox_celeba.txt"
    box_file.write_text(box_file.read_text().replace("x_1 y_1 width height", "x y w h"))
    skipped = []
    lm.read_celeba(folder, strict=False, skipped=skipped)
    assert f"{box_file}:2: expected the header 'image_id x_1 y_1 width height', got 'image_id x y w h'" in skipped


def test_dispatcher_formats_and_errors(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a.jpg 5 60 6 70 10 11 20 21 30 31 40 41 50 51\n")
    assert lm.read_landmark_list(path, "cuhk")[0].box.tolist() == [5, 6, 60, 70]
    np.testing.assert_array_equal(lm.read_landmark_list(path, "cuhk")[0].points[0], [10, 11])
    with pytest.raises(UserError, match="unknown landmark list format 'lfw'"):
        lm.read_landmark_list(path, "lfw")
    with pytest.raises(UserError, match="the celeba format takes the folder"):
        lm.read_landmark_list(path, "celeba")
    with pytest.raises(UserError, match="landmark list not found"):
        lm.read_landmark_list(tmp_path / "missing.txt", "mtfl")


def test_config_chooses_the_format(tmp_path):
    c = config_utils.base_config()
    assert c.data.landmark_format == "cuhk" and c.data.workers == 0
    c.data.landmark_format = "celeba"
    config_utils.validate(c)
    c.data.landmark_format = "lfw"
    with pytest.raises(UserError, match="config.data.landmark_format: 'lfw'"):
        config_utils.validate(c)
    c = config_utils.base_config()
    c.data.workers = -1
    with pytest.raises(UserError, match="config.data.workers: -1"):
        config_utils.validate(c)
    # samples.landmark_faces reads data.landmark_list in data.landmark_format ...
    _celeba(tmp_path / "celeba")
    c = config_utils.base_config()
    c.data.root, c.data.landmarks, c.data.landmark_list, c.data.landmark_format = str(tmp_path), "celeba", ".", "celeba"
    lines = []
    faces = samples.landmark_faces(c.data, lines)
    assert [f.path for f in faces] == ["img_celeba/000002.jpg", "img_celeba/000001.jpg"] and len(lines) == 3
    # ... and refuses a format without face boxes (windows are cut around the box).
    (tmp_path / "mtfl.txt").write_text("a.jpg 11 21 31 41 51 12 22 32 42 52 1 2 2 3\n")
    c.data.landmarks, c.data.landmark_list, c.data.landmark_format = ".", "mtfl.txt", "mtfl"
    with pytest.raises(UserError, match="has no face boxes"):
        samples.landmark_faces(c.data)


# ----------------------------------------------------------------------------- TFDS examples (no TensorFlow)


def test_wider_face_example_to_record():
    h, w = 100, 200
    example = {
        "image": np.zeros((h, w, 3), np.uint8),
        "image/filename": b"0--Parade/0_Parade_marchingband_1_5.jpg",
        "faces": {
            # (ymin, xmin, ymax, xmax) / (H, W, H, W), as float32 the way TFDS stores it
            "bbox": np.array([[10 / h, 20 / w, 40 / h, 45 / w], [0, 0, 0, 0], [0.5, 0.9, 1.0, 1.0]], np.float32),
            "blur": np.array([2, 0, 1], np.uint8),
            "expression": np.array([True, False, False]),
            "illumination": np.array([False, False, True]),
            "occlusion": np.array([1, 0, 2], np.uint8),
            "pose": np.array([False, False, True]),
            "invalid": np.array([False, False, True]),
        },
    }
    record, image = tfds_sources.wider_record_from_example(example)
    assert record.path == "0--Parade/0_Parade_marchingband_1_5.jpg" and image.shape == (100, 200, 3)
    # The all-zero box is dropped; x1 = 20 / 200 · 200, y1 = 10, x2 = 45, y2 = 40 (x + w, y + h).
    np.testing.assert_array_equal(record.boxes, [[20, 10, 45, 40], [180, 50, 200, 100]])
    assert record.boxes.dtype == np.float32
    assert record.invalid.tolist() == [False, True]
    assert record.blur.tolist() == [2, 1] and record.occlusion.tolist() == [1, 2]
    assert record.expression.tolist() == [1, 0] and record.illumination.tolist() == [0, 1]
    assert record.pose.tolist() == [0, 1] and record.pose.dtype == np.int32
    # An image without faces.
    empty = dict(example, faces={k: v[:0] for k, v in example["faces"].items()})
    assert len(tfds_sources.wider_record_from_example(empty)[0]) == 0


def test_celeb_a_example_to_face():
    names = lm.CELEBA_LANDMARK_HEADER
    values = [69, 109, 106, 113, 77, 142, 73, 152, 108, 154]
    example = {"image": np.ones((218, 178, 3), np.uint8),
               "landmarks": {k: np.int64(v) for k, v in zip(names, values)},
               "attributes": {"Smiling": True}}
    face, image = tfds_sources.celeba_face_from_example(example, "celeb_a/train/7")
    assert face.path == "celeb_a/train/7" and face.box is None and image.shape == (218, 178, 3)
    np.testing.assert_array_equal(face.points, [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]])


def test_tfds_loaders_without_tensorflow_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises ImportError
    for load in (tfds_sources.load_wider_face, tfds_sources.load_celeb_a):
        with pytest.raises(UserError) as err:
            next(load("train"))
        assert str(err.value) == ("the TFDS wider_face / celeb_a sources need TensorFlow: "
                                  "pip install 'mtcnn-jax[tfds-sources]'")


def test_mtfl_keeps_attributes_reads_zero_based_and_refuses_fractional_attributes(tmp_path):
    path = tmp_path / "testing.txt"
    path.write_text("a.jpg 11 21 31 41 51 12 22 32 42 52 1 2 2 3\nb.jpg 1 2 3 4 5 6 7 8 9 10\n")
    a, b = lm.read_mtfl(path, one_based=False)
    np.testing.assert_array_equal(a.points[0], [11, 12])  # as written
    assert a.attributes.tolist() == [1, 2, 2, 3] and b.attributes is None
    path.write_text("a.jpg 11 21 31 41 51 12 22 32 42 52 1 2.5 2 3\n")
    with pytest.raises(UserError, match=r"testing\.txt:1: attributes must be whole numbers"):
        lm.read_mtfl(path)
