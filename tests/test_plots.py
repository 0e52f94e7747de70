"""Plots, drawn by matplotlib and by the OpenCV fallback: data-to-pixel mapping, curves drawn
where their data says, legends, gaps at NaN, Unicode text, PNG round trips, and matplotlib
imported only when a plot is drawn."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from mtcnn_jax.evaluation import plots

RED = (255, 0, 0)


def _require_matplotlib():
    """matplotlib must be there in CI (which installs the ``plots`` extra with ``dev``); elsewhere
    its tests skip when it is absent."""
    if plots._matplotlib() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("matplotlib is not installed, but CI must test it (pip install -e '.[dev]')")
        pytest.skip("matplotlib is not installed (pip install 'mtcnn-jax[plots]')")


@pytest.fixture(params=["matplotlib", "opencv"])
def renderer(request, monkeypatch):
    """Run the test with each renderer: matplotlib, and the OpenCV fallback."""
    if request.param == "matplotlib":
        _require_matplotlib()
    else:
        monkeypatch.setattr(plots, "_matplotlib", lambda: None)
    return request.param


def _frame():
    return plots.Frame(left=70, top=40, right=620, bottom=425, xlim=(0.0, 1.0), ylim=(0.0, 1.0))


def _red(img):
    """Pixels of the pure-red curve (matplotlib's antialiased edges are left out)."""
    return (img[..., 0] >= 230) & (img[..., 1] <= 40) & (img[..., 2] <= 40)


def test_data_to_pixels_corners_and_middle():
    f = _frame()
    px = plots.data_to_pixels(f, np.array([0.0, 1.0, 0.5]), np.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(px, [[70, 425], [620, 40], [345, 232.5]])
    g = f._replace(xlim=(0.0, 0.2))
    assert plots.data_to_pixels(g, 0.1, 0.0)[0] == pytest.approx(345)


def test_plot_frame_margins():
    assert plots.plot_frame((640, 480), (0.0, 1.0), (0.0, 1.0)) == _frame()
    assert plots.plot_frame((640, 480), (0.0, 1.0), (0.0, 1.0), title=False).top == 20
    small = plots.plot_frame((400, 300), (0, 1), (0, 1))  # text scaled by 0.75
    assert (small.left, small.top, small.right, small.bottom) == (52, 30, 385, 259)


def test_curve_is_drawn_at_its_data(renderer):
    # a horizontal line at precision 0.5 from recall 0.2 to 0.8, in pure red
    img = plots.line_plot([plots.Curve("half", np.array([0.2, 0.8]), np.array([0.5, 0.5]), RED)],
                          title="t", xlabel="recall", ylabel="precision")
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    f = _frame()
    col_mid = int(plots.data_to_pixels(f, 0.5, 0.5)[0])
    row = int(round(plots.data_to_pixels(f, 0.5, 0.5)[1]))
    red = _red(img)
    assert red[row - 1 : row + 2, col_mid].any()
    # the line spans recall 0.2 to 0.8 on that row: nothing red at 0.1 or 0.9, nor at precision 0.8
    cols = np.flatnonzero(red[row - 1 : row + 2].any(axis=0))
    assert abs(cols.min() - plots.data_to_pixels(f, 0.2, 0.5)[0]) <= 2
    assert abs(cols.max() - plots.data_to_pixels(f, 0.8, 0.5)[0]) <= 2
    for x, y in ((0.1, 0.5), (0.9, 0.5), (0.5, 0.8)):
        c, r = np.round(plots.data_to_pixels(f, x, y)).astype(int)
        assert not red[r - 2 : r + 3, c - 2 : c + 3].any(), (x, y)
    # the legend swatch is red too: red pixels in the lower left corner box
    assert red[380:425, 70:115].any()


def test_nan_breaks_the_curve(renderer):
    x = np.array([0.1, 0.2, np.nan, 0.8, 0.9])
    y = np.full(5, 0.5)
    img = plots.line_plot([plots.Curve("", x, y, RED)], title="gap")
    f = _frame()
    red = _red(img)
    row = int(round(plots.data_to_pixels(f, 0.5, 0.5)[1]))
    c = lambda v: int(round(plots.data_to_pixels(f, v, 0.5)[0]))  # noqa: E731
    assert red[row - 1 : row + 2, c(0.15)].any() and red[row - 1 : row + 2, c(0.85)].any()
    assert not red[row - 2 : row + 3, c(0.4) : c(0.6)].any()  # the gap
    assert not red[380:425, 70:115].any()  # no label: no legend


def test_an_isolated_point_is_drawn(renderer):
    img = plots.line_plot([plots.Curve("", np.array([np.nan, 0.5, np.nan]), np.array([0.0, 0.5, 1.0]), RED)])
    c, r = np.round(plots.data_to_pixels(plots.plot_frame((640, 480), (0, 1), (0, 1), title=False), 0.5, 0.5))
    assert _red(img)[int(r) - 2 : int(r) + 3, int(c) - 2 : int(c) + 3].any()


def test_empty_and_out_of_range_curves_do_not_fail(renderer):
    img = plots.pr_plot([plots.Curve("none", np.zeros(0), np.zeros(0)),
                         plots.Curve("wild", np.array([-5.0, 1e9, np.inf]), np.array([1e12, -3.0, 0.5]))])
    assert img.shape == (480, 640, 3)
    with pytest.raises(ValueError):
        plots.line_plot([], xlim=(1.0, 1.0))
    with pytest.raises(ValueError, match="legend"):
        plots.line_plot([], legend="centre")


def test_ced_and_roc_axes_and_png_round_trip(renderer, tmp_path):
    ced = plots.ced_plot([plots.Curve("ours", np.linspace(0, 0.2, 5), np.linspace(0, 1, 5), RED)])
    roc = plots.roc_plot([plots.Curve("ours", np.array([0, 50.0]), np.array([0.5, 0.9]), RED)],
                         max_false_positives=100)
    for k, img in enumerate((ced, roc)):
        path = tmp_path / f"{k}.png"
        plots.write_png(path, img)
        back = cv2.imread(str(path))[:, :, ::-1]
        np.testing.assert_array_equal(back, img)
    # ROC: the point (50 false positives, TPR 0.9) lies at the middle column
    f = _frame()._replace(xlim=(0.0, 100.0))
    c, r = np.round(plots.data_to_pixels(f, 50, 0.9)).astype(int)
    assert _red(roc)[r - 2 : r + 3, c - 2 : c + 3].any()


@pytest.mark.parametrize("size", [(400, 300), (560, 420), (1001, 333)])
def test_any_size(renderer, size):
    img = plots.line_plot([plots.Curve("a", np.array([0.0, 1.0]), np.array([0.0, 1.0]))], title="t", xlabel="x",
                          ylabel="y", size=size, legend="upper right")
    assert img.shape == (size[1], size[0], 3) and img.dtype == np.uint8


def test_title_and_labels_are_drawn_in_their_margins(renderer):
    def dark(img):
        return img.min(axis=-1) < 128

    bare = plots.line_plot([], xlim=(0.0, 1.0))
    full = plots.line_plot([], title="Title – AP ≥ 20 px", xlabel="recall (fraction)", ylabel="precision (fraction)")
    assert not dark(bare)[:15].any() and dark(full)[:30].any()  # the title, above the plot area
    assert dark(full)[455:].sum() > dark(bare)[455:].sum() + 30  # the x label, under the tick labels
    assert dark(full)[100:400, :30].sum() > dark(bare)[100:400, :30].sum() + 30  # the y label, left


def test_matplotlib_draws_unicode_without_missing_glyphs():
    _require_matplotlib()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        plots.line_plot([plots.Curve("α = 0.5, NME ≤ 0.1 – µ ± σ", np.zeros(2), np.zeros(2)),
                         plots.Curve("lr=$1e-3$ {x}_^", np.zeros(2), np.zeros(2))],  # literal, not mathtext
                        title="precision–recall, faces ≥ 20 px", xlabel="NME (÷ inter-ocular)", ylabel="$ ×")


def test_ascii_spelling_for_the_fallback():
    assert plots._ascii("AP ≥ 20 px – α×β, 5 µm") == "AP >= 20 px - alphaxbeta, 5 um"
    assert plots._ascii("日本") == "??"


def test_fallback_is_used_when_matplotlib_cannot_be_imported(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    assert plots._matplotlib() is None
    curves = [plots.Curve("ours", np.array([0.0, 1.0]), np.array([1.0, 0.0]), RED)]
    img = plots.pr_plot(curves)
    np.testing.assert_array_equal(img, plots._opencv_line_plot(
        curves, title="Precision–recall", xlabel="recall (fraction of the faces found)",
        ylabel="precision (fraction of detections that are faces)", xlim=(0.0, 1.0), ylim=(0.0, 1.0),
        size=(640, 480), legend="lower left"))


def test_matplotlib_is_imported_only_when_a_plot_is_drawn():
    code = ("import sys, mtcnn_jax, mtcnn_jax.evaluation.plots, mtcnn_jax.evaluation.report, mtcnn_jax.commands.evaluate;"
            "assert 'matplotlib' not in sys.modules, 'imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_ticks_are_round_numbers():
    np.testing.assert_allclose(plots._ticks(0.0, 1.0), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(plots._ticks(0.0, 0.2), [0, 0.05, 0.1, 0.15, 0.2])
    np.testing.assert_allclose(plots._ticks(0.0, 700), [0, 200, 400, 600])


def test_error_bars_span_y_plus_minus_err(renderer):
    # one point at (0.5, 0.5) with a bar of ± 0.2: red from 0.3 to 0.7 in its column, nothing at 0.2 or 0.8
    img = plots.line_plot([plots.Curve("", np.array([0.5]), np.array([0.5]), RED, err=np.array([0.2]))],
                          title="bars")
    f = _frame()
    red = _red(img)
    col = int(round(plots.data_to_pixels(f, 0.5, 0.5)[0]))
    rows = np.flatnonzero(red[:, col - 1 : col + 2].any(axis=1))
    assert abs(rows.min() - plots.data_to_pixels(f, 0.5, 0.7)[1]) <= 2
    assert abs(rows.max() - plots.data_to_pixels(f, 0.5, 0.3)[1]) <= 2
    c2, r2 = np.round(plots.data_to_pixels(f, 0.5, 0.85)).astype(int)
    assert not red[r2 - 2 : r2 + 3, c2 - 2 : c2 + 3].any()
