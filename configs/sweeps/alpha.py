"""Joint landmark learning ablation (Zhang et al. 2016, Fig. 3b): O-Net trained over a
grid of the task weights α of Eq. 5, α landmarks ∈ {0, 0.5, 1} × α box ∈ {0.5, 1}
(α det = 1). α landmarks = 0 trains detection and box regression alone; compare the
held-out ``box_error`` (mean absolute offset error, window units) across the grid.

Smoke-test scale (six runs of ``configs/onet.py:runlocal``, held-out eval every 25
steps; 2 CPU cores shared with other jobs: 18 min measured)::

    mtcnn-jax sweep --config configs/sweeps/alpha.py:runlocal --workdir /tmp/sweep_alpha

The scale of docs/ablations.md, ``mini``: runlocal's recipe on 160 WIDER images and 800
landmark faces, 300 steps per run, α box = 0.5 only (O-Net's value; three runs; 2 shared
CPU cores shared with other jobs: about 12 min measured)::

    mtcnn-jax sweep --config configs/sweeps/alpha.py:mini --workdir /tmp/sweep_alpha_mini

Full scale (``configs/onet.py``; one GPU: about an hour)::

    mtcnn-jax sweep --config configs/sweeps/alpha.py --workdir /tmp/sweep_alpha_full

Folders are named ``alpha.landmarks=0_alpha.box=0.5`` etc.; ``results.png`` draws each
held-out metric against α landmarks, one curve per α box. The held-out ``loss`` is
α-weighted, so it is not comparable across the grid: compare ``det``, ``box``,
``box_error`` and ``landmark_error``. Results at our scale: docs/ablations.md.
"""

from mtcnn_jax import config_utils

ALPHA_LANDMARKS = (0.0, 0.5, 1.0)
ALPHA_BOX = (0.5, 1.0)


def get_config(arg=None):
    """``configs/onet.py`` (no ``arg``), its ``runlocal`` variant, or ``mini`` (see above)."""
    if arg not in (None, "", "runlocal", "mini"):
        raise ValueError(f"unknown sweep variant {arg!r} (expected runlocal, mini or nothing)")
    c = config_utils.load_config("configs/onet.py" + (":runlocal" if arg in ("runlocal", "mini") else ""))
    if arg == "runlocal":
        c.eval_every = 25
    elif arg == "mini":  # runlocal's recipe on 4x the images (a held-out set 4x larger), 2x the steps
        c.data.wider_images, c.data.landmark_faces = 160, 800
        c.total_steps, c.eval_every, c.checkpoint_every = 300, 50, 100
    return c


def sweep(arg=None):
    """The grid: α landmarks (the x axis of the plots) × α box."""
    boxes = (0.5,) if arg == "mini" else ALPHA_BOX  # mini: O-Net's α box only, to save time
    return [{"alpha.landmarks": lm, "alpha.box": b} for lm in ALPHA_LANDMARKS for b in boxes]
