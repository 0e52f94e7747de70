"""Joint landmark learning ablation (Zhang et al. 2016, Fig. 3b): a stage trained over a
grid of the task weights α of Eq. 5, α landmarks ∈ {0, 0.5, 1} × α box ∈ {0.5, 1}
(α det = 1), every point with 5 seeds, all as replicas of one compiled program. α
landmarks = 0 trains detection and box regression alone: compare the held-out ``det``,
``accuracy``, ``box_error`` (and with the recipe variants the cascade's ``ap_*``) across
the grid; ``results.md`` compares every point with α landmarks = 0, α box = 0.5.

Smoke-test scale (``configs/onet.py:runlocal`` for 100 steps, 30 replicas)::

    mtcnn-jax sweep --config configs/sweeps/alpha.py:runlocal --workdir /tmp/sweep_alpha

The real recipe (``rnet``, ``onet``, ``rnet_short``, ``onet_short``: see
``configs/sweeps/ohem.py``)::

    mtcnn-jax sweep --config configs/sweeps/alpha.py:onet --workdir /tmp/sweep_alpha_onet \
        --config.samples=/tmp/mini/onet_samples

``mini`` (α box = 0.5 only) and the full scale (``configs/onet.py``) remain. The held-out
``loss`` is α-weighted, so it is not comparable across the grid: compare ``det``, ``box``,
``box_error`` and ``landmark_error``. Results at our scale: docs/ablations.md.
"""

from pathlib import Path

from mtcnn_jax import config_utils

recipe_stage = config_utils.load_module(Path(__file__).with_name("_recipe_stage.py"))
#: The real recipe: a stage of ``configs/cascade.py:mini`` on its mined samples, for the recipe's
#: steps, or a third of them (``_short``: what 2 CPU cores run in about half an hour).
RECIPE_VARIANTS = {"rnet": ("rnet", None), "onet": ("onet", None), "rnet_short": ("rnet", 1000),
                   "onet_short": ("onet", 1500)}

ALPHA_LANDMARKS = (0.0, 0.5, 1.0)
ALPHA_BOX = (0.5, 1.0)


def get_config(arg=None):
    """``configs/onet.py`` (no ``arg``), its ``runlocal`` variant, or ``mini`` (see above)."""
    if arg in RECIPE_VARIANTS:
        return recipe_stage.stage_config(*RECIPE_VARIANTS[arg])
    if arg not in (None, "", "runlocal", "mini"):
        raise ValueError(f"unknown sweep variant {arg!r} (expected runlocal, mini, {', '.join(RECIPE_VARIANTS)} "
                         "or nothing)")
    c = config_utils.load_config("configs/onet.py" + (":runlocal" if arg in ("runlocal", "mini") else ""))
    if arg == "runlocal":  # 100 steps (5 seeds a point: 20 or 30 replicas in one program)
        c.total_steps, c.eval_every, c.checkpoint_every = 100, 50, 50
    elif arg == "mini":  # runlocal's recipe on 4x the images (a held-out set 4x larger), 2x the steps
        c.data.wider_images, c.data.landmark_faces = 160, 800
        c.total_steps, c.eval_every, c.checkpoint_every = 300, 50, 100
    return c


def sweep(arg=None):
    """The grid: α landmarks (the x axis of the plots) × α box."""
    boxes = (0.5,) if arg == "mini" else ALPHA_BOX  # mini: O-Net's α box only, to save time
    return [{"alpha.landmarks": lm, "alpha.box": b} for lm in ALPHA_LANDMARKS for b in boxes]


#: Seeds per grid point (``--seeds N`` overrides): enough for a 95% interval and a t-test.
SEEDS = 5


def seeds(arg=None):
    """Every grid point runs with seeds 0 … SEEDS − 1 (as replicas of one program; same cut windows)."""
    del arg
    return list(range(SEEDS))


def reference(arg=None):
    """The grid point ``results.md`` compares the others with: no landmark task (α landmarks = 0), α box = 0.5."""
    del arg
    return {"alpha.landmarks": 0.0, "alpha.box": 0.5}


def cascade_eval(arg=None):
    """The recipe variants score each run inside the authors' cascade (WIDER AP, ``ap_*`` columns)."""
    return recipe_stage.CASCADE_EVAL if arg in RECIPE_VARIANTS else None
