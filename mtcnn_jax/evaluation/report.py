"""A visual report: which faces each detector found or missed and which detections are
false, drawn on the images, laid out as a grid, with the numbers in an HTML page.

:func:`build_report` makes every file of ``mtcnn-jax report`` (the page, the grid, the
rows, the PR curves) from the detections and the ground truth; the pieces it uses
(:func:`classify`, :func:`draw`, :func:`panel`, :func:`grid`, :func:`select`,
:func:`html_page`) are usable on their own.

Classification follows the WIDER FACE rules of :mod:`mtcnn_jax.evaluation.wider_ap` for one
face-size setting: detections in descending score order, each matched to the face of
highest IoU (``+1``-pixel areas); at IoU >= 0.5 a match to a counted face recalls it
(once), a match to an ignored face is ignored; every other detection is a false
positive. A counted face no detection recalls is a miss.

Colours (RGB): found face and true detection green, missed face red, false positive
orange, ignored faces and detections grey.
"""

from __future__ import annotations

import html
import os
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from mtcnn_jax import images
from mtcnn_jax.boxes import iou_matrix
from mtcnn_jax.data.wider import WiderRecord
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.evaluation import plots
from mtcnn_jax.evaluation.runner import wider_metrics
from mtcnn_jax.evaluation.wider_ap import DEFAULT_SIZES, counted_faces, match_image, setting_name
from mtcnn_jax.faces import Faces

#: Width in pixels of one panel in a row image, and in the grid.
PANEL_WIDTH = 480
GRID_PANEL_WIDTH = 320

#: Status codes of detections and faces.
TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 0, 1, 2
FOUND, MISSED = 0, 1  # faces; IGNORED as above

GREEN = (0, 200, 0)
RED = (230, 0, 0)
ORANGE = (255, 140, 0)
GREY = (150, 150, 150)
BLUE = (0, 90, 255)
DETECTION_COLOURS = {TRUE_POSITIVE: GREEN, FALSE_POSITIVE: ORANGE, IGNORED: GREY}
FACE_COLOURS = {FOUND: GREEN, MISSED: RED, IGNORED: GREY}


class Marks(NamedTuple):
    """How one image's detections and faces fare.

    detections: int8[N] per detection in the order given: TRUE_POSITIVE, FALSE_POSITIVE
      or IGNORED (matched an ignored face, or scored below the display threshold).
    faces: int8[M] per ground-truth face: FOUND, MISSED or IGNORED (not counted in the
      setting).
    """

    detections: np.ndarray
    faces: np.ndarray

    @property
    def n_false_positives(self) -> int:
        return int(np.sum(self.detections == FALSE_POSITIVE))

    @property
    def n_missed(self) -> int:
        return int(np.sum(self.faces == MISSED))

    @property
    def n_found(self) -> int:
        return int(np.sum(self.faces == FOUND))


def classify(
    det: Optional[Faces], record: WiderRecord, min_size: float = 1, min_score: float = -np.inf
) -> Marks:
    """Mark an image's detections and faces (module docstring).

    Args:
      det: the image's detections (boxes ``x1, y1, x2, y2``), or None for none.
      record: its ground truth.
      min_size: faces count when valid and ``min(w, h) >= min_size``.
      min_score: detections scoring below it are left out (marked IGNORED): the operating
        point shown.
    """
    counted = counted_faces(record, min_size)
    n_faces = len(record)
    if det is None or len(det.scores) == 0:
        faces = np.where(counted, MISSED, IGNORED).astype(np.int8)
        return Marks(np.zeros(0 if det is None else len(det.scores), np.int8), faces)
    scores = np.asarray(det.scores, np.float64)
    shown = np.flatnonzero(scores >= min_score)
    status = np.full(len(scores), IGNORED, np.int8)
    found = np.zeros(n_faces, bool)
    if shown.size:
        order = shown[np.argsort(-scores[shown], kind="stable")]  # what match_image sorts to
        _, counts, recalls = match_image(det.boxes[order], scores[order], record.boxes, counted)
        status[order] = np.where(recalls, TRUE_POSITIVE, np.where(counts, FALSE_POSITIVE, IGNORED))
        if n_faces and recalls.any():
            iou = iou_matrix(np.asarray(det.boxes)[order][recalls], record.boxes, inclusive=True)
            found[np.argmax(iou, axis=1)] = True
    faces = np.where(~counted, IGNORED, np.where(found, FOUND, MISSED)).astype(np.int8)
    return Marks(status, faces)


def draw(image: np.ndarray, record: WiderRecord, det: Optional[Faces], marks: Marks) -> np.ndarray:
    """A copy of ``image`` (uint8[H, W, 3] RGB) with the ground-truth faces drawn as thin
    boxes in their status colour and the detections as thick boxes in theirs (ignored
    detections thin and grey)."""
    out = np.ascontiguousarray(image).copy()
    thick = max(1, round(min(out.shape[:2]) / 400))
    for box, s in zip(np.asarray(record.boxes, np.float64), marks.faces):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), FACE_COLOURS[int(s)], thick, cv2.LINE_8)
    if det is not None:
        for box, s in zip(np.asarray(det.boxes, np.float64).reshape(-1, 4), marks.detections):
            if not np.isfinite(box).all():
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, -(1 << 20), 1 << 20))
            if s == IGNORED:
                cv2.rectangle(out, (x1, y1), (x2, y2), GREY, thick, cv2.LINE_8)
            else:
                cv2.rectangle(out, (x1 - thick, y1 - thick), (x2 + thick, y2 + thick),
                              DETECTION_COLOURS[int(s)], 2 * thick, cv2.LINE_8)
    return out


def draw_ground_truth(image: np.ndarray, record: WiderRecord, min_size: float = 1) -> np.ndarray:
    """A copy of ``image`` with the faces that count in the setting in blue (thick) and the
    ignored ones in grey (thin)."""
    out = np.ascontiguousarray(image).copy()
    thick = max(1, round(min(out.shape[:2]) / 400))
    counted = counted_faces(record, min_size)
    for box, c in zip(np.asarray(record.boxes, np.float64), counted):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BLUE if c else GREY, 2 * thick if c else thick, cv2.LINE_8)
    return out


def panel(image: np.ndarray, caption: str, width: int = 480) -> np.ndarray:
    """``image`` scaled to ``width`` pixels wide (aspect kept) under a white caption bar
    (ASCII text). Returns uint8[h + 24, width, 3] RGB."""
    h, w = image.shape[:2]
    height = max(1, round(h * width / max(w, 1)))
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    scaled = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interp)
    bar = np.full((24, width, 3), 255, np.uint8)
    cv2.putText(bar, caption[:80], (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, scaled], axis=0)


def grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 6) -> np.ndarray:
    """Lay panels out in rows (each row's panels side by side, rows stacked), on white.
    Returns uint8[H, W, 3] RGB."""
    heights = [max(p.shape[0] for p in row) for row in rows]
    widths = [sum(p.shape[1] for p in row) + gap * (len(row) - 1) for row in rows]
    out = np.full((sum(heights) + gap * (len(rows) - 1), max(widths), 3), 255, np.uint8)
    y = 0
    for row, h in zip(rows, heights):
        x = 0
        for p in row:
            out[y : y + p.shape[0], x : x + p.shape[1]] = p
            x += p.shape[1] + gap
        y += h + gap
    return out


def select(
    records: Sequence[WiderRecord],
    marks: Mapping[str, Marks],
    n: int,
    how: str = "spread",
) -> list[int]:
    """Indices of ``n`` records to show.

    ``"spread"``: evenly over the list; ``"worst"``: most misses + false positives first
    (ties in list order); ``"first"``: the first n.
    """
    m = len(records)
    n = min(n, m)
    if n <= 0:
        return []
    if how == "first":
        return list(range(n))
    if how == "spread":
        return sorted(set(np.round(np.linspace(0, m - 1, n)).astype(int).tolist()))
    if how == "worst":
        errors = [-(marks[r.path].n_missed + marks[r.path].n_false_positives) for r in records]
        return sorted(np.argsort(errors, kind="stable")[:n].tolist())
    raise ValueError(f"how must be 'spread', 'worst' or 'first', got {how!r}")


def html_page(
    title: str,
    metrics: Sequence[tuple],
    columns: Sequence[str],
    figures: Sequence[tuple],
    notes: Sequence[str] = (),
) -> str:
    """A self-contained HTML page (no scripts, no external resources).

    Args:
      title: page title.
      metrics: table rows (tuples of cells), headed by ``columns``.
      figures: ``(relative image path, caption)`` pairs, shown in order.
      notes: paragraphs of plain text.

    All text is HTML-escaped; image paths are used as given (relative, chosen by the caller).
    """
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in metrics)
    figs = "".join(
        f'<figure><img src="{e(src, quote=True)}" alt="{e(cap, quote=True)}"><figcaption>{e(cap)}'
        "</figcaption></figure>"
        for src, cap in figures
    )
    text = "".join(f"<p>{e(n)}</p>" for n in notes)
    legend = ('<p class="legend"><span style="color:#00c800">&#9632; found face / true detection</span> '
              '<span style="color:#e60000">&#9632; missed face</span> '
              '<span style="color:#ff8c00">&#9632; false positive</span> '
              '<span style="color:#969696">&#9632; ignored (invalid or outside the setting)</span> '
              "&mdash; thin boxes: ground truth, thick boxes: detections</p>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "figure{margin:1em 0}</style></head><body>"
        f"<h1>{e(title)}</h1><table><tr>{head}</tr>{body}</table>{text}{legend}{figs}"
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- the whole report


class Report(NamedTuple):
    """What :func:`build_report` made.

    files: ``{relative path: bytes}`` in the order to write them (``pr_curve.png``,
      ``rows/NNN.jpg``, ``grid.png`` when a row was drawn, ``report.html``).
    n_shown: number of image rows.
    n_unreadable: chosen images that could not be read (left out).
    """

    files: Dict[str, bytes]
    n_shown: int
    n_unreadable: int


def _encode_jpeg(image: np.ndarray, name: str) -> bytes:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise UserError(f"cannot encode {name}")
    return data.tobytes()


def build_report(
    records: Sequence[WiderRecord],
    detectors: Sequence[Tuple[str, Mapping[str, Faces]]],
    images_dir: str,
    gt_name: str,
    min_size: float = 1,
    min_score: Optional[float] = None,
    count: int = 12,
    how: str = "spread",
    report: Optional[Callable[[str], None]] = None,
) -> Report:
    """The files of ``mtcnn-jax report`` (see :mod:`mtcnn_jax.commands.report`).

    Args:
      records: the ground truth; image paths relative to ``images_dir``.
      detectors: ``(name, {ground-truth path: Faces})`` for the detections shown, then
        optionally a peer's shown beside them (else the ground truth is shown beside).
      gt_name: the ground truth's name in the page title.
      min_size: faces count when valid and their shorter side is >= ``min_size`` px.
      min_score: detections scoring below it are drawn grey and not counted (None: none).
      count, how: which images get a row (:func:`select` on the first detector's marks).
      report: called with ``"<path>: <reason>"`` for each chosen image that cannot be read.

    Returns:
      a :class:`Report`; nothing is written.
    """
    records = list(records)
    floor = -np.inf if min_score is None else min_score
    sizes = tuple(sorted(set(DEFAULT_SIZES) | {max(min_size, 1)}))
    shown = setting_name(max(min_size, 1))
    table, curves, marks_by = [], [], {}
    for label, preds in detectors:
        settings, pr = wider_metrics(preds, records, sizes)
        marks = {r.path: classify(preds.get(r.path), r, min_size, floor) for r in records}
        marks_by[label] = marks
        found = sum(m.n_found for m in marks.values())
        missed = sum(m.n_missed for m in marks.values())
        fps = sum(m.n_false_positives for m in marks.values())
        table.append((label, *(f"{settings[setting_name(s)]['ap']:.4f}" for s in DEFAULT_SIZES),
                      f"{found}/{found + missed}", fps))
        curves.append(plots.Curve(f"{label}: AP {settings[shown]['ap']:.3f}", *pr[shown]))
    columns = ("detector", "AP all", "AP >= 20 px", "AP >= 40 px",
               f"faces found ({shown})", f"false positives ({shown})")
    counted = "all faces" if shown == "all" else f"faces {shown.replace('>=', '≥ ')} px"
    files = {"pr_curve.png": plots.encode_png(plots.pr_plot(curves, title=f"WIDER FACE precision–recall, {counted}"))}

    name = detectors[0][0]
    with_peer = len(detectors) > 1
    figures, grid_rows, n_unreadable = [], [], 0
    for k, i in enumerate(select(records, marks_by[name], count, how)):
        rec = records[i]
        full = os.path.join(images_dir, *rec.path.split("/"))
        try:
            with images.quiet_native_stderr():
                image = images.load_image(full)
        except ImageError as err:
            n_unreadable += 1
            if report is not None:
                report(f"{full}: {err.reason}")
            continue
        panels = []
        for label, preds in detectors:
            m = marks_by[label][rec.path]
            caption = f"{label}: {m.n_found}/{m.n_found + m.n_missed} found, {m.n_false_positives} false"
            panels.append((draw(image, rec, preds.get(rec.path), m), caption))
        if not with_peer:
            n_counted = int(np.sum(counted_faces(rec, min_size)))
            panels.append((draw_ground_truth(image, rec, min_size), f"ground truth: {n_counted} faces ({shown})"))
        row = [panel(im, cap, PANEL_WIDTH) for im, cap in panels]
        grid_rows.append([panel(im, cap, GRID_PANEL_WIDTH) for im, cap in panels])
        rel = f"rows/{k:03d}.jpg"
        files[rel] = _encode_jpeg(grid([row]), rel)
        figures.append((rel, rec.path))
    if grid_rows:
        files["grid.png"] = plots.encode_png(grid(grid_rows))

    title = f"{name} on {gt_name}" + (f", beside {detectors[1][0]}" if with_peer else "")
    notes = [
        f"{len(records)} images; WIDER FACE official protocol (IoU >= 0.5 with +1-pixel areas, "
        "invalid faces and faces outside the setting ignored), AP with the official 1,000-threshold sampling.",
        f"Images shown: {len(figures)} ({how}); faces count in the setting '{shown}'"
        + ("" if min_score is None else f"; detections scoring below {min_score:g} are grey and not counted")
        + ".",
    ]
    if n_unreadable:
        notes.append(f"{n_unreadable} image(s) could not be read and are not shown.")
    page = html_page(title, table, columns, [("pr_curve.png", "precision-recall")] + figures, notes)
    files["report.html"] = page.encode("utf-8")
    return Report(files, len(figures), n_unreadable)
