"""``mtcnn-jax detect``: JSON and annotation plumbing, bad files, bad options.

Most tests inject a tiny fake detector (``fake`` fixture) so that they check the
command itself, quickly. The tests marked "real detector" run the actual MTCNN
(``mtcnn_jax.detector``) on the bundled public-domain photo; they skip, saying
so, only while that module does not exist.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import sys
import types
import zlib
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from mtcnn_jax.cli import main
from mtcnn_jax.outputs import output_name

ASTRONAUT = Path(__file__).resolve().parents[1] / "mtcnn_jax" / "assets" / "astronaut.jpg"


class Faces(NamedTuple):
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


class FakeMTCNN:
    """One face per image of at least 12 px: the middle half, score 0.987654321."""

    made = []  # (kwargs) of every detector built
    seen = []  # every image passed to detect

    def __init__(self, **kwargs):
        FakeMTCNN.made.append(kwargs)

    def detect(self, image):
        FakeMTCNN.seen.append(image)
        h, w = image.shape[:2]
        if min(h, w) < 12:
            return Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                         np.zeros((0, 5, 2), np.float32))
        box = np.array([[w / 4 + 0.123456, h / 4, 3 * w / 4, 3 * h / 4 - 0.006]], np.float32)
        points = np.array([[[w * 0.4, h * 0.4], [w * 0.6, h * 0.4], [w * 0.5, h * 0.5],
                            [w * 0.42, h * 0.6], [w * 0.58, h * 0.6]]], np.float32)
        return Faces(box, np.array([0.987654321], np.float32), points)


@pytest.fixture
def fake(monkeypatch):
    """Replace mtcnn_jax.detector by a module holding FakeMTCNN, for this test."""
    module = types.ModuleType("mtcnn_jax.detector")
    module.MTCNN = FakeMTCNN
    module.Faces = Faces
    monkeypatch.setitem(sys.modules, "mtcnn_jax.detector", module)
    FakeMTCNN.made, FakeMTCNN.seen = [], []
    return FakeMTCNN


@pytest.fixture
def real_detector():
    """The real detector; skips only while mtcnn_jax/detector.py does not exist yet."""
    if importlib.util.find_spec("mtcnn_jax.detector") is None:
        pytest.skip("mtcnn_jax/detector.py is not written yet")
    return importlib.import_module("mtcnn_jax.detector")


def run(capsys, *argv):
    code = main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def good_image(path: Path, h=30, w=40) -> Path:
    bgr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return png(path, bgr)


def bomb_png(path: Path) -> Path:
    """A 100-byte PNG whose IHDR announces 50000 x 50000 RGB pixels."""

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _stderr_lines(err: str):
    return [line for line in err.splitlines() if line.strip()]


# --------------------------------------------------------------------------- JSON and summary


def test_json_schema_rounding_and_summary(tmp_path, capsys, fake):
    image = good_image(tmp_path / "x.png")
    out_json = tmp_path / "out.json"
    out_json.write_text("stale")
    code, _, err = run(capsys, image, "--json", out_json)  # an existing file is not replaced ...
    assert code == 2 and err == f"mtcnn-jax: --json: {out_json} exists: choose another path, or pass --overwrite\n"
    assert out_json.read_text() == "stale"
    code, out, err = run(capsys, image, "--json", out_json, "--overwrite")  # ... unless asked: replaced
    assert code == 0 and err == ""
    assert out == f"{image}: 1 face\n1 image, 1 face, 0 errors\n"
    assert json.loads(out_json.read_text()) == [{
        "path": str(image),
        "width": 40,
        "height": 30,
        "faces": [{
            "box": [10.12, 7.5, 30.0, 22.49],
            "score": float(np.float32(0.987654321)),  # the float32 score, not rounded
            "landmarks": [[16.0, 12.0], [24.0, 12.0], [20.0, 15.0], [16.8, 18.0], [23.2, 18.0]],
        }],
    }]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "x.png"]  # no temp file left
    assert fake.made == [{"min_face_size": 20.0, "factor": 0.709,
                          "thresholds": (0.6, 0.7, 0.7), "weights": None, "pyramid": "summed"}]


def test_json_to_stdout(tmp_path, capsys, fake):
    image = good_image(tmp_path / "x.png")
    code, out, err = run(capsys, image, "--json", "-")
    assert code == 0
    assert [e["path"] for e in json.loads(out)] == [str(image)]
    assert err == f"{image}: 1 face\n1 image, 1 face, 0 errors\n"


def test_options_reach_the_detector(tmp_path, capsys, fake):
    weights = tmp_path / "w.msgpack"
    weights.write_bytes(b"")
    image = good_image(tmp_path / "x.png")
    code, _, _ = run(capsys, image, "--min-face", "40", "--factor", "0.5",
                     "--thresholds", "0.1,0.2,1", "--weights", weights, "--pyramid", "original")
    assert code == 0
    assert fake.made == [{"min_face_size": 40.0, "factor": 0.5,
                          "thresholds": (0.1, 0.2, 1.0), "weights": str(weights), "pyramid": "original"}]


# --------------------------------------------------------------------------- bad files


def test_folder_with_one_bad_image_among_good_ones(tmp_path, capsys, fake):
    folder = tmp_path / "photos"
    good_image(folder / "a.png")
    good_image(folder / "sub" / "b.jpg", 24, 32)
    (folder / "bad.jpg").write_text("not a picture")
    out_json = tmp_path / "out.json"
    code, out, err = run(capsys, folder, "--json", out_json)
    assert code == 1
    bad = os.path.join(str(folder), "bad.jpg")
    assert _stderr_lines(err) == [
        f"mtcnn-jax: {bad}: not a supported image (JPEG, PNG, BMP, WebP, TIFF)"
    ]
    entries = json.loads(out_json.read_text())
    assert [(e["path"], e["width"], e["height"], len(e["faces"])) for e in entries] == [
        (os.path.join(str(folder), "a.png"), 40, 30, 1),
        (os.path.join(str(folder), "sub", "b.jpg"), 32, 24, 1),
    ]
    assert out.splitlines()[-1] == "2 images, 2 faces, 1 error"


def _truncated_jpeg(path: Path) -> Path:
    path.write_bytes(ASTRONAUT.read_bytes()[:-500])
    return path


BAD_INPUTS = {
    "missing path": (lambda p: p / "missing.jpg", "no such file or folder"),
    "folder without images": (lambda p: (p / "empty").mkdir() or p / "empty", "no images in this folder"),
    "non-image file": (lambda p: (p / "n.png").write_text("hello") and p / "n.png", "not a supported image"),
    "empty file": (lambda p: (p / "e.jpg").write_bytes(b"") or p / "e.jpg", "empty file"),
    "truncated JPEG": (lambda p: _truncated_jpeg(p / "t.jpg"), "truncated JPEG (no end-of-image marker)"),
    "decompression bomb": (lambda p: bomb_png(p / "bomb.png"), "image too large: 50000x50000 pixels"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_reported_and_the_rest_processed(tmp_path, capsys, fake, case):
    make, reason = BAD_INPUTS[case]
    bad = make(tmp_path)
    good = good_image(tmp_path / "good.png")
    out_json = tmp_path / "out.json"
    code, out, err = run(capsys, bad, good, "--json", out_json)
    assert code == 1
    lines = _stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"mtcnn-jax: {bad}: {reason}"), lines
    assert "Traceback" not in err
    assert [e["path"] for e in json.loads(out_json.read_text())] == [str(good)]
    assert out.splitlines()[-1] == "1 image, 1 face, 1 error"


def test_corrupt_pixel_data_gives_exactly_one_line(tmp_path, capfd, fake):
    """libpng's own message on fd 2 is kept out: the user sees our line only."""
    ok, data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    data = bytearray(data.tobytes())
    data[60] ^= 0xFF  # inside the IDAT data
    bad = tmp_path / "crc.png"
    bad.write_bytes(bytes(data))
    code = main(["detect", str(bad)])
    err = capfd.readouterr().err
    assert code == 1
    assert err == f"mtcnn-jax: {bad}: cannot decode this PNG file (corrupt data)\n"


@pytest.mark.skipif(sys.platform != "linux", reason="needs byte file names (Linux)")
def test_odd_file_names_still_give_one_line_each(tmp_path, capsys, fake):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "two\nlines.jpg").write_text("not a picture")
    with open(os.path.join(os.fsencode(folder), b"latin1-\xe9.png"), "wb") as f:  # not UTF-8
        f.write(b"not a picture either")
    good_image(folder / "ok-\u00e9.png")
    code, out, err = run(capsys, folder, "--json", tmp_path / "out.json")
    assert code == 1
    lines = _stderr_lines(err)
    assert len(lines) == 2
    assert lines[0].endswith("latin1-\\udce9.png: not a supported image (JPEG, PNG, BMP, WebP, TIFF)")
    assert lines[1].endswith("two\\nlines.jpg: not a supported image (JPEG, PNG, BMP, WebP, TIFF)")
    assert out.splitlines()[0] == f"{folder}/ok-\u00e9.png: 1 face"
    (entry,) = json.loads((tmp_path / "out.json").read_text())
    assert entry["path"] == os.path.join(str(folder), "ok-\u00e9.png")


def test_decompression_bomb_is_never_decoded(tmp_path, capsys, fake, monkeypatch):
    bomb = bomb_png(tmp_path / "bomb.png")

    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called")

    with monkeypatch.context() as patch:
        patch.setattr(cv2, "imdecode", refuse)
        code, out, err = run(capsys, bomb)
    assert code == 1
    assert _stderr_lines(err) == [f"mtcnn-jax: {bomb}: image too large: 50000x50000 pixels "
                                  "(2500.0 megapixels; the limit is 100.0)"]
    assert fake.seen == []
    # ... and the limit is an option:
    small = good_image(tmp_path / "small.png", 100, 100)
    code, _, err = run(capsys, small, "--max-megapixels", "0.005")
    assert code == 1 and "image too large: 100x100 pixels" in err
    assert len(fake.made) == 2  # still the fake detector


# --------------------------------------------------------------------------- conversions


def test_grayscale_rgba_and_16bit_inputs_reach_the_detector_as_rgb8(tmp_path, capsys, fake):
    gray = png(tmp_path / "gray.png", np.full((20, 24), 77, np.uint8))
    rgba = png(tmp_path / "rgba.png", np.dstack([np.full((20, 24, 3), (10, 20, 30), np.uint8),
                                                 np.full((20, 24), 255, np.uint8)]))
    deep = png(tmp_path / "deep.png", np.full((20, 24, 3), 257 * 100, np.uint16))
    out_json = tmp_path / "out.json"
    code, _, err = run(capsys, gray, rgba, deep, "--json", out_json)
    assert code == 0 and err == ""
    assert [(e["width"], e["height"], len(e["faces"])) for e in json.loads(out_json.read_text())] == [
        (24, 20, 1)] * 3
    assert all(im.dtype == np.uint8 and im.shape == (20, 24, 3) for im in fake.seen)
    assert fake.seen[0][0, 0].tolist() == [77, 77, 77]
    assert fake.seen[1][0, 0].tolist() == [30, 20, 10]
    assert fake.seen[2][0, 0].tolist() == [100, 100, 100]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("argv, message", [
    (["--thresholds", "2,0,x"], "--thresholds: expected three numbers in [0, 1]"),
    (["--thresholds", "0.5,0.5"], "--thresholds: expected three numbers in [0, 1]"),
    (["--thresholds", "0.5,nan,0.5"], "--thresholds: expected three numbers in [0, 1]"),
    (["--factor", "1.5"], "--factor: must be in (0, 1), got 1.5"),
    (["--factor", "0"], "--factor: must be in (0, 1), got 0"),
    (["--factor", "abc"], "--factor: expected a number, got 'abc'"),
    (["--min-face", "5"], "--min-face: must be at least 6 pixels, got 5"),
    (["--min-face", "inf"], "--min-face: expected a finite number, got 'inf'"),
    (["--max-megapixels", "0"], "--max-megapixels: must be positive"),
    (["--weights", "/nonexistent/w.msgpack"], "--weights: /nonexistent/w.msgpack: no such file or folder"),
    (["--pyramid", "fast"], "--pyramid: expected 'summed', 'original' or 'chained', got 'fast'"),
])
def test_bad_options_give_one_line_and_exit_2(tmp_path, capsys, fake, argv, message):
    image = good_image(tmp_path / "x.png")
    code, out, err = run(capsys, image, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"mtcnn-jax: {message}"), err
    assert fake.made == []  # refused before anything ran


def test_json_into_a_missing_folder_is_an_option_error(tmp_path, capsys, fake):
    code, _, err = run(capsys, good_image(tmp_path / "x.png"), "--json", tmp_path / "no" / "out.json")
    assert code == 2 and err.startswith("mtcnn-jax: --json: folder ") and err.count("\n") == 1


# --------------------------------------------------------------------------- --annotate


def test_annotate_writes_inside_dir_with_unique_names(tmp_path, capsys, fake):
    folder = tmp_path / "photos"
    good_image(folder / "x.png")
    good_image(folder / "sub" / "y.jpg")
    elsewhere = good_image(tmp_path / "other" / "x.png")  # same name as photos/x.png
    out_dir = tmp_path / "annotated"
    code, _, err = run(capsys, folder, elsewhere, "--annotate", out_dir)
    assert code == 0, err
    written = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    assert written == sorted(["x.png", os.path.join("sub", "y.jpg"), "x-1.png"])
    original = cv2.imread(str(folder / "x.png"))
    drawn = cv2.imread(str(out_dir / "x.png"))
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)
    # the box edge (fake box x1 = 10.12 -> column 10) is drawn in green (BGR (0, 255, 0))
    assert drawn[15, 10].tolist() == [0, 255, 0]


def test_annotate_draws_boxes_and_points_on_a_copy():
    from mtcnn_jax.draw import BOX_COLOUR, LANDMARK_COLOURS, annotate

    image = np.zeros((100, 120, 3), np.uint8)
    points = np.array([[[40, 40], [70, 40], [55, 55], [45, 70], [65, 70]]], np.float32)
    drawn = annotate(image, np.array([[20.2, 25.0, 90.0, 85.0]]), np.array([0.93]), points)
    assert image.max() == 0  # input untouched
    assert drawn[50, 20].tolist() == list(BOX_COLOUR)  # left edge, x1 rounded to 20
    assert drawn[85, 50].tolist() == list(BOX_COLOUR)  # bottom edge
    for (x, y), colour in zip(points[0].astype(int), LANDMARK_COLOURS):
        assert drawn[y, x].tolist() == list(colour)
    assert drawn[:25, 20:60].any()  # the score, written above the box
    empty = annotate(image, np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
    np.testing.assert_array_equal(empty, image)
    wild = annotate(image, np.array([[np.nan, 0, 1e30, -1e30]]), np.array([0.5]), np.full((1, 5, 2), 1e30))
    assert wild.shape == image.shape  # skipped or clipped, no overflow


@pytest.mark.parametrize("relative, expected", [
    ("a.jpg", "a.jpg"),
    ("sub/b.png", os.path.join("sub", "b.png")),
    ("../../etc/passwd.png", os.path.join("etc", "passwd.png")),
    ("/abs/x.jpg", os.path.join("abs", "x.jpg")),
    ("C:\\Users\\x.JPG", os.path.join("Users", "x.JPG")),
    ("./../..", "image.png"),
    ("noext", "noext.png"),
    ("movie.gif", "movie.gif.png"),
])
def test_output_names_stay_inside(relative, expected):
    assert output_name(relative, set()) == expected


def test_output_names_avoid_collisions_case_insensitively():
    used = set()
    names = [output_name(r, used) for r in ["a.jpg", "A.JPG", "../a.jpg", "a-1.jpg"]]
    assert names == ["a.jpg", "A-1.JPG", "a-2.jpg", "a-1-1.jpg"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_annotate_does_not_write_through_a_link_out_of_dir(tmp_path, capsys, fake):
    folder = tmp_path / "photos"
    good_image(folder / "sub" / "y.png")
    out_dir = tmp_path / "annotated"
    outside = tmp_path / "outside"
    out_dir.mkdir()
    outside.mkdir()
    os.symlink(outside, out_dir / "sub")  # DIR/sub leads out of DIR
    code, _, err = run(capsys, folder, "--annotate", out_dir)
    assert code == 1
    assert "cannot write the annotated image" in err
    assert list(outside.iterdir()) == []


def test_annotate_dir_inside_an_input_folder_needs_overwrite_then_skips_earlier_output(tmp_path, capsys, fake):
    folder = tmp_path / "photos"
    good_image(folder / "a.png")
    good_image(folder / "annotated" / "mine.png")  # the user's own image, where the output would go
    code, _, err = run(capsys, folder, "--annotate", folder / "annotated")
    assert code == 2 and err.startswith(f"mtcnn-jax: --annotate: {folder / 'annotated'} lies inside the input folder")
    assert sorted(p.name for p in (folder / "annotated").iterdir()) == ["mine.png"]
    for _ in range(2):  # with --overwrite, the second run does not pick up the first run's output
        code, out, _ = run(capsys, folder, "--annotate", folder / "annotated", "--overwrite")
        assert code == 0
        assert out.splitlines()[-1] == "1 image, 1 face, 0 errors"


def test_annotate_never_overwrites_an_input(tmp_path, capsys, fake):
    folder = tmp_path / "photos"
    image = good_image(folder / "x.png")
    before = image.read_bytes()
    code, _, err = run(capsys, folder, "--annotate", folder)  # DIR = the input folder
    assert code == 2 and err.startswith(f"mtcnn-jax: --annotate: {folder} is an input folder")
    code, _, err = run(capsys, image, "--annotate", folder)  # DIR holds the input
    assert code == 2 and err.startswith(f"mtcnn-jax: --annotate: {folder} holds the input {image}")
    code, out, err = run(capsys, image, "--annotate", folder, "--overwrite")  # DIR/x.png would be the input
    assert code == 1
    assert _stderr_lines(err) == [f"mtcnn-jax: {image}: not annotated: {image} is an input image"]
    assert image.read_bytes() == before
    assert out.splitlines()[-1] == "1 image, 1 face, 1 error"


def test_annotate_dir_above_the_input_folder_needs_overwrite(tmp_path, capsys, fake):
    folder = tmp_path / "photos" / "sub"
    good_image(folder / "a.png")
    code, out, err = run(capsys, folder, "--annotate", tmp_path / "photos")
    assert code == 2 and err.startswith(f"mtcnn-jax: --annotate: {tmp_path / 'photos'} holds the input {folder}")
    code, out, err = run(capsys, folder, "--annotate", tmp_path / "photos", "--overwrite")
    assert code == 0, err
    assert out.splitlines()[-1] == "1 image, 1 face, 0 errors"
    assert (tmp_path / "photos" / "a.png").is_file()


def test_tiny_image_is_not_an_error(tmp_path, capsys, fake):
    tiny = png(tmp_path / "tiny.png", np.zeros((5, 11, 3), np.uint8))
    code, out, err = run(capsys, tiny, "--json", "-")
    assert code == 0 and err.splitlines()[0] == f"{tiny}: 0 faces"
    assert json.loads(out) == [{"path": str(tiny), "width": 11, "height": 5, "faces": []}]


# --------------------------------------------------------------------------- real detector


def test_real_detector_finds_the_one_face_of_the_astronaut(tmp_path, capsys, real_detector):
    out_json = tmp_path / "out.json"
    code, out, err = run(capsys, ASTRONAUT, "--json", out_json, "--annotate", tmp_path / "ann")
    assert code == 0, err
    (entry,) = json.loads(out_json.read_text())
    assert (entry["path"], entry["width"], entry["height"]) == (str(ASTRONAUT), 512, 512)
    (face,) = entry["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 210  # her face, upper middle of the photo
    assert face["score"] > 0.9
    (le, re_, nose, lm, rm) = face["landmarks"]
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
    assert le[0] < re_[0] and lm[0] < rm[0] and le[1] < nose[1] < lm[1]
    assert (tmp_path / "ann" / "astronaut.jpg").is_file()
    assert out.splitlines()[-1] == "1 image, 1 face, 0 errors"


def test_real_detector_tiny_images_give_no_faces(tmp_path, capsys, real_detector):
    tiny = [png(tmp_path / f"t{h}x{w}.png", np.full((h, w, 3), 128, np.uint8))
            for h, w in [(1, 1), (5, 5), (11, 40), (40, 11)]]
    code, out, err = run(capsys, *tiny, "--json", "-")
    assert code == 0, err
    assert [(e["width"], e["height"], e["faces"]) for e in json.loads(out)] == [
        (1, 1, []), (5, 5, []), (40, 11, []), (11, 40, [])]


def test_real_detector_folder_with_a_bad_file(tmp_path, capsys, real_detector):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "a.jpg")
    png(folder / "b.png", cv2.imread(str(ASTRONAUT)))
    _truncated_jpeg(folder / "c.jpg")
    code, out, err = run(capsys, folder, "--json", tmp_path / "out.json")
    assert code == 1
    assert _stderr_lines(err) == [
        f"mtcnn-jax: {os.path.join(str(folder), 'c.jpg')}: truncated JPEG (no end-of-image marker)"]
    entries = json.loads((tmp_path / "out.json").read_text())
    assert [(os.path.basename(e["path"]), len(e["faces"])) for e in entries] == [("a.jpg", 1), ("b.png", 1)]
    assert out.splitlines()[-1] == "2 images, 2 faces, 1 error"


# --------------------------------------------------------------------------- --keep, --crops, the new options


class TwoFaceMTCNN(FakeMTCNN):
    """Two faces per image: a small confident one (score 0.99, 10 × 10) and a large one (0.9, 20 × 20)."""

    def detect(self, image):
        FakeMTCNN.seen.append(image)
        boxes = np.array([[1, 1, 11, 11], [12, 5, 32, 25]], np.float32)
        points = np.stack([np.full((5, 2), 5.0), np.full((5, 2), 20.0)]).astype(np.float32)
        points[:, :, 0] += np.arange(5)  # five distinct points per face
        return Faces(boxes, np.array([0.99, 0.9], np.float32), points)


@pytest.fixture
def fake_two(fake, monkeypatch):
    monkeypatch.setattr(sys.modules["mtcnn_jax.detector"], "MTCNN", TwoFaceMTCNN)
    return TwoFaceMTCNN


@pytest.mark.parametrize("keep, boxes", [
    ("all", [[1, 1, 11, 11], [12, 5, 32, 25]]),
    ("best", [[1, 1, 11, 11]]),
    ("largest", [[12, 5, 32, 25]]),
])
def test_keep_selects_the_faces_written(tmp_path, capsys, fake_two, keep, boxes):
    image = good_image(tmp_path / "x.png")
    code, out, err = run(capsys, image, "--keep", keep, "--json", "-")
    assert code == 0, err
    (entry,) = json.loads(out)
    assert [f["box"] for f in entry["faces"]] == boxes


def test_crops_are_written_and_named_in_the_json(tmp_path, capsys, fake_two):
    folder = tmp_path / "photos"
    good_image(folder / "a.png")
    good_image(folder / "sub" / "a.jpg")
    crops = tmp_path / "crops"
    code, out, err = run(capsys, folder, "--crops", crops, "--json", tmp_path / "out.json")
    assert code == 0, err
    entries = json.loads((tmp_path / "out.json").read_text())
    names = [[f["crop"] for f in e["faces"]] for e in entries]
    assert names == [[str(crops / "a_0.png"), str(crops / "a_1.png")],
                     [str(crops / "sub" / "a_0.png"), str(crops / "sub" / "a_1.png")]]
    for path in sum(names, []):
        assert cv2.imread(path).shape == (112, 112, 3)
    code, _, err = run(capsys, folder, "--crops", tmp_path / "c128", "--crop-size", "128", "--keep", "best")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "c128").rglob("*.png")) == ["a_0.png", "a_0.png"]
    assert cv2.imread(str(tmp_path / "c128" / "a_0.png")).shape == (128, 128, 3)


def test_crops_of_two_images_with_one_stem_are_told_apart(tmp_path, capsys, fake):
    a, b = good_image(tmp_path / "one" / "x.png"), good_image(tmp_path / "two" / "x.jpg")
    code, out, err = run(capsys, a, b, "--crops", tmp_path / "crops", "--json", "-")
    assert code == 0, err
    assert [e["faces"][0]["crop"] for e in json.loads(out)] == [
        str(tmp_path / "crops" / "x_0.png"), str(tmp_path / "crops" / "x-1_0.png")]


def test_existing_crops_are_not_replaced_without_overwrite(tmp_path, capsys, fake):
    image = good_image(tmp_path / "x.png")
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "x_0.png").write_bytes(b"mine")
    code, out, err = run(capsys, image, "--crops", crops, "--json", tmp_path / "out.json")
    assert code == 1
    assert _stderr_lines(err) == [
        f"mtcnn-jax: {image}: not cropped: {crops / 'x_0.png'} exists (pass --overwrite to replace it)"]
    assert "crop" not in json.loads((tmp_path / "out.json").read_text())[0]["faces"][0]
    assert (crops / "x_0.png").read_bytes() == b"mine"
    code, _, err = run(capsys, image, "--crops", crops, "--overwrite")
    assert code == 0, err
    assert cv2.imread(str(crops / "x_0.png")).shape == (112, 112, 3)


def test_crops_folder_follows_the_output_policy(tmp_path, capsys, fake):
    folder = tmp_path / "photos"
    good_image(folder / "x.png")
    code, _, err = run(capsys, folder, "--crops", folder / "crops")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"mtcnn-jax: --crops: {folder / 'crops'} lies inside the input folder")
    code, _, err = run(capsys, folder, "--crops", tmp_path / "same", "--annotate", tmp_path / "same")
    assert code == 2 and err == "mtcnn-jax: --crops: must be another folder than --annotate\n"
    # with --overwrite, crops inside the input folder are written, and not read back as input next time
    for _ in range(2):
        code, out, err = run(capsys, folder, "--crops", folder / "crops", "--overwrite")
        assert code == 0, err
        assert out.splitlines()[-1] == "1 image, 1 face, 0 errors"


@pytest.mark.parametrize("argv, message", [
    (["--keep", "biggest"], "--keep: expected all, largest or best, got 'biggest'"),
    (["--crop-size", "160"], "--crop-size: expected a multiple of 112 or 128 (the ArcFace crops' convention), got 160"),
    (["--crop-size", "0"], "--crop-size: expected a whole number >= 1, got '0'"),
    (["--rotations", ""], "--rotations: expected angles in degrees separated by commas (like 0,90,180,270), got ''"),
    (["--every", "1.5"], "--every: expected a whole number >= 1, got '1.5'"),
])
def test_new_bad_options_give_one_line_and_exit_2(tmp_path, capsys, fake, argv, message):
    code, out, err = run(capsys, good_image(tmp_path / "x.png"), *argv)
    assert code == 2 and out == ""
    assert err == f"mtcnn-jax: {message}\n"
    assert fake.made == []


def test_real_detector_crops_are_the_aligned_faces(tmp_path, capsys, real_detector):
    from mtcnn_jax import align, load_image

    code, out, err = run(capsys, ASTRONAUT, "--crops", tmp_path / "crops", "--json", "-")
    assert code == 0, err
    (entry,) = json.loads(out)
    (face,) = entry["faces"]
    written = cv2.imread(face["crop"])[:, :, ::-1]
    expected = align(load_image(ASTRONAUT), np.array(face["landmarks"]))
    # the JSON's landmarks are rounded to 2 decimals: the crop from them differs by rounding only
    assert np.abs(written.astype(int) - expected.astype(int)).mean() < 1.0
