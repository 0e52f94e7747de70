"""OHEM ablation (Zhang et al. 2016, Fig. 3a): O-Net trained with online hard sample
mining keeping 100% (off), 90%, 70% (the paper's choice) and 50% of the det losses.

Smoke-test scale (four runs of ``configs/onet.py:runlocal``, held-out eval every 25
steps for the curves; 2 CPU cores shared with other jobs: 10 min measured)::

    mtcnn-jax sweep --config configs/sweeps/ohem.py:runlocal --workdir /tmp/sweep_ohem

The scale of docs/ablations.md, ``mini``: runlocal's recipe on 160 WIDER images and 800
landmark faces (a held-out set 4x larger: 16 images, 80 faces), 300 steps per run
(2 CPU cores shared with other jobs: 20 min measured, 3 to 7 min per run)::

    mtcnn-jax sweep --config configs/sweeps/ohem.py:mini --workdir /tmp/sweep_ohem_mini

Full scale (``configs/onet.py``; one GPU: tens of minutes; 2 CPU cores: days)::

    mtcnn-jax sweep --config configs/sweeps/ohem.py --workdir /tmp/sweep_ohem_full

The workdir gets one folder per ratio (``ohem_ratio=0.7``, ...), ``results.csv``,
``results.md``, ``results.png`` (held-out metrics against the ratio) and
``curves.png`` (held-out det loss, accuracy, box and landmark error against the
step, one curve per ratio). Results at our scale: docs/ablations.md.
"""

from mtcnn_jax import config_utils

RATIOS = (1.0, 0.9, 0.7, 0.5)


def get_config(arg=None):
    """``configs/onet.py`` (no ``arg``), its ``runlocal`` variant, or ``mini`` (see above)."""
    if arg not in (None, "", "runlocal", "mini"):
        raise ValueError(f"unknown sweep variant {arg!r} (expected runlocal, mini or nothing)")
    c = config_utils.load_config("configs/onet.py" + (":runlocal" if arg in ("runlocal", "mini") else ""))
    if arg == "runlocal":
        c.eval_every = 25  # enough held-out points to draw the curves of Fig. 3a
    elif arg == "mini":  # runlocal's recipe on 4x the images (a held-out set 4x larger), 2x the steps
        c.data.wider_images, c.data.landmark_faces = 160, 800
        c.total_steps, c.eval_every, c.checkpoint_every = 300, 50, 100
    return c


def sweep(arg=None):
    """The grid: one override dict per OHEM ratio (1.0 = no OHEM)."""
    del arg
    return [{"ohem_ratio": r} for r in RATIOS]
