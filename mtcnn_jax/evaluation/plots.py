"""Curves drawn with OpenCV: precision-recall (WIDER FACE), cumulative error distribution
(landmarks) and ROC (FDDB), as RGB images, without matplotlib.

Every function returns ``uint8[H, W, 3]`` RGB; :func:`write_png` saves one. The plot area
maps data ``(x, y)`` linearly onto pixels with ``y`` growing upwards (see
:func:`data_to_pixels`). Non-finite points are left out of a curve (a curve is broken
there), so NaN-padded arrays can be passed as they are.
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

    label: legend text (ASCII; OpenCV's Hershey fonts have no other glyphs).
    x, y: float[K] data points, drawn joined in the given order.
    colour: RGB, or None for the next colour of :data:`PALETTE`.
    """

    label: str
    x: np.ndarray
    y: np.ndarray
    colour: tuple | None = None


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
      title, xlabel, ylabel: ASCII text.
      xlim, ylim: data ranges shown, ``(low, high)`` with ``low < high``.
      size: ``(width, height)`` of the image in pixels.
      legend: ``"lower left"``, ``"lower right"``, ``"upper left"`` or ``"upper right"``.

    Returns:
      uint8[height, width, 3] RGB.
    """
    width, height = int(size[0]), int(size[1])
    if not (xlim[0] < xlim[1] and ylim[0] < ylim[1]):
        raise ValueError(f"empty axis range xlim={xlim}, ylim={ylim}")
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    frame = Frame(70, 40 if title else 20, width - 20, height - 55, tuple(xlim), tuple(ylim))
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


def pr_plot(curves: Sequence[Curve], title: str = "Precision-recall") -> np.ndarray:
    """Precision (y) against recall (x), both in ``[0, 1]``; ``Curve.x`` is the recall,
    ``Curve.y`` the precision. Returns uint8[480, 640, 3] RGB."""
    return line_plot(curves, title=title, xlabel="recall", ylabel="precision", legend="lower left")


def ced_plot(
    curves: Sequence[Curve], max_error: float = 0.2, title: str = "Cumulative error distribution"
) -> np.ndarray:
    """Share of images (y, ``[0, 1]``) with NME at most x (``[0, max_error]``); ``Curve.x``
    holds NME thresholds, ``Curve.y`` the fractions. Returns uint8[480, 640, 3] RGB."""
    return line_plot(
        curves, title=title, xlabel="NME (inter-ocular)", ylabel="fraction of images",
        xlim=(0.0, max_error), ylim=(0.0, 1.0), legend="lower right",
    )


def roc_plot(
    curves: Sequence[Curve], max_false_positives: float, title: str = "ROC"
) -> np.ndarray:
    """True-positive rate (y, ``[0, 1]``) against the number of false positives (x,
    ``[0, max_false_positives]``), as FDDB plots it. Returns uint8[480, 640, 3] RGB."""
    return line_plot(
        curves, title=title, xlabel="false positives", ylabel="true positive rate",
        xlim=(0.0, float(max_false_positives)), ylim=(0.0, 1.0), legend="lower right",
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
