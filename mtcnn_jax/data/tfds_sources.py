"""Optional sources: the TFDS ``wider_face`` and ``celeb_a`` builders read into our records.

For users who already have these TFDS datasets prepared (``tfds.load`` then finds
them in ``data_dir``; nothing is downloaded here). Both builders need TensorFlow,
which the default install leaves out: ``pip install 'mtcnn-jax[tfds-sources]'``.
Without it :func:`load_wider_face` / :func:`load_celeb_a` stop with a one-line
:class:`~mtcnn_jax.errors.UserError` naming that extra. The conversions of one
example (:func:`wider_record_from_example`, :func:`celeba_face_from_example`) are
pure functions of a dict of NumPy arrays and need no TensorFlow.

What the builders hold (tensorflow-datasets 4.9; ``wider_face`` 0.1.0,
``celeb_a`` 2.1.0):

* ``wider_face``: ``image`` uint8[H, W, 3]; ``image/filename`` (the path below
  ``WIDER_<split>/images/``); ``faces``: a sequence of ``bbox`` float32[4]
  **normalised** ``(ymin, xmin, ymax, xmax)`` — the gt file's ``x, y, x + w, y + h``
  clipped to the image and divided by W or H — with ``blur`` and ``occlusion``
  uint8 and ``expression``, ``illumination``, ``pose``, ``invalid`` bool. Here a
  box is brought back to pixels (× W, × H) and rounded to the integer pixels the
  gt file holds (float32 normalisation moves them by far less than 0.5 px for any
  image under 10⁶ px a side), giving :class:`~mtcnn_jax.data.wider.WiderRecord`
  rows as :func:`~mtcnn_jax.data.wider.read_wider_gt` makes them (half-open
  ``x1, y1, x2, y2``; all-zero "no face" boxes dropped). One difference remains:
  a box that leaves the image is clipped to it in TFDS, not in the gt file.
* ``celeb_a``: the **aligned and cropped** images (``img_align_celeba``, uint8[218,
  178, 3]); ``landmarks``: a dict ``lefteye_x … rightmouth_y`` of int64 (the aligned
  list, 0-based pixels of the crop); ``attributes`` (40 bools) and ``identity``.
  It has **no face box** and no file name: a face comes back as a
  :class:`~mtcnn_jax.data.landmarks.LandmarkFace` with ``box=None`` and the path
  ``"celeb_a/<split>/<index>"``. Landmark windows are cut around a face box, so
  these faces cannot feed :func:`mtcnn_jax.data.samples.cut_landmark_samples` as they
  are; CelebA's in-the-wild images with ``list_bbox_celeba.txt`` (the "celeba"
  list format of :mod:`mtcnn_jax.data.landmarks`) can.

Both loaders yield ``(record, image)`` pairs, the image uint8[H, W, 3] RGB, in the
dataset's order; :func:`write_wider_folder` writes such pairs out in the WIDER FACE
layout the configs read (images + gt file), e.g. for a Colab runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

import cv2

import numpy as np

from mtcnn_jax.data.landmarks import CELEBA_LANDMARK_HEADER, LandmarkFace
from mtcnn_jax.data.wider import WiderRecord
from mtcnn_jax.errors import UserError
from mtcnn_jax.files import write_atomically

EXTRA = "tfds-sources"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def wider_record_from_example(example: Mapping) -> tuple[WiderRecord, np.ndarray]:
    """One ``wider_face`` example (NumPy values, as ``tfds.as_numpy`` gives) → ``(record, image)``.

    ``example["faces"]["bbox"]``: float[N, 4] normalised ``(ymin, xmin, ymax, xmax)``;
    record boxes: float32[N, 4] half-open ``x1, y1, x2, y2`` integer pixels (see the
    module docstring); image: uint8[H, W, 3].
    """
    image = np.asarray(example["image"], np.uint8)
    h, w = image.shape[:2]
    faces = example["faces"]
    bbox = np.asarray(faces["bbox"], np.float64).reshape(-1, 4)
    boxes = np.round(np.stack([bbox[:, 1] * w, bbox[:, 0] * h, bbox[:, 3] * w, bbox[:, 2] * h], axis=1))
    keep = np.any(boxes != 0, axis=1)  # the val file's all-zero "no face" box

    def attr(name):
        return np.asarray(faces[name]).reshape(-1).astype(np.int32)[keep]

    record = WiderRecord(
        path=_text(example["image/filename"]).replace("\\", "/"),
        boxes=boxes[keep].astype(np.float32),
        invalid=attr("invalid") != 0,
        blur=attr("blur"),
        expression=attr("expression"),
        illumination=attr("illumination"),
        occlusion=attr("occlusion"),
        pose=attr("pose"),
    )
    return record, image


def celeba_face_from_example(example: Mapping, name: str) -> tuple[LandmarkFace, np.ndarray]:
    """One ``celeb_a`` example → ``(face, image)``; ``face.points`` float64[5, 2] 0-based, ``box`` None.

    ``name`` becomes the face's ``path`` and ``where`` (TFDS keeps no file name).
    """
    lm = example["landmarks"]
    values = np.array([float(np.asarray(lm[k])) for k in CELEBA_LANDMARK_HEADER], np.float64)
    return LandmarkFace(name, None, values.reshape(5, 2), name), np.asarray(example["image"], np.uint8)


def _tfds():
    """tensorflow_datasets with TensorFlow, or a one-line UserError naming the extra."""
    try:
        import tensorflow  # noqa: F401, PLC0415
    except ImportError:
        raise UserError(f"the TFDS wider_face / celeb_a sources need TensorFlow: pip install 'mtcnn-jax[{EXTRA}]'"
                        ) from None
    import tensorflow_datasets as tfds  # noqa: PLC0415

    return tfds


def _examples(name: str, split: str, data_dir: Optional[str]):
    tfds = _tfds()
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # noqa: BLE001 (not prepared, unknown split, ...): one line for the user
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"tfds.load({name!r}, split={split!r}) failed: {first}") from None
    return tfds.as_numpy(ds)


def load_wider_face(split: str = "train", data_dir: Optional[str] = None) -> Iterator[tuple[WiderRecord, np.ndarray]]:
    """``(WiderRecord, image)`` of every example of the prepared TFDS ``wider_face`` ``split``."""
    for example in _examples("wider_face", split, data_dir):
        yield wider_record_from_example(example)


def load_celeb_a(split: str = "train", data_dir: Optional[str] = None) -> Iterator[tuple[LandmarkFace, np.ndarray]]:
    """``(LandmarkFace, image)`` of every example of the prepared TFDS ``celeb_a`` ``split`` (no boxes)."""
    for k, example in enumerate(_examples("celeb_a", split, data_dir)):
        yield celeba_face_from_example(example, f"celeb_a/{split}/{k}")


def write_wider_folder(pairs: Iterable[tuple], folder) -> int:
    """``(WiderRecord, image)`` pairs as ``folder/images/<path>`` JPEGs and ``folder/wider_face_train_bbx_gt.txt``:
    the WIDER FACE layout the configs read. The gt file is written last, so a folder that has one is complete.
    Returns the number of images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines, n = [], 0
    for record, image in pairs:
        out = folder / "images" / record.path
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"cannot write {out}")
        lines += [record.path, str(len(record.boxes))]
        n += 1
        attributes = zip(record.blur, record.expression, record.illumination, record.invalid, record.occlusion,
                         record.pose)
        for (x1, y1, x2, y2), attrs in zip(record.boxes.round().astype(int).tolist(), attributes):
            lines.append(" ".join(str(int(v)) for v in (x1, y1, x2 - x1, y2 - y1, *attrs)) + " ")
        if not len(record.boxes):
            lines.append("0 0 0 0 0 0 0 0 0 0 ")  # the official files' line after a count of 0
    write_atomically(folder / "wider_face_train_bbx_gt.txt", "\n".join(lines) + "\n")
    return n
