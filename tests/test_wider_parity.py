"""Detections on real photos: parity with facenet-pytorch and AP on WIDER FACE.

Runs the detector with its defaults on the 360 images of
``$MTCNN_JAX_DATA/widerface_val_subset`` once per session (about 3-4 minutes on
2 CPU cores) and checks it against ``reference/widerface_val_subset.facenet.json``
(facenet-pytorch 2.6.0 with the same weights and settings).
"""

import numpy as np
import pytest

from mtcnn_jax.boxes import iou
from mtcnn_jax.data.wider import read_wider_gt
from mtcnn_jax.detector import MTCNN
from mtcnn_jax.evaluation.predictions import read_predictions
from mtcnn_jax.evaluation.wider_ap import evaluate_settings
from mtcnn_jax.faces import Faces
from mtcnn_jax.images import load_image

pytestmark = pytest.mark.slow  # the detector over all 360 shared WIDER images


@pytest.fixture(scope="module")
def wider(data_dir):
    root = data_dir / "widerface_val_subset"
    gt = read_wider_gt(root / "wider_face_val_bbx_gt_subset.txt")
    det = MTCNN()
    preds = {}
    for rec in gt:
        faces = det.detect(load_image(root / "images" / rec.path))
        preds[rec.path] = Faces(faces.boxes, faces.scores.astype(np.float64), faces.landmarks)
    return gt, preds


def test_matches_facenet_pytorch_confident_faces(wider, reference_dir):
    _, ours = wider
    ref = read_predictions(reference_dir / "widerface_val_subset.facenet.json")
    total = matched = 0
    for path, theirs in ref.items():
        for box, score in zip(theirs.boxes, theirs.scores):
            if score < 0.95:
                continue
            total += 1
            mine = ours[path].boxes
            matched += bool(len(mine)) and iou(box, mine, inclusive=False).max() >= 0.5
    assert total > 1500  # 1,542 faces in the reference
    # The two existing ports of these weights agree on 96.8% by this measure; we ask 95%.
    assert matched / total >= 0.95, f"{matched}/{total} matched"


def test_ap_on_faces_of_20px_and_more_at_least_facenet_pytorch(wider):
    gt, ours = wider
    ap = evaluate_settings(ours, gt)  # official WIDER sampling
    # facenet-pytorch: 0.7417 with this sampling (0.7433 at every distinct score).
    assert ap[">=20"] >= 0.743, ap
    assert ap["all"] >= 0.433 and ap[">=40"] >= 0.78, ap
