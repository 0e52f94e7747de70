"""The WIDER FACE ground-truth reader, on small hand-written files (and the shared file)."""

from __future__ import annotations

import numpy as np
import pytest

from mtcnn_jax.data.wider import count_faces, read_wider_gt
from mtcnn_jax.errors import FormatError, FormatWarning

# Three images: two faces (the second invalid); N = 0 with its dummy line; the official
# "no face" record (one all-zero box). Trailing spaces as in the official file.
GOOD = """\
0--Parade/a.jpg
2
10 20 30 40 2 0 1 0 0 0 
100 50 8 6 1 1 0 1 2 1 
1--Handshaking/b.jpg
0
0 0 0 0 0 0 0 0 0 0 
2--Demonstration/c.jpg
1
0 0 0 0 0 0 0 0 0 0 
"""


def _write(tmp_path, text, name="gt.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_boxes_as_corners_and_attributes(tmp_path):
    recs = read_wider_gt(_write(tmp_path, GOOD))
    assert [r.path for r in recs] == ["0--Parade/a.jpg", "1--Handshaking/b.jpg", "2--Demonstration/c.jpg"]
    a = recs[0]
    assert a.boxes.dtype == np.float32 and a.boxes.shape == (2, 4)
    # x2 = x1 + w, y2 = y1 + h
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40, 60], [100, 50, 108, 56]])
    np.testing.assert_array_equal(a.invalid, [False, True])
    assert a.invalid.dtype == bool
    np.testing.assert_array_equal(a.blur, [2, 1])
    np.testing.assert_array_equal(a.expression, [0, 1])
    np.testing.assert_array_equal(a.illumination, [1, 0])
    np.testing.assert_array_equal(a.occlusion, [0, 2])
    np.testing.assert_array_equal(a.pose, [0, 1])
    np.testing.assert_array_equal(a.widths, [30, 8])
    np.testing.assert_array_equal(a.heights, [40, 6])


def test_zero_faces_and_all_zero_box_give_empty_records(tmp_path):
    recs = read_wider_gt(_write(tmp_path, GOOD))
    for r in recs[1:]:
        assert len(r) == 0 and r.boxes.shape == (0, 4) and r.invalid.shape == (0,)


def test_zero_faces_without_dummy_line(tmp_path):
    text = "a/x.jpg\n0\nb/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
    recs = read_wider_gt(_write(tmp_path, text))
    assert [len(r) for r in recs] == [0, 1]
    np.testing.assert_array_equal(recs[1].boxes, [[1, 2, 4, 6]])


def test_count_faces_by_setting(tmp_path):
    recs = read_wider_gt(_write(tmp_path, GOOD))
    # the invalid face never counts; the valid one is 30 x 40
    assert [count_faces(recs, s) for s in (1, 20, 30, 31)] == [1, 1, 1, 0]


def test_malformed_face_line_names_file_and_line(tmp_path):
    bad = GOOD.replace("100 50 8 6 1 1 0 1 2 1 ", "100 50 8 6 1 1 0")  # line 4: 7 fields
    path = _write(tmp_path, bad)
    with pytest.raises(FormatError) as info:
        read_wider_gt(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:4: ") and "\n" not in msg
    assert info.value.lineno == 4


def test_non_numeric_value_and_bad_count(tmp_path):
    with pytest.raises(FormatError, match=r":3: not a number"):
        read_wider_gt(_write(tmp_path, "a/x.jpg\n1\n1 2 3 x 0 0 0 0 0 0\n"))
    with pytest.raises(FormatError, match=r":2: expected the face count"):
        read_wider_gt(_write(tmp_path, "a/x.jpg\ntwo\n"))
    with pytest.raises(FormatError, match=r":3: negative width"):
        read_wider_gt(_write(tmp_path, "a/x.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n"))


def test_count_larger_than_faces(tmp_path):
    text = "a/x.jpg\n3\n1 2 3 4 0 0 0 0 0 0\nb/y.jpg\n1\n5 6 7 8 0 0 0 0 0 0\n"
    with pytest.raises(FormatError, match=r":4: 'a/x.jpg' announces 3 faces but only 1 follow"):
        read_wider_gt(_write(tmp_path, text))
    with pytest.warns(FormatWarning):
        recs = read_wider_gt(_write(tmp_path, text), strict=False)
    assert [(r.path, len(r)) for r in recs] == [("a/x.jpg", 1), ("b/y.jpg", 1)]


def test_truncated_file(tmp_path):
    with pytest.raises(FormatError, match=r":2: 'a/x.jpg' announces 2 faces but the file ends after 1"):
        read_wider_gt(_write(tmp_path, "a/x.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n"))


def test_lenient_mode_reports_and_skips(tmp_path):
    bad = GOOD.replace("10 20 30 40 2 0 1 0 0 0 ", "10 20 30 forty 2 0 1 0 0 0 ")  # line 3
    bad = bad.replace("2--Demonstration/c.jpg\n1\n", "2--Demonstration/c.jpg\none\n")  # line 9
    path = _write(tmp_path, bad)
    with pytest.warns(FormatWarning) as caught:
        recs = read_wider_gt(path, strict=False)
    messages = [str(w.message) for w in caught]
    assert [m.split(": ")[0] for m in messages] == [f"{path}:3", f"{path}:9"]
    # the bad face is dropped, the image with the bad count is dropped, the rest is kept
    assert [r.path for r in recs] == ["0--Parade/a.jpg", "1--Handshaking/b.jpg"]
    np.testing.assert_array_equal(recs[0].boxes, [[100, 50, 108, 56]])


def test_shared_subset_counts(data_dir):
    gt = data_dir / "widerface_val_subset" / "wider_face_val_bbx_gt_subset.txt"
    recs = read_wider_gt(gt)
    # the numbers of widerface_val_subset/README.md
    assert len(recs) == 360
    assert sum(len(r) for r in recs) == 4148
    assert [count_faces(recs, s) for s in (1, 20, 40)] == [4117, 1817, 703]
    first = recs[0]
    assert first.path == "0--Parade/0_Parade_Parade_0_102.jpg" and len(first) == 39
    np.testing.assert_array_equal(first.boxes[0], [806, 442, 830, 474])


def test_zero_faces_with_nonzero_dummy_line(tmp_path):
    with pytest.raises(FormatError, match=r":3: 'a/x.jpg' has 0 faces: expected a dummy line"):
        read_wider_gt(_write(tmp_path, "a/x.jpg\n0\n1 2 3 4 0 0 0 0 0 0\n"))


def test_find_gt_in_both_layouts(tmp_path):
    from mtcnn_jax.data.wider import find_gt  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    # the shared layout: the gt file inside the image folder
    shared = tmp_path / "widerface_train_mini"
    (shared / "images").mkdir(parents=True)
    (shared / "wider_face_train_mini_bbx_gt.txt").write_text("a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    assert find_gt(shared) == shared / "wider_face_train_mini_bbx_gt.txt"
    # the official release: WIDER_train/images/... and wider_face_split/ beside it, the split by folder name
    (tmp_path / "WIDER_train" / "images").mkdir(parents=True)
    (tmp_path / "WIDER_val" / "images").mkdir(parents=True)
    split = tmp_path / "wider_face_split"
    split.mkdir()
    for name in ("wider_face_train_bbx_gt.txt", "wider_face_val_bbx_gt.txt"):
        (split / name).write_text("a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    assert find_gt(tmp_path / "WIDER_train") == split / "wider_face_train_bbx_gt.txt"
    assert find_gt(tmp_path / "WIDER_val") == split / "wider_face_val_bbx_gt.txt"
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(UserError, match="no WIDER gt file"):
        find_gt(empty)
