"""Five-point face alignment: warp each detected face onto a fixed landmark template.

The template is the one face-recognition models (ArcFace / InsightFace) were
trained on, for 112 x 112 crops. Landmarks, here and in the detector's output,
are ordered left eye, right eye, nose, left mouth corner, right mouth corner
("left" as seen in the image, i.e. smaller x for an upright frontal face), and
given as (x, y) in pixels of the image they come from, with pixel centres at
integer coordinates (OpenCV's convention, which ``cv2.warpAffine`` uses).

Crops of other sizes than 112 follow one of two conventions (``mode``):

* ``"arcface"`` (the default): insightface's ``face_align.estimate_norm`` /
  ``norm_crop``, the convention the recognition models trained on these crops expect.
  For a multiple of 112 the template is scaled by ``size / 112``; for a multiple of 128
  it is scaled by ``size / 128`` and shifted right by ``8 × size / 128`` pixels, x only
  (at 128: the 112 template itself, 8 px to the right, y unchanged; at 256: twice the
  template, 16 px to the right). Other sizes are refused (insightface asserts them away).
* ``"scaled"``: the template scaled by ``size / 112`` about the origin, for any size
  (what ``align`` did before the modes existed: at 128 the face is 8/7 larger and lower
  than ArcFace-128 models expect).

Both agree for 112 and its multiples. The default is ``"arcface"`` because the crops
exist to be fed to recognition models, and those models (ArcFace and insightface's
other 112/128 models) were trained on crops made by ``norm_crop``; ``"scaled"`` stays
available by name for sizes the insightface rule does not define (e.g. 160).
"""

from __future__ import annotations

from typing import Union

import cv2
import numpy as np
from numpy.typing import ArrayLike

from mtcnn_jax.faces import Faces

#: ArcFace/InsightFace five-point template for 112 x 112 crops, (x, y) pixels, float32[5, 2].
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float32,
)


#: The conventions :func:`template` and :func:`align` know (see the module docstring).
ALIGN_MODES = ("arcface", "scaled")


def _check_size(size: int) -> int:
    """``size`` as an int; ValueError unless it is a positive whole number."""
    try:
        whole = not isinstance(size, bool) and float(size).is_integer() and size > 0
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    return int(size)


def template(size: int = 112, mode: str = "arcface") -> np.ndarray:
    """The five-point template for ``size`` x ``size`` crops: float32[5, 2] (x, y).

    ``mode="arcface"`` (insightface's rule): for ``size`` a multiple of 112,
    :data:`ARCFACE_TEMPLATE` × ``size / 112``; for a multiple of 128 (and not of 112),
    :data:`ARCFACE_TEMPLATE` × ``size / 128`` plus ``8 × size / 128`` in x; other sizes
    raise ValueError. ``mode="scaled"``: :data:`ARCFACE_TEMPLATE` × ``size / 112`` for any size.
    """
    size = _check_size(size)
    if mode == "scaled" or (mode == "arcface" and size % 112 == 0):
        return (ARCFACE_TEMPLATE * np.float32(size / 112.0)).astype(np.float32)
    if mode == "arcface":
        if size % 128 != 0:
            raise ValueError(f"size {size}: the arcface convention (insightface's norm_crop) is defined for "
                             "multiples of 112 or 128; pass mode='scaled' to scale the 112 template to any size")
        ratio = np.float32(size / 128.0)
        out = ARCFACE_TEMPLATE * ratio
        out[:, 0] += np.float32(8.0) * ratio
        return out.astype(np.float32)
    raise ValueError(f"mode must be one of {', '.join(map(repr, ALIGN_MODES))}, got {mode!r}")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst``.

    Umeyama's closed form (IEEE TPAMI 13(4), 1991) in 2-D: rotation, uniform
    scale and translation, never a reflection, minimising
    ``sum_i |s R src_i + t - dst_i|^2``.

    Args:
      src: float[K, 2] points (x, y), K >= 2, not all equal (e.g. landmarks in the image).
      dst: float[K, 2] points (x, y) (e.g. the template).
    Returns:
      float64[2, 3] matrix ``M = [s R | t]``: ``dst ~= M @ [x, y, 1]``, the form
      ``cv2.warpAffine`` takes.
    Raises:
      ValueError: shapes differ, fewer than 2 points, non-finite values, or all
        ``src`` points equal (no scale can be fitted).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two float[K, 2] arrays with K >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / len(src)
    if var_src <= 1e-12 * max(1.0, float(np.abs(src).max())) ** 2:
        raise ValueError("source points are all equal: no similarity transform fits")
    cov = dst_c.T @ src_c / len(src)  # Umeyama's Sigma_xy, [2, 2]
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # the best orthogonal map would reflect: take the best rotation
    rotation = u @ np.diag(d) @ vt
    scale = float((sing * d).sum() / var_src)
    translation = mu_dst - scale * rotation @ mu_src
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def alignment_matrix(landmarks: ArrayLike, size: int = 112, mode: str = "arcface") -> np.ndarray:
    """The similarity transform that :func:`align` warps one face with: float64[2, 3].

    ``landmarks``: float[5, 2] (x, y) in image pixels; the matrix maps image points onto
    crop points (``crop = M @ [x, y, 1]``), fitted onto :func:`template` (``size``,
    ``mode``) by :func:`similarity_transform` -- insightface's ``estimate_norm``.
    """
    return similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), template(size, mode))


def align(image: np.ndarray, landmarks: Union[ArrayLike, Faces], size: int = 112, mode: str = "arcface") -> np.ndarray:
    """Crop and warp each face so that its landmarks land on :func:`template` (``size``, ``mode``).

    Args:
      image: uint8[H, W, 3] (any channel order; it is kept).
      landmarks: float[N, 5, 2] or float[5, 2], (x, y) in ``image`` pixels,
        ordered left eye, right eye, nose, left mouth corner, right mouth corner;
        or the detector's :class:`mtcnn_jax.faces.Faces` (its landmarks are used;
        so are those of :class:`mtcnn_jax.rotations.RotatedFaces`, which gives
        upright crops of rotated faces).
      size: side of the square output crops.
      mode: ``"arcface"`` (default; insightface's ``norm_crop``: sizes that are multiples
        of 112 or 128) or ``"scaled"`` (the 112 template scaled by ``size / 112``, any
        size); see the module docstring.
    Returns:
      uint8[N, size, size, 3] for float[N, 5, 2] landmarks (N may be 0), or
      uint8[size, size, 3] for a single float[5, 2] face. Warped with
      ``cv2.warpAffine``, bilinear interpolation, black (0) outside the image.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    if isinstance(landmarks, Faces) or "landmarks" in getattr(landmarks, "_fields", ()):
        found = getattr(landmarks, "landmarks")  # the detector's result: align its landmarks
        if found is None:
            raise ValueError("these faces carry no landmarks to align (a detector without landmarks made them)")
        landmarks = found
    try:
        points = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"landmarks must be float[N, 5, 2] or float[5, 2] (or the detector's Faces), "
                         f"got {type(landmarks).__name__}") from None
    single = points.shape == (5, 2)
    if single:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be float[N, 5, 2] or float[5, 2], got {list(points.shape)}")
    size = _check_size(size)
    dst = template(size, mode)
    out = np.zeros((len(points), size, size, 3), np.uint8)
    for i, face in enumerate(points):
        matrix = similarity_transform(face, dst)
        out[i] = cv2.warpAffine(
            image,
            matrix,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    return out[0] if single else out
