"""Videos and cameras: ``mtcnn-jax detect clip.mp4`` on clips made here from the bundled photo.

The clips pan and zoom over ``mtcnn_jax/assets/astronaut.jpg`` (a real photo, public
domain): frame k shows the window ``x0 = 40 + 6k, y0 = 30 + 2k`` of size ``(400 - 8k) ×
(300 - 6k)`` (4:3) resized to 320 × 240, so the face found in the photo must appear at
``(p - (x0, y0)) × 320 / (400 - 8k)`` in frame k. They are written with OpenCV's
VideoWriter (MPEG-4 Part 2, ``mp4v``, or MJPEG in .avi), which this OpenCV build both
writes and reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax import cli, video
from mtcnn_jax.errors import ImageError, UserError

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"
N_FRAMES, FPS, SIZE = 12, 10.0, (320, 240)


def window(k: int):
    """Frame k's window of the photo: ``(x0, y0, width, height)``."""
    return 40 + 6 * k, 30 + 2 * k, 400 - 8 * k, 300 - 6 * k


def write_clip(path: Path, frames_bgr, fps: float = FPS, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} video")
    for frame in frames_bgr:
        writer.write(frame)
    writer.release()
    return path


def pan_frames():
    photo = cv2.imread(str(ASTRONAUT))
    out = []
    for k in range(N_FRAMES):
        x0, y0, w, h = window(k)
        out.append(cv2.resize(photo[y0 : y0 + h, x0 : x0 + w], SIZE, interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", pan_frames())


@pytest.fixture(scope="module")
def photo_face():
    """The face found in the photo itself: (box [4], landmarks [5, 2])."""
    from mtcnn_jax import MTCNN, load_image

    faces = MTCNN().detect(load_image(ASTRONAUT))
    assert len(faces.boxes) == 1
    return faces.boxes[0].astype(np.float64), faces.landmarks[0].astype(np.float64)


def expected_in_frame(k: int, box, landmarks):
    """Where the photo's face lies in frame k (boxes: edges; landmarks: pixel centres)."""
    x0, y0, w, _ = window(k)
    s = SIZE[0] / w
    b = (np.asarray(box) - [x0, y0, x0, y0]) * s
    p = (np.asarray(landmarks) + 0.5 - [x0, y0]) * s - 0.5
    return b, p


def iou(a, b) -> float:
    """IoU of two half-open boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detect_cli(capsys, *argv):
    code = cli.main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    first = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        first = frame if first is None else first
        n += 1
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, size, fps, first


# --------------------------------------------------------------------------- the command


def test_jsonl_has_one_record_per_frame_with_the_face_where_the_pan_puts_it(clip, photo_face, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code, stdout, err = detect_cli(capsys, clip, "--json", out)
    assert code == 0, err
    assert stdout.splitlines()[-1] == f"0 images, 1 video ({N_FRAMES} frames), {N_FRAMES} faces, 0 errors"
    assert stdout.splitlines()[0].startswith(f"{clip}: {N_FRAMES} frames, {N_FRAMES} faces (")
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == list(range(N_FRAMES))
    assert [r["time"] for r in records] == [round(k / FPS, 3) for k in range(N_FRAMES)]
    for k, r in enumerate(records):
        assert (r["path"], r["width"], r["height"]) == (str(clip), 320, 240)
        assert list(r)[:3] == ["path", "frame", "time"]
        (face,) = r["faces"]
        box, points = expected_in_frame(k, *photo_face)
        side = box[2] - box[0]
        # the face moved and grew with the pan: found where the window puts it (the landmarks within
        # 5% of the face's size; the box, which MTCNN regresses less precisely, overlapping by IoU > 0.75)
        np.testing.assert_allclose(face["landmarks"], points, atol=max(3.0, 0.05 * side))
        assert iou(face["box"], box) > 0.75, (k, face["box"], box)
        assert face["score"] > 0.9


def test_every_second_frame_and_an_annotated_video(clip, tmp_path, capsys):
    out, ann = tmp_path / "out.jsonl", tmp_path / "ann"
    code, stdout, err = detect_cli(capsys, clip, "--json", out, "--every", "2", "--annotate", ann)
    assert code == 0, err
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == list(range(0, N_FRAMES, 2))
    assert [r["time"] for r in records] == [round(k / FPS, 3) for k in range(0, N_FRAMES, 2)]
    assert all(r["annotated"] == str(ann / "clip.mp4") for r in records)
    n, size, fps, first = count_frames(ann / "clip.mp4")
    assert (n, size) == (N_FRAMES // 2, SIZE)
    assert fps == pytest.approx(FPS / 2)  # the same duration as the input
    # the box is drawn: frame 0's box edge is green in the annotated video, not in the input
    x1, y1, x2, y2 = (int(round(v)) for v in records[0]["faces"][0]["box"])
    column = first[y1 + 5 : y2 - 5, x1].astype(int)
    assert (column[:, 1] > 180).mean() > 0.8 and (column[:, 0] < 90).mean() > 0.8
    assert sorted(os.listdir(ann)) == ["clip.mp4"]  # no temporary file left


def test_crops_of_each_frame_are_named_in_the_json(clip, tmp_path, capsys):
    out, crops = tmp_path / "out.jsonl", tmp_path / "crops"
    code, _, err = detect_cli(capsys, clip, "--json", out, "--crops", crops, "--every", "4")
    assert code == 0, err
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == [0, 4, 8]
    for r in records:
        (face,) = r["faces"]
        assert face["crop"] == str(crops / "clip" / f"{r['frame']:06d}_0.png")
        crop = cv2.imread(face["crop"])
        assert crop.shape == (112, 112, 3)
    assert sorted(os.listdir(crops / "clip")) == ["000000_0.png", "000004_0.png", "000008_0.png"]


def test_json_list_and_images_with_a_video(clip, tmp_path, capsys):
    out = tmp_path / "out.json"
    code, stdout, err = detect_cli(capsys, ASTRONAUT, clip, "--json", out, "--every", "6", "--keep", "best")
    assert code == 0, err
    entries = json.loads(out.read_text())
    assert [(e["path"], e.get("frame")) for e in entries] == [(str(ASTRONAUT), None), (str(clip), 0), (str(clip), 6)]
    assert stdout.splitlines()[-1] == "1 image, 1 video (2 frames), 3 faces, 0 errors"


def test_smoothing_keeps_the_face_on_a_moving_clip(clip, photo_face, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code, _, err = detect_cli(capsys, clip, "--json", out, "--smooth")
    assert code == 0, err
    for k, r in enumerate(read_jsonl(out)):
        box, points = expected_in_frame(k, *photo_face)
        np.testing.assert_allclose(r["faces"][0]["landmarks"], points, atol=max(4.0, 0.06 * (box[2] - box[0])))


def test_avi_mjpeg_clip_is_read_too(tmp_path, capsys):
    avi = write_clip(tmp_path / "clip.avi", pan_frames()[:3], fourcc="MJPG")
    code, stdout, err = detect_cli(capsys, avi, "--json", tmp_path / "o.jsonl", "--annotate", tmp_path / "ann")
    assert code == 0, err
    assert [len(r["faces"]) for r in read_jsonl(tmp_path / "o.jsonl")] == [1, 1, 1]
    assert count_frames(tmp_path / "ann" / "clip.avi")[0] == 3


def test_a_camera_that_does_not_exist_is_one_line(tmp_path, capsys, monkeypatch):
    if any(name.startswith("video") for name in os.listdir("/dev")) if os.path.isdir("/dev") else False:
        pytest.skip("this machine has a camera device")
    monkeypatch.chdir(tmp_path)  # "0" is a camera index only when no file is called 0
    code, stdout, err = detect_cli(capsys, "0")
    assert code == 1
    assert err == "mtcnn-jax: camera 0: cannot open (no camera with this index, or it is in use)\n"
    assert stdout == "0 images, 0 videos (0 frames), 0 faces, 1 error\n"


def test_a_file_called_0_is_a_file_not_a_camera(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("0").write_bytes(ASTRONAUT.read_bytes())
    code, stdout, err = detect_cli(capsys, "0")
    assert code == 0, err
    assert stdout.splitlines() == ["0: 1 face", "1 image, 1 face, 0 errors"]


def test_not_a_video_is_one_line_and_the_rest_goes_on(clip, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    out = tmp_path / "o.jsonl"
    code, stdout, err = detect_cli(capsys, bad, clip, "--json", out, "--every", "6")
    assert code == 1
    assert err == f"mtcnn-jax: {bad}: cannot open this video (not a video, or a codec this OpenCV build cannot decode)\n"
    assert [r["frame"] for r in read_jsonl(out)] == [0, 6]


def test_annotated_video_never_replaces_a_file(clip, tmp_path, capsys):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "clip.mp4").write_bytes(b"mine")
    code, _, err = detect_cli(capsys, clip, "--annotate", ann, "--every", "6")
    assert code == 1
    assert err == f"mtcnn-jax: {clip}: not annotated: {ann / 'clip.mp4'} exists (pass --overwrite to replace it)\n"
    assert (ann / "clip.mp4").read_bytes() == b"mine"
    code, _, err = detect_cli(capsys, clip, "--annotate", ann, "--every", "6", "--overwrite")
    assert code == 0, err
    assert count_frames(ann / "clip.mp4")[0] == 2
    # a folder holding the input video is refused before anything runs
    code, _, err = detect_cli(capsys, clip, "--annotate", clip.parent)
    assert code == 2 and "holds the input" in err and err.count("\n") == 1


def test_interrupted_video_keeps_the_frames_done(clip, tmp_path, capsys, monkeypatch):
    """Ctrl-C after 5 frames: exit 130, 5 valid JSON lines, an annotated video of those 5 frames."""
    real = video.detect_frames

    def stop_after_five(*args, **kwargs):
        for k, item in enumerate(real(*args, **kwargs)):
            if k == 5:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(video, "detect_frames", stop_after_five)
    out, ann = tmp_path / "out.jsonl", tmp_path / "ann"
    code, stdout, err = detect_cli(capsys, clip, "--json", out, "--annotate", ann)
    assert code == 130
    assert [r["frame"] for r in read_jsonl(out)] == [0, 1, 2, 3, 4]
    assert count_frames(ann / "clip.mp4")[0] == 5
    assert stdout.splitlines()[-1] == ("0 images, 1 video (5 frames), 5 faces, 0 errors; "
                                       "interrupted (the results so far are kept)")


@pytest.mark.parametrize("argv, message", [
    (["--every", "0"], "--every: expected a whole number >= 1, got '0'"),
    (["--every", "x"], "--every: expected a whole number >= 1, got 'x'"),
])
def test_bad_video_options_are_one_line(clip, capsys, argv, message):
    code, out, err = detect_cli(capsys, clip, *argv)
    assert code == 2 and out == "" and err == f"mtcnn-jax: {message}\n"


# --------------------------------------------------------------------------- the library


def test_video_source_frames_indices_times_and_stride(clip):
    with video.VideoSource(clip) as src:
        assert (src.width, src.height, src.fps, src.frame_count, src.expected) == (320, 240, FPS, N_FRAMES, N_FRAMES)
        frames = list(src)
    assert [f.index for f in frames] == list(range(N_FRAMES))
    np.testing.assert_allclose([f.time for f in frames], np.arange(N_FRAMES) / FPS, atol=1e-6)
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
    # RGB: the decoded frame is the written BGR frame reversed (within the codec's error)
    assert np.abs(frames[0].image[:, :, ::-1].astype(int) - pan_frames()[0]).mean() < 6
    with video.VideoSource(clip, every=5) as src:
        assert src.expected == 3
        assert [(f.index, round(f.time, 3)) for f in src] == [(0, 0.0), (5, 0.5), (10, 1.0)]


def test_video_source_refusals_are_one_line(tmp_path, clip):
    with pytest.raises(ImageError, match="no such file"):
        video.VideoSource(tmp_path / "missing.mp4")
    with pytest.raises(ImageError, match="frames too large: 320x240"):
        video.VideoSource(clip, max_pixels=320 * 240 - 1)
    with pytest.raises(UserError, match="every must be a whole number >= 1"):
        video.VideoSource(clip, every=0)


def test_detect_frames_sends_batches_in_order():
    calls = []

    class Spy:
        def detect(self, images):
            calls.append(len(images))
            from mtcnn_jax.faces import Faces

            return [Faces(np.array([[0, 0, 10 + k, 10 + k]], np.float32), np.array([0.9], np.float32),
                          np.zeros((1, 5, 2), np.float32)) for k in range(len(images))]

    frames = [video.Frame(i, i / 25, np.zeros((20, 20, 3), np.uint8)) for i in range(19)]
    got = list(video.detect_frames(Spy(), frames, batch=8))
    assert calls == [8, 8, 3]
    assert [f.index for f, _ in got] == list(range(19))
    entry = video.frame_entry("cam", got[3][0], got[3][1])
    assert entry["frame"] == 3 and entry["time"] == 0.12 and entry["faces"][0]["box"] == [0.0, 0.0, 13.0, 13.0]


def test_is_video_name_and_camera_index(tmp_path, monkeypatch):
    assert video.is_video_name("a/B.MP4") and video.is_video_name("x.avi") and not video.is_video_name("x.jpg")
    monkeypatch.chdir(tmp_path)
    assert video.camera_index("0") == 0 and video.camera_index("12") == 12
    assert video.camera_index("-1") is None and video.camera_index("0.5") is None and video.camera_index("²") is None
    Path("3").write_text("")
    assert video.camera_index("3") is None  # an existing file


def test_one_euro_filter_by_hand():
    """beta = 0: a fixed cut-off of 1 Hz; at 30 frames/s tau = 1 / (2 pi) = 0.159155 s and
    alpha = 1 / (1 + tau / dt) = 1 / (1 + 4.774648) = 0.173174: a landmark that jumps from 0 to
    10 px moves to 1.73174 px, then 1.73174 + 0.173174 (10 - 1.73174) = 3.16356 px."""
    from mtcnn_jax.faces import Faces

    def face(x):
        return Faces(np.array([[100.0, 100, 200, 200]], np.float32), np.array([0.99], np.float32),
                     np.full((1, 5, 2), x, np.float32))

    smoother = video.LandmarkSmoother(min_cutoff=1.0, beta=0.0)
    first = smoother(0.0, face(0.0))
    np.testing.assert_array_equal(first.landmarks, 0.0)  # a new face passes as it is
    np.testing.assert_allclose(smoother(1 / 30, face(10.0)).landmarks, 1.73174, atol=1e-4)
    np.testing.assert_allclose(smoother(2 / 30, face(10.0)).landmarks, 3.16356, atol=1e-4)
    np.testing.assert_array_equal(smoother(3 / 30, face(10.0)).boxes, [[100, 100, 200, 200]])  # still box: kept


def test_smoother_follows_each_face_and_forgets_lost_ones():
    from mtcnn_jax.faces import Faces

    def two(dx):
        boxes = np.array([[0, 0, 50, 50], [200, 0, 250, 50]], np.float32) + [dx, 0, dx, 0]
        points = np.repeat(boxes[:, None, :2], 5, axis=1) + 10
        return Faces(boxes, np.array([0.99, 0.98], np.float32), points)

    smoother = video.LandmarkSmoother(min_cutoff=1.0, beta=0.0)
    smoother(0.0, two(0))
    out = smoother(1 / 30, Faces(*(f[::-1] for f in two(1))))  # the same faces in the other order
    # each face is smoothed with its own history: 1 px step × alpha 0.173174
    np.testing.assert_allclose(out.landmarks[:, 0, 0], [210.173174, 10.173174], atol=1e-4)
    later = smoother(5.0, two(1))  # seconds later: the tracks were dropped, the faces pass as they are
    np.testing.assert_allclose(later.landmarks[:, 0, 0], [11.0, 211.0])


@pytest.mark.slow
def test_smoothing_reduces_jitter_on_a_still_clip(tmp_path):
    """The same frame 40 times with Gaussian noise (sigma 4) added to each, through the codec:
    the landmarks' jitter with smoothing is well under half of the jitter without."""
    from mtcnn_jax import MTCNN

    still = pan_frames()[6]
    rng = np.random.default_rng(0)
    frames = [np.clip(still + rng.normal(0, 4, still.shape), 0, 255).astype(np.uint8) for _ in range(40)]
    path = write_clip(tmp_path / "still.mp4", frames, fps=25)
    det = MTCNN()
    with video.VideoSource(path) as src:
        found = list(video.detect_frames(det, src))
    assert all(len(f.boxes) == 1 for _, f in found)
    smoother = video.LandmarkSmoother()
    smoothed = [smoother(frame.time, faces) for frame, faces in found]
    raw = video.jitter(np.stack([f.landmarks[0] for _, f in found])[10:])
    smooth = video.jitter(np.stack([f.landmarks[0] for f in smoothed])[10:])
    assert raw > 0.05  # there is jitter to remove
    assert smooth < 0.5 * raw, (raw, smooth)


def test_video_writer_is_atomic(tmp_path):
    target = tmp_path / "v.mp4"
    writer = video.VideoWriter(target, 10, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    assert not target.exists()  # still a hidden temporary file
    writer.discard()
    assert os.listdir(tmp_path) == []
    writer = video.VideoWriter(target, 10, (32, 24))
    for k in range(3):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
    assert writer.close() == str(target)
    assert count_frames(target)[0] == 3 and os.listdir(tmp_path) == ["v.mp4"]
    with pytest.raises(OSError, match="extension"):
        video.VideoWriter(tmp_path / "v.gif", 10, (32, 24))
