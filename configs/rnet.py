"""R-Net (24×24 windows), first pass: random windows cut from WIDER train-mini + LFW landmarks.

The paper trains R-Net on P-Net's hard examples (windows P-Net proposes); the
mining pipeline is its own issue. This config trains on the same kind of random
windows as P-Net, resized to 24×24, which is a sound initialisation.

Full run (one GPU: a few minutes; 2 CPU cores: hours)::

    mtcnn-jax train --config configs/rnet.py --workdir /tmp/rnet

Smoke test (2 shared CPU cores: 50 s measured)::

    mtcnn-jax train --config configs/rnet.py:runlocal --workdir /tmp/rnet_local

Expected with ``runlocal``: held-out face/non-face ``accuracy`` about 0.93 (0.72
untrained), face recall at 0.7 about 0.9, val loss 3.3 → 0.24. The full run
should reach about 0.95 accuracy (not yet measured). ``--init pretrained`` fine-tunes the authors' R-Net
(no landmark head in the release: a fresh one is trained).
"""

from pathlib import Path

from mtcnn_jax import config_utils

paths = config_utils.load_module(Path(__file__).with_name("paths.py"))


def get_config(arg=None):
    c = config_utils.base_config()
    c.data.root = paths.data_root()
    c.stage = "rnet"
    c.threshold = 0.7
    c.alpha.det, c.alpha.box, c.alpha.landmarks = 1.0, 0.5, 0.5
    c.ohem_ratio = 0.7
    c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 192, 64, 64, 128
    c.total_steps = 20_000
    c.optimizer.learning_rate = 0.01
    c.eval_every = c.checkpoint_every = 2000
    if arg == "runlocal":
        c.data.wider_images = 60
        c.data.landmark_faces = 300
        c.data.negatives_per_image = 20
        c.data.crops_per_face = 8
        c.data.crops_per_landmark_face = 2
        c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 48, 16, 16, 32
        c.total_steps = 300
        c.log_every = 25
        c.eval_every = c.checkpoint_every = 150
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (expected runlocal or nothing)")
    return c
