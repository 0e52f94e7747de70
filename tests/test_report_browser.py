"""``mtcnn-jax report`` in a real browser: headless Chromium opens the report built from the
shared WIDER subset and the stored detections of two peers, and the images must load and
show, and the table must hold the expected rows.

Chromium is a system package (Debian: ``apt-get install -y chromium``). Without it these
tests skip, saying so, except in CI (``CI=true``), where they fail: CI must install it.
``MTCNN_JAX_CHROMIUM`` names another binary (e.g. google-chrome).

The page itself has no script. To read what the browser made of it, a copy of it with a
small script added (``report_check.html``, beside it, so that the same relative image paths
resolve) records, once the page has loaded, each image's state (``complete``, natural size,
place on the page) and each table's cells in a ``<pre>``; ``--dump-dom`` prints the page
after load. A screenshot of the page itself then shows whether the pixels where each image
lies are that image's.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax.cli import main

WINDOW = (1280, 3000)  # wide and tall enough for the whole page at 1 CSS px = 1 pixel

CHECK_SCRIPT = """<script>
function check() {
  const result = {
    images: Array.from(document.images).map(function (img) {
      const r = img.getBoundingClientRect();
      return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth,
              height: img.naturalHeight, rect: [r.left + scrollX, r.top + scrollY, r.width, r.height]};
    }),
    tables: Array.from(document.querySelectorAll("table")).map(function (t) {
      return Array.from(t.rows).map(function (row) {
        return Array.from(row.cells).map(function (cell) { return cell.textContent; });
      });
    }),
  };
  const out = document.createElement("pre");
  out.id = "check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
}
if (document.readyState === "complete") check(); else window.addEventListener("load", check);
</script>"""

EXPECTED_TABLE = [
    ["detector", "AP all", "AP >= 20 px", "AP >= 40 px", "faces found (all)", "false positives (all)"],
    ["facenet-pytorch", "0.4330", "0.7417", "0.7886", "1809/4117", "180"],  # README: 0.433 / 0.742 / 0.789
    ["mtcnn (ipazc)", "0.4279", "0.7109", "0.7523", "1782/4117", "119"],  # README: 0.428 / 0.711 / 0.752
]


def chromium() -> str:
    """The Chromium binary; skips (fails in CI) when there is none."""
    for name in (os.environ.get("MTCNN_JAX_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if name else None
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Chromium not found, but CI must run the browser tests (apt-get install -y chromium)")
    pytest.skip("Chromium not found: apt-get install -y chromium (or set MTCNN_JAX_CHROMIUM)")


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    """Headless Chromium, offline and quiet, on a fresh profile; returns its stdout."""
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=10000", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"chromium exit {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout


def rendered(binary: str, folder: Path, profile: Path) -> dict:
    """What the browser made of ``folder/report.html``: the check script's record."""
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.count("</body>") == 1
    (folder / "report_check.html").write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = run_chromium(binary, profile, "--dump-dom", (folder / "report_check.html").as_uri())
    m = re.search(r'<pre id="check">(.*?)</pre>', dom, re.S)
    assert m, "the page did not finish loading (no check record in the DOM): " + dom[-1000:]
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory, data_dir, reference_dir):
    """A report of facenet-pytorch beside ipazc's mtcnn on the WIDER subset: 3 image rows."""
    binary = chromium()
    root = data_dir / "widerface_val_subset"
    out = tmp_path_factory.mktemp("report") / "out"
    code = main(["report", "--predictions", str(reference_dir / "widerface_val_subset.facenet.json"),
                 "--peer", str(reference_dir / "widerface_val_subset.ipazc.json"),
                 "--gt", str(root / "wider_face_val_bbx_gt_subset.txt"), "--images", str(root / "images"),
                 "--out", str(out), "--count", "3", "--select", "first"])
    assert code == 0
    return binary, out


def test_report_images_load_and_tables_have_the_expected_rows(report, tmp_path):
    binary, out = report
    seen = rendered(binary, out, tmp_path / "profile")
    srcs = re.findall(r'<img src="([^"]+)"', (out / "report.html").read_text(encoding="utf-8"))
    assert srcs == ["pr_curve.png", "rows/000.jpg", "rows/001.jpg", "rows/002.jpg"]
    assert [img["src"] for img in seen["images"]] == srcs
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0, f"{img['src']} did not load"
        h, w = cv2.imread(str(out / img["src"])).shape[:2]
        assert (img["width"], img["height"]) == (w, h), img  # decoded whole, at its size
        assert img["rect"][2] == w  # shown at its size (the window is wide enough)
    assert seen["tables"] == [EXPECTED_TABLE]


def test_report_screenshot_shows_each_image_where_it_lies(report, tmp_path):
    binary, out = report
    seen = rendered(binary, out, tmp_path / "profile")
    shot = tmp_path / "page.png"
    run_chromium(binary, tmp_path / "profile2", f"--screenshot={shot}", (out / "report.html").as_uri())
    page = cv2.imread(str(shot)).astype(np.int16)
    assert page.shape[:2] == (WINDOW[1], WINDOW[0])
    for img in seen["images"]:
        x, y = round(img["rect"][0]), round(img["rect"][1])
        expected = cv2.imread(str(out / img["src"])).astype(np.int16)
        h, w = expected.shape[:2]
        assert y + h <= page.shape[0], f"{img['src']} lies below the screenshot"
        diff = np.abs(page[y : y + h, x : x + w] - expected).mean()
        assert diff < 2.0, f"{img['src']}: the page's pixels there are not the image's (mean difference {diff:.1f})"


def test_the_check_sees_an_image_that_does_not_load(report, tmp_path):
    binary, out = report
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "rows" / "001.jpg").unlink()
    seen = rendered(binary, broken, tmp_path / "profile")
    failed = [img["src"] for img in seen["images"] if not (img["complete"] and img["width"] > 0)]
    assert failed == ["rows/001.jpg"]
