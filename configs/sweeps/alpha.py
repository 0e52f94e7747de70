"""Joint landmark learning ablation (Zhang et al. 2016, Fig. 3b): O-Net trained over a
grid of the task weights α of Eq. 5, α landmarks ∈ {0, 0.5, 1} × α box ∈ {0.5, 1}
(α det = 1). α landmarks = 0 trains detection and box regression alone; compare the
held-out ``box_error`` (mean absolute offset error, window units) across the grid.

Smoke-test scale (six runs of ``configs/onet.py:runlocal``, held-out eval every 25
steps; 2 shared CPU cores: about 7 min)::

    mtcnn-jax sweep --config configs/sweeps/alpha.py:runlocal --workdir /tmp/sweep_alpha

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
    """``configs/onet.py`` with the variant ``arg`` (``runlocal`` or none)."""
    c = config_utils.load_config("configs/onet.py" + (f":{arg}" if arg else ""))
    if arg == "runlocal":
        c.eval_every = 25
    return c


def sweep(arg=None):
    """The grid: α landmarks (the x axis of the plots) × α box."""
    del arg
    return [{"alpha.landmarks": lm, "alpha.box": b} for lm in ALPHA_LANDMARKS for b in ALPHA_BOX]
