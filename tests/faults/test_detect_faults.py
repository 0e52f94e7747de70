"""Faults around ``mtcnn-jax detect`` and the detector's inputs: each case the reliability issue listed.

Data loss: the command never writes over an input or an existing file without
``--overwrite``, an interrupt (SIGINT) or a kill (SIGKILL) keeps every image
finished before it, a late write error keeps the rest, duplicate basenames are
told apart. Silent wrong answers: corrupt JPEG data, a header that lies, NaN
thresholds, a file descriptor for a path. Tracebacks: malformed weights, a closed
pipe, ``align`` given ``Faces``. Security: a compilation cache others can write to.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mtcnn_jax import cli, images
from mtcnn_jax.errors import ImageError, UserError

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **extra)
    env.pop("XLA_FLAGS", None)
    return env


def _detect(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtcnn_jax.cli", "detect", *map(str, args)], cwd=kw.pop("cwd", None),
                          env=_env(**kw.pop("env", {})), capture_output=True, text=True, timeout=300, **kw)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def wider12(data_dir, tmp_path_factory) -> Path:
    """Twelve WIDER images in a folder of their own (sorted names: the order detect processes them)."""
    src = sorted((data_dir / "widerface_val_subset" / "images").rglob("*.jpg"))[:12]
    folder = tmp_path_factory.mktemp("wider12")
    for k, p in enumerate(src):
        shutil.copy(p, folder / f"{k:02d}_{p.name}")
    return folder


@pytest.fixture(scope="module")
def reference(wider12, tmp_path_factory) -> list:
    """The uninterrupted run's JSON entries."""
    out = tmp_path_factory.mktemp("ref") / "all.json"
    r = _detect(wider12, "--json", out)
    assert r.returncode == 0, r.stderr
    entries = json.loads(out.read_text())
    assert len(entries) == 12
    return entries


# --------------------------------------------------------------------------- never overwrite a user's file


def test_json_onto_the_input_photo_is_refused_and_the_photo_kept(tmp_path):
    photo = tmp_path / "photo.jpg"
    shutil.copy(ASTRONAUT, photo)
    r = _detect(photo, "--json", photo)
    assert r.returncode == 2
    assert _one_line(r.stderr) == f"mtcnn-jax: --json: {photo} is an input file: choose another path, or pass --overwrite"
    assert photo.read_bytes() == ASTRONAUT.read_bytes()


def test_annotate_inside_the_input_tree_touches_no_user_file(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    shutil.copy(ASTRONAUT, imgs / "b.jpg")
    shutil.copy(ASTRONAUT, imgs / "sub" / "a.jpg")
    before = (imgs / "sub" / "a.jpg").read_bytes()
    r = _detect(imgs, "--annotate", imgs / "sub")
    assert r.returncode == 2
    assert _one_line(r.stderr).startswith(f"mtcnn-jax: --annotate: {imgs / 'sub'} lies inside the input folder")
    assert (imgs / "sub" / "a.jpg").read_bytes() == before
    assert sorted(p.name for p in (imgs / "sub").iterdir()) == ["a.jpg"]


def test_existing_output_file_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "results.json"
    out.write_text("my notes")
    r = _detect(ASTRONAUT, "--json", out)
    assert r.returncode == 2 and "exists" in _one_line(r.stderr)
    assert out.read_text() == "my notes"


def test_duplicate_basenames_are_told_apart_in_the_json(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        shutil.copy(ASTRONAUT, tmp_path / d / "a.jpg")
    out = tmp_path / "out.json"
    r = _detect(tmp_path / "x" / "a.jpg", tmp_path / "y" / "a.jpg", "--json", out, "--annotate", tmp_path / "ann")
    assert r.returncode == 0, r.stderr
    entries = json.loads(out.read_text())
    assert [e["path"] for e in entries] == [str(tmp_path / "x" / "a.jpg"), str(tmp_path / "y" / "a.jpg")]
    assert [e["annotated"] for e in entries] == [str(tmp_path / "ann" / "a.jpg"), str(tmp_path / "ann" / "a-1.jpg")]
    assert all(Path(e["annotated"]).is_file() for e in entries)


def _is_char_device(path: str) -> bool:
    """Whether ``path`` is a character device (a CI sandbox may give ``/dev/full`` as a plain file or not at all)."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def test_unwritable_json_path_fails_before_any_work(tmp_path):
    r = _detect(ASTRONAUT, "--json", tmp_path / "no" / "such" / "folder" / "out.json")
    assert r.returncode == 2 and "does not exist" in _one_line(r.stderr)
    if _is_char_device("/dev/full"):  # a device that refuses every write: written into, never replaced
        r = _detect(ASTRONAUT, "--json", "/dev/full")
        assert r.returncode == 1 and "mtcnn-jax: --json: cannot write /dev/full (No space left on device)" in r.stderr
        assert "Traceback" not in r.stderr
        assert _is_char_device("/dev/full")
    r = _detect(ASTRONAUT, "--json", os.devnull)  # a device is not a file of the user's: no --overwrite needed
    assert r.returncode == 0 and Path(os.devnull).is_char_device(), r.stderr


def test_late_write_error_keeps_the_images_before_it(tmp_path, monkeypatch, capsys):
    """A disk that fills up after two images: the JSON keeps those two, valid; exit 1, one line."""
    from mtcnn_jax.evaluation import predictions

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(4):
        shutil.copy(ASTRONAUT, folder / f"{k}.jpg")
    real_append = predictions.PredictionsWriter._append

    def append(self, text, rewind):
        if self.count == 2:
            raise OSError(28, "No space left on device")
        return real_append(self, text, rewind)

    monkeypatch.setattr(predictions.PredictionsWriter, "_append", append)
    out = tmp_path / "out.json"
    code = cli.main(["detect", str(folder), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot write" in err and "No space left on device" in err and "the 2 images before are kept" in err
    assert [e["path"] for e in json.loads(out.read_text())] == [str(folder / "0.jpg"), str(folder / "1.jpg")]


# --------------------------------------------------------------------------- interrupted runs


def _wait_for_entries(path: Path, n: int, proc, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            text = path.read_text()
            if text.count('"path"') >= n:
                return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {n} entries (process ended: {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_detect_keeps_what_it_finished_and_a_rerun_completes(wider12, reference, tmp_path, sig):
    """Stopped after a seeded random number of images: the JSON is valid and holds exactly the
    first images of the uninterrupted run; rerunning (with --overwrite) gives the whole run."""
    k = random.Random(f"detect/{sig}").randint(2, 9)
    out = tmp_path / "out.json"
    proc = subprocess.Popen([sys.executable, "-m", "mtcnn_jax.cli", "detect", str(wider12), "--json", str(out)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_entries(out, k, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = json.loads(out.read_text())  # valid JSON whatever the moment of the signal
    assert k <= len(kept) <= 12
    assert kept == reference[: len(kept)]
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    r = _detect(wider12, "--json", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == reference


@pytest.mark.slow
def test_jsonl_output_streams_one_line_per_image(wider12, reference, tmp_path):
    out = tmp_path / "out.jsonl"
    r = _detect(wider12, "--json", out)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == reference


def test_closed_pipe_ends_quietly(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        shutil.copy(ASTRONAUT, folder / f"{k}.jpg")
    cmd = f"{sys.executable} -m mtcnn_jax.cli detect {folder} --json - | head -c 10"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=_env(), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode == 141  # 128 + SIGPIPE, as a command killed by the closed pipe
    assert r.stdout == '[\n  {"path'


# --------------------------------------------------------------------------- silent wrong answers


def _corrupt_entropy(data: bytes) -> bytes:
    sos = data.index(b"\xff\xda")
    d = bytearray(data)
    for i in range(sos + 200, sos + 2200, 97):
        d[i] ^= 0x55
    return bytes(d)


def _lying_header(data: bytes) -> bytes:
    sof = data.index(b"\xff\xc0")
    d = bytearray(data)
    h = int.from_bytes(d[sof + 5 : sof + 7], "big")
    d[sof + 5 : sof + 7] = (2 * h).to_bytes(2, "big")  # announces twice the rows the data holds
    return bytes(d)


@pytest.mark.parametrize("damage, message", [
    (_corrupt_entropy, "corrupt JPEG data (Corrupt JPEG data: 129 extraneous bytes before marker 0xd9)"),
    (_lying_header, "corrupt JPEG data (Corrupt JPEG data: premature end of data segment)"),
])
def test_damaged_jpeg_is_an_error_not_zero_faces(tmp_path, damage, message):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bad.jpg").write_bytes(damage(ASTRONAUT.read_bytes()))
    shutil.copy(ASTRONAUT, folder / "good.jpg")
    with pytest.raises(ImageError) as info:
        images.load_image(folder / "bad.jpg")
    assert info.value.reason == message
    r = _detect(folder, "--json", tmp_path / "out.json")
    assert r.returncode == 1
    assert _one_line(r.stderr) == f"mtcnn-jax: {folder / 'bad.jpg'}: {message}"
    assert [e["path"] for e in json.loads((tmp_path / "out.json").read_text())] == [str(folder / "good.jpg")]


@pytest.mark.parametrize("kwargs", [
    dict(thresholds=(float("nan"), 0.7, 0.7)),
    dict(nms_thresholds=(0.5, float("nan"), 0.7, 0.7)),
    dict(nms_thresholds=(0.5, 0.7, float("inf"), 0.7)),
    dict(nms_thresholds=(0.5, 0.7, 0.7)),
])
def test_non_finite_or_missing_thresholds_are_refused(kwargs):
    from mtcnn_jax import MTCNN

    with pytest.raises(UserError) as info:
        MTCNN(compilation_cache=False, **kwargs)
    assert "\n" not in str(info.value)


def test_thresholds_option_refuses_nan(tmp_path):
    r = _detect(ASTRONAUT, "--thresholds", "nan,0.7,0.7")
    assert r.returncode == 2 and _one_line(r.stderr).startswith("mtcnn-jax: --thresholds:")


@pytest.mark.parametrize("path", [123, 0, True, None, 1.5])
def test_load_image_refuses_what_is_not_a_path(path):
    with pytest.raises(ImageError) as info:
        images.load_image(path)
    assert info.value.reason.startswith("not a file path")


# --------------------------------------------------------------------------- one line, not a traceback


@pytest.mark.parametrize("payload", [{"pnet": 5}, {"pnet": None}, {"rnet": [1, 2]}, [1, 2], b"\x00garbage"])
def test_malformed_weights_file_is_one_line(tmp_path, payload):
    import flax.serialization

    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(payload if isinstance(payload, bytes) else flax.serialization.msgpack_serialize(payload))
    r = _detect(ASTRONAUT, "--weights", bad)
    assert r.returncode == 2
    assert _one_line(r.stderr).startswith(f"mtcnn-jax: {bad}")


def test_align_takes_faces_and_refuses_other_things_in_one_line():
    from mtcnn_jax import align, detect, load_image

    image = load_image(ASTRONAUT)
    faces = detect(image)
    assert align(image, faces).shape == (1, 112, 112, 3)
    np.testing.assert_array_equal(align(image, faces), align(image, faces.landmarks))
    for bad in (object(), "abc", faces._replace(landmarks=None), [[1, 2], [3]]):
        with pytest.raises(ValueError) as info:
            align(image, bad)
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- security


def test_compilation_cache_writable_by_others_is_not_used(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    r = _detect(ASTRONAUT, env={"MTCNN_JAX_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    assert _one_line(r.stderr).startswith(f"mtcnn-jax: not using the compilation cache {cache}: other users can write")
    assert list(cache.iterdir()) == []  # nothing was loaded from or written to it
    assert r.stdout.splitlines()[-1] == "1 image, 1 face, 0 errors"


def test_compilation_cache_owned_by_another_user_is_not_used(tmp_path):
    """The folder's owner differs from the process's user (simulated: the process claims another uid)."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    code = ("import os, sys; owner = os.stat(sys.argv[1]).st_uid; os.getuid = lambda: owner + 1; "
            "from mtcnn_jax import compilation; print(compilation.enable_persistent_cache())")
    r = subprocess.run([sys.executable, "-c", code, str(cache)], env=_env(MTCNN_JAX_CACHE_DIR=str(cache)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stderr
    owner = cache.stat().st_uid
    assert _one_line(r.stderr).startswith(f"mtcnn-jax: not using the compilation cache {cache}: "
                                          f"it belongs to another user (uid {owner})")
