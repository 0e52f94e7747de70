"""What makes the detector fast, asserted as counts and bytes (never timings).

* P-Net on packed tiles gives the whole-level outputs, for any tile size;
* the sparse NMS keeps exactly the boxes the authors' loop keeps;
* a stream of images of many sizes compiles a fixed, small set of programs, and
  resident memory stops growing once they are compiled;
* the persistent compilation cache is written where ``MTCNN_JAX_CACHE_DIR`` says.

The full-scale versions (1,000 images of 100 sizes; timings) are in
``benchmarks/speed.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax import MTCNN, boxes as bx, load_image, networks, pyramid, tiles
from conftest import REPO

ASTRONAUT = REPO / "mtcnn_jax/assets/astronaut.jpg"


@pytest.fixture(scope="module")
def det():
    return MTCNN()


@pytest.fixture(scope="module")
def face():
    return load_image(ASTRONAUT)[40:200, 150:300]  # the face and a margin, 160×150


def _whole_level(params, level):
    hs, ws = level.shape[:2]
    pad = lambda n: -(-n // 16) * 16  # noqa: E731  (a padded canvas: valid_hw must mask the rest)
    canvas = np.zeros((1, pad(hs), pad(ws), 3), np.uint8)
    canvas[0, :hs, :ws] = level
    prob, reg = networks.pnet_level(params, canvas, np.array([hs, ws], np.int32))
    oh, ow = tiles.pnet_output_size(hs, ws)
    return np.asarray(prob)[:oh, :ow], np.asarray(reg)[:oh, :ow]


@pytest.mark.slow
def test_packed_tiles_equal_whole_levels(det):
    rng = np.random.default_rng(0)
    photo = load_image(ASTRONAUT)
    h, w = photo.shape[:2]
    levels = [pyramid.resize(photo, pyramid.level_size(h, w, s)) for s in pyramid.scales(h, w)]
    # odd and even sizes, a level just at the window, one wider than several tiles
    sizes = [(12, 12), (13, 31), (33, 65), (65, 129), (129, 33), (301, 77), (40, 333)]  # incl. tile + 1 (odd edges)
    levels += [rng.integers(0, 256, size + (3,), dtype=np.uint8) for size in sizes]
    for tile, per_call in [(32, 3), (64, 2), (tiles.PNET_TILE, tiles.PNET_TILES_PER_CALL)]:
        got = tiles.pnet_levels(det.params["pnet"], levels, tile, per_call)
        for level, (prob, reg) in zip(levels, got):
            want_prob, want_reg = _whole_level(det.params["pnet"], level)
            assert prob.shape == want_prob.shape and reg.shape == want_reg.shape
            np.testing.assert_allclose(prob, want_prob, rtol=0, atol=1e-6)
            np.testing.assert_allclose(reg, want_reg, rtol=0, atol=1e-5)


def test_pieces_cover_every_window_once_and_pack_inside_tiles():
    for hs, ws in [(12, 12), (13, 13), (118, 119), (128, 128), (129, 129), (129, 250), (247, 237), (500, 37)]:
        pieces = tiles.cut_level(0, hs, ws, 128)
        oh, ow = tiles.pnet_output_size(hs, ws)
        cover = np.zeros((oh, ow), int)
        for p in pieces:
            ph, pw = tiles.pnet_output_size(p.h, p.w)
            cover[p.y0 // 2 : p.y0 // 2 + ph, p.x0 // 2 : p.x0 // 2 + pw] += 1
        assert (cover == 1).all(), (hs, ws)
    rng = np.random.default_rng(1)
    pieces = [tiles.Piece(0, 0, 0, int(a), int(b)) for a, b in rng.integers(12, 129, (200, 2))]
    place = tiles.pack_pieces(pieces, 128)
    used = {}
    for p, (t, y, x) in zip(pieces, place):
        assert y % 2 == 0 and x % 2 == 0 and y + p.h <= 128 and x + p.w <= 128
        grid = used.setdefault(t, np.zeros((128, 128), bool))
        assert not grid[y : y + p.h, x : x + p.w].any()  # no two pieces overlap
        grid[y : y + p.h, x : x + p.w] = True


def test_sparse_nms_equals_the_authors_loop():
    rng = np.random.default_rng(2)
    for trial in range(400):
        n = int(rng.integers(0, 120))
        xy = rng.uniform(-20, float(rng.choice([40, 300])), (n, 2))
        wh = rng.uniform(1, float(rng.choice([8, 60, 200])), (n, 2))
        if trial % 3 == 0:
            xy, wh = np.round(xy), np.round(wh)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        if trial % 7 == 0:  # degenerate boxes take the reference path
            boxes[: n // 3, 2:] = boxes[: n // 3, :2] - 1.5
        scores = np.round(rng.random(n), 1) if trial % 2 else rng.random(n)  # ties, too
        for thr in (0.0, 0.5, 0.7, -0.1):
            for mode in ("union", "min"):
                assert bx.nms(boxes, scores, thr, mode).tolist() == bx.nms_reference(boxes, scores, thr, mode).tolist()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stream(face, n_images=60, n_sizes=30, seed=3):
    """``n_images`` images of ``n_sizes`` random sizes (40..260 px a side), noise with the face pasted in."""
    rng = np.random.default_rng(seed)
    sizes = [tuple(int(v) for v in rng.integers(40, 261, 2)) for _ in range(n_sizes)]
    for k in range(n_images):
        h, w = sizes[k % n_sizes]
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        side = int(min(h, w) * 0.8)
        patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        image[:side, :side] = patch
        yield image


def test_image_stream_compiles_a_fixed_set_of_programs_and_memory_stays_flat(det, face):
    """60 images of 30 sizes, one by one and as lists: at most one program per network, flat RSS."""
    images = list(_stream(face))
    before = networks.compiled_programs()
    found = sum(len(det.detect(im).boxes) > 0 for im in images[:10])  # warm-up: compiles
    assert found >= 5  # the pasted face is found: R-Net and O-Net ran
    programs = networks.compiled_programs()
    rss = _rss_mb()
    for im in images[10:40]:
        det.detect(im)
    det.detect(images[40:])  # a list of 20 mixed sizes, processed in groups
    assert networks.compiled_programs() == programs, "a new image size compiled a new program"
    # the three detection programs (P-Net tiles, R-Net, O-Net batches), at most once each
    assert programs - before <= 3
    assert _rss_mb() - rss < 30, f"RSS grew by {_rss_mb() - rss:.1f} MB after warm-up"


def test_list_of_mixed_sizes_equals_one_by_one(det, face):
    images = list(_stream(face, n_images=12, n_sizes=12, seed=4))
    together = det.detect(images)
    for im, faces in zip(images, together):
        alone = det.detect(im)
        assert faces.boxes.shape == alone.boxes.shape
        np.testing.assert_allclose(faces.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(faces.scores, alone.scores, atol=1e-5)


@pytest.mark.slow
def test_persistent_cache_is_written_where_the_variable_says(tmp_path: Path):
    code = (
        "import numpy as np\n"
        "from mtcnn_jax import MTCNN, networks\n"
        "MTCNN().detect(np.zeros((64, 64, 3), np.uint8))\n"
        "print(networks.compiled_programs())\n"
    )
    env = dict(os.environ, MTCNN_JAX_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= 1
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    # P-Net's program: inference.pnet on the CPU (networks._pnet_tiles_fn elsewhere)
    assert any(n.startswith(("jit_pnet-", "jit__pnet_tiles_fn")) for n in names), names
    env["MTCNN_JAX_CACHE_DIR"] = "off"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not (tmp_path / "off").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    from mtcnn_jax import compilation

    monkeypatch.delenv(compilation.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation.default_cache_dir() == tmp_path / "mtcnn_jax" / "jax"
    monkeypatch.setenv(compilation.ENV_VAR, "off")
    assert compilation.default_cache_dir() is None
    monkeypatch.setenv(compilation.ENV_VAR, str(tmp_path / "x"))
    assert compilation.default_cache_dir() == tmp_path / "x"
