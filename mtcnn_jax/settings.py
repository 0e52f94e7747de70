"""Typed training settings: each config group as a frozen dataclass, made once from its ConfigDict.

Configs are ``ml_collections.ConfigDict``\\ s where people write and change them
(``configs/*.py``, ``--config.KEY=VALUE``); :mod:`mtcnn_jax.config_utils` holds
their schema and validates them. The entry points —
:func:`mtcnn_jax.train.train_and_evaluate`, :func:`mtcnn_jax.recipe.train_cascade`,
:func:`mtcnn_jax.sweep.run_sweep` and the commands — turn a config into these
objects once, and the library below them takes only these: a misspelt key fails
at that boundary, not deep inside a run, and nothing below can change a setting
that another part has already read.

=====================  ===========================================================
class                  config group
=====================  ===========================================================
:class:`TrainSettings`  one stage's config (:func:`mtcnn_jax.config_utils.base_config`)
:class:`DataSettings`   its ``data`` group: where the images are and how windows are cut
:class:`OptimizerSettings`  its ``optimizer`` group
:class:`MiningSettings`  the cascade's ``mining`` group (``configs/cascade.py``)
:class:`EvalSettings`   the cascade's ``eval`` group, with the cascade's data root
:class:`CascadeSettings`  a whole cascade config (:func:`mtcnn_jax.recipe.cascade_settings`)
=====================  ===========================================================

``alpha`` (keys :data:`mtcnn_jax.losses.TASKS`) and ``batch`` (keys
:data:`mtcnn_jax.losses.SAMPLE_TYPES`) stay mappings: the loss and the batch
sampler look them up by those names. ``tests/test_configs.py`` checks that the
fields here are exactly the schema's keys.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from mtcnn_jax.errors import UserError


def _values(cls, group, name: str, **given) -> dict:
    """The fields of dataclass ``cls`` read from the ConfigDict ``group`` (``given`` ones excepted).

    A key the dataclass lacks is a :class:`UserError` naming ``name.key``; a
    field the group lacks keeps the dataclass default (an error when it has none).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in group.keys():
        if key not in fields:
            raise UserError(f"unknown config key '{name}.{key}'")
    out = dict(given)
    for key, f in fields.items():
        if key in out:
            continue
        if key in group:
            value = group[key]
            out[key] = tuple(value) if isinstance(value, (tuple, list)) else value
        elif f.default is dataclasses.MISSING:
            raise UserError(f"config key '{name}.{key}' is missing")
    return out


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the training images are and how windows are cut from them (``config.data``).

    See :func:`mtcnn_jax.data.samples.build` for what each count means.
    """

    root: str
    wider: str
    landmarks: str
    landmark_list: str
    landmark_format: str
    wider_images: int
    landmark_faces: int
    val_every: int
    negatives_per_image: int
    negatives_per_face: int
    crops_per_face: int
    crops_per_landmark_face: int
    min_face: int
    mirror: bool
    workers: int
    seed: int = -1

    def cut_seed(self, run_seed: int) -> int:
        """The seed the windows are cut with: ``seed``, or the run's own seed when it is -1 (the default)."""
        return self.seed if self.seed >= 0 else run_seed

    @classmethod
    def from_config(cls, group) -> "DataSettings":
        return cls(**_values(cls, group, "data"))

    def cut_key(self) -> dict:
        """What the cut samples depend on: every setting but ``workers`` (any number of them cuts the same)."""
        key = dataclasses.asdict(self)
        del key["workers"]
        if key["seed"] < 0:  # the run's seed, which the caller's key holds (stores cut before the field existed)
            del key["seed"]
        return key


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """``config.augment``: batch-time augmentation (:func:`mtcnn_jax.data.samples.augment`)."""

    flip: bool = False
    colour: float = 0.0

    @classmethod
    def from_config(cls, group) -> "AugmentSettings":
        return cls(**_values(cls, group, "augment"))


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """``config.optimizer``: :func:`mtcnn_jax.train.make_optimizer` and its schedule."""

    name: str
    learning_rate: float
    momentum: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    decay_at: Tuple[float, ...]
    decay_factor: float
    clip_grad_norm: float

    @classmethod
    def from_config(cls, group) -> "OptimizerSettings":
        return cls(**_values(cls, group, "optimizer"))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """One stage's training run (the whole :func:`mtcnn_jax.config_utils.base_config` schema).

    Field order is the schema's, so :meth:`to_dict` writes ``config.json`` as the
    ConfigDict did.
    """

    stage: str
    seed: int
    landmarks: bool
    threshold: float
    alpha: Dict[str, float]
    ohem_ratio: float
    batch: Dict[str, int]
    total_steps: int
    optimizer: OptimizerSettings
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    eval_batch_size: int
    data: DataSettings
    augment: AugmentSettings = AugmentSettings()
    samples: str = ""

    @classmethod
    def from_config(cls, config) -> "TrainSettings":
        """Validate ``config`` (:func:`mtcnn_jax.config_utils.validate`) and convert it."""
        from mtcnn_jax import config_utils  # noqa: PLC0415
        from mtcnn_jax.losses import SAMPLE_TYPES, TASKS  # noqa: PLC0415

        config_utils.validate(config)
        return cls(**_values(
            cls, config, "config",
            alpha={t: config.alpha[t] for t in TASKS}, batch={t: config.batch[t] for t in SAMPLE_TYPES},
            optimizer=OptimizerSettings.from_config(config.optimizer), data=DataSettings.from_config(config.data),
            augment=AugmentSettings.from_config(config.augment),
        ))

    @classmethod
    def of(cls, config) -> "TrainSettings":
        """``config`` itself when it is already a :class:`TrainSettings`, else :meth:`from_config`."""
        return config if isinstance(config, cls) else cls.from_config(config)

    def to_dict(self) -> dict:
        """Nested plain values, in the schema's order (``config.json``)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MiningSettings:
    """How the cascade mines R-Net / O-Net windows (``config.mining``; :mod:`mtcnn_jax.data.mining`).

    ``random_crops_per_face`` and ``pyramid`` may be absent from a config: 0 and
    "original" (each level resized from the image, as the authors do; the
    recipe keeps it so that its results stay reproducible) are what such
    configs meant.
    """

    negative_iou: float
    part_iou: float
    positive_iou: float
    negatives_per_image: int
    min_face_size: int
    factor: float
    pnet_threshold: float
    rnet_threshold: float
    resize: str
    random_crops_per_face: int = 0
    pyramid: str = "original"

    @classmethod
    def from_config(cls, group) -> "MiningSettings":
        return cls(**_values(cls, group, "mining"))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The cascade's final evaluation (``config.eval``) with the cascade's ``data_root`` as ``root``."""

    root: str
    wider: str
    images: int
    min_face_size: int
    factor: float
    thresholds: Tuple[float, ...]
    pyramid: str = "original"

    @classmethod
    def from_config(cls, group, root: str) -> "EvalSettings":
        return cls(**_values(cls, group, "eval", root=str(root)))


@dataclasses.dataclass(frozen=True)
class CascadeSettings:
    """A whole cascade: the three stages (each with the cascade's seed and data root), mining and eval."""

    seed: int
    data_root: str
    pnet: TrainSettings
    rnet: TrainSettings
    onet: TrainSettings
    mining: MiningSettings
    eval: EvalSettings
    #: R-Net / O-Net operating points the ``calibrate`` step chooses from (empty: no calibration).
    calibration: Tuple[float, ...] = ()

    def stage(self, name: str) -> TrainSettings:
        return {"pnet": self.pnet, "rnet": self.rnet, "onet": self.onet}[name]

