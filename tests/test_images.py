"""Reading untrusted images: mtcnn_jax.images.load_image / read_header / find_images.

All images are made here, in tmp_path, or read from the bundled public-domain
photo mtcnn_jax/assets/astronaut.jpg.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_jax import images
from mtcnn_jax.errors import ImageError, UserError

ASTRONAUT = Path(images.__file__).parent / "assets" / "astronaut.jpg"


def _write(path: Path, bgr: np.ndarray, *params) -> Path:
    assert cv2.imwrite(str(path), bgr, list(params)), path
    return path


def _reason(path, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        images.load_image(path, **kwargs)
    err = info.value
    assert isinstance(err, UserError)
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.reason}"
    assert "\n" not in str(err)
    return err.reason


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if OpenCV is asked to decode anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _bomb_png(width=50_000, height=50_000) -> bytes:
    """A well-formed 8-bit RGB PNG header announcing width x height, with a token IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _bomb_jpeg(width=50_000, height=50_000) -> bytes:
    """SOI, a baseline frame header announcing width x height, one scan, EOI."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    sos = struct.pack(">B", 3) + b"\x01\x00\x02\x00\x03\x00" + b"\x00\x3f\x00"
    return (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof
            + b"\xff\xda" + struct.pack(">H", 2 + len(sos)) + sos + b"\x12\x34\xff\x00\x56"
            + b"\xff\xd9")


# --------------------------------------------------------------------------- good images


def test_astronaut_loads_as_rgb():
    image = images.load_image(ASTRONAUT)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    bgr = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(image, bgr[:, :, ::-1])


def test_colour_channels_are_rgb(tmp_path):
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[:, :, 0] = 10  # blue
    bgr[:, :, 1] = 20  # green
    bgr[:, :, 2] = 200  # red
    image = images.load_image(_write(tmp_path / "c.png", bgr))
    assert image.shape == (20, 30, 3)
    assert image[0, 0].tolist() == [200, 20, 10]


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp", ".tif", ".tiff"])
def test_lossless_formats_round_trip(tmp_path, ext):
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if ext == ".webp" else ()
    image = images.load_image(_write(tmp_path / ("x" + ext), bgr, *params))
    np.testing.assert_array_equal(image, bgr[:, :, ::-1])


def test_format_judged_by_content_not_name(tmp_path):
    bgr = np.full((8, 9, 3), 77, np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(png.tobytes())
    assert images.read_header(path.read_bytes()).format == "PNG"
    assert images.load_image(path).shape == (8, 9, 3)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_grayscale_is_replicated(tmp_path, ext):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (12, 1))  # 12 x 25
    path = _write(tmp_path / ("g" + ext), gray)
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2
    image = images.load_image(path)
    assert image.shape == (12, 25, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 1])
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])
    if ext != ".jpg":  # lossless: exactly the grey values
        np.testing.assert_array_equal(image[:, :, 0], gray)


def test_rgba_is_composited_on_black(tmp_path):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[0, 0] = (0, 0, 255, 255)  # opaque red
    bgra[0, 1] = (200, 100, 50, 128)  # half-transparent: colour x 128/255
    bgra[0, 2] = (255, 255, 255, 0)  # fully transparent white: black
    bgra[1, :] = (30, 60, 90, 255)  # opaque
    image = images.load_image(_write(tmp_path / "a.png", bgra))
    assert image.shape == (2, 3, 3)
    assert image[0, 0].tolist() == [255, 0, 0]
    assert image[0, 1].tolist() == [round(50 * 128 / 255), round(100 * 128 / 255), round(200 * 128 / 255)]
    assert image[0, 2].tolist() == [0, 0, 0]
    assert image[1].tolist() == [[90, 60, 30]] * 3


def test_16bit_png_is_scaled_by_255_over_65535(tmp_path):
    values = np.array([0, 1, 128, 129, 257, 32896, 40000, 65534, 65535], np.uint16)
    bgr = np.stack([values, values[::-1], np.full_like(values, 257 * 100)], axis=1)[None]
    path = _write(tmp_path / "deep.png", bgr)
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    image = images.load_image(path)
    assert image.dtype == np.uint8 and image.shape == (1, 9, 3)
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert expected.tolist() == [0, 0, 0, 1, 1, 128, 156, 255, 255]
    np.testing.assert_array_equal(image[0, :, 2], expected)  # R = the BGR array's last channel
    np.testing.assert_array_equal(image[0, :, 1], expected[::-1])
    assert (image[0, :, 0] == 100).all()


def test_16bit_grayscale_and_rgba(tmp_path):
    gray = np.array([[0, 65535, 257 * 7]], np.uint16)
    assert images.load_image(_write(tmp_path / "g16.png", gray)).tolist() == [[[0] * 3, [255] * 3, [7] * 3]]
    bgra = np.array([[[65535, 0, 0, 65535], [65535, 65535, 65535, 0]]], np.uint16)
    assert images.load_image(_write(tmp_path / "a16.png", bgra)).tolist() == [[[0, 0, 255], [0, 0, 0]]]


def test_float_tiff_is_refused(tmp_path):
    path = _write(tmp_path / "f.tif", np.full((4, 4, 3), 0.5, np.float32))
    assert "unsupported pixel type float32" in _reason(path)


def test_image_smaller_than_12px_is_valid(tmp_path):
    image = images.load_image(_write(tmp_path / "tiny.png", np.full((5, 7, 3), 9, np.uint8)))
    assert image.shape == (5, 7, 3)
    assert images.load_image(_write(tmp_path / "one.png", np.zeros((1, 1, 3), np.uint8))).shape == (1, 1, 3)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    payload = b"Exif\x00\x00" + tiff + struct.pack("<I", 0)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation):
    bgr = np.zeros((32, 48, 3), np.uint8)
    bgr[:8, :16] = 255  # a white block in the top-left corner, to see where it goes
    ok, jpeg = cv2.imencode(".jpg", bgr)
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(_with_exif_orientation(jpeg.tobytes(), orientation))
    assert images.read_header(path.read_bytes()).orientation == orientation
    image = images.load_image(path)
    assert image.shape == ((32, 48, 3) if orientation < 5 else (48, 32, 3))
    # OpenCV's IMREAD_COLOR applies EXIF orientation itself: same pixels.
    upright = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(image, upright)
    if orientation == 6:  # rotate 90 degrees clockwise: top-left goes to top-right
        assert image[:4, -4:].min() > 200 and image[-4:, :4].max() < 50


def test_jpeg_with_data_after_the_end_marker_is_accepted(tmp_path):
    path = tmp_path / "trailer.jpg"
    path.write_bytes(ASTRONAUT.read_bytes() + b"camera trailer \x00\x01")
    assert images.load_image(path).shape == (512, 512, 3)


# --------------------------------------------------------------------------- bad files


def test_missing_path(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "no such file"


def test_directory_is_not_an_image(tmp_path):
    assert _reason(tmp_path) == "is a directory"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_is_not_a_regular_file():
    assert _reason("/dev/null") == "not a regular file"


def test_empty_file(tmp_path, no_decoding):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "empty file"


def test_non_image_file(tmp_path, no_decoding):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    reason = _reason(path)
    assert reason.startswith("not a supported image")
    assert "JPEG" in reason and "PNG" in reason


@pytest.mark.parametrize("cut", [2, 1, 100, 30_000, 74_000])
def test_truncated_jpeg_is_refused_before_decoding(tmp_path, no_decoding, cut):
    data = ASTRONAUT.read_bytes()
    assert data.endswith(b"\xff\xd9")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:-cut])
    assert _reason(path) == "truncated JPEG (no end-of-image marker)"


@pytest.mark.parametrize("cut", [1, 12, 500])
def test_truncated_png_is_refused_before_decoding(tmp_path, no_decoding, cut):
    bgr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    path = tmp_path / "cut.png"
    path.write_bytes(png.tobytes()[:-cut])
    assert _reason(path) == "truncated PNG (no IEND chunk)"


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".tif"])
def test_truncated_other_formats_are_refused(tmp_path, ext):
    bgr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, bgr)
    path = tmp_path / ("cut" + ext)
    path.write_bytes(data.tobytes()[: len(data) // 2])
    assert "truncated" in _reason(path)


def test_corrupt_data_with_a_valid_structure_is_refused(tmp_path):
    """Header and markers intact, pixel data garbage: OpenCV cannot decode it."""
    path = tmp_path / "garbage.png"
    path.write_bytes(_bomb_png(64, 64)[:33] + _png_chunk(b"IDAT", b"not zlib") + _png_chunk(b"IEND", b""))
    assert _reason(path) == "cannot decode this PNG file (corrupt data)"


@pytest.mark.parametrize("make, kind", [(_bomb_png, "PNG"), (_bomb_jpeg, "JPEG")])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, no_decoding, make, kind):
    data = make()
    assert len(data) < 200  # a tiny file announcing 2.5 gigapixels
    header = images.read_header(data)
    assert (header.format, header.width, header.height) == (kind, 50_000, 50_000)
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    reason = _reason(path)
    assert reason.startswith("image too large: 50000x50000 pixels")
    assert "limit is 100.0" in reason


def test_pillow_own_pixel_limit_neither_fires_nor_changes():
    """Headers are read by Pillow's plugins without Image.open's process-wide
    MAX_IMAGE_PIXELS check: 200 MP (above Pillow's error limit of 2 x 89 MP) is
    max_pixels' to judge, and Pillow's setting is left as it is."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        for make in (_bomb_png, _bomb_jpeg):
            assert images.read_header(make(20_000, 10_000))[1:3] == (20_000, 10_000)
            with pytest.raises(ImageError, match="image too large: 20000x10000 pixels"):
                images.decode_image(make(20_000, 10_000), max_pixels=199_999_999)
    assert Image.MAX_IMAGE_PIXELS == before


def test_truncated_jpeg_with_an_end_marker_in_its_exif_is_refused(tmp_path, no_decoding):
    """An EXIF thumbnail brings its own end-of-image marker, before the image's scan."""
    payload = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 0) + b"thumbnail \xff\xd8 ... \xff\xd9"
    data = ASTRONAUT.read_bytes()
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + data[2:]
    assert images.read_header(data).format == "JPEG"
    path = tmp_path / "thumb.jpg"
    path.write_bytes(data[:-1000])
    assert _reason(path) == "truncated JPEG (no end-of-image marker)"


def test_bad_metadata_gives_one_line_and_no_warning(tmp_path, capfd):
    """Pillow warns about metadata it cannot read; none of that reaches the user, and a TIFF
    whose directory is malformed (an image length of 3 values) is refused in one line."""
    data = b"x" * 48
    entries = [(256, 3, 1, struct.pack("<HH", 4, 0)), (257, 3, 3, struct.pack("<I", 8 + 2 + 4 * 12 + 4)),
               (273, 4, 1, struct.pack("<I", 70)), (279, 4, 1, struct.pack("<I", 48))]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", *e[:3]) + e[3] for e in entries)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<HHH", 4, 4, 4) + data
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 4000)  # the EXIF directory lies beyond its segment
    jpeg = ASTRONAUT.read_bytes()
    jpeg = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(exif)) + exif + jpeg[2:]
    (tmp_path / "dir.tif").write_bytes(tiff)
    (tmp_path / "exif.jpg").write_bytes(jpeg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _reason(tmp_path / "dir.tif") == "truncated or corrupt TIFF (unreadable directory)"
        assert images.read_header(jpeg).orientation == 1 and images.load_image(tmp_path / "exif.jpg").shape == (512, 512, 3)
    assert caught == [] and capfd.readouterr().err == ""


def test_pixel_limit_is_configurable(tmp_path):
    path = _write(tmp_path / "x.png", np.zeros((100, 100, 3), np.uint8))
    assert images.load_image(path, max_pixels=10_000).shape == (100, 100, 3)
    assert _reason(path, max_pixels=9_999).startswith("image too large: 100x100 pixels")


def test_file_size_limit(tmp_path, no_decoding):
    path = _write(tmp_path / "x.bmp", np.zeros((10, 10, 3), np.uint8))
    assert _reason(path, max_bytes=100).startswith("file too large")


# --------------------------------------------------------------------------- find_images


def _touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write(path, np.zeros((4, 4, 3), np.uint8))


def test_find_images_walks_folders_sorted_case_insensitive(tmp_path):
    root = tmp_path / "photos"
    for rel in ["b.JPG", "a.png", "sub/c.Jpeg", "sub/deeper/d.tiff", "z.webp", "y.BMP"]:
        _touch_image(root / rel)
    (root / "notes.txt").write_text("x")
    (root / "sub" / "e.gif").write_bytes(b"GIF89a")
    found = images.find_images([str(root)])
    rels = ["a.png", "b.JPG", "sub/c.Jpeg", "sub/deeper/d.tiff", "y.BMP", "z.webp"]
    expected = [os.path.join(str(root), *r.split("/")) for r in rels]
    assert found == [(p, p) for p in expected]


def test_find_images_keeps_the_paths_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch_image(tmp_path / "dir" / "x.png")
    _touch_image(tmp_path / "single.jpg")
    (tmp_path / "noext").write_bytes(b"whatever")  # files named directly are kept, judged later
    found = images.find_images(["single.jpg", "dir", "noext", "dir/"])
    assert found == [("single.jpg", "single.jpg"), (os.path.join("dir", "x.png"),) * 2,
                     ("noext", "noext"), (os.path.join("dir/", "x.png"),) * 2]


def test_find_images_missing_path(tmp_path):
    with pytest.raises(ImageError) as info:
        images.find_images([tmp_path / "missing"])
    assert info.value.reason == "no such file or folder"
    assert info.value.path == str(tmp_path / "missing")


def test_find_images_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.md").write_text("no pictures")
    for folder in ("empty", "text"):
        with pytest.raises(ImageError) as info:
            images.find_images([tmp_path / folder])
        assert info.value.reason.startswith("no images in this folder")


def test_find_images_collects_errors_and_goes_on(tmp_path):
    good = _touch_image(tmp_path / "good" / "g.png")
    (tmp_path / "empty").mkdir()
    errors = []
    found = images.find_images([tmp_path / "missing.jpg", tmp_path / "empty", tmp_path / "good"], errors)
    assert found == [(str(good), str(good))]
    assert [(e.path, e.reason.split(" (")[0]) for e in errors] == [
        (str(tmp_path / "missing.jpg"), "no such file or folder"),
        (str(tmp_path / "empty"), "no images in this folder"),
    ]


def test_quiet_native_stderr_hides_library_warnings(tmp_path, capfd):
    """libpng reports a bad checksum on fd 2 itself; inside the block nothing gets out."""
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    data = bytearray(png.tobytes())
    data[60] ^= 0xFF  # inside the IDAT data: the structure is intact, the zlib stream is not
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    capfd.readouterr()
    with images.quiet_native_stderr():
        with pytest.raises(ImageError) as info:
            images.load_image(path)
    assert info.value.reason == "cannot decode this PNG file (corrupt data)"
    assert capfd.readouterr().err == ""
    print("stderr works again", file=__import__("sys").stderr)
    assert capfd.readouterr().err == "stderr works again\n"
