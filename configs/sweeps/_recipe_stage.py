"""One stage of the ``mini`` recipe as a sweep's base config (shared by ``ohem.py`` and ``alpha.py``).

Not a sweep itself: ``stage_config("rnet")`` is ``configs/cascade.py:mini``'s R-Net config
(its steps, batch, optimizer, flip augmentation, the cascade's seed and data root) set to
train on a recipe's mined windows, ``--config.samples=<recipe workdir>/rnet_samples`` (made by
``mtcnn-jax train-cascade --config configs/cascade.py:mini --workdir <recipe workdir>``).
"""

from mtcnn_jax import config_utils

#: What ``samples`` holds until ``--config.samples`` names a recipe's folder (training then
#: stops at once, saying where the samples come from).
PLACEHOLDER = "RECIPE_WORKDIR/{stage}_samples"

#: Held-out measure of a stage inside the authors' cascade (``cascade_eval``): the first 120 images
#: of the shared WIDER val subset with the detector settings of the recipe's own eval.
CASCADE_EVAL = dict(wider="widerface_val_subset", images=120, min_face_size=20, factor=0.709,
                    thresholds=(0.6, 0.7, 0.7), pyramid="original")


def stage_config(stage: str, steps=None):
    """The mini recipe's ``stage`` config on mined samples; ``steps`` shortens it (its schedule with it)."""
    cascade = config_utils.load_config("configs/cascade.py:mini")
    c = cascade[stage].copy_and_resolve_references()
    c.stage, c.seed, c.data.root = stage, int(cascade.seed), str(cascade.data_root)
    c.samples = PLACEHOLDER.format(stage=stage)
    if steps:
        c.total_steps = int(steps)
    c.eval_every = c.checkpoint_every = max(1, c.total_steps // 4)
    c.log_every = max(1, min(c.log_every, c.total_steps // 10))
    return c
