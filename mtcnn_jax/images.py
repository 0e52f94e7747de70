"""Reading untrusted image files into RGB arrays.

Images come from users and are treated as hostile: before any pixel is decoded,
the file's header is read for the image size (by Pillow's format plugins: JPEG,
PNG, BMP, TIFF; WebP here) and the file is checked to be complete. A file whose
header announces more than ``max_pixels`` pixels (a decompression bomb) is refused
without being decoded; a truncated file is refused instead of being decoded with
the missing part filled in, and so is one whose decoder (OpenCV's) reports damaged
data. Every failure is an :class:`~mtcnn_jax.errors.ImageError` whose message is
one line, ``"<path>: <reason>"``.

Conversion to ``uint8[H, W, 3]`` RGB (what :func:`load_image` returns):

* grayscale: the one channel is replicated into R, G and B;
* alpha (RGBA, gray + alpha): the colour is **composited on black**, i.e.
  multiplied by alpha / max. Pixels that are fully transparent have no defined
  colour (encoders keep whatever was there), so dropping the alpha could show
  hidden content; compositing gives the image as seen over a black background;
* 16-bit: scaled linearly to 8 bits as ``round(v * 255 / 65535)`` (= round(v / 257),
  so 65535 -> 255 and 257 k -> k). No per-image contrast stretch: a 12-bit image
  stored in 16 bits comes out dark, as it would in any viewer;
* other sample types (float, signed) are refused;
* JPEG EXIF orientation is applied (the array is what a viewer shows), so pixel
  coordinates refer to the upright image. Other formats are not re-oriented.

Coordinates: arrays are indexed ``[y, x, channel]``; x grows to the right, y down.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from mtcnn_jax.errors import ImageError

#: Default largest image accepted, in pixels (width x height): 100 megapixels.
DEFAULT_MAX_PIXELS = 100_000_000
#: Largest file read, in bytes (1 GiB): bigger files are refused before reading.
DEFAULT_MAX_BYTES = 1 << 30
#: File extensions :func:`find_images` collects from folders (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Formats whose header is parsed and which are therefore decoded.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "WebP", "TIFF")


class ImageHeader(NamedTuple):
    """What the header of an encoded image says, read without decoding pixels.

    ``width`` and ``height`` are those stored in the file (before any EXIF
    rotation); ``orientation`` is the EXIF orientation, 1..8 (1 = upright; only
    read for JPEG).
    """

    format: str
    width: int
    height: int
    orientation: int = 1


class _Bad(Exception):
    """Internal: a reason why bytes are not a usable image (becomes an ImageError)."""


# --------------------------------------------------------------------------- headers
# Pillow's format plugins read the headers; OpenCV decodes. The plugins' reader classes are
# called directly: Image.open() would also apply Pillow's process-wide MAX_IMAGE_PIXELS (a
# warning above 89 MP, an error above 179 MP) where ``max_pixels`` is the limit, and turn some
# JPEGs into MPO images. Whether the file is complete, which Pillow does not check when it
# opens one, is checked here.


def _jpeg_header(data: bytes) -> ImageHeader:
    fp = io.BytesIO(data)
    im = JpegImagePlugin.JpegImageFile(fp)
    # Pillow stops at the first start-of-scan. Entropy-coded data never holds 0xFF 0xD9, so the
    # end-of-image marker must follow (an EXIF thumbnail's, before it, does not count).
    if data.rfind(b"\xff\xd9") < fp.tell():  # from the end: found at once in a complete file
        raise _Bad("truncated JPEG (no end-of-image marker)")
    exif = Image.Exif()  # EXIF only, as OpenCV reads it (Image.getexif() would also read XMP)
    exif.load(im.info.get("exif", b""))
    orientation = exif.get(0x0112, 1)
    return ImageHeader("JPEG", *im.size, orientation if type(orientation) is int and 1 <= orientation <= 8 else 1)


def _png_header(data: bytes) -> ImageHeader:
    """Pillow reads up to the first IDAT chunk; from there the chunks are walked to IEND by
    their lengths (the image data's checksums are libpng's to judge when it decodes)."""
    fp = io.BytesIO(data)
    im = PngImagePlugin.PngImageFile(fp)
    chunks = PngImagePlugin.ChunkStream(fp)
    fp.seek(im.tile[0][2] - 8)  # the first IDAT chunk, where PngImageFile.verify() starts
    while fp.tell() + 12 <= len(data):
        cid, pos, length = chunks.read()
        if pos + length + 4 > len(data):
            break
        if cid == b"IEND":
            return ImageHeader("PNG", *im.size)
        fp.seek(pos + length + 4)
    raise _Bad("truncated PNG (no IEND chunk)")


def _bmp_header(data: bytes) -> ImageHeader:
    im = BmpImagePlugin.BmpImageFile(io.BytesIO(data))
    codec, _, offset, args = im.tile[0]
    if codec == "raw" and isinstance(args, tuple) and offset + args[1] * im.size[1] > len(data):  # bytes per row
        raise _Bad("truncated BMP (pixel data shorter than the header says)")
    return ImageHeader("BMP", *im.size)


def _tiff_header(data: bytes) -> ImageHeader:
    """The first directory, by Pillow's TIFF tag reader (TiffImageFile would refuse layouts
    that OpenCV decodes, e.g. float RGB, which :func:`to_rgb8` then names)."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:16] if data[2] == 43 else data[:8])
    fp = io.BytesIO(data)
    fp.seek(ifd.next)
    with warnings.catch_warnings(record=True) as problems:  # the reader warns (and stops early)
        warnings.simplefilter("always")
        ifd.load(fp)
        tags = {t: ifd[t] for t in (256, 257, 273, 279, 324, 325) if t in ifd}
    if problems:
        raise _Bad("truncated or corrupt TIFF (unreadable directory)")
    tags = {t: v if isinstance(v, tuple) else (v,) for t, v in tags.items()}
    if 256 not in tags or 257 not in tags:
        raise _Bad("corrupt TIFF (no image width or length)")
    for offsets, counts in ((273, 279), (324, 325)):  # strips, tiles: inside the file
        if any(int(o) + int(c) > len(data) for o, c in zip(tags.get(offsets, ()), tags.get(counts, ()))):
            raise _Bad("truncated TIFF (image data beyond the end of the file)")
    return ImageHeader("TIFF", int(tags[256][0]), int(tags[257][0]))


def _webp_header(d: bytes) -> ImageHeader:
    """The canvas size from the first chunk. Not by Pillow: its WebP reader creates libwebp's
    decoder, which allocates the whole canvas, and applies Pillow's own pixel limit, when the
    file is opened, before ``max_pixels`` could refuse a bomb."""
    if len(d) < 30:
        raise _Bad("truncated WebP (short header)")
    if 8 + int.from_bytes(d[4:8], "little") > len(d):
        raise _Bad("truncated WebP (file shorter than its RIFF size)")
    if d[12:16] == b"VP8X":
        return ImageHeader("WebP", 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little"))
    if d[12:16] == b"VP8L" and d[20] == 0x2F:
        bits = int.from_bytes(d[21:25], "little")
        return ImageHeader("WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if d[12:16] == b"VP8 " and d[23:26] == b"\x9d\x01\x2a":
        return ImageHeader("WebP", int.from_bytes(d[26:28], "little") & 0x3FFF,
                           int.from_bytes(d[28:30], "little") & 0x3FFF)
    raise _Bad("corrupt or unsupported WebP header")


def _accepts(name: str) -> Callable[[bytes], bool]:
    """The test of a file's first bytes that Pillow's registry (Image.OPEN) holds for a plugin
    (a str it returns is a notice that the plugin cannot read the file: not accepted)."""
    accept = Image.OPEN[name][1]
    return lambda prefix: accept is not None and not isinstance(ok := accept(prefix), str) and bool(ok)


#: (format, accepts(first 16 bytes), header reader), tried in order.
_FORMATS = (
    ("JPEG", _accepts("JPEG"), _jpeg_header),
    ("PNG", _accepts("PNG"), _png_header),
    ("BMP", _accepts("BMP"), _bmp_header),
    ("WebP", lambda p: p[:4] == b"RIFF" and p[8:12] == b"WEBP", _webp_header),
    ("TIFF", _accepts("TIFF"), _tiff_header),
)
_HEADER_LOCK = threading.Lock()
#: What a complete file holds, and the reason given where Pillow cannot read the header at all.
_END_MARKERS = {"JPEG": (b"\xff\xd9", "truncated JPEG (no end-of-image marker)"),
                "PNG": (b"IEND", "truncated PNG (no IEND chunk)")}


def read_header(data: bytes, path: os.PathLike | str = "<bytes>") -> ImageHeader:
    """Identify an encoded image and read its size without decoding it.

    Args:
      data: the whole encoded file.
      path: used in error messages only.
    Returns:
      :class:`ImageHeader` (format, width, height, EXIF orientation).
    Raises:
      ImageError: empty, not one of :data:`SUPPORTED_FORMATS`, truncated or corrupt.
    """
    data = bytes(data)
    if not data:
        raise ImageError(path, "empty file")
    found = next((f for f in _FORMATS if f[1](data[:16])), None)
    if found is None:
        raise ImageError(path, "not a supported image (" + ", ".join(SUPPORTED_FORMATS) + ")")
    fmt, _, reader = found
    try:
        # Pillow warns about metadata it skips (EXIF, APNG): not the user's concern. The warning
        # filters are process-wide: one thread at a time changes them.
        with _HEADER_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = reader(data)
    except _Bad as bad:
        raise ImageError(path, str(bad)) from None
    except Exception as err:  # noqa: BLE001 -- Pillow's readers raise many types on hostile bytes
        marker, truncated = _END_MARKERS.get(fmt, (b"", ""))
        if marker and marker not in data:
            raise ImageError(path, truncated) from None
        detail = " ".join(str(err).split())[:120] or type(err).__name__
        raise ImageError(path, f"corrupt {fmt} header ({detail})") from None
    if header.width <= 0 or header.height <= 0:
        raise ImageError(path, f"invalid image size {header.width}x{header.height}")
    return header


# --------------------------------------------------------------------------- decoding


#: What the C decoders print (on file descriptor 2) when the pixel data is damaged but
#: they still return an image, with the missing or garbled part filled in. libjpeg:
#: corrupt entropy data, a file that ends early, a frame header announcing more rows
#: than the data holds ("premature end of data segment"). libpng: image data that
#: does not match the header. libtiff: strips that cannot be read. Other messages
#: (an unknown JFIF revision, a known-incorrect sRGB profile, unknown TIFF tags)
#: leave the pixels intact and are ignored.
_CORRUPTION = re.compile(
    r"(Corrupt JPEG data[^\n]*|Premature end of JPEG file|Bogus [^\n]*|"
    r"libpng [^\n]*(?:IDAT|image data)[^\n]*|[^\n]*Read error[^\n]*|[^\n]*Not enough data[^\n]*)",
    re.IGNORECASE,
)
_DECODE_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stderr_to(fd: int):
    """Point file descriptor 2, where C libraries write, at ``fd`` inside the block (Python's
    ``sys.stderr`` is flushed first). Where there is no usable descriptor 2, does nothing."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cv2_decode(data: bytes) -> Tuple[Optional[np.ndarray], str]:
    """cv2.imdecode(IMREAD_UNCHANGED) → ``(array or None, what the C decoders printed)``.

    libjpeg, libpng and libtiff report damaged data on the process's file
    descriptor 2, not through OpenCV; that descriptor is pointed at a temporary
    file for the call and read back (under a lock: the descriptor is
    process-wide, so decodes run one at a time). OpenCV's own log is silenced.
    """
    logging = cv2.utils.logging
    with _DECODE_LOCK, tempfile.TemporaryFile() as sink:
        level = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        try:
            with _native_stderr_to(sink.fileno()):
                try:
                    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                except cv2.error:
                    decoded = None
        finally:
            logging.setLogLevel(level)
        sink.seek(0)
        messages = sink.read(1 << 16).decode("utf-8", "replace")
    return decoded, messages


def corruption(messages: str) -> Optional[str]:
    """The first decoder message of ``messages`` that means damaged pixel data, or None."""
    m = _CORRUPTION.search(messages)
    return m.group(0).strip() if m else None


@contextlib.contextmanager
def quiet_native_stderr():
    """Discard what C libraries write to file descriptor 2 inside the block.

    libjpeg and libpng print their own warnings ("Corrupt JPEG data: ...",
    "libpng error: ...") straight to the process's stderr, past OpenCV's logging;
    a command line that promises one line per bad file wraps :func:`load_image`
    in this. It swaps the process-wide descriptor 2, so use it from one thread
    only (decoding itself, without it, is thread-safe). Python's ``sys.stderr``
    is flushed first and is unaffected afterwards.
    """
    with open(os.devnull, "wb") as sink, _native_stderr_to(sink.fileno()):
        yield


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to ``image[H, W, ...]`` so it shows upright."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)
    flip = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    for axis in flip:
        image = np.flip(image, axis)
    return np.ascontiguousarray(image)


def to_rgb8(decoded: np.ndarray) -> np.ndarray:
    """Convert an OpenCV-decoded array (BGR order) to ``uint8[H, W, 3]`` RGB.

    Accepts ``uint8`` or ``uint16`` arrays of shape [H, W], [H, W, 1] (gray),
    [H, W, 2] (gray + alpha), [H, W, 3] (BGR) or [H, W, 4] (BGRA). See the module
    docstring for the conversion rules (alpha composited on black, 16-bit scaled
    by 255/65535). Raises ValueError for other types or channel counts.
    """
    if decoded.dtype == np.uint8:
        top = 255
    elif decoded.dtype == np.uint16:
        top = 65535
    else:
        raise ValueError(f"unsupported pixel type {decoded.dtype}")
    image = decoded[:, :, None] if decoded.ndim == 2 else decoded
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported channel layout {decoded.shape}")
    height, width, channels = image.shape
    out = np.empty((height, width, 3), np.uint8)
    # Row blocks of about 2**20 pixels bound the temporary wide arrays (a 100 MP
    # RGBA image would otherwise need gigabytes of float64).
    step = max(1, (1 << 20) // max(1, width))
    for y0 in range(0, height, step):
        block = image[y0 : y0 + step]
        colour = block[:, :, :1] if channels in (1, 2) else block[:, :, 2::-1]  # BGR -> RGB
        if channels in (2, 4):
            alpha = block[:, :, -1:].astype(np.float64) * (255.0 / (top * top))
            converted = np.rint(colour * alpha).astype(np.uint8)
        elif top == 65535:
            converted = ((colour.astype(np.uint32) + 128) // 257).astype(np.uint8)
        else:
            converted = colour
        out[y0 : y0 + step] = converted  # broadcasts one grey channel to three
    return out


def decode_image(
    data: bytes, path: os.PathLike | str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an encoded image (untrusted bytes) to ``uint8[H, W, 3]`` RGB.

    The header is checked first (:func:`read_header`); images of more than
    ``max_pixels`` pixels are refused before decoding. ``path`` is used in error
    messages only. Raises :class:`ImageError` with a one-line reason.
    """
    header = read_header(data, path)
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageError(
            path,
            f"image too large: {header.width}x{header.height} pixels "
            f"({pixels / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:.1f})",
        )
    decoded, messages = _cv2_decode(data)
    if decoded is None or decoded.size == 0:
        raise ImageError(path, f"cannot decode this {header.format} file (corrupt data)")
    damage = corruption(messages)
    if damage is not None:  # decoded with the damaged part made up: not an image to trust
        raise ImageError(path, f"corrupt {header.format} data ({damage[:120]})")
    if decoded.shape[0] * decoded.shape[1] > max_pixels:  # the header lied
        raise ImageError(path, "image larger than its header says")
    try:
        image = to_rgb8(decoded)
    except ValueError as err:
        raise ImageError(path, f"{err} in this {header.format} file") from None
    return _orient(image, header.orientation)


def load_image(
    path: os.PathLike | str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Read an image file to ``uint8[H, W, 3]`` RGB, refusing anything unsafe or broken.

    Args:
      path: a JPEG, PNG, BMP, WebP or TIFF file (recognised by content, not name).
      max_pixels: largest width x height accepted, checked from the header
        before decoding (default :data:`DEFAULT_MAX_PIXELS`, 100 megapixels).
      max_bytes: largest file size read (default 1 GiB).
    Returns:
      ``uint8[H, W, 3]``, RGB, indexed [y, x, channel], upright (JPEG EXIF
      orientation applied). Images smaller than the detector's 12 px are valid.
    Raises:
      ImageError: ``"<path>: <reason>"`` for a missing path, a directory, an empty
        or oversized file, a file that is not a supported image, a truncated or
        corrupt file, or an image of more than ``max_pixels`` pixels.
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):  # an int would be read as an open file descriptor
        raise ImageError(repr(path), f"not a file path (got {type(path).__name__}; expected str or os.PathLike)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror or err})") from None
    if os.path.isdir(path):
        raise ImageError(path, "is a directory")
    if not os.path.isfile(path):
        raise ImageError(path, "not a regular file")
    if st.st_size > max_bytes:
        raise ImageError(path, f"file too large ({st.st_size} bytes; the limit is {max_bytes})")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise ImageError(path, f"file too large (more than {max_bytes} bytes)")
    return decode_image(data, path, max_pixels)


# --------------------------------------------------------------------------- finding files


def is_image_name(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def find_images(
    paths: Sequence[os.PathLike | str],
    errors: Optional[List[ImageError]] = None,
) -> List[Tuple[str, str]]:
    """List the image files named by ``paths``.

    Each path may be a file (taken as is, whatever its extension: its content is
    judged when it is loaded) or a folder, searched recursively for files whose
    extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive). Symbolic links to
    files are listed; links to folders are not followed.

    Args:
      paths: files and folders, in the order wanted.
      errors: if a list, problems (a missing path, a folder without images, an
        unreadable folder) are appended to it as :class:`ImageError` and the
        search goes on; if None, the first problem is raised.
    Returns:
      ``[(display_path, path), ...]``: for a file given directly both are the path
      as given; for a file found in a folder both are
      ``os.path.join(folder_as_given, relative_path)``. Files of one folder are
      sorted by their relative path (component-wise, so a folder's files come
      together).
    """

    def problem(err: ImageError) -> None:
        if errors is None:
            raise err
        errors.append(err)

    found: List[Tuple[str, str]] = []
    for given in paths:
        given = os.fspath(given)
        if os.path.isdir(given):
            walk_errors: List[OSError] = []
            rels = []
            for root, dirs, files in os.walk(given, onerror=walk_errors.append):
                dirs.sort()
                rel_root = os.path.relpath(root, given)
                for name in files:
                    if is_image_name(name):
                        rel = name if rel_root == os.curdir else os.path.join(rel_root, name)
                        rels.append(rel)
            for err in walk_errors:
                problem(ImageError(err.filename or given, f"cannot list folder ({err.strerror})"))
            if not rels:
                problem(ImageError(given, "no images in this folder (looked for "
                                   + ", ".join(IMAGE_EXTENSIONS) + ")"))
            for rel in sorted(rels, key=lambda r: r.split(os.sep)):
                joined = os.path.join(given, rel)
                found.append((joined, joined))
        elif os.path.lexists(given) and not os.path.exists(given):
            problem(ImageError(given, "broken symbolic link"))
        elif os.path.exists(given):
            found.append((given, given))
        else:
            problem(ImageError(given, "no such file or folder"))
    return found
