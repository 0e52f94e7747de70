"""Training configs: the schema, loading ``file.py:arg``, command-line overrides, validation.

A config is an ``ml_collections.ConfigDict``; ``configs/{pnet,rnet,onet}.py``
start from :func:`base_config` (the schema: every key a config may hold, with
P-Net defaults) and change values only. :func:`validate` rejects any key the
schema lacks and any value out of range, with a one-line
:class:`~mtcnn_jax.errors.UserError` naming it. The entry points then turn a
config into typed settings once (:class:`mtcnn_jax.settings.TrainSettings`),
which is what the library below them takes.

Where the data are is the configs' business, not the library's: the schema's
``data.root`` is ``$MTCNN_JAX_DATA`` (empty when unset), and the shipped configs
(``configs/paths.py``) default to the data folder of their checkout.

Overrides: ``--config.ohem_ratio=1.0``, ``--config.alpha.box=0.25``,
``--config.optimizer.decay_at=(0.5,0.8)``. They are parsed here, not with absl's
``config_flags`` (which needs absl flags to own the whole command line): the
text after ``=`` is read as a Python literal (``ast.literal_eval``; text that is
not a literal stays a string; ``true``/``false`` also work for booleans), and
assigned through the ConfigDict, so its type safety applies (an ``int`` may
widen to ``float``, nothing else changes type).
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
from typing import Iterable

import ml_collections

from mtcnn_jax.errors import UserError

STAGES = ("pnet", "rnet", "onet")
#: The checkout holding this package: relative config paths are also looked up from here.
REPO = Path(__file__).resolve().parents[1]


def base_config() -> ml_collections.ConfigDict:
    """The schema with P-Net defaults (Zhang et al. 2016 where the paper says).

    ``data.root`` defaults to ``$MTCNN_JAX_DATA`` (empty when unset); configs set it.
    """
    from mtcnn_jax.losses import SAMPLE_TYPES, TASKS  # noqa: PLC0415

    c = ml_collections.ConfigDict()
    c.stage = "pnet"
    c.seed = 0
    c.landmarks = True  # train a landmark head (the released P/R-Net have none)
    c.threshold = 0.6  # face-probability threshold of the stage, for eval recall
    # α of Eq. 5: P-Net and R-Net 1 / 0.5 / 0.5, O-Net 1 / 0.5 / 1.
    c.alpha = ml_collections.ConfigDict(dict(zip(TASKS, (1.0, 0.5, 0.5))))
    c.ohem_ratio = 0.7  # keep the top 70% det losses; 1.0 switches OHEM off
    # Fixed composition of every global batch (paper ratio 3 : 1 : 1 : 2).
    c.batch = ml_collections.ConfigDict(dict(zip(SAMPLE_TYPES, (192, 64, 64, 128))))
    c.total_steps = 20_000
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="sgd",  # "sgd" (with momentum) or "adam"
            learning_rate=0.01,
            momentum=0.9,
            weight_decay=5e-4,
            schedule="step",  # "step", "cosine" or "constant"
            warmup_steps=0,
            decay_at=(0.5, 0.8),  # fractions of total_steps (step schedule)
            decay_factor=0.1,
            clip_grad_norm=0.0,  # clip the global gradient norm; 0 = off
        )
    )
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.eval_batch_size = 1024
    c.data = ml_collections.ConfigDict(
        dict(
            root=os.environ.get("MTCNN_JAX_DATA", ""),
            wider="widerface_train_mini",
            landmarks="mtfl_lfw_train_landmarks",
            landmark_list="cuhk_trainImageList_lfw.txt",  # 0-based points with face boxes
            # Format of landmark_list (mtcnn_jax.data.landmarks): "cuhk", "mtfl" or
            # "celeba" (landmark_list is then the folder holding CelebA's two lists).
            landmark_format="cuhk",
            wider_images=640,
            landmark_faces=4151,
            val_every=10,  # every 10th image / face is held out
            negatives_per_image=50,
            negatives_per_face=5,
            crops_per_face=20,
            crops_per_landmark_face=5,
            min_face=20,
            mirror=True,
            workers=0,  # processes cutting samples; 0 = every core (the samples do not depend on it)
        )
    )
    return c


# ----------------------------------------------------------------------------- loading


def load_module(path, what: str = "config"):
    """The Python file ``path`` loaded as a module (not imported under its name).

    A relative path is looked up from the current directory, then from the
    repository (:data:`REPO`). A missing file is a :class:`UserError` ("``what``
    file not found").
    """
    p = Path(path)
    if not p.is_file() and not p.is_absolute() and (REPO / p).is_file():
        p = REPO / p
    if not p.is_file():
        raise UserError(f"{what} file not found: {path}")
    mod_spec = importlib.util.spec_from_file_location(f"_mtcnn_{what}_{p.stem}", p)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"path/to/config.py[:arg]"`` → ``get_config(arg)`` of that file (validated later).

    A relative path is looked up from the current directory, then from the repository.
    """
    path, _, arg = spec.partition(":")
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise UserError(f"{path}: no get_config(arg) function")
    try:
        return module.get_config(arg or None)
    except ValueError as err:
        raise UserError(f"{spec}: {str(err).splitlines()[0]}") from None


def _parse_value(text: str, current):
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set ``config.<key>`` (dotted) from the command-line ``text``; unknown keys are an error."""
    parts = key.split(".")
    node = config
    for i, name in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise UserError(f"unknown config key '{'.'.join(parts[: i + 1])}' (in --config.{key})")
        if i < len(parts) - 1:
            node = node[name]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
        raise UserError(f"config.{key} is a group; set one of its keys: {', '.join(current.keys())}")
    try:
        value = _parse_value(text, current)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(current, tuple) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        node[parts[-1]] = value
    except (TypeError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"invalid value for config.{key}: {text!r} ({msg})") from None


def split_overrides(argv: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pick ``--config.KEY=VALUE`` (or ``--config.KEY VALUE``) out of ``argv``.

    Returns ``([(KEY, VALUE), ...], rest)``.
    """
    argv = list(argv)
    out, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            key, eq, val = a[len("--config.") :].partition("=")
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    rest.append(a)  # no value: left for argparse to report
                    i += 1
                    continue
                val, i = argv[i + 1], i + 1
            out.append((key, val))
        else:
            rest.append(a)
        i += 1
    return out, rest


def get(spec: str, overrides: Iterable[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """Load ``spec``, apply ``overrides``, validate; the config the trainer runs."""
    config = load_config(spec)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{spec}: get_config must return an ml_collections.ConfigDict")
    for key, val in overrides:
        apply_override(config, key, val)
    validate(config)
    return config


# ----------------------------------------------------------------------------- validation


def _keys(c: ml_collections.ConfigDict, prefix: str = "") -> dict:
    out = {}
    for k, v in c.items():
        name = prefix + k
        out[name] = v
        if isinstance(v, ml_collections.ConfigDict):
            out.update(_keys(v, name + "."))
    return out


def _fail(key: str, value, why: str):
    raise UserError(f"invalid value for config.{key}: {value!r} ({why})")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check keys against :func:`base_config` and values against their ranges.

    Raises :class:`UserError` with one line naming the first offending key.
    """
    schema = _keys(base_config())
    given = _keys(config)
    for k, v in given.items():
        if k not in schema:
            raise UserError(f"unknown config key '{k}'")
        want = schema[k]
        if isinstance(want, ml_collections.ConfigDict) != isinstance(v, ml_collections.ConfigDict):
            _fail(k, v, "expected a group of keys" if isinstance(want, ml_collections.ConfigDict) else "expected a value")
    for k in schema:
        if k not in given:
            raise UserError(f"config key '{k}' is missing")

    def number(k, lo=None, hi=None, lo_open=False, integer=False):
        v = given[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            _fail(k, v, "expected an integer" if integer else "expected a number")
        low = lo is not None and (v <= lo if lo_open else v < lo)
        if low or (hi is not None and v > hi):
            if hi is None:
                _fail(k, v, f"must be {'>' if lo_open else '≥'} {lo}")
            _fail(k, v, f"must be in {'(' if lo_open else '['}{lo}, {hi}]")

    from mtcnn_jax.losses import SAMPLE_TYPES, TASKS  # noqa: PLC0415

    if config.stage not in STAGES:
        _fail("stage", config.stage, f"one of {', '.join(STAGES)}")
    number("seed", 0, integer=True)
    number("threshold", 0.0, 1.0)
    for t in TASKS:
        number(f"alpha.{t}", 0.0)
    number("ohem_ratio", 0.0, 1.0, lo_open=True)
    for t in SAMPLE_TYPES:
        number(f"batch.{t}", 0, integer=True)
    if config.batch.negative + config.batch.positive == 0:
        _fail("batch.negative", config.batch.negative, "a batch needs negatives or positives")
    for k in ("total_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "eval_batch_size"):
        number(k, 1, integer=True)
    o = config.optimizer
    if o.name not in ("sgd", "adam"):
        _fail("optimizer.name", o.name, "one of sgd, adam")
    if o.schedule not in ("step", "cosine", "constant"):
        _fail("optimizer.schedule", o.schedule, "one of step, cosine, constant")
    number("optimizer.learning_rate", 0.0, lo_open=True)
    number("optimizer.momentum", 0.0, 1.0)
    number("optimizer.weight_decay", 0.0)
    number("optimizer.warmup_steps", 0, integer=True)
    number("optimizer.decay_factor", 0.0, 1.0, lo_open=True)
    number("optimizer.clip_grad_norm", 0.0)
    if not isinstance(o.decay_at, tuple) or not all(
        isinstance(f, (int, float)) and 0 < f < 1 for f in o.decay_at
    ):
        _fail("optimizer.decay_at", o.decay_at, "a tuple of fractions in (0, 1)")
    for k in ("wider_images", "landmark_faces", "negatives_per_image", "negatives_per_face", "crops_per_face",
              "crops_per_landmark_face"):
        number(f"data.{k}", 0, integer=True)
    number("data.val_every", 2, integer=True)
    number("data.workers", 0, integer=True)
    from mtcnn_jax.data.landmarks import FORMATS  # noqa: PLC0415

    if config.data.landmark_format not in FORMATS:
        _fail("data.landmark_format", config.data.landmark_format, f"one of {', '.join(FORMATS)}")
    number("data.min_face", 1, integer=True)
    return config


def check_batch_fits(settings, n_devices: int, n_processes: int = 1) -> None:
    """The global batch must split evenly over devices and each type over processes.

    ``settings``: a :class:`mtcnn_jax.settings.TrainSettings` (or a config: only ``batch[type]`` is read).
    """
    from mtcnn_jax.losses import SAMPLE_TYPES  # noqa: PLC0415

    b = settings.batch
    total = sum(b[t] for t in SAMPLE_TYPES)
    if total % n_devices:
        raise UserError(f"invalid value for config.batch: {total} samples do not split over {n_devices} devices")
    for t in SAMPLE_TYPES:
        if b[t] % n_processes:
            raise UserError(f"invalid value for config.batch.{t}: {b[t]} does not split over {n_processes} hosts")


def accept_overrides(parser) -> None:
    """Let an argparse (sub-)parser take ``--config.KEY=VALUE`` options.

    argparse would reject them as unknown; they are taken out of the arguments
    (:func:`split_overrides`) before ``parser`` sees the rest, and collected, in
    order, in ``namespace.config_overrides``.
    """
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        overrides, rest = split_overrides(args or [])
        ns, extra = parse_known(rest, namespace)
        ns.config_overrides = list(getattr(ns, "config_overrides", [])) + overrides
        return ns, extra

    parser.parse_known_args = parse_known_args
