"""OHEM ablation (Zhang et al. 2016, Fig. 3a): a stage trained with online hard sample
mining keeping 100% (off), 90%, 70% (the paper's choice) and 50% of the det losses, every
ratio with 5 seeds (``seeds()``; ``--seeds N`` to change), all trained as replicas of one
compiled program. ``results.md`` gives each ratio's mean ± 95% interval over the seeds and
its difference from "off" with Welch's t-test (significant after Holm's correction or not).

Smoke-test scale (``configs/onet.py:runlocal`` for 100 steps, 20 replicas; 2 CPU cores:
see docs/ablations.md for the time measured)::

    mtcnn-jax sweep --config configs/sweeps/ohem.py:runlocal --workdir /tmp/sweep_ohem

The real recipe (docs/ablations.md): R-Net or O-Net of ``configs/cascade.py:mini`` on the
windows that recipe mined, for the recipe's steps (``rnet``, ``onet``) or a third of them
(``rnet_short``, ``onet_short``), each run also scored inside the authors' cascade
(``ap_*`` columns)::

    mtcnn-jax train-cascade --config configs/cascade.py:mini --workdir /tmp/mini --stop-after rnet_samples
    mtcnn-jax sweep --config configs/sweeps/ohem.py:rnet --workdir /tmp/sweep_ohem_rnet \
        --config.samples=/tmp/mini/rnet_samples

``mini`` (O-Net on 160 WIDER images of random windows, 300 steps) and the full scale
(``configs/onet.py``; one GPU: tens of minutes; 2 CPU cores: days) remain::

    mtcnn-jax sweep --config configs/sweeps/ohem.py:mini --workdir /tmp/sweep_ohem_mini

The workdir gets one folder per run (``ohem_ratio=0.7_seed=3``, ...), ``results.csv``
(one row per run, with its ``seed``), ``results.md``, ``results.png`` (held-out metrics
against the ratio, mean and interval) and ``curves.png`` (held-out det loss, accuracy,
box and landmark error against the step, the mean of each ratio's seeds).
"""

from pathlib import Path

from mtcnn_jax import config_utils

recipe_stage = config_utils.load_module(Path(__file__).with_name("_recipe_stage.py"))
#: The real recipe: a stage of ``configs/cascade.py:mini`` on its mined samples, for the recipe's
#: steps, or a third of them (``_short``: what 2 CPU cores run in about half an hour).
RECIPE_VARIANTS = {"rnet": ("rnet", None), "onet": ("onet", None), "rnet_short": ("rnet", 1000),
                   "onet_short": ("onet", 1500)}

RATIOS = (1.0, 0.9, 0.7, 0.5)


def get_config(arg=None):
    """``configs/onet.py`` (no ``arg``), its ``runlocal`` variant, or ``mini`` (see above)."""
    if arg in RECIPE_VARIANTS:
        return recipe_stage.stage_config(*RECIPE_VARIANTS[arg])
    if arg not in (None, "", "runlocal", "mini"):
        raise ValueError(f"unknown sweep variant {arg!r} (expected runlocal, mini, {', '.join(RECIPE_VARIANTS)} "
                         "or nothing)")
    c = config_utils.load_config("configs/onet.py" + (":runlocal" if arg in ("runlocal", "mini") else ""))
    if arg == "runlocal":  # 100 steps (5 seeds a point: 20 or 30 replicas in one program)
        c.total_steps, c.eval_every, c.checkpoint_every = 100, 50, 50  # enough held-out points to draw the curves of Fig. 3a
    elif arg == "mini":  # runlocal's recipe on 4x the images (a held-out set 4x larger), 2x the steps
        c.data.wider_images, c.data.landmark_faces = 160, 800
        c.total_steps, c.eval_every, c.checkpoint_every = 300, 50, 100
    return c


def sweep(arg=None):
    """The grid: one override dict per OHEM ratio (1.0 = no OHEM)."""
    del arg
    return [{"ohem_ratio": r} for r in RATIOS]


#: Seeds per grid point (``--seeds N`` overrides): enough for a 95% interval and a t-test.
SEEDS = 5


def seeds(arg=None):
    """Every grid point runs with seeds 0 … SEEDS − 1 (as replicas of one program; same cut windows)."""
    del arg
    return list(range(SEEDS))


def reference(arg=None):
    """The grid point ``results.md`` compares the others with: without OHEM."""
    del arg
    return {"ohem_ratio": 1.0}


def cascade_eval(arg=None):
    """The recipe variants score each run inside the authors' cascade (WIDER AP, ``ap_*`` columns)."""
    return recipe_stage.CASCADE_EVAL if arg in RECIPE_VARIANTS else None
