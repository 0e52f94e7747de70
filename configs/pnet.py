"""P-Net (12×12 windows) from scratch on windows cut from WIDER train-mini + LFW landmarks.

Full run (2 CPU cores: about 5 minutes; one GPU: about 1 minute)::

    mtcnn-jax train --config configs/pnet.py --workdir /tmp/pnet

Smoke test (2 CPU cores: about 30 s, half of it cutting samples)::

    mtcnn-jax train --config configs/pnet.py:runlocal --workdir /tmp/pnet_local

Expected: the held-out face/non-face ``accuracy`` in ``metrics.jsonl`` (split
"val") above 0.90 with ``runlocal`` and about 0.95 for the full run; the val
loss falls from about 1.0 at the first eval. Fine-tuning the authors' P-Net
instead: add ``--init pretrained`` (its landmark head is trained fresh).

Overrides, e.g. no OHEM and a lighter box term:
``--config.ohem_ratio=1.0 --config.alpha.box=0.25``. Data from
``$MTCNN_JAX_DATA`` (default ``../shared/data``) or ``--config.data.root=DIR``.
"""

from mtcnn_jax import config_utils


def get_config(arg=None):
    c = config_utils.base_config()
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
