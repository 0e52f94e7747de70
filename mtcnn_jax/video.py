"""Faces in videos and camera streams: frames decoded by OpenCV, detected in batches, one record per frame.

* :class:`VideoSource` reads the frames of a video file (any container and codec this
  OpenCV build's FFmpeg decodes) or a camera (an index, as ``cv2.VideoCapture`` takes
  it) as RGB arrays with their index and time, optionally every N-th frame only. A file
  or camera that cannot be opened is one :class:`~mtcnn_jax.errors.ImageError` line; the
  messages OpenCV and FFmpeg print on their own are kept off the terminal.
* :func:`detect_frames` sends the frames through the detector in batches
  (:meth:`mtcnn_jax.MTCNN.detect` on a list: the P-Net tiles and the crops of a batch go
  through the networks together), with the rotation search of :mod:`mtcnn_jax.rotations`
  and the ``keep`` selection of :mod:`mtcnn_jax.inputs` when asked, and yields each frame
  with its faces, in order.
* :func:`frame_entry` is a frame's JSON record, the ``detect --json`` entry of an image
  with ``frame`` (0-based index in the video) and ``time`` (seconds) added.
* :class:`LandmarkSmoother` (optional) smooths each face's box and landmarks across frames
  with a One Euro filter, against the frame-to-frame jitter of a detector run on each
  frame alone.
* :class:`VideoWriter` writes an annotated video atomically (a hidden temporary file
  beside the target, renamed when it is finished).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from mtcnn_jax import files, images, inputs
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.evaluation.predictions import faces_to_json

#: File extensions taken for videos (compared in lower case) when a path is given directly.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
#: The codec written for each container of an annotated video (what OpenCV's FFmpeg writes
#: without extra libraries); other extensions are written as ``.mp4``.
WRITE_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
#: Frames per detector call for a file (a camera is read one frame at a time: no latency).
BATCH = 8


def is_video_name(name: str) -> bool:
    """True when ``name`` ends with one of :data:`VIDEO_EXTENSIONS` (any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in VIDEO_EXTENSIONS


def camera_index(text: str) -> Optional[int]:
    """The camera index a command-line PATH names (``"0"``, ``"1"``, ...), or None.

    A string of ASCII digits that is not an existing file or folder is a camera index.
    """
    if isinstance(text, str) and text.isascii() and text.isdigit() and not os.path.exists(text):
        return int(text)
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """OpenCV's log silenced and what FFmpeg / V4L2 print on file descriptor 2 discarded."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        with images.quiet_native_stderr():
            yield
    finally:
        logging.setLogLevel(level)


class Frame(NamedTuple):
    """A decoded frame: ``index`` (0-based, counting every frame of the video), ``time``
    (seconds from the start: the container's timestamp for a file, the wall clock since the
    first frame for a camera) and ``image`` (uint8[H, W, 3] RGB)."""

    index: int
    time: float
    image: np.ndarray


class VideoSource:
    """The frames of a video file or a camera, as :class:`Frame` s (iterate over it).

    Args:
      source: a video file path, or a camera index (int).
      every: keep every ``every``-th frame (0, every, 2 every, ...); the others are
        grabbed but not converted. Indices and times stay those of the whole video.
      max_pixels: refuse frames larger than this (width × height), as for images.
      name: how messages name the source (default: the path, or ``camera N``).

    Attributes: ``width``, ``height``; ``fps`` (None when the source does not say);
    ``frame_count`` (frames in the file, None when unknown and for cameras);
    ``expected`` (frames that will be yielded, None when unknown).

    Raises :class:`~mtcnn_jax.errors.ImageError` (``"<name>: <reason>"``, one line) when the
    source cannot be opened or gives no frame.
    """

    def __init__(self, source: Union[str, "os.PathLike[str]", int], every: int = 1,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS, name: Optional[str] = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserError(f"every must be a whole number >= 1, got {every!r}")
        self.every = every
        self.is_camera = isinstance(source, int) and not isinstance(source, bool)
        self.name = name or (f"camera {source}" if self.is_camera else os.fspath(source))  # type: ignore[arg-type]
        if not self.is_camera:
            path = os.fspath(source)  # type: ignore[arg-type]
            if not os.path.exists(path):
                raise ImageError(self.name, "no such file")
            if os.path.isdir(path):
                raise ImageError(self.name, "is a directory")
        with _quiet():
            # FFmpeg for files: OpenCV's default would read a name holding '%' as an image sequence.
            cap = cv2.VideoCapture(source) if self.is_camera else cv2.VideoCapture(os.fspath(source), cv2.CAP_FFMPEG)
            opened = cap.isOpened()
        if not opened:
            cap.release()
            raise ImageError(self.name, "cannot open (no camera with this index, or it is in use)"
                             if self.is_camera else "cannot open this video (not a video, or a codec this "
                             "OpenCV build cannot decode)")
        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.width * self.height > max_pixels:
            self.close()
            raise ImageError(self.name, f"frames too large: {self.width}x{self.height} pixels "
                             f"({self.width * self.height / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:.1f})")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps: Optional[float] = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count: Optional[int] = None if self.is_camera or not (math.isfinite(count) and count > 0) else int(count)
        self.expected: Optional[int] = None if self.frame_count is None else -(-self.frame_count // every)
        self._started = False

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise RuntimeError("a VideoSource is read once")
        self._started = True
        cap, index, start, last = self._cap, 0, None, -1.0
        while cap is not None:
            with _quiet():
                ok = cap.grab()
            if not ok:
                if index == 0:
                    raise ImageError(self.name, "gives no frames" if self.is_camera else "no frame could be decoded")
                return
            if index % self.every == 0:
                with _quiet():
                    ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    return
                if self.is_camera:
                    now = time.monotonic()
                    start = now if start is None else start
                    t = now - start
                else:
                    t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    if not (math.isfinite(t) and t > last) and index > 0:  # no timestamps: count frames
                        t = index / self.fps if self.fps else float(index)
                last = t
                yield Frame(index, t, _to_rgb(bgr))
            index += 1

    def close(self) -> None:
        """Release the file or camera (safe to call twice)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return np.repeat(bgr[:, :, None], 3, axis=2)
    if bgr.shape[2] == 4:
        return np.ascontiguousarray(bgr[:, :, 2::-1])
    return np.ascontiguousarray(bgr[:, :, ::-1])


def detect_frames(
    detector: Any,
    frames: Iterable[Frame],
    batch: int = BATCH,
    keep: str = "all",
    angles: Optional[Sequence[float]] = None,
) -> Iterator[Tuple[Frame, Any]]:
    """``(frame, faces)`` for each frame, in order, the frames sent to ``detector`` ``batch`` at a time.

    ``faces``: what ``detector.detect`` returns for the frame (:class:`~mtcnn_jax.faces.Faces`),
    or :class:`~mtcnn_jax.rotations.RotatedFaces` when ``angles`` are given (the rotation search,
    :func:`mtcnn_jax.rotations.detect_rotated`); then reduced by ``keep``
    (:func:`mtcnn_jax.inputs.select`). A batch is detected when it is full or the frames end,
    so a stopped stream loses at most the frames of the batch being filled.
    """
    inputs.check_keep(keep)
    if angles is not None:
        from mtcnn_jax import rotations  # noqa: PLC0415

    def run(buffer: List[Frame]) -> Iterator[Tuple[Frame, Any]]:
        ims = [f.image for f in buffer]
        found = detector.detect(ims) if angles is None else rotations.detect_rotated(detector, ims, angles)
        for frame, faces in zip(buffer, found):
            yield frame, inputs.select(faces, keep)

    buffer: List[Frame] = []
    for frame in frames:
        buffer.append(frame)
        if len(buffer) >= max(1, batch):
            yield from run(buffer)
            buffer = []
    if buffer:
        yield from run(buffer)


def frame_entry(name: str, frame: Frame, faces: Any) -> dict:
    """A frame's JSON record: ``{"path": name, "frame": index, "time": seconds (3 decimals),
    "width", "height", "faces": [...]}``, the faces as :func:`mtcnn_jax.evaluation.predictions.faces_to_json`
    writes them (plus ``"angle"`` with the rotation search)."""
    entry = faces_to_json(name, frame.image, faces)
    record = {"path": entry["path"], "frame": int(frame.index), "time": round(float(frame.time), 3),
              "width": entry["width"], "height": entry["height"], "faces": entry["faces"]}
    if hasattr(faces, "angles"):
        from mtcnn_jax.rotations import add_angles  # noqa: PLC0415

        add_angles(record, faces)
    return record


# --------------------------------------------------------------------------- smoothing


class LandmarkSmoother:
    """Smooths each face's box and landmarks across the frames of one video (off by default).

    A detector run on each frame alone moves the points of a face that does not move from
    frame to frame (0.3-0.4 px RMS on the noisy still clips of ``benchmarks/README.md``). Faces are
    followed from frame to frame (a face continues the track whose last box overlaps it most,
    IoU >= ``match_iou``); each track's 14 numbers (box and five points) go through a One Euro
    filter (Casiez, Roussel and Vogel, CHI 2012): an exponential smoothing whose cut-off
    frequency rises with the speed, ``min_cutoff + beta × speed``, the speed measured in face
    sizes (the box's geometric mean side) per second, so that a still face is smoothed hard
    and a moving one follows with little lag. A face seen for the first time, or after a track
    was lost for more than ``max_gap`` seconds, is passed as it is. Scores are not changed.
    The defaults (0.3 Hz, β 10) halve the jitter of a still face for a lag of about a pixel
    on a face moving 120 px/s (``benchmarks/README.md``, ``video_fps.py``).

    Call it with each frame's time (seconds) and faces, in order; it returns the same type.
    """

    def __init__(self, min_cutoff: float = 0.3, beta: float = 10.0, d_cutoff: float = 1.0,
                 match_iou: float = 0.3, max_gap: float = 0.5):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.match_iou, self.max_gap = float(match_iou), float(max_gap)
        # each track: [last raw box, smoothed values float64[14], smoothed speed float64[14], time]
        self._tracks: List[list] = []

    @staticmethod
    def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, t: float, faces: Any) -> Any:
        boxes = np.asarray(faces[0], np.float64).reshape(-1, 4)
        if faces[2] is None or len(boxes) == 0:
            self._tracks = [tr for tr in self._tracks if t - tr[3] <= self.max_gap]
            return faces
        points = np.asarray(faces[2], np.float64).reshape(-1, 5, 2)
        values = np.concatenate([boxes, points.reshape(-1, 10)], axis=1)  # [N, 14]
        self._tracks = [tr for tr in self._tracks if t - tr[3] <= self.max_gap]
        pairs = []
        if self._tracks:
            last = np.stack([tr[0] for tr in self._tracks])
            iou = _iou(boxes, last)
            pairs = sorted(((iou[i, j], i, j) for i in range(len(boxes)) for j in range(len(last))
                            if iou[i, j] >= self.match_iou), reverse=True)
        taken_faces, taken_tracks, match = set(), set(), {}
        for _, i, j in pairs:
            if i not in taken_faces and j not in taken_tracks:
                taken_faces.add(i)
                taken_tracks.add(j)
                match[i] = j
        out = values.copy()
        new_tracks = []
        for i in range(len(boxes)):
            j = match.get(i)
            if j is None:
                new_tracks.append([boxes[i], values[i].copy(), np.zeros(14), t])
                continue
            _, prev, dprev, t_prev = self._tracks[j]
            dt = t - t_prev if t > t_prev else 1.0 / 30.0
            size = math.sqrt(max(1.0, (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])))
            speed = (values[i] - prev) / dt
            dhat = dprev + self._alpha(np.full(14, self.d_cutoff), dt) * (speed - dprev)
            cutoff = self.min_cutoff + self.beta * np.abs(dhat) / size
            smoothed = prev + self._alpha(cutoff, dt) * (values[i] - prev)
            out[i] = smoothed
            new_tracks.append([boxes[i], smoothed, dhat, t])
        self._tracks = new_tracks + [tr for j, tr in enumerate(self._tracks) if j not in taken_tracks]
        dtype = np.asarray(faces[0]).dtype if np.asarray(faces[0]).dtype.kind == "f" else np.float32
        new = [out[:, :4].astype(dtype), faces[1], out[:, 4:].reshape(-1, 5, 2).astype(dtype), *faces[3:]]
        return type(faces)(*new) if hasattr(faces, "_fields") else tuple(new)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of half-open boxes ``a`` [N, 4] × ``b`` [M, 4]."""
    from mtcnn_jax.boxes import iou_matrix  # noqa: PLC0415

    return iou_matrix(a, b, "union", inclusive=False)


def jitter(landmarks: np.ndarray) -> float:
    """Frame-to-frame jitter of one face's landmarks ``float[T, 5, 2]``: the RMS over frames and
    points of the distance between a point and its mean position, in pixels (what a still face
    should have none of)."""
    pts = np.asarray(landmarks, np.float64).reshape(len(landmarks), -1, 2)
    return float(np.sqrt(np.mean(np.sum((pts - pts.mean(axis=0)) ** 2, axis=2))))


# --------------------------------------------------------------------------- writing


def output_extension(name: str) -> str:
    """The extension an annotated copy of the video ``name`` is written with: its own when
    :data:`WRITE_CODECS` has a codec for it, else ``.mp4``."""
    ext = os.path.splitext(name)[1].lower()
    return ext if ext in WRITE_CODECS else ".mp4"


class VideoWriter:
    """An annotated video, written atomically: frames go to a hidden temporary file beside
    ``path`` (same extension, so that the container is right), which :meth:`close` renames
    onto ``path``; :meth:`discard` removes it instead. The codec follows the extension
    (:data:`WRITE_CODECS`). Raises ``OSError`` when OpenCV cannot open the file for writing.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], fps: float, size: Tuple[int, int]):
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in WRITE_CODECS:
            raise OSError(f"{self.path}: cannot write a video with the extension {ext!r} "
                          f"(one of {', '.join(WRITE_CODECS)})")
        self.size = (int(size[0]), int(size[1]))
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(files.atomic_path(self.path, suffix=ext))
        with _quiet():
            self._writer = cv2.VideoWriter(os.fspath(self._tmp), cv2.VideoWriter_fourcc(*WRITE_CODECS[ext]),
                                           float(fps), self.size)
            ok = self._writer.isOpened()
        if not ok:
            self.discard()
            raise OSError(f"{self.path}: OpenCV cannot write {WRITE_CODECS[ext]} video here")

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame (of the writer's size)."""
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the video {self.size[0]}x{self.size[1]}")
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.count += 1

    def close(self) -> str:
        """Finish the file and put it in place; returns its path."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            self._stack.close()
        return self.path

    def discard(self) -> None:
        """Stop writing and remove the temporary file; ``path`` is left as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        err = OSError("discarded")
        self._stack.__exit__(OSError, err, None)  # atomic_path removes its temporary file
        self._stack = contextlib.ExitStack()
