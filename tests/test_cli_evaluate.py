"""``mtcnn-jax evaluate wider|landmarks``: end to end on the shared reference predictions,
with a fake detector on hand-made images (skipped files, written outputs), the real
detector on the bundled photo, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from mtcnn_jax.cli import main
from mtcnn_jax.evaluation.predictions import read_predictions

ASSETS = Path(__file__).resolve().parents[1] / "mtcnn_jax" / "assets"
TOL = 0.002


class Faces(NamedTuple):
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


class FakeMTCNN:
    """One face per image: box (10, 20, 50, 70), score 0.9, landmarks at fixed points."""

    BOX = (10.0, 20.0, 50.0, 70.0)
    POINTS = ((20.0, 35.0), (40.0, 35.0), (30.0, 45.0), (22.0, 58.0), (38.0, 58.0))
    made = []

    def __init__(self, **kwargs):
        FakeMTCNN.made.append(kwargs)

    def detect(self, image):
        return Faces(np.array([self.BOX], np.float32), np.array([0.9], np.float32),
                     np.array([self.POINTS], np.float32))


@pytest.fixture
def fake(monkeypatch):
    module = types.ModuleType("mtcnn_jax.detector")
    module.MTCNN = FakeMTCNN
    monkeypatch.setitem(sys.modules, "mtcnn_jax.detector", module)
    FakeMTCNN.made = []
    return FakeMTCNN


def run(capsys, *argv):
    code = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def image(path: Path, h=100, w=80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


def png_shape(path: Path):
    img = cv2.imread(str(path))
    assert img is not None, path
    return img.shape


# --------------------------------------------------------------------------- reference files


def test_wider_on_reference_predictions_reproduces_readme(data_dir, reference_dir, tmp_path, capsys):
    gt = data_dir / "widerface_val_subset" / "wider_face_val_bbx_gt_subset.txt"
    code, out, err = run(capsys, "wider", "--gt", gt, "--out", tmp_path,
                         "--predictions", reference_dir / "widerface_val_subset.facenet.json")
    assert code == 0 and err == ""
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    s = metrics["settings"]
    # shared/reference/README.md, facenet-pytorch: official 0.4330 / 0.7417 / 0.7886,
    # every distinct score 0.4337 / 0.7433 / 0.7934; faces 4,117 / 1,817 / 703.
    assert s[">=20"]["ap"] == pytest.approx(0.7417, abs=TOL)
    assert s["all"]["ap"] == pytest.approx(0.4330, abs=TOL)
    assert s[">=40"]["ap"] == pytest.approx(0.7886, abs=TOL)
    assert s[">=40"]["ap_distinct"] == pytest.approx(0.7934, abs=TOL)
    assert [s[k]["n_faces"] for k in ("all", ">=20", ">=40")] == [4117, 1817, 703]
    assert metrics["n_evaluated"] == 360 and metrics["n_skipped"] == 0
    assert "AP >=20: 0.7417" in out
    assert png_shape(tmp_path / "pr_curve.png") == (480, 640, 3)
    assert not (tmp_path / "predictions.json").exists()  # nothing new to write


def test_landmarks_on_reference_predictions_reproduce_readme(data_dir, reference_dir, tmp_path, capsys):
    gt = data_dir / "mtfl_aflw_test_landmarks" / "testing.txt"
    code, out, err = run(capsys, "landmarks", "--gt", gt, "--out", tmp_path,
                         "--predictions", reference_dir / "mtfl_aflw_test.ipazc.json")
    assert code == 0 and err == ""
    m = json.loads((tmp_path / "metrics.json").read_text())
    # README: ipazc detection rate 0.9780 (2,929), NME mean 0.0755, median 0.0644, failure 0.1314
    assert m["n_images"] == 2995 and m["n_detected"] == 2929
    assert m["nme_mean"] == pytest.approx(0.0755, abs=TOL)
    assert m["nme_median"] == pytest.approx(0.0644, abs=TOL)
    assert m["failure_rate"] == pytest.approx(0.1314, abs=TOL)
    assert set(m["nme_per_point"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert np.mean(list(m["nme_per_point"].values())) == pytest.approx(m["nme_mean"], abs=1e-9)
    assert png_shape(tmp_path / "ced.png") == (480, 640, 3)


# --------------------------------------------------------------------------- fake detector


GT_TWO = """\
ev/a.png
1
10 20 40 50 0 0 0 0 0 0
ev/b.png
2
10 20 40 50 0 0 0 0 0 0
60 70 10 10 0 0 0 0 0 0
ev/missing.png
1
10 20 40 50 0 0 0 0 0 0
ev/corrupt.png
1
10 20 40 50 0 0 0 0 0 0
"""


def test_wider_with_detector_skips_bad_images_and_writes_everything(tmp_path, capsys, fake):
    images = tmp_path / "images"
    image(images / "ev" / "a.png")
    image(images / "ev" / "b.png")
    (images / "ev" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    gt = tmp_path / "gt.txt"
    gt.write_text(GT_TWO)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "wider", "--gt", gt, "--images", images, "--out", out,
                            "--min-face", "12", "--thresholds", "0.5,0.5,0.3")
    assert code == 1  # images were skipped
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("mtcnn-jax: ") for line in lines)
    assert "missing.png: no such file" in lines[0] and "corrupt.png" in lines[1]
    assert "Traceback" not in err
    assert fake.made == [{"min_face_size": 12.0, "factor": 0.709,
                          "thresholds": (0.5, 0.5, 0.3), "weights": None, "pyramid": "summed"}]

    m = json.loads((out / "metrics.json").read_text())
    assert (m["n_images"], m["n_evaluated"], m["n_skipped"]) == (4, 2, 2)
    assert [s["path"] for s in m["skipped"]] == ["ev/missing.png", "ev/corrupt.png"]
    assert m["detector"]["min_face_size"] == 12.0 and m["timing"]["n_images"] == 2
    # The fake finds the 40 x 50 face of both images (2 of the 3 valid faces), nothing else:
    # precision 1 up to recall 2/3, so AP = 2/3 for "all"; the 10 x 10 face is not >= 20 px.
    s = m["settings"]
    assert s["all"]["ap"] == pytest.approx(2 / 3) and s["all"]["n_faces"] == 3
    assert s[">=20"]["ap"] == pytest.approx(1.0) and s[">=20"]["n_faces"] == 2
    assert s[">=40"]["ap"] == pytest.approx(1.0) and s[">=40"]["n_faces"] == 2
    assert "2 images evaluated, 2 skipped" in stdout
    assert png_shape(out / "pr_curve.png") == (480, 640, 3)

    # predictions.json is the detect format, paths as in the ground truth, and scores the same
    entries = json.loads((out / "predictions.json").read_text())
    assert [e["path"] for e in entries] == ["ev/a.png", "ev/b.png"]
    assert entries[0]["faces"][0]["box"] == list(FakeMTCNN.BOX) and entries[0]["width"] == 80
    assert set(read_predictions(out / "predictions.json")) == {"ev/a.png", "ev/b.png"}
    again = tmp_path / "again"
    code, _, err = run(capsys, "wider", "--gt", gt, "--predictions", out / "predictions.json",
                       "--out", again)
    assert code == 0 and err == ""
    s2 = json.loads((again / "metrics.json").read_text())["settings"]
    # now missing.png and corrupt.png are evaluated with no detection: 2 of 5 valid faces
    assert s2["all"]["ap"] == pytest.approx(2 / 5) and s2["all"]["n_faces"] == 5


def test_wider_face_lists_and_sizes(tmp_path, capsys, fake):
    images = tmp_path / "images"
    image(images / "ev" / "b.png")
    gt = tmp_path / "gt.txt"
    gt.write_text("ev/b.png\n2\n10 20 40 50 0 0 0 0 0 0\n60 70 10 10 0 0 0 0 0 0\n")
    hard = tmp_path / "hard.txt"
    hard.write_text("ev/b.png 1 2\n")  # both faces count
    easy = tmp_path / "easy.txt"
    easy.write_text("ev/b.png 1\n")  # only the found one
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "wider", "--gt", gt, "--images", images, "--out", out,
                          "--easy", easy, "--hard", hard, "--sizes", "1,5")
    assert code == 0
    s = json.loads((out / "metrics.json").read_text())["settings"]
    assert list(s) == ["all", ">=5", "easy", "hard"]
    assert s["easy"]["ap"] == pytest.approx(1.0) and s["easy"]["list"] == "easy"
    assert s["hard"]["ap"] == pytest.approx(0.5) and s["hard"]["n_faces"] == 2
    assert "AP easy: 1.0000" in stdout


def test_landmarks_with_detector_one_and_zero_based(tmp_path, capsys, fake):
    images = tmp_path / "crops"
    image(images / "a.jpg")
    image(images / "b.jpg")
    pts = np.array(FakeMTCNN.POINTS)
    iod = 20.0  # the fake's eyes are 20 px apart

    def line(name, p):
        return name + " " + " ".join(f"{v:g}" for v in [*p[:, 0], *p[:, 1]]) + "\n"

    # a: exactly the fake's points; b: every point 2 px to the right (NME 0.1 -> not a failure
    # at 0.1, a failure at 0.05). The file is 1-based: add 1 to every coordinate.
    gt = tmp_path / "list.txt"
    gt.write_text(line("a.jpg", pts + 1) + line("b.jpg", pts + [2, 0] + 1) + line("gone.jpg", pts + 1))
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "landmarks", "--gt", gt, "--images", images, "--out", out,
                            "--failure-threshold", "0.05")
    assert code == 1 and "gone.jpg: no such file" in err and len(err.splitlines()) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 2 and m["n_detected"] == 2 and m["detection_rate"] == 1.0
    assert m["n_skipped"] == 1 and m["skipped"][0]["path"] == "gone.jpg"
    assert m["nme_mean"] == pytest.approx((0 + 2 / iod) / 2)
    assert m["nme_per_point"]["nose"] == pytest.approx(0.05)
    assert m["failure_rate"] == pytest.approx(0.5)  # b: 0.1 > 0.05
    assert m["one_based"] is True
    assert png_shape(out / "ced.png") == (480, 640, 3)

    # The same list read as 0-based is 1 px off in x and y for a: NME sqrt(2)/20.
    code, _, err = run(capsys, "landmarks", "--gt", gt, "--images", images, "--out", out, "--zero-based")
    assert code == 2 and err.startswith(f"mtcnn-jax: --out: {out} already holds metrics.json, ced.png, "
                                        "predictions.json: choose another folder, or pass --overwrite")
    code, _, _ = run(capsys, "landmarks", "--gt", gt, "--images", images, "--out", out, "--zero-based",
                     "--overwrite")
    m = json.loads((out / "metrics.json").read_text())
    assert m["one_based"] is False
    assert m["nme_per_point"]["left_eye"] == pytest.approx((np.sqrt(2) + np.sqrt(10)) / 2 / iod)


def test_real_detector_on_the_bundled_photo(tmp_path, capsys):
    # Eileen Collins' face in astronaut.jpg (512 x 512) lies about at x 170-260, y 60-175.
    gt = tmp_path / "gt.txt"
    gt.write_text("astronaut.jpg\n1\n170 60 90 115 0 0 0 0 0 0\n")
    code, stdout, err = run(capsys, "wider", "--gt", gt, "--images", ASSETS, "--out", tmp_path / "o")
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["settings"]["all"]["ap"] == pytest.approx(1.0)
    assert m["timing"]["n_images"] == 1 and m["detector"]["library"] == "mtcnn_jax"
    assert m["timing"]["median_cpu_ms"] > 0
    faces = json.loads((tmp_path / "o" / "predictions.json").read_text())[0]["faces"]
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 5


# --------------------------------------------------------------------------- bad input


def _one_line_error(capsys, *argv):
    code, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mtcnn-jax: "), err
    assert "Traceback" not in err
    return lines[0]


def test_bad_inputs_give_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "out"
    gt = tmp_path / "gt.txt"
    gt.write_text("ev/a.png\n1\n10 20 40 50 0 0 0 0 0 0\n")
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps([{"path": "ev/a.png", "faces": [{"box": [10, 20, 50, 70], "score": 1}]}]))

    msg = _one_line_error(capsys, "wider", "--gt", tmp_path / "nope.txt", "--predictions", preds, "--out", out)
    assert "nope.txt: no such file" in msg

    bad = tmp_path / "bad.txt"
    bad.write_text("ev/a.png\n1\n10 20 forty 50 0 0 0 0 0 0\n")
    msg = _one_line_error(capsys, "wider", "--gt", bad, "--predictions", preds, "--out", out)
    assert f"{bad}:3:" in msg

    broken = tmp_path / "broken.json"
    broken.write_text('[{"path": "ev/a.png", "faces": [{"box": [1, 2]}]}]')
    msg = _one_line_error(capsys, "wider", "--gt", gt, "--predictions", broken, "--out", out)
    assert "broken.json" in msg

    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"path": "zz/q.png", "faces": []}]))
    msg = _one_line_error(capsys, "wider", "--gt", gt, "--predictions", other, "--out", out)
    assert "other.json" in msg and "none of its 1 image paths" in msg

    msg = _one_line_error(capsys, "wider", "--gt", gt, "--out", out)
    assert "--images" in msg
    msg = _one_line_error(capsys, "wider", "--gt", gt, "--images", tmp_path / "nodir", "--out", out)
    assert "nodir" in msg
    msg = _one_line_error(capsys, "wider", "--gt", gt, "--predictions", preds, "--out", out, "--easy", tmp_path / "e.txt")
    assert "--easy" in msg and "e.txt" in msg
    msg = _one_line_error(capsys, "wider", "--gt", gt, "--predictions", preds, "--out", gt)
    assert "--out" in msg

    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg 1 2 3\n")
    msg = _one_line_error(capsys, "landmarks", "--gt", lst, "--predictions", preds, "--out", out)
    assert f"{lst}:1:" in msg
    assert not out.exists()  # nothing written before the input was checked


def test_landmarks_need_landmarks_in_predictions(tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg 1 2 3 4 5 1 1 2 3 3\n")
    preds = tmp_path / "haar.json"
    preds.write_text(json.dumps([{"path": "a.jpg", "faces": [{"box": [0, 0, 5, 5], "score": 1}]}]))
    msg = _one_line_error(capsys, "landmarks", "--gt", lst, "--predictions", preds, "--out", tmp_path / "o")
    assert "landmarks" in msg


# --------------------------------------------------------------------------- FDDB


def test_fddb_with_detector_and_with_its_detection_list(tmp_path, capsys, fake):
    from mtcnn_jax.evaluation import fddb

    images = tmp_path / "fddb"
    image(images / "2002" / "a.jpg")
    image(images / "2002" / "b.jpg")
    # a: an upright ellipse exactly inside the fake's box (left 10, top 20, 40 x 50);
    # b: a face away from it (the fake's box there is a false positive); c: no image.
    folds = tmp_path / "FDDB-fold-01-ellipseList.txt"
    folds.write_text(
        "2002/a\n1\n25 20 1.5707963 30 45 1\n"
        "2002/b\n1\n15 10 1.5707963 60 80 1\n"
        "2002/c\n1\n15 10 1.5707963 60 80 1\n"
    )
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "fddb", "--folds", folds, "--images", images, "--out", out)
    assert code == 1 and "c.jpg: no such file" in err
    m = json.loads((out / "metrics.json").read_text())
    assert (m["n_images"], m["n_faces"], m["n_detections"], m["n_skipped"]) == (2, 2, 2, 1)
    r = fddb.overlaps([[10, 20, 40, 50]], [[25, 20, np.pi / 2, 30, 45]])[0, 0]
    assert r == pytest.approx(np.pi / 4, abs=0.01)
    # one threshold (both detections score 0.9): 1 true positive of 2 faces, 1 false positive
    assert m["tpr_at_false_positives"]["discrete"] == {"100": 0.5, "500": 0.5, "1000": 0.5, "2000": 0.5}
    assert m["tpr_at_false_positives"]["continuous"]["1000"] == pytest.approx(r / 2, abs=1e-6)
    assert (out / "DiscROC.txt").read_text() == "0.500000 1\n"
    assert png_shape(out / "roc.png") == (480, 640, 3)
    assert "discrete 0.5000" in stdout

    dets = fddb.read_detections(out / "detections.txt")
    np.testing.assert_allclose(dets["2002/a"].boxes, [[10, 20, 40, 50]])
    again = tmp_path / "again"
    code, _, err = run(capsys, "fddb", "--folds", folds, "--predictions", out / "detections.txt", "--out", again)
    assert code == 0 and err == ""
    m2 = json.loads((again / "metrics.json").read_text())
    # now c is evaluated too (no detections): 1 of 3 faces; boxes not clipped to the image
    assert m2["n_faces"] == 3 and m2["tpr_at_false_positives"]["discrete"]["1000"] == pytest.approx(1 / 3)

    bad = tmp_path / "bad.txt"
    bad.write_text("2002/a\n1\n25 20 1.57 30\n")
    msg = _one_line_error(capsys, "fddb", "--folds", bad, "--predictions", out / "detections.txt", "--out", again)
    assert f"{bad}:3:" in msg


# --------------------------------------------------------------------------- benchmarks/compare_peers.py


def _compare_peers():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_peers.py"
    spec = importlib.util.spec_from_file_location("compare_peers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_peers_reference_rows_score_the_stored_detections(data_dir, reference_dir, capsys, monkeypatch):
    cp = _compare_peers()
    assert list(cp.spread(360, 4)) == [0, 120, 239, 359] and len(cp.spread(5, None)) == 5
    monkeypatch.setenv("MTCNN_JAX_DATA", str(data_dir))
    # ipazc needs TensorFlow, which the project never installs: its row comes from the reference
    # JSON, scored on all 360 images (README: 0.4279 / 0.7109 / 0.7523, NME 0.0755).
    if importlib_find("tensorflow"):
        pytest.skip("TensorFlow is installed: ipazc would run live")
    assert cp.main(["--detectors", "ipazc", "--reference", "--markdown", "--limit-landmarks", "3000"]) == 0
    out, err = capsys.readouterr()
    assert "skip ipazc" in err and "pip install mtcnn==1.0.0 tensorflow" in err
    lines = out.strip().splitlines()
    assert lines[0].startswith("| detector | source | AP all |") and lines[1].startswith("|---|")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "ipazc mtcnn 1.0.0" and cells[1] == "reference JSON"
    assert [float(c) for c in cells[2:5]] == pytest.approx([0.4279, 0.7109, 0.7523], abs=0.0015)
    assert float(cells[6]) == pytest.approx(0.0755, abs=0.0005)
    assert cells[8] == "352 (README)" and cells[10] == cells[11] == "–"


def importlib_find(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
