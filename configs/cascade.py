"""The whole recipe: P-Net → mine → R-Net → mine → O-Net → WIDER AP (mtcnn_jax.recipe).

Variants (``--config configs/cascade.py:VARIANT``)::

    mtcnn-jax train-cascade --config configs/cascade.py:mini --workdir /tmp/cascade_mini
    mtcnn-jax train-cascade --config configs/cascade.py:tiny --workdir /tmp/cascade_tiny

* ``mini``: ``widerface_train_mini`` (640 images) + ``mtfl_lfw_train_landmarks``
  (4,151 faces), evaluated on ``widerface_val_subset`` (360 images). Target: under
  45 minutes on 2 CPU cores, AP ≥ 0.5 on faces ≥ 40 px (the authors' weights:
  0.451 / 0.746 / 0.790, all / ≥ 20 / ≥ 40). ``<workdir>/summary.json`` has the
  stage times, ``<workdir>/eval/metrics.json`` the AP.

  Measured at commit 467a3f7 (2 CPU cores, otherwise idle; ``/usr/bin/time``
  around the command), with the CPU train step (:mod:`mtcnn_jax.train_nets`):
  AP 0.263 / 0.509 / **0.571** (all / ≥ 20 / ≥ 40 px, default thresholds
  0.6 / 0.7 / 0.7). Stage times: P-Net samples 29 s, P-Net 126 s (12,000 steps),
  R-Net mining 114 s, R-Net 232 s (1,500 steps; val accuracy 0.954, recall
  0.72), O-Net mining 98 s, O-Net 435 s (2,000 steps; val accuracy 0.931,
  recall 0.83), eval 87 s: **18 min 45 s** wall with start-up, peak RSS 1.6 GB.
  Before the CPU train step (commit 00f8ad9, the flax modules in one program):
  AP 0.266 / 0.515 / 0.579, R-Net 490 s, O-Net 802 s, 27 min 47 s. The two steps
  give the same update to float rounding (tests/test_train_nets.py); over
  thousands of steps those roundings add up to a different run, as another seed
  would (0.008 AP at ≥ 40 px here). What got the recipe from the earlier 0.462:
  R-Net / O-Net trained 1,500 / 2,000 steps instead of 1,000 / 600 (a stage-swap
  test had shown them to be the weak stages: the trained P-Net with the
  authors' R/O-Net scored 0.765), and training windows resized like the
  detector's crops (area averaging when shrinking) instead of bilinear.
* ``tiny``: the same pipeline on a handful of images and a few hundred steps
  (CI, tests/test_cascade.py): a few minutes on 2 cores; its AP means nothing.
* ``paper``: the full-scale recipe, for WIDER FACE train (12,880 images) +
  CelebA landmarks on GPUs — not run here. It expects
  ``$MTCNN_JAX_DATA/WIDER_train`` with ``images/`` and the gt file copied beside
  it (``wider_face_split/wider_face_train_bbx_gt.txt``), CelebA as distributed
  in ``$MTCNN_JAX_DATA/celeba`` (``img_celeba/``, ``list_landmarks_celeba.txt``,
  ``list_bbox_celeba.txt``; read by :func:`mtcnn_jax.data.landmarks.read_celeba`),
  and ``WIDER_val``. Sample counts follow the
  common open-source reproduction (≈ 1.4 M P-Net windows; R-Net / O-Net mined
  with thresholds 0.6 / 0.7), batches 3 : 1 : 1 : 2 as the paper, α 1 / 0.5 /
  0.5 for P-Net and R-Net and 1 / 0.5 / 1 for O-Net, OHEM 70 %.

Overrides address any key: ``--config.pnet.total_steps=5000``,
``--config.mining.negatives_per_image=60``, ``--config.data_root=DIR``.
"""

from pathlib import Path

import ml_collections

from mtcnn_jax import config_utils

paths = config_utils.load_module(Path(__file__).with_name("paths.py"))


def _stage(stage, steps, batch, lr, optimizer="sgd", alpha_landmarks=0.5, threshold=0.7):
    c = config_utils.base_config()
    c.stage = stage
    c.threshold = threshold
    c.alpha.det, c.alpha.box, c.alpha.landmarks = 1.0, 0.5, alpha_landmarks
    c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = batch
    c.total_steps = steps
    c.optimizer.name, c.optimizer.learning_rate = optimizer, lr
    if optimizer == "adam":
        c.optimizer.schedule, c.optimizer.weight_decay = "cosine", 0.0
    c.log_every = max(1, min(100, steps // 10))
    c.eval_every = c.checkpoint_every = max(1, steps // 4)
    return c


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_root = paths.data_root()
    c.mining = ml_collections.ConfigDict(
        dict(
            negative_iou=0.3,  # labels of the mined windows (paper)
            part_iou=0.4,
            positive_iou=0.65,
            negatives_per_image=60,  # cap; positives and parts are all kept
            random_crops_per_face=0,  # optional top-up of random windows around faces (not the paper)
            min_face_size=20,  # the detector that proposes the windows
            factor=0.709,
            pnet_threshold=0.6,
            rnet_threshold=0.7,
            resize="antialiased",
            # Each pyramid level resized from the image, as the authors do: the pyramid the recipe's
            # numbers above were measured with (MTCNN()'s default, "summed", gives the same levels faster).
            pyramid="original",
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            wider="widerface_val_subset",
            images=0,  # 0 = all
            min_face_size=20,  # MTCNN() defaults: the README's table of the authors' weights
            factor=0.709,
            thresholds=(0.6, 0.7, 0.7),
            pyramid="original",  # as mining; MTCNN()'s default "summed" makes the same levels to rounding
        )
    )
    # R-Net / O-Net operating points the calibrate step chooses from on held-out training images
    # (mtcnn_jax.recipe._calibrate); () keeps the networks as trained.
    c.calibration = ()
    variant = arg or "mini"
    if variant == "mini":
        c.pnet = _stage("pnet", 12_000, (192, 64, 64, 128), 0.01, threshold=0.6)
        c.rnet = _stage("rnet", 3_000, (192, 64, 64, 128), 1e-3, optimizer="adam")
        c.onet = _stage("onet", 4_500, (48, 24, 16, 32), 1e-3, optimizer="adam", alpha_landmarks=1.0)
        for s in (c.rnet, c.onet):
            s.data.crops_per_landmark_face = 3
            s.augment.flip = True
        c.mining.random_crops_per_face = 4
        c.calibration = (0.7, 0.3, 0.1, 0.05, 0.02)
    elif variant == "tiny":
        c.pnet = _stage("pnet", 400, (48, 16, 16, 32), 0.01, threshold=0.6)
        c.pnet.data.wider_images, c.pnet.data.landmark_faces = 40, 200
        c.pnet.data.negatives_per_image, c.pnet.data.crops_per_face, c.pnet.data.crops_per_landmark_face = 20, 8, 2
        c.pnet.data.val_every = 4  # as R-Net and O-Net: images 3, 7 and 11 are held out by all three
        c.rnet = _stage("rnet", 60, (24, 8, 8, 16), 1e-3, optimizer="adam")
        c.onet = _stage("onet", 40, (12, 4, 4, 8), 1e-3, optimizer="adam", alpha_landmarks=1.0)
        for s in (c.rnet, c.onet):
            s.data.wider_images, s.data.landmark_faces, s.data.crops_per_landmark_face = 12, 40, 2
            s.data.val_every = 4
            s.augment.flip = True  # as mini
        c.mining.negatives_per_image = 20
        c.mining.random_crops_per_face = 4
        c.mining.min_face_size = 40  # fewer pyramid levels: faster
        c.eval.images = 6
        c.eval.min_face_size = 40
        c.calibration = (0.7, 0.1)
    elif variant == "paper":
        c.pnet = _stage("pnet", 300_000, (192, 64, 64, 128), 0.01, threshold=0.6)
        c.rnet = _stage("rnet", 200_000, (192, 64, 64, 128), 0.01)
        c.onet = _stage("onet", 200_000, (192, 64, 64, 128), 0.01, alpha_landmarks=1.0)
        for s in (c.pnet, c.rnet, c.onet):
            s.data.wider = "WIDER_train"
            s.data.landmarks = "celeba"  # img_celeba/ + list_landmarks_celeba.txt + list_bbox_celeba.txt
            s.data.landmark_format, s.data.landmark_list = "celeba", "."
            s.data.wider_images = 12_880
            s.data.landmark_faces = 202_599
            s.data.val_every = 50
            s.eval_every = s.checkpoint_every = 10_000
        c.pnet.data.negatives_per_image, c.pnet.data.negatives_per_face, c.pnet.data.crops_per_face = 50, 5, 20
        c.mining.negatives_per_image = 100
        c.eval.wider = "WIDER_val"
    else:
        raise ValueError(f"unknown config variant {arg!r} (expected mini, tiny or paper)")
    return c
