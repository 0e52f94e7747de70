"""Reading untrusted image files into RGB arrays.

Images come from users and are treated as hostile: before any pixel is decoded,
the file's header is parsed here (JPEG, PNG, BMP, WebP, TIFF) to read the image
size and to check that the file is complete. A file whose header announces more
than ``max_pixels`` pixels (a decompression bomb) is refused without being
decoded; a truncated JPEG or PNG is refused instead of being decoded with the
missing part filled in. Every failure is an :class:`~mtcnn_jax.errors.ImageError`
whose message is one line, ``"<path>: <reason>"``.

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
import os
import re
import struct
import sys
import tempfile
import threading
from typing import List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

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


def _u16be(d: bytes, i: int) -> int:
    return struct.unpack_from(">H", d, i)[0]


def _u32be(d: bytes, i: int) -> int:
    return struct.unpack_from(">I", d, i)[0]


def _png_header(d: bytes) -> ImageHeader:
    """Walk the PNG chunks: IHDR must come first and the IEND chunk must be present."""
    n = len(d)
    if n < 33 or d[12:16] != b"IHDR" or _u32be(d, 8) != 13:
        raise _Bad("truncated or corrupt PNG (no IHDR chunk)")
    width, height = _u32be(d, 16), _u32be(d, 20)
    pos = 8
    while True:
        if pos + 12 > n:
            raise _Bad("truncated PNG (no IEND chunk)")
        length = _u32be(d, pos)
        if length > 0x7FFFFFFF:
            raise _Bad("corrupt PNG (bad chunk length)")
        if d[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + length
    return ImageHeader("PNG", width, height)


# Any marker that can end entropy-coded data: 0xFF followed by neither 0x00 (byte
# stuffing), a restart marker 0xD0-0xD7, nor another 0xFF (fill byte).
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# A marker outside entropy-coded data: 0xFF (any fill bytes) then a byte that is not 0xFF.
_JPEG_MARKER = re.compile(rb"\xff([^\xff])")
_JPEG_MAX_MARKERS = 100_000  # real files have tens; bounds the work on hostile ones
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _exif_orientation(seg: bytes) -> int:
    """EXIF orientation (1..8) from an APP1 payload starting with ``Exif\\0\\0``; 1 if absent."""
    t = seg[6:]
    try:
        if t[:4] == b"II*\x00":
            e = "<"
        elif t[:4] == b"MM\x00*":
            e = ">"
        else:
            return 1
        ifd = struct.unpack_from(e + "I", t, 4)[0]
        count = struct.unpack_from(e + "H", t, ifd)[0]
        for k in range(count):
            tag, typ, cnt = struct.unpack_from(e + "HHI", t, ifd + 2 + 12 * k)
            if tag == 0x0112 and typ == 3 and cnt == 1:
                value = struct.unpack_from(e + "H", t, ifd + 2 + 12 * k + 8)[0]
                return value if 1 <= value <= 8 else 1
    except struct.error:
        pass
    return 1


def _jpeg_header(d: bytes) -> ImageHeader:
    """Walk the JPEG markers up to the end-of-image marker (EOI, FFD9).

    The size is that of the first SOFn frame header (as libjpeg reads it). Data
    after EOI is allowed (some cameras append some); a file that ends before EOI
    is truncated.
    """
    n = len(d)
    pos = 2
    size = None
    orientation = 1
    for _ in range(_JPEG_MAX_MARKERS):
        # Expect a marker; tolerate stray bytes and fill bytes before it, as libjpeg does.
        m = _JPEG_MARKER.search(d, pos)
        if m is None:
            raise _Bad("truncated JPEG (no end-of-image marker)")
        marker = m.group(1)[0]
        pos = m.end()
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8 or marker == 0x00:
            continue  # stand-alone markers (and a stray stuffed byte)
        if pos + 2 > n:
            raise _Bad("truncated JPEG (no end-of-image marker)")
        length = _u16be(d, pos)
        if length < 2:
            raise _Bad("corrupt JPEG (bad segment length)")
        seg = d[pos + 2 : pos + length]
        if pos + length > n:
            raise _Bad("truncated JPEG (no end-of-image marker)")
        if marker in _JPEG_SOF and size is None:
            if len(seg) < 5:
                raise _Bad("corrupt JPEG (short frame header)")
            height, width = _u16be(seg, 1), _u16be(seg, 3)
            if height == 0:
                raise _Bad("unsupported JPEG (height given by a DNL marker)")
            size = (width, height)
        elif marker == 0xE1 and seg[:6] == b"Exif\x00\x00" and orientation == 1:
            orientation = _exif_orientation(seg)
        pos += length
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            if size is None:
                raise _Bad("corrupt JPEG (scan before frame header)")
            m = _JPEG_MARKER_IN_SCAN.search(d, pos)
            if m is None:
                raise _Bad("truncated JPEG (no end-of-image marker)")
            pos = m.start()
    else:
        raise _Bad("corrupt JPEG (too many markers)")
    if size is None:
        raise _Bad("corrupt JPEG (no frame header)")
    return ImageHeader("JPEG", size[0], size[1], orientation)


def _bmp_header(d: bytes) -> ImageHeader:
    if len(d) < 26:
        raise _Bad("truncated BMP (short header)")
    offset, dib = struct.unpack_from("<II", d, 10)
    if dib == 12:  # BITMAPCOREHEADER
        width, height, _, bpp = struct.unpack_from("<HHHH", d, 18)
        compression = 0
    else:
        if len(d) < 34:
            raise _Bad("truncated BMP (short header)")
        width, height, _, bpp, compression = struct.unpack_from("<iiHHI", d, 18)
    height = abs(height)  # negative height: rows stored top-down
    if width <= 0 or bpp == 0:
        raise _Bad("corrupt BMP header")
    if compression in (0, 3):  # uncompressed: the pixel array size is known
        stride = (width * bpp + 31) // 32 * 4
        if offset + stride * height > len(d):
            raise _Bad("truncated BMP (pixel data shorter than the header says)")
    return ImageHeader("BMP", width, height)


def _webp_header(d: bytes) -> ImageHeader:
    if len(d) < 30:
        raise _Bad("truncated WebP (short header)")
    if 8 + struct.unpack_from("<I", d, 4)[0] > len(d):
        raise _Bad("truncated WebP (file shorter than its RIFF size)")
    chunk = d[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(d[24:27], "little")
        height = 1 + int.from_bytes(d[27:30], "little")
    elif chunk == b"VP8L":
        if d[20] != 0x2F:
            raise _Bad("corrupt WebP (bad lossless signature)")
        bits = struct.unpack_from("<I", d, 21)[0]
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        if d[23:26] != b"\x9d\x01\x2a":
            raise _Bad("corrupt WebP (bad lossy start code)")
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", d, 26))
    else:
        raise _Bad("unsupported WebP variant")
    return ImageHeader("WebP", width, height)


_TIFF_TYPE_SIZE = {3: 2, 4: 4}  # SHORT, LONG


def _tiff_header(d: bytes) -> ImageHeader:
    """First IFD of a classic TIFF: size, and strips/tiles must lie inside the file."""
    e = "<" if d[:2] == b"II" else ">"
    try:
        ifd = struct.unpack_from(e + "I", d, 4)[0]
        count = struct.unpack_from(e + "H", d, ifd)[0]
        tags = {}
        for k in range(count):
            tag, typ, cnt = struct.unpack_from(e + "HHI", d, ifd + 2 + 12 * k)
            if typ not in _TIFF_TYPE_SIZE:
                continue
            size = _TIFF_TYPE_SIZE[typ]
            at = ifd + 2 + 12 * k + 8
            if cnt * size > 4:
                at = struct.unpack_from(e + "I", d, at)[0]
            fmt = e + str(cnt) + ("H" if size == 2 else "I")
            tags[tag] = struct.unpack_from(fmt, d, at)
    except struct.error:
        raise _Bad("truncated or corrupt TIFF (unreadable directory)") from None
    if 256 not in tags or 257 not in tags:
        raise _Bad("corrupt TIFF (no image width or length)")
    width, height = tags[256][0], tags[257][0]
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # strips, tiles
        offsets, counts = tags.get(offsets_tag, ()), tags.get(counts_tag, ())
        if any(o + c > len(d) for o, c in zip(offsets, counts)):
            raise _Bad("truncated TIFF (image data beyond the end of the file)")
    return ImageHeader("TIFF", width, height)


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
    try:
        if not data:
            raise _Bad("empty file")
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            header = _png_header(data)
        elif data[:3] == b"\xff\xd8\xff":
            header = _jpeg_header(data)
        elif data[:2] == b"BM":
            header = _bmp_header(data)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            header = _webp_header(data)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            header = _tiff_header(data)
        else:
            raise _Bad("not a supported image (" + ", ".join(SUPPORTED_FORMATS) + ")")
    except _Bad as bad:
        raise ImageError(path, str(bad)) from None
    except struct.error:
        raise ImageError(path, "truncated or corrupt image header") from None
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


def _cv2_decode(data: bytes) -> Tuple[Optional[np.ndarray], str]:
    """cv2.imdecode(IMREAD_UNCHANGED) → ``(array or None, what the C decoders printed)``.

    libjpeg, libpng and libtiff report damaged data on the process's file
    descriptor 2, not through OpenCV; that descriptor is pointed at a temporary
    file for the call and read back (under a lock: the descriptor is
    process-wide, so decodes run one at a time). OpenCV's own log is silenced.
    """
    logging = cv2.utils.logging
    with _DECODE_LOCK:
        level = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        saved = None
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            saved = None  # no usable descriptor 2: decode without listening
        try:
            with tempfile.TemporaryFile() as sink:
                if saved is not None:
                    os.dup2(sink.fileno(), 2)
                try:
                    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                except cv2.error:
                    decoded = None
                finally:
                    if saved is not None:
                        os.dup2(saved, 2)
                sink.seek(0)
                messages = sink.read(1 << 16).decode("utf-8", "replace")
        finally:
            if saved is not None:
                os.close(saved)
            logging.setLogLevel(level)
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
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield  # no usable descriptor 2: nothing to silence
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
