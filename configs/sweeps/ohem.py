"""OHEM ablation (Zhang et al. 2016, Fig. 3a): O-Net trained with online hard sample
mining keeping 100% (off), 90%, 70% (the paper's choice) and 50% of the det losses.

Smoke-test scale (four runs of ``configs/onet.py:runlocal``, held-out eval every 25
steps for the curves; 2 shared CPU cores: about 5 min)::

    mtcnn-jax sweep --config configs/sweeps/ohem.py:runlocal --workdir /tmp/sweep_ohem

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
    """``configs/onet.py`` with the variant ``arg`` (``runlocal`` or none)."""
    c = config_utils.load_config("configs/onet.py" + (f":{arg}" if arg else ""))
    if arg == "runlocal":
        c.eval_every = 25  # enough held-out points to draw the curves of Fig. 3a
    return c


def sweep(arg=None):
    """The grid: one override dict per OHEM ratio (1.0 = no OHEM)."""
    del arg
    return [{"ohem_ratio": r} for r in RATIOS]
