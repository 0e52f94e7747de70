"""Where a notebook running in Google Colab gets its training data (notebooks 02 and 03).

Outside Colab the configs read ``$MTCNN_JAX_DATA`` (``configs/paths.py``); in a
fresh Colab runtime the data is on the user's Google Drive or comes from TFDS
``wider_face``: :func:`colab_data` finds or makes it and returns the config
overrides that name it. Nothing here imports ``google.colab`` until it is called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple


def data_overrides(root, wider: str) -> List[Tuple[str, str]]:
    """The config overrides for WIDER images in ``root/wider`` and the landmark faces of
    ``root/mtfl_lfw_train_landmarks/`` when it holds a CUHK list; without one, no landmark faces
    (``data.landmark_faces = 0``, ``batch.landmark = 0``)."""
    root = Path(root)
    overrides = [("data.root", str(root)), ("data.wider", wider)]
    landmarks = root / "mtfl_lfw_train_landmarks"
    for name in ("cuhk_trainImageList_lfw.txt", "trainImageList.txt"):  # the shared copy, or CUHK's train.zip
        if (landmarks / name).is_file():
            print("landmark faces:", landmarks / name)
            return overrides + [("data.landmark_list", name)]
    print(f"no landmark faces ({landmarks} holds no CUHK list): training without landmark windows")
    return overrides + [("data.landmark_faces", "0"), ("batch.landmark", "0")]


def colab_data(source: str, drive_folder, local_folder, wider_images: int) -> List[Tuple[str, str]]:
    """Where a Colab runtime's training data comes from → the config overrides naming it.

    ``"drive"``: Google Drive is mounted and ``drive_folder`` must hold
    ``widerface_train_mini/`` (the shared mini set), ``WIDER_train/`` (the official
    release, with ``wider_face_split/``) or ``wider_face_tfds/`` (written before).
    ``"tfds"``: TFDS ``wider_face`` is downloaded and prepared (needs the
    ``tfds-sources`` extra) and its first ``wider_images`` train images written to
    ``local_folder/wider_face_tfds/`` (once per runtime). Landmark faces come from
    ``<root>/mtfl_lfw_train_landmarks/`` when present (:func:`data_overrides`).
    Sets ``$MTCNN_JAX_DATA`` to the data root.
    """
    if source == "drive":
        from google.colab import drive

        drive.mount("/content/drive")
        root = Path(drive_folder)
        found = [n for n in ("widerface_train_mini", "WIDER_train", "wider_face_tfds") if (root / n / "images").is_dir()]
        if not found:
            raise FileNotFoundError(f"{root} holds no widerface_train_mini/images/ (nor WIDER_train/images/, "
                                    "wider_face_tfds/images/): copy the data there, or set DATA_SOURCE = 'tfds'")
        wider = found[0]
    elif source == "tfds":
        root, wider = Path(local_folder), "wider_face_tfds"
        if not (root / wider / "wider_face_train_bbx_gt.txt").is_file():
            import tensorflow_datasets as tfds

            from mtcnn_jax.data.tfds_sources import load_wider_face, write_wider_folder

            print("TFDS wider_face: downloading (3.7 GB) and preparing it, once per runtime ...")
            tfds.builder("wider_face").download_and_prepare()
            n = write_wider_folder(load_wider_face(f"train[:{wider_images}]"), root / wider)
            print(f"{n} train images written to {root / wider}")
    else:
        raise ValueError(f"DATA_SOURCE must be 'drive' or 'tfds', not {source!r}")
    os.environ["MTCNN_JAX_DATA"] = str(root)
    return data_overrides(root, wider)
