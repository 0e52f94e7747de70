"""The detection JSON: written by ``detect --json`` and ``evaluate``, read back for evaluation.

:func:`faces_to_json` and :func:`format_json` write it; :func:`read_predictions` reads
it into ``{path: Faces}``. Two layouts are accepted (the second is the one of
``shared/reference/*.json``; the first is what :func:`format_json` writes)::

    [{"path": "<event>/<file>.jpg", "width": W, "height": H,
      "faces": [{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x 5]}, ...]}, ...]

    {"detector": {...}, "images": [ ...the same list... ]}

and JSON Lines (``.jsonl``: one image entry per line), which :class:`PredictionsWriter`
writes for ``detect --json out.jsonl``. An entry may carry more keys (``annotated``:
the annotated copy written for it); readers ignore them.

Boxes and landmarks are in input-image pixels. Landmarks are in the order left eye, right
eye, nose, left mouth corner, right mouth corner ("left" = the image's left); they are
optional (Haar cascades have none). Written boxes and landmarks are rounded to 2 decimals;
scores are written at full precision (a float32 score as the float64 of the same value, which
JSON's shortest round-trip form reads back exactly), so that metrics computed from the file
equal those of the detections in memory: rounding would tie scores that differ (MTCNN scores
crowd just below 1.0) and move the AP.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterable, List, Mapping

import numpy as np

from mtcnn_jax import files
from mtcnn_jax.errors import FormatError, UserError
from mtcnn_jax.faces import Faces

# --------------------------------------------------------------------------- writing


def faces_to_json(path: str, image: np.ndarray, faces) -> dict:
    """One image's entry: ``{"path", "width", "height", "faces": [{"box", "score", "landmarks"}]}``.

    ``image``: the image the faces were found in (only its shape is used); ``faces``: a
    :class:`~mtcnn_jax.faces.Faces` or any ``(boxes, scores, landmarks)``. Faces without
    landmarks (None) get no ``"landmarks"`` key. Boxes and landmarks are rounded to 2
    decimals; scores are kept exactly (``float(np.float32(s))`` for a float32 score).
    """
    boxes = np.asarray(faces[0], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(faces[1], dtype=np.float64).reshape(-1)
    landmarks = None if faces[2] is None else np.asarray(faces[2], dtype=np.float64).reshape(-1, 5, 2)
    out = []
    for i, (box, score) in enumerate(zip(boxes, scores)):
        face = {"box": [round(float(v), 2) for v in box], "score": float(score)}  # full precision
        if landmarks is not None:
            face["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in landmarks[i]]
        out.append(face)
    return {"path": path, "width": int(image.shape[1]), "height": int(image.shape[0]), "faces": out}


def format_entry(entry: Mapping[str, Any]) -> str:
    """One :func:`faces_to_json` entry as :func:`format_json` lays it out: the image's keys on
    one line, then one line per face, indented for a list."""
    head = json.dumps({k: v for k, v in entry.items() if k != "faces"})[:-1]
    faces = ",\n".join("    " + json.dumps(face) for face in entry["faces"])
    return f'  {head}, "faces": [' + (f"\n{faces}\n  ]}}" if faces else "]}")


def format_json(results: List[dict]) -> str:
    """The JSON text of a list of :func:`faces_to_json` entries: one line per image header and one per face."""
    if not results:
        return "[]\n"
    return "[\n" + ",\n".join(format_entry(e) for e in results) + "\n]\n"


class PredictionsWriter:
    """Writes :func:`faces_to_json` entries as they come, so that a stopped run keeps every finished image.

    ``target``:

    * a ``.jsonl`` path: JSON Lines, one entry per line, each line written whole;
    * ``"-"``: the :func:`format_json` text on ``stream`` (stdout), entry by entry;
      :meth:`close` writes the closing bracket; so is a device or a pipe given as a
      path (``/dev/stdout``, a named pipe);
    * any other path: the :func:`format_json` text. The file is created (atomically,
      as ``[]``) when the writer is made, and after each :meth:`write` it is again a
      complete, valid JSON list: the new entry replaces the closing ``\n]\n`` and
      brings its own, in one write. A kill between two entries leaves a valid file with
      the entries written so far; a failed write (a full disk) is undone, leaving the
      file as it was, and raises ``OSError``.

    The finished file equals ``format_json`` of all entries, byte for byte.
    """

    def __init__(self, target: str | os.PathLike, stream=None):
        self.target = os.fspath(target)
        self.count = 0
        self._stream = stream
        self._own = None  # a stream this writer opened (a device or a pipe given as a path)
        self.failed = False  # a write raised: close() then only releases the file
        self._file = None
        self.lines = self.target != "-" and self.target.lower().endswith(".jsonl")
        if self.target != "-" and files.is_special(self.target):  # a device or a pipe: stream into it
            self._stream = self._own = open(self.target, "w", encoding="utf-8")
            self.target = "-"
        elif self.target != "-":
            files.write_atomically(self.target, "" if self.lines else "[]\n")
            self._file = open(self.target, "r+b", buffering=0)
            self._file.seek(0, os.SEEK_END)

    def write(self, entry: Mapping[str, Any]) -> None:
        try:
            self._write(entry)
        except OSError:
            self.failed = True
            raise
        self.count += 1

    def _write(self, entry: Mapping[str, Any]) -> None:
        if self.lines:
            self._append(json.dumps(entry) + "\n", rewind=0)
        elif self._file is None:
            self._stream.write(("[\n" if self.count == 0 else ",\n") + format_entry(entry))
            self._stream.flush()
        else:
            self._append(("[\n" if self.count == 0 else ",\n") + format_entry(entry) + "\n]\n", rewind=3)

    def _append(self, text: str, rewind: int) -> None:
        """Write ``text`` over the last ``rewind`` bytes of the file; on failure put the file back."""
        end = self._file.seek(0, os.SEEK_END)
        data = text.encode("utf-8")
        try:
            self._file.seek(end - rewind)
            written = self._file.write(data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError:
            with contextlib.suppress(OSError):
                self._file.truncate(end - rewind)
                self._file.seek(end - rewind)
                self._file.write(b"[]\n" if rewind and self.count == 0 else (b"\n]\n" if rewind else b""))
            raise

    def close(self) -> None:
        """Finish: the closing bracket on a stream; close the file. Safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.target == "-" and self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                if not self.failed:
                    stream.write("[]\n" if self.count == 0 else "\n]\n")
                    stream.flush()
            finally:
                if self._own is not None:
                    with contextlib.suppress(OSError) if self.failed else contextlib.nullcontext():
                        self._own.close()


# --------------------------------------------------------------------------- reading


def normalise_path(path: str) -> str:
    """``/`` separators, no leading ``./``: the key form used for matching image paths."""
    path = str(path).replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _faces(entry: Mapping[str, Any], source: str, where: str) -> Faces:
    faces = entry.get("faces")
    if not isinstance(faces, list):
        raise FormatError(source, None, f"{where}: 'faces' must be a list")
    n = len(faces)
    boxes = np.zeros((n, 4), np.float32)
    scores = np.zeros((n,), np.float64)
    landmarks = np.zeros((n, 5, 2), np.float32)
    with_landmarks = 0
    for i, face in enumerate(faces):
        try:
            boxes[i] = np.asarray(face["box"], np.float64).reshape(4)
            scores[i] = float(face["score"])
            if face.get("landmarks") is not None:
                landmarks[i] = np.asarray(face["landmarks"], np.float64).reshape(5, 2)
                with_landmarks += 1
        except (KeyError, TypeError, ValueError) as err:
            raise FormatError(
                source, None,
                f"{where}, face {i}: expected 'box' [x1, y1, x2, y2], 'score' s and optional "
                f"'landmarks' [[x, y] x 5] ({type(err).__name__}: {err})"
            ) from None
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise FormatError(source, None, f"{where}: a box or score is not finite")
    if 0 < with_landmarks < n:
        raise FormatError(source, None, f"{where}: some faces have landmarks and some do not")
    return Faces(boxes, scores, landmarks if with_landmarks == n else None)


def parse_predictions(obj: Any, source: str = "<predictions>") -> dict[str, Faces]:
    """Detections per image from a parsed JSON document (either layout, see module doc).

    Args:
      obj: the list of image entries, or a dict with an ``"images"`` list.
      source: named in error messages.

    Returns:
      ``{path: Faces}`` keyed by :func:`normalise_path` of each entry's ``"path"``, in file
      order: boxes float32[N, 4]; scores float64[N] (MTCNN scores crowd just below 1.0,
      and the official WIDER sampling compares them with ``1 - k/1000``); landmarks
      float32[N, 5, 2], or None where the faces carry none (an image with no face has
      float32[0, 5, 2]).

    Raises:
      FormatError: ``"<source>: image <k> (<path>)...: <reason>"`` on a malformed entry
        or a path listed twice.
    """
    if isinstance(obj, Mapping):
        obj = obj.get("images")
    if not isinstance(obj, list):
        raise FormatError(source, None, "expected a list of images or a dict with 'images'")
    out: dict[str, Faces] = {}
    for k, entry in enumerate(obj):
        if not isinstance(entry, Mapping) or "path" not in entry:
            raise FormatError(source, None, f"image entry {k} has no 'path'")
        path = normalise_path(entry["path"])
        where = f"image {k} ({path})"
        if path in out:
            raise FormatError(source, None, f"{where}: path listed twice")
        out[path] = _faces(entry, source, where)
    return out


def read_predictions(filename: str | os.PathLike) -> dict[str, Faces]:
    """Read a detection JSON file (either layout) or JSON Lines file (``.jsonl``); see
    :func:`parse_predictions`."""
    text = files.read_text(filename)
    if os.fspath(filename).lower().endswith(".jsonl"):
        entries = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise FormatError(filename, lineno, f"not valid JSON ({err})") from None
        return parse_predictions(entries, source=os.fspath(filename))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise FormatError(filename, None, f"not valid JSON ({err})") from None
    except RecursionError:
        raise FormatError(filename, None, "not valid JSON (nested too deeply)") from None
    return parse_predictions(obj, source=os.fspath(filename))


def detector_library(filename: str | os.PathLike) -> str | None:
    """The ``detector.library`` a predictions file of the dict layout names, else None (also when unreadable)."""
    try:
        with open(filename, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(info, dict) and isinstance(info.get("detector"), dict):
        lib = info["detector"].get("library")
        if lib:
            return str(lib)
    return None


def match_paths(pred_paths: Iterable[str], gt_paths: Iterable[str]) -> dict[str, str]:
    """Map prediction paths to ground-truth paths.

    A prediction path matches the ground-truth path equal to it or, failing that, the one
    that is its suffix at a ``/`` boundary (so ``/data/wider/images/0--Parade/a.jpg`` matches
    ``0--Parade/a.jpg``). Both sides are compared in :func:`normalise_path` form.

    Returns:
      ``{prediction path: ground-truth path}`` for the paths that match exactly one
      ground-truth path; unmatched prediction paths are left out.

    Raises:
      UserError: if a prediction path matches several ground-truth paths, or two
        prediction paths match the same one.
    """
    gt = {normalise_path(p): p for p in gt_paths}
    by_name: dict[str, list[str]] = {}
    for key in gt:
        by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for p in pred_paths:
        key = normalise_path(p)
        if key in gt:
            hit = key
        else:
            cands = [g for g in by_name.get(key.rsplit("/", 1)[-1], []) if key.endswith("/" + g)]
            if not cands:
                continue
            if len(cands) > 1:
                raise UserError(f"prediction path {p!r} matches several ground-truth paths {cands}")
            hit = cands[0]
        if hit in taken:
            raise UserError(f"prediction paths {taken[hit]!r} and {p!r} both match {gt[hit]!r}")
        taken[hit] = p
        out[p] = gt[hit]
    return out


def align_to_ground_truth(
    predictions: Mapping[str, Faces], gt_paths: Iterable[str]
) -> tuple[dict[str, Faces], list[str]]:
    """Re-key predictions by ground-truth path (see :func:`match_paths`).

    Returns:
      ``(by_gt_path, unmatched)``: the detections keyed by the ground-truth path they
      belong to, and the prediction paths that match no ground-truth path.
    """
    mapping = match_paths(predictions.keys(), gt_paths)
    aligned = {mapping[p]: d for p, d in predictions.items() if p in mapping}
    unmatched = [p for p in predictions if p not in mapping]
    return aligned, unmatched
