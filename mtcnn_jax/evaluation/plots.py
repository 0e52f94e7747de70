"""Curves as RGB images: precision-recall (WIDER FACE), cumulative error distribution
(landmarks), ROC (FDDB) and the sweeps' metric plots.

Drawn with matplotlib (its Agg renderer, no window, no pyplot state) when it is installed
(``pip install "mtcnn-jax[plots]"``): titles, axis labels with units, a legend, a grid,
any Unicode text. Without it the same plots are drawn with OpenCV's line primitives and
Hershey fonts (ASCII only: other characters are spelt out or replaced). matplotlib is
imported on the first plot, never by ``import mtcnn_jax``.

Every function returns ``uint8[H, W, 3]`` RGB; :func:`write_png` saves one. Both renderers
put the plot area at :func:`plot_frame` and map data ``(x, y)`` linearly onto its pixels
with ``y`` growing upwards (see :func:`data_to_pixels`). Non-finite points are left out of
a curve (a curve is broken there), so NaN-padded arrays can be passed as they are.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from mtcnn_jax.files import write_atomically

#: RGB colours given to curves in order (a colour-blind-safe palette, Okabe & Ito).
PALETTE = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (0, 0, 0),
    (240, 228, 66),
)
BACKGROUND = (255, 255, 255)
GRID = (225, 225, 225)
AXIS = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class Curve(NamedTuple):
    """One curve of a plot.

    label: legend text ("" for none).
    x, y: float[K] data points, drawn joined in the given order.
    colour: RGB, or None for the next colour of :data:`PALETTE`.
    err: float[K] half-lengths of error bars drawn at the points (y ± err; e.g. a 95% confidence
    interval), or None for none.
    """

    label: str
    x: np.ndarray
    y: np.ndarray
    colour: tuple | None = None
    err: np.ndarray | None = None


class Frame(NamedTuple):
    """Where the plot area lies: pixel box ``left, top, right, bottom`` (inclusive) and the
    data ranges ``xlim = (x0, x1)``, ``ylim = (y0, y1)`` it shows."""

    left: int
    top: int
    right: int
    bottom: int
    xlim: tuple
    ylim: tuple


def data_to_pixels(frame: Frame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float64[K, 2] pixel ``(column, row)`` of data points: ``x0 -> left``, ``x1 -> right``,
    ``y0 -> bottom``, ``y1 -> top`` (rows grow downwards). Points outside the ranges map
    outside the plot area (clipping is the caller's)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    (x0, x1), (y0, y1) = frame.xlim, frame.ylim
    col = frame.left + (x - x0) / (x1 - x0) * (frame.right - frame.left)
    row = frame.bottom - (y - y0) / (y1 - y0) * (frame.bottom - frame.top)
    return np.stack([col, row], axis=-1)


def _ticks(lo: float, hi: float, target: int = 5) -> np.ndarray:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering ``[lo, hi]``."""
    span = hi - lo
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return np.arange(first, hi + step * 1e-6, step)


def _fmt(v: float) -> str:
    return f"{v:.10g}" if abs(v) >= 1e-9 else "0"


def _text(img, text, org, scale=0.45, colour=AXIS, thick=1):
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, colour, thick, cv2.LINE_AA)


def plot_frame(size: tuple, xlim: tuple, ylim: tuple, title: bool = True, scale: float | None = None) -> Frame:
    """Where :func:`line_plot` puts the plot area in an image of ``size = (width, height)``:
    margins of 70 px (left, tick labels and the y label), 20 px (right), 40 px (top, the
    title; 20 without) and 55 px (bottom, tick labels and the x label), times ``scale``
    (by default the text size: 1 at 640 x 480, smaller for smaller images, at least 0.75)."""
    width, height = int(size[0]), int(size[1])
    s = _text_scale(width, height) if scale is None else scale
    return Frame(round(70 * s), round((40 if title else 20) * s), width - round(20 * s),
                 height - round(55 * s), tuple(xlim), tuple(ylim))


def _text_scale(width: int, height: int) -> float:
    return max(0.75, min(1.5, width / 640, height / 480))


def line_plot(
    curves: Sequence[Curve],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xlim: tuple = (0.0, 1.0),
    ylim: tuple = (0.0, 1.0),
    size: tuple = (640, 480),
    legend: str = "lower left",
) -> np.ndarray:
    """Draw curves on axes with a grid, ticks, labels and a legend.

    Args:
      curves: the :class:`Curve` s, drawn in order (later ones on top).
      title, xlabel, ylabel: text (say the unit in the label, e.g. ``"NME (inter-ocular)"``).
      xlim, ylim: data ranges shown, ``(low, high)`` with ``low < high``.
      size: ``(width, height)`` of the image in pixels.
      legend: ``"lower left"``, ``"lower right"``, ``"upper left"`` or ``"upper right"``.

    Returns:
      uint8[height, width, 3] RGB: matplotlib's drawing when it is installed, else OpenCV's.
    """
    if not (xlim[0] < xlim[1] and ylim[0] < ylim[1]):
        raise ValueError(f"empty axis range xlim={xlim}, ylim={ylim}")
    if legend not in ("lower left", "lower right", "upper left", "upper right"):
        raise ValueError(f"legend must be 'lower left', 'lower right', 'upper left' or 'upper right', got {legend!r}")
    mpl = _matplotlib()
    args = dict(title=title, xlabel=xlabel, ylabel=ylabel, xlim=tuple(xlim), ylim=tuple(ylim),
                size=(int(size[0]), int(size[1])), legend=legend)
    if mpl is None:
        return _opencv_line_plot(curves, **args)
    return _matplotlib_line_plot(mpl, curves, **args)


def _matplotlib():
    """``(Figure, FigureCanvasAgg)`` from matplotlib, or None when it is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _plain(text: str) -> str:
    """``text`` as matplotlib shows it literally (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _matplotlib_line_plot(mpl, curves, *, title, xlabel, ylabel, xlim, ylim, size, legend) -> np.ndarray:
    """:func:`line_plot` drawn with matplotlib's Agg renderer (no pyplot, no global state)."""
    Figure, FigureCanvasAgg = mpl
    width, height = size
    s = _text_scale(width, height)
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=_hex(BACKGROUND))
    canvas = FigureCanvasAgg(fig)
    f = plot_frame(size, xlim, ylim, bool(title))
    ax = fig.add_axes((f.left / width, 1 - f.bottom / height, (f.right - f.left) / width, (f.bottom - f.top) / height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.grid(True, color=_hex(GRID), linewidth=0.8 * s)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9 * s, width=0.8 * s, length=3.5 * s, pad=3 * s)
    for spine in ax.spines.values():
        spine.set_linewidth(0.8 * s)
    if title:
        ax.set_title(_plain(title), fontsize=11 * s, pad=6 * s)
    ax.set_xlabel(_plain(xlabel), fontsize=10 * s, labelpad=3 * s)
    ax.set_ylabel(_plain(ylabel), fontsize=10 * s, labelpad=4 * s)
    line = 2.0 * 72 / dpi  # 2 px, as the OpenCV drawing
    for k, curve in enumerate(curves):
        colour = _hex(curve.colour if curve.colour is not None else PALETTE[k % len(PALETTE)])
        x = np.asarray(curve.x, np.float64).reshape(-1)
        y = np.asarray(curve.y, np.float64).reshape(-1)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.plot(np.where(ok, x, np.nan), np.where(ok, y, np.nan), color=colour, linewidth=line,
                label=_plain(curve.label) or None, solid_capstyle="butt")
        alone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]  # points with no neighbour to join
        if alone.any():
            ax.plot(x[alone], y[alone], "o", color=colour, markersize=5 * s * 72 / dpi)
        if curve.err is not None:
            err = np.asarray(curve.err, np.float64).reshape(-1)
            bars = ok & np.isfinite(err)
            ax.errorbar(x[bars], y[bars], yerr=err[bars], fmt="o", color=colour, markersize=4 * s * 72 / dpi,
                        elinewidth=1.5 * 72 / dpi, capsize=4 * s, capthick=1.5 * 72 / dpi)
    if any(c.label for c in curves):
        ax.legend(loc=legend, fontsize=9 * s, framealpha=0.9, edgecolor="black", fancybox=False,
                  borderaxespad=0.6, handlelength=2.0)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[:height, :width, :3]
    if rgb.shape[:2] != (height, width):  # Agg rounded the figure size: pad with the background
        out = np.full((height, width, 3), BACKGROUND, np.uint8)
        out[: rgb.shape[0], : rgb.shape[1]] = rgb
        rgb = out
    return np.ascontiguousarray(rgb)


#: Spellings of the non-ASCII characters labels use, for OpenCV's ASCII-only fonts.
_ASCII_SPELLING = {"≥": ">=", "≤": "<=", "≠": "!=", "±": "+-", "×": "x", "÷": "/", "–": "-", "—": "-",
                   "−": "-", "…": "...", "µ": "u", "α": "alpha", "β": "beta", "σ": "sigma", "‘": "'",
                   "’": "'", "“": '"', "”": '"'}


def _ascii(text: str) -> str:
    """``text`` for Hershey fonts: known symbols spelt out (``≥`` -> ``>=``), others ``?``."""
    text = "".join(_ASCII_SPELLING.get(ch, ch) for ch in str(text))
    return text.encode("ascii", "replace").decode("ascii")


def _opencv_line_plot(
    curves: Sequence[Curve],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xlim: tuple = (0.0, 1.0),
    ylim: tuple = (0.0, 1.0),
    size: tuple = (640, 480),
    legend: str = "lower left",
) -> np.ndarray:
    """:func:`line_plot` drawn with OpenCV (the fallback when matplotlib is absent)."""
    width, height = int(size[0]), int(size[1])
    title, xlabel, ylabel = _ascii(title), _ascii(xlabel), _ascii(ylabel)
    curves = [c._replace(label=_ascii(c.label)) for c in curves]
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    frame = plot_frame(size, xlim, ylim, bool(title), scale=1.0)
    # grid and ticks
    for v in _ticks(*xlim):
        c = int(round(data_to_pixels(frame, v, ylim[0])[0]))
        cv2.line(img, (c, frame.top), (c, frame.bottom), GRID, 1)
        cv2.line(img, (c, frame.bottom), (c, frame.bottom + 4), AXIS, 1)
        label = _fmt(v)
        (tw, th), _ = cv2.getTextSize(label, _FONT, 0.4, 1)
        _text(img, label, (c - tw / 2, frame.bottom + 8 + th), 0.4)
    for v in _ticks(*ylim):
        r = int(round(data_to_pixels(frame, xlim[0], v)[1]))
        cv2.line(img, (frame.left, r), (frame.right, r), GRID, 1)
        cv2.line(img, (frame.left - 4, r), (frame.left, r), AXIS, 1)
        label = _fmt(v)
        (tw, th), _ = cv2.getTextSize(label, _FONT, 0.4, 1)
        _text(img, label, (frame.left - 8 - tw, r + th / 2), 0.4)
    cv2.rectangle(img, (frame.left, frame.top), (frame.right, frame.bottom), AXIS, 1)
    # labels
    if title:
        (tw, _), _ = cv2.getTextSize(title, _FONT, 0.55, 1)
        _text(img, title, ((frame.left + frame.right - tw) / 2, 26), 0.55)
    if xlabel:
        (tw, _), _ = cv2.getTextSize(xlabel, _FONT, 0.5, 1)
        _text(img, xlabel, ((frame.left + frame.right - tw) / 2, height - 12), 0.5)
    if ylabel:
        (tw, th), _ = cv2.getTextSize(ylabel, _FONT, 0.5, 1)
        strip = np.full((th + 8, tw + 4, 3), BACKGROUND, np.uint8)
        _text(strip, ylabel, (2, th + 2), 0.5)
        strip = np.rot90(strip)  # reads bottom to top
        top = max(0, (frame.top + frame.bottom - strip.shape[0]) // 2)
        rows, cols = min(strip.shape[0], height - top), min(strip.shape[1], frame.left - 4)
        img[top : top + rows, 4 : 4 + cols] = strip[:rows, :cols]
    # curves, clipped to the plot area
    colours = []
    for k, curve in enumerate(curves):
        colour = tuple(curve.colour) if curve.colour is not None else PALETTE[k % len(PALETTE)]
        colours.append(colour)
        pts = data_to_pixels(frame, curve.x, curve.y)
        ok = np.all(np.isfinite(pts), axis=1)
        pts = np.clip(pts, -(1 << 15), 1 << 15)
        runs = np.split(np.arange(len(pts)), np.flatnonzero(~ok))
        for run in runs:
            run = run[ok[run]]
            if run.size == 0:
                continue
            poly = np.round(pts[run]).astype(np.int32).reshape(-1, 1, 2)
            area = img[frame.top : frame.bottom + 1, frame.left : frame.right + 1]
            shifted = poly - np.array([frame.left, frame.top], np.int32)
            if run.size == 1:
                cv2.circle(area, tuple(int(v) for v in shifted[0, 0]), 2, colour, -1, cv2.LINE_AA)
            else:
                cv2.polylines(area, [shifted], False, colour, 2, cv2.LINE_AA)
        if curve.err is not None:  # error bars: a vertical line with caps at each point
            err = np.asarray(curve.err, np.float64).reshape(-1)
            area = img[frame.top : frame.bottom + 1, frame.left : frame.right + 1]
            for xv, yv, ev in zip(np.reshape(curve.x, -1), np.reshape(curve.y, -1), err):
                if not np.all(np.isfinite([xv, yv, ev])):
                    continue
                (c, lo), (_, hi) = data_to_pixels(frame, np.array([xv, xv]), np.array([yv - ev, yv + ev]))
                c, lo, hi = (int(round(v)) for v in (c - frame.left, lo - frame.top, hi - frame.top))
                cv2.line(area, (c, lo), (c, hi), colour, 1, cv2.LINE_AA)
                for r in (lo, hi):
                    cv2.line(area, (c - 4, r), (c + 4, r), colour, 1, cv2.LINE_AA)
    # legend
    labels = [c.label for c in curves if c.label]
    if labels:
        sizes = [cv2.getTextSize(c.label, _FONT, 0.45, 1)[0] for c in curves]
        box_w = 34 + max(w for w, _ in sizes)
        row_h = 18
        box_h = 8 + row_h * len(curves)
        x0 = frame.left + 8 if "left" in legend else frame.right - 8 - box_w
        y0 = frame.top + 8 if "upper" in legend else frame.bottom - 8 - box_h
        cv2.rectangle(img, (x0, y0), (x0 + box_w, y0 + box_h), BACKGROUND, -1)
        cv2.rectangle(img, (x0, y0), (x0 + box_w, y0 + box_h), AXIS, 1)
        for k, curve in enumerate(curves):
            yy = y0 + 4 + row_h * k + row_h // 2
            cv2.line(img, (x0 + 6, yy), (x0 + 26, yy), colours[k], 2, cv2.LINE_AA)
            _text(img, curve.label, (x0 + 30, yy + 5), 0.45)
    return img


def pr_plot(curves: Sequence[Curve], title: str = "Precision–recall") -> np.ndarray:
    """Precision (y) against recall (x), both in ``[0, 1]``; ``Curve.x`` is the recall,
    ``Curve.y`` the precision. Returns uint8[480, 640, 3] RGB."""
    return line_plot(curves, title=title, xlabel="recall (fraction of the faces found)",
                     ylabel="precision (fraction of detections that are faces)", legend="lower left")


def ced_plot(
    curves: Sequence[Curve], max_error: float = 0.2, title: str = "Cumulative error distribution"
) -> np.ndarray:
    """Share of images (y, ``[0, 1]``) with NME at most x (``[0, max_error]``); ``Curve.x``
    holds NME thresholds, ``Curve.y`` the fractions. Returns uint8[480, 640, 3] RGB."""
    return line_plot(
        curves, title=title, xlabel="NME (mean landmark error / inter-ocular distance)",
        ylabel="fraction of images with NME ≤ x", xlim=(0.0, max_error), ylim=(0.0, 1.0), legend="lower right",
    )


def roc_plot(
    curves: Sequence[Curve], max_false_positives: float, title: str = "ROC"
) -> np.ndarray:
    """True-positive rate (y, ``[0, 1]``) against the number of false positives (x,
    ``[0, max_false_positives]``), as FDDB plots it. Returns uint8[480, 640, 3] RGB."""
    return line_plot(
        curves, title=title, xlabel="false positives (count, all images)",
        ylabel="true positive rate (fraction of faces)", xlim=(0.0, float(max_false_positives)),
        ylim=(0.0, 1.0), legend="lower right",
    )


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8[H, W, 3] RGB image."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[:, :, ::-1]))
    if not ok:
        raise ValueError("cannot encode the image as PNG")
    return data.tobytes()


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8[H, W, 3] RGB image to ``path`` as PNG, atomically (raises OSError)."""
    write_atomically(path, encode_png(image))
