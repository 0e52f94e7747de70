"""Visual report: marking detections and faces by the WIDER rules, drawing them, picking
images, the HTML page, and ``mtcnn-jax report`` end to end on hand-made images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax.cli import main
from mtcnn_jax.data.wider import parse_wider_gt
from mtcnn_jax.evaluation import report as rp
from mtcnn_jax.faces import Faces

# Faces: F0 (10,10)-(50,50); F1 (100,10)-(140,50) marked invalid; F2 (10,100)-(20,110), 10 px.
GT = """\
ev/a.png
3
10 10 40 40 0 0 0 0 0 0
100 10 40 40 0 0 0 1 0 0
10 100 10 10 0 0 0 0 0 0
"""


def record():
    return parse_wider_gt(GT.splitlines())[0]


def dets(boxes, scores):
    return Faces(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float64), None)


def test_classify_by_hand():
    d = dets([[10, 10, 50, 50],      # F0: true positive
              [100, 10, 140, 50],    # F1 is invalid: ignored
              [200, 200, 240, 240],  # nothing: false positive
              [11, 11, 50, 50]],     # F0 again, lower score: false positive
             [0.9, 0.8, 0.7, 0.6])
    m = rp.classify(d, record())
    np.testing.assert_array_equal(m.detections, [rp.TRUE_POSITIVE, rp.IGNORED, rp.FALSE_POSITIVE, rp.FALSE_POSITIVE])
    np.testing.assert_array_equal(m.faces, [rp.FOUND, rp.IGNORED, rp.MISSED])
    assert (m.n_found, m.n_missed, m.n_false_positives) == (1, 1, 2)
    # ">= 20 px": the 10 px face F2 no longer counts, so it is not missed
    m20 = rp.classify(d, record(), min_size=20)
    np.testing.assert_array_equal(m20.faces, [rp.FOUND, rp.IGNORED, rp.IGNORED])
    # the operating point: below 0.85 nothing is shown, F0 is missed
    high = rp.classify(d, record(), min_score=0.95)
    np.testing.assert_array_equal(high.detections, [rp.IGNORED] * 4)
    np.testing.assert_array_equal(high.faces, [rp.MISSED, rp.IGNORED, rp.MISSED])


def test_classify_order_independent_and_empty():
    d = dets([[11, 11, 50, 50], [10, 10, 50, 50]], [0.6, 0.9])  # the better-scoring one recalls
    m = rp.classify(d, record())
    np.testing.assert_array_equal(m.detections, [rp.FALSE_POSITIVE, rp.TRUE_POSITIVE])
    none = rp.classify(None, record())
    assert none.detections.shape == (0,) and list(none.faces) == [rp.MISSED, rp.IGNORED, rp.MISSED]


def test_draw_colours_by_status():
    image = np.zeros((160, 260, 3), np.uint8)
    d = dets([[10, 10, 50, 50], [200, 100, 240, 140]], [0.9, 0.8])
    out = rp.draw(image, record(), d, rp.classify(d, record()))
    assert image.max() == 0  # not modified
    assert tuple(out[100, 15]) == rp.RED  # top edge of the missed 10 px face
    assert tuple(out[120, 199]) == rp.ORANGE  # left edge of the false positive (thick, outside)
    assert tuple(out[30, 9]) == rp.GREEN  # the true detection around F0
    assert tuple(out[10, 120]) == rp.GREY  # the invalid face
    gt_only = rp.draw_ground_truth(image, record(), min_size=1)
    assert tuple(gt_only[10, 30]) == rp.BLUE and tuple(gt_only[10, 120]) == rp.GREY


def test_select_panel_grid():
    recs = parse_wider_gt(("".join(f"ev/{k}.png\n1\n0 0 10 10 0 0 0 0 0 0\n" for k in range(5))).splitlines())
    good = rp.Marks(np.zeros(0, np.int8), np.array([rp.FOUND], np.int8))
    bad = rp.Marks(np.array([rp.FALSE_POSITIVE] * 2, np.int8), np.array([rp.MISSED], np.int8))
    marks = {r.path: (bad if r.path in ("ev/1.png", "ev/3.png") else good) for r in recs}
    assert rp.select(recs, marks, 2, "worst") == [1, 3]
    assert rp.select(recs, marks, 3, "spread") == [0, 2, 4]
    assert rp.select(recs, marks, 9, "first") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        rp.select(recs, marks, 1, "best")
    p = rp.panel(np.zeros((100, 200, 3), np.uint8), "caption", width=100)
    assert p.shape == (24 + 50, 100, 3)
    g = rp.grid([[p, p], [p]], gap=6)
    assert g.shape == (2 * 74 + 6, 206, 3) and (g[74:80] == 255).all()


def test_html_escapes_everything():
    page = rp.html_page("<b>t</b>", [("<script>", 1)], ["c&d"], [("rows/000.jpg", 'x"<y>')], ["a < b"])
    assert "<script>" not in page and "&lt;script&gt;" in page and "c&amp;d" in page
    assert 'alt="x&quot;&lt;y&gt;"' in page and "<p>a &lt; b</p>" in page


# --------------------------------------------------------------------------- command


def _setup(tmp_path: Path):
    images = tmp_path / "images"
    (images / "ev").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(images / "ev" / name), np.full((160, 260, 3), 90, np.uint8))
    gt = tmp_path / "gt.txt"
    gt.write_text(GT + "ev/b.png\n1\n10 10 40 40 0 0 0 0 0 0\nev/gone.png\n1\n10 10 40 40 0 0 0 0 0 0\n")
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"detector": {"library": "mtcnn_jax"}, "images": [
        {"path": "ev/a.png", "faces": [{"box": [10, 10, 50, 50], "score": 0.9},
                                       {"box": [200, 100, 240, 140], "score": 0.8}]},
        {"path": "ev/b.png", "faces": [{"box": [10, 10, 50, 50], "score": 0.95}]}]}))
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps([{"path": "ev/a.png", "faces": []}]))
    return images, gt, ours, peer


def test_report_command_writes_page_grid_and_rows(tmp_path, capsys):
    images, gt, ours, peer = _setup(tmp_path)
    out = tmp_path / "out"
    code = main(["report", "--predictions", str(ours), "--peer", str(peer), "--peer-name", "<peer>",
                 "--gt", str(gt), "--images", str(images), "--out", str(out), "--select", "first"])
    stdout, err = capsys.readouterr()
    assert code == 1  # ev/gone.png cannot be read
    assert err.count("\n") == 1 and "gone.png: no such file" in err
    page = (out / "report.html").read_text()
    # ours: F0 of a and the face of b found (2 of the 4 counted faces: a has two, b and gone
    # one each), 1 false positive
    assert "<td>mtcnn_jax</td>" in page and "<td>2/4</td><td>1</td>" in page
    assert "&lt;peer&gt;" in page and "<td>0/4</td><td>0</td>" in page
    assert 'src="rows/000.jpg"' in page and 'src="rows/001.jpg"' in page and "rows/002.jpg" not in page
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[1] == 2 * 320 + 6  # ours beside the peer
    row = cv2.imread(str(out / "rows" / "000.jpg"))
    assert row.shape[1] == 2 * 480 + 6
    assert cv2.imread(str(out / "pr_curve.png")).shape == (480, 640, 3)


def test_report_without_peer_shows_ground_truth(tmp_path, capsys):
    images, gt, ours, _ = _setup(tmp_path)
    out = tmp_path / "out"
    code = main(["report", "--predictions", str(ours), "--gt", str(gt), "--images", str(images),
                 "--out", str(out), "--count", "1", "--select", "worst"])
    capsys.readouterr()
    assert code == 0  # the worst image (a: 1 miss, 1 false positive) is readable
    page = (out / "report.html").read_text()
    assert page.count("<figure>") == 2 and "ev/a.png" in page  # PR curve + one row


@pytest.mark.parametrize("extra, words", [
    (["--count", "0"], "--count"),
    (["--min-score", "x"], "--min-score"),
    (["--peer", "missing.json"], "missing.json: no such file"),
])
def test_report_bad_options(tmp_path, capsys, extra, words):
    images, gt, ours, _ = _setup(tmp_path)
    code = main(["report", "--predictions", str(ours), "--gt", str(gt), "--images", str(images),
                 "--out", str(tmp_path / "out"), *extra])
    _, err = capsys.readouterr()
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
