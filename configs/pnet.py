"""P-Net (12×12 windows) from scratch on windows cut from WIDER train-mini + LFW landmarks.

Full run (2 shared CPU cores, niced: 6 min measured, of which about 20 s cut
the samples; 20,000 steps of 448 windows)::

    mtcnn-jax train --config configs/pnet.py --workdir /tmp/pnet

Measured: held-out val loss 2.28 (untrained) → 0.225, face/non-face
``accuracy`` 0.50 → 0.937, face recall at 0.6 → 0.79, landmark error 0.060
(window units). It plateaus after about 12,000 steps on this small set.

Smoke test (2 CPU cores: 32 s measured)::

    mtcnn-jax train --config configs/pnet.py:runlocal --workdir /tmp/pnet_local

Measured: val loss 2.33 → 0.249, ``accuracy`` 0.44 → 0.930, recall 0.73
(``metrics.jsonl``, split "val"; tests/test_train.py asserts > 0.90).
Fine-tuning the authors' P-Net instead: add ``--init pretrained`` (it already
scores 0.95 accuracy on these windows; its missing landmark head starts at zero).

Overrides, e.g. no OHEM and a lighter box term:
``--config.ohem_ratio=1.0 --config.alpha.box=0.25``. Data from
``$MTCNN_JAX_DATA`` (default ``../shared/data``) or ``--config.data.root=DIR``.
"""

from pathlib import Path

from mtcnn_jax import config_utils

paths = config_utils.load_module(Path(__file__).with_name("paths.py"))


def get_config(arg=None):
    c = config_utils.base_config()
    c.data.root = paths.data_root()
    c.stage = "pnet"
    c.threshold = 0.6
    c.alpha.det, c.alpha.box, c.alpha.landmarks = 1.0, 0.5, 0.5
    c.ohem_ratio = 0.7
    c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 192, 64, 64, 128
    c.total_steps = 20_000
    c.optimizer.learning_rate = 0.01
    c.eval_every = c.checkpoint_every = 2000
    if arg == "runlocal":
        c.data.wider_images = 120
        c.data.landmark_faces = 800
        c.data.negatives_per_image = 30
        c.data.crops_per_face = 10
        c.data.crops_per_landmark_face = 2
        c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 96, 32, 32, 64
        c.total_steps = 1500
        c.log_every = 50
        c.eval_every = c.checkpoint_every = 500
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (expected runlocal or nothing)")
    return c
