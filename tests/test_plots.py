"""OpenCV plots: data-to-pixel mapping, curves drawn where their data says, legends,
gaps at NaN, and PNG round trips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtcnn_jax.evaluation import plots

RED = (255, 0, 0)


def _frame():
    return plots.Frame(left=70, top=40, right=620, bottom=425, xlim=(0.0, 1.0), ylim=(0.0, 1.0))


def test_data_to_pixels_corners_and_middle():
    f = _frame()
    px = plots.data_to_pixels(f, np.array([0.0, 1.0, 0.5]), np.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(px, [[70, 425], [620, 40], [345, 232.5]])
    g = f._replace(xlim=(0.0, 0.2))
    assert plots.data_to_pixels(g, 0.1, 0.0)[0] == pytest.approx(345)


def test_curve_is_drawn_at_its_data():
    # a horizontal line at precision 0.5 from recall 0.2 to 0.8, in pure red
    img = plots.line_plot([plots.Curve("half", np.array([0.2, 0.8]), np.array([0.5, 0.5]), RED)],
                          title="t", xlabel="recall", ylabel="precision")
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    f = _frame()
    col_mid = int(plots.data_to_pixels(f, 0.5, 0.5)[0])
    row = int(round(plots.data_to_pixels(f, 0.5, 0.5)[1]))
    red = np.all(img == RED, axis=-1)
    assert red[row - 1 : row + 2, col_mid].any()
    # nothing red at recall 0.1 or 0.9 on that row, nor at precision 0.8
    for x, y in ((0.1, 0.5), (0.9, 0.5), (0.5, 0.8)):
        c, r = np.round(plots.data_to_pixels(f, x, y)).astype(int)
        assert not red[r - 2 : r + 3, c - 2 : c + 3].any(), (x, y)
    # the legend swatch is red too: red pixels in the lower left corner box
    assert red[380:425, 70:110].any()


def test_nan_breaks_the_curve():
    x = np.array([0.1, 0.2, np.nan, 0.8, 0.9])
    y = np.full(5, 0.5)
    img = plots.line_plot([plots.Curve("", x, y, RED)], title="gap")
    f = _frame()
    red = np.all(img == RED, axis=-1)
    row = int(round(plots.data_to_pixels(f, 0.5, 0.5)[1]))
    c = lambda v: int(round(plots.data_to_pixels(f, v, 0.5)[0]))  # noqa: E731
    assert red[row - 1 : row + 2, c(0.15)].any() and red[row - 1 : row + 2, c(0.85)].any()
    assert not red[row - 2 : row + 3, c(0.4) : c(0.6)].any()  # the gap


def test_empty_and_out_of_range_curves_do_not_fail():
    img = plots.pr_plot([plots.Curve("none", np.zeros(0), np.zeros(0)),
                         plots.Curve("wild", np.array([-5.0, 1e9]), np.array([1e12, -3.0]))])
    assert img.shape == (480, 640, 3)
    with pytest.raises(ValueError):
        plots.line_plot([], xlim=(1.0, 1.0))


def test_ced_and_roc_axes_and_png_round_trip(tmp_path):
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
    assert np.all(roc[r - 2 : r + 3, c - 2 : c + 3] == RED, axis=-1).any()


def test_ticks_are_round_numbers():
    np.testing.assert_allclose(plots._ticks(0.0, 1.0), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(plots._ticks(0.0, 0.2), [0, 0.05, 0.1, 0.15, 0.2])
    np.testing.assert_allclose(plots._ticks(0.0, 700), [0, 200, 400, 600])
