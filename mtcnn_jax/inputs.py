"""What :meth:`mtcnn_jax.MTCNN.detect` takes, and which of the faces it returns.

Images (:func:`as_batch`, :func:`to_image`). ``detect`` accepts what users of the other
MTCNN ports pass:

* one image: a ``uint8[H, W, 3]`` RGB array (``[H, W]`` / ``[H, W, 1]`` grayscale and
  ``[H, W, 4]`` RGBA as :func:`mtcnn_jax.detector.as_rgb_uint8` converts them; anything
  NumPy can turn into such an array, e.g. a JAX array or a CPU tensor), a **file path**
  (``str``, ``bytes`` or ``os.PathLike``: read by :func:`mtcnn_jax.images.load_image`,
  with its checks and its EXIF rotation) or a **PIL image** (:func:`from_pil`);
* several images: a **list or tuple** of any of those (sizes may differ), or a 4-D
  ``uint8[B, H, W, 3]`` **batch** (``[B, H, W, 1]`` grayscale and ``[B, H, W, 4]`` RGBA too;
  a 3-D array is always one image).

One image gives one :class:`~mtcnn_jax.faces.Faces`, several give a list of them (a
4-D batch of one image gives a list of one). Images are converted one group at a time,
as the detector reaches them, so a long list of paths is never all in memory at once.
Something that is none of these is a one-line :class:`~mtcnn_jax.errors.UserError`
naming the image (``image 3: ...`` in a list).

Selection (:func:`select`): ``keep="all"`` returns every face; ``"largest"`` only the face
with the largest box (area; what facenet-pytorch's ``select_largest=True, keep_all=False``
returns), ``"best"`` only the most confident one (its ``select_largest=False``). An image
without faces gives no faces either way.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, List, Tuple, Union

import numpy as np

from mtcnn_jax import images
from mtcnn_jax.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: One image as :meth:`~mtcnn_jax.MTCNN.detect` takes it (see the module docstring).
ImageLike = Union[np.ndarray, str, bytes, "os.PathLike[str]", "PILImage"]

#: The values of ``keep`` (see :func:`select`).
KEEP_MODES = ("all", "largest", "best")


def _pil_image_class():
    """PIL's Image class if PIL is loaded (an object can only be a PIL image if it is), else None."""
    module = sys.modules.get("PIL.Image")
    return None if module is None else module.Image


def is_path(item: Any) -> bool:
    """Whether ``item`` names a file (``str``, ``bytes``, ``os.PathLike``)."""
    return isinstance(item, (str, bytes, os.PathLike))


def from_pil(image: Any) -> np.ndarray:
    """A PIL image's pixels as ``uint8[H, W, 3]`` RGB, converted as :func:`mtcnn_jax.images.load_image`
    converts files.

    RGB is taken as is; grayscale (``L``, ``1``) is replicated; an alpha channel (``RGBA``,
    ``LA``, a palette with transparency) is composited on black; 16-bit grayscale (``I;16``,
    ``I``) is scaled by ``round(v * 255 / 65535)`` (values clipped to 0..65535); other colour
    modes (CMYK, YCbCr, LAB, HSV, a palette) are converted to RGB by PIL. Floating-point
    images (``F``) are refused, as float arrays are. The pixels are taken as they are stored:
    no EXIF rotation is applied (coordinates refer to the PIL image as given).
    """
    mode = image.mode
    if mode == "F":
        raise UserError("a floating-point PIL image (mode F): convert it to 8-bit first")
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I (32-bit integers): 16-bit samples
        wide = np.asarray(image).astype(np.int64)
        return np.repeat(((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)[:, :, None], 3, axis=2)
    if mode in ("RGB", "L", "RGBA"):
        arr = np.asarray(image)
    elif mode in ("LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        arr = np.asarray(image.convert("RGBA"))
    elif mode == "1":
        arr = np.asarray(image.convert("L"))
    else:
        arr = np.asarray(image.convert("RGB"))
    from mtcnn_jax.detector import as_rgb_uint8  # noqa: PLC0415  (the detector imports this module)

    return as_rgb_uint8(arr)


def as_batch(images_in: Any) -> Tuple[List[Any], bool]:
    """Split what ``detect`` was given into its images, not yet converted: ``(items, single)``.

    ``single`` is True when one image was given (one :class:`Faces` is returned), False for a
    list, a tuple or a 4-D batch. Each item is converted by :func:`to_image` when its turn comes.
    """
    if isinstance(images_in, (list, tuple)):
        return list(images_in), False
    if is_path(images_in):
        return [images_in], True
    pil = _pil_image_class()
    if pil is not None and isinstance(images_in, pil):
        return [images_in], True
    try:
        arr = np.asarray(images_in)
    except (TypeError, ValueError):
        raise UserError(f"image: expected an array, a PIL image or a file path, got {type(images_in).__name__}") from None
    if arr.ndim == 4:
        return list(arr), False
    return [arr], True


def to_image(item: Any, name: str = "image") -> np.ndarray:
    """One item of :func:`as_batch` as ``uint8[H, W, 3]`` RGB; ``name`` is used in error messages.

    A path is read by :func:`mtcnn_jax.images.load_image` (an unusable file raises
    :class:`~mtcnn_jax.errors.ImageError`, ``"<path>: <reason>"``); a PIL image is converted by
    :func:`from_pil`; anything else goes through :func:`mtcnn_jax.detector.as_rgb_uint8`.
    """
    from mtcnn_jax.detector import as_rgb_uint8  # noqa: PLC0415  (the detector imports this module)

    if is_path(item):
        return images.load_image(item)
    pil = _pil_image_class()
    if pil is not None and isinstance(item, pil):
        try:
            return from_pil(item)
        except UserError as err:
            raise UserError(f"{name}: {err}") from None
    try:
        arr = np.asarray(item)
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected an array, a PIL image or a file path, got {type(item).__name__}") from None
    if arr.dtype == object:
        raise UserError(f"{name}: expected an array, a PIL image or a file path, got {type(item).__name__}")
    return as_rgb_uint8(arr, name)


def check_keep(keep: Any) -> str:
    """``keep`` if it is one of :data:`KEEP_MODES`; a one-line :class:`UserError` otherwise."""
    if not isinstance(keep, str) or keep not in KEEP_MODES:
        raise UserError(f"keep must be one of {', '.join(map(repr, KEEP_MODES))}, got {keep!r}")
    return keep


def select(faces: Any, keep: str = "all") -> Any:
    """The faces of one image that ``keep`` asks for (see the module docstring).

    ``faces``: a :class:`~mtcnn_jax.faces.Faces` or any named tuple of per-face arrays whose
    first two fields are the boxes ``float[N, 4]`` (``x1, y1, x2, y2``) and the scores
    ``float[N]`` (e.g. :class:`mtcnn_jax.rotations.RotatedFaces`); fields that are None stay
    None. Returns the same type with all rows (``"all"``), or the one row of the largest box
    (``"largest"``: largest ``(x2 - x1) × (y2 - y1)``, the higher score on a tie) or of the
    highest score (``"best"``: the first of equal scores); no rows when there are none.
    """
    check_keep(keep)
    scores = np.asarray(faces[1]).reshape(-1)
    if keep == "all" or len(scores) == 0:
        return faces
    if keep == "best":
        i = int(np.argmax(scores))
    else:
        b = np.asarray(faces[0], np.float64).reshape(-1, 4)
        area = np.nan_to_num((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), nan=-np.inf)
        best = np.flatnonzero(area == area.max())
        i = int(best[np.argmax(scores[best])])
    parts = [None if f is None else np.asarray(f)[i : i + 1] for f in faces]
    return type(faces)(*parts) if hasattr(faces, "_fields") else tuple(parts)
