"""The detector's defaults lose nothing to the authors' ways (issue 16, items 5 and 6), on the shared
evaluation sets: the default pyramid finds what the authors' pyramid finds on WIDER images, and the
default landmarks (averaged with the mirrored crop's) keep under 10% failures on the MTFL-AFLW crops.

The settings were chosen on the validation splits (``benchmarks/defaults_study.py``,
``benchmarks/README.md``, "The detector's defaults"); these tests only confirm them.
"""

import numpy as np
import pytest

from mtcnn_jax.data.wider import read_wider_gt
from mtcnn_jax.detector import MTCNN
from mtcnn_jax.evaluation.nme import evaluate_landmarks, read_mtfl
from mtcnn_jax.images import load_image

pytestmark = pytest.mark.slow  # the detector over 24 WIDER images twice, and over 2,995 AFLW crops


def test_default_pyramid_finds_what_the_authors_pyramid_finds(data_dir):
    """Same faces, boxes within 2 px, as ``pyramid="original"`` (every level resized from the image) on
    24 WIDER images spread over the subset. The former default, "chained", differs on 14 of them."""
    root = data_dir / "widerface_val_subset"
    gt = read_wider_gt(root / "wider_face_val_bbx_gt_subset.txt")
    default, authors = MTCNN(), MTCNN(pyramid="original")
    assert default.pyramid == "summed"
    for i in np.unique(np.round(np.linspace(0, len(gt) - 1, 24)).astype(int)):
        image = load_image(root / "images" / gt[i].path)
        a, b = default.detect(image), authors.detect(image)
        assert a.boxes.shape == b.boxes.shape, gt[i].path
        np.testing.assert_allclose(a.boxes, b.boxes, atol=2.0, err_msg=gt[i].path)


def test_default_landmarks_on_aflw(data_dir):
    """Issue 16's goal on the 2,995 MTFL-AFLW crops with the default settings: NME <= 0.065 and
    failures <= 10% (flip_landmarks and refine_landmarks, chosen on the LFW validation faces:
    0.0628 / 7.9%; flip alone 0.0654 / 9.4%; neither 0.0676 / 11.0%)."""
    root = data_dir / "mtfl_aflw_test_landmarks"
    ann = read_mtfl(root / "testing.txt", one_based=True)
    det = MTCNN()
    paths = list(ann.paths)
    preds = {}
    for i in range(0, len(paths), 32):  # lists of 32: the same faces as one by one, 3x faster here
        preds.update(zip(paths[i : i + 32], det.detect([load_image(root / p) for p in paths[i : i + 32]])))
    res = evaluate_landmarks(preds, ann)
    assert res["detection_rate"] > 0.98, res
    assert res["nme_mean"] <= 0.065 and res["failure_rate"] <= 0.10, res
