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

Which file a spec names (:func:`find_config`): a path to a file (absolute, or
relative to the current directory, then to the checkout); else a shipped
config by name, ``pnet``, ``cascade``, ``sweeps/ohem`` (no ``.py``), looked up
in :func:`config_dir` (``configs/`` of the checkout, or ``mtcnn_jax/configs/``
inside an installed wheel, which carries them); ``configs/<name>.py`` also
finds the shipped copy when there is no such file here (the README's commands,
run outside a checkout). A file that cannot be loaded (missing, not UTF-8 text,
null bytes, a syntax error, an exception while it runs or inside
``get_config``) is a one-line :class:`~mtcnn_jax.errors.UserError` naming the
file (and line) and the reason, never a traceback.

Overrides: ``--config.ohem_ratio=1.0``, ``--config.alpha.box=0.25``,
``--config.optimizer.decay_at=(0.5,0.8)``. They are parsed here, not with absl's
``config_flags`` (which needs absl flags to own the whole command line): the
text after ``=`` is read as a Python literal (``ast.literal_eval``; text that is
not a literal stays a string; ``true``/``false`` also work for booleans), and
assigned through the ConfigDict, so its type safety applies (an ``int`` may
widen to ``float``, nothing else changes type).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable, List, NoReturn, Optional, Sequence

from mtcnn_jax.errors import UserError

if TYPE_CHECKING:
    import ml_collections  # loaded by the functions that need it: the train extra

STAGES = ("pnet", "rnet", "onet")
#: The checkout holding this package: relative config paths are also looked up from here.
REPO = Path(__file__).resolve().parents[1]
#: Where the shipped configs are: inside the installed package (the wheel maps the
#: checkout's ``configs/`` there), else the checkout's ``configs/``.
_CONFIG_DIRS = (Path(__file__).resolve().parent / "configs", REPO / "configs")


def base_config() -> ml_collections.ConfigDict:
    """The schema with P-Net defaults (Zhang et al. 2016 where the paper says).

    ``data.root`` defaults to ``$MTCNN_JAX_DATA`` (empty when unset); configs set it.
    """
    import ml_collections  # noqa: PLC0415

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
            # Seed of the cut windows; -1 = the run's seed. A sweep with seeds sets it, so that every
            # seed of a grid point trains and is scored on the same windows (mtcnn_jax.sweep).
            seed=-1,
        )
    )
    # Batch-time augmentation (mtcnn_jax.data.samples.augment): mirror half the windows (targets
    # with them), and a colour jitter of this strength (0 = off). Not in the paper.
    c.augment = ml_collections.ConfigDict(dict(flip=False, colour=0.0))
    # A folder of sample stores (train/ and val/) to train on instead of cutting windows from
    # ``data``: e.g. a recipe's mined R-Net windows, <workdir>/rnet_samples ("" = cut them).
    c.samples = ""
    return c


# ----------------------------------------------------------------------------- loading


def config_dir() -> Optional[Path]:
    """The folder of the shipped configs (``pnet.py``, ..., ``sweeps/``), or None if there is none."""
    for d in _CONFIG_DIRS:
        if (d / "pnet.py").is_file():
            return d
    return None


def config_names() -> List[str]:
    """The shipped configs by name: ``cascade``, ``onet``, ``pnet``, ``rnet``, ``sweeps/alpha``, ..."""
    d = config_dir()
    if d is None:
        return []
    names = []
    for f in sorted(d.rglob("*.py")):
        rel = f.relative_to(d)
        if f.name != "paths.py" and not f.name.startswith("_") and "__pycache__" not in rel.parts:
            names.append(rel.with_suffix("").as_posix())
    return names


def find_config(path: str | os.PathLike, what: str = "config") -> Path:
    """The file ``path`` names: a file (absolute, or relative to the current directory, then
    to the checkout), else a shipped config by name (``pnet``, ``sweeps/ohem``), else
    ``configs/<name>.py`` from the shipped configs. Raises :class:`UserError` if none exists.
    """
    text = os.fspath(path)
    p = Path(text)
    if p.is_file():
        return p
    if not p.is_absolute():
        if (REPO / "pyproject.toml").is_file() and (REPO / p).is_file():
            return REPO / p  # from the checkout (never from site-packages, where a wheel put the package)
        d = config_dir()
        if d is not None and text and ".." not in p.parts:
            if p.suffix == "" and (d / p.with_suffix(".py")).is_file():
                return d / p.with_suffix(".py")  # a shipped config by name
            if p.parts[0] == "configs" and len(p.parts) > 1 and (d / Path(*p.parts[1:])).is_file():
                return d / Path(*p.parts[1:])  # configs/pnet.py outside the checkout: the shipped copy
    hint = ""
    if p.suffix == "" and not p.is_absolute():
        names = config_names()
        hint = f" (shipped configs: {', '.join(names)})" if names else ""
    raise UserError(f"{what} file not found: {text}{hint}")


def _first_line(err: BaseException) -> str:
    """``"TypeName: first line of the message"`` (just the type name when the message is empty)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__


def _where(path: Path, err: BaseException) -> str:
    """``path:line`` of the innermost frame of ``err``'s traceback that runs in ``path``, else ``path``."""
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)


def load_module(path: str | os.PathLike, what: str = "config") -> ModuleType:
    """The Python file ``path`` loaded as a module (not imported under its name).

    ``path`` is found by :func:`find_config`. A file that cannot be loaded (not
    UTF-8 text or in the encoding it declares, null bytes, a syntax error, an
    exception while it runs) is a one-line :class:`UserError`: ``"<file>[:<line>]:
    cannot load the <what> file: <reason>"``.
    """
    p = find_config(path, what)
    fail = f"cannot load the {what} file"
    try:
        data = p.read_bytes()
    except OSError as err:
        raise UserError(f"{p}: {fail}: {err.strerror or err}") from None
    try:
        source = importlib.util.decode_source(data)  # UTF-8, or the encoding a coding line declares
    except (UnicodeDecodeError, SyntaxError, LookupError) as err:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise UserError(f"{p}: {fail}: not UTF-8 text (byte 0x{data[bad.start]:02x} at offset {bad.start})") from None
        raise UserError(f"{p}: {fail}: {_first_line(err)}") from None  # e.g. an unknown coding declared
    if "\0" in source:
        raise UserError(f"{p}: {fail}: it holds null bytes (offset {source.index(chr(0))}), not Python source")
    try:
        code = compile(source, str(p), "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as err:
        line = getattr(err, "lineno", None)
        reason = err.msg if isinstance(err, SyntaxError) and err.msg else _first_line(err)
        kind = type(err).__name__ if isinstance(err, SyntaxError) else ""
        raise UserError(f"{p}{f':{line}' if line else ''}: {fail}: {kind + ': ' if kind else ''}{reason}") from None
    module = ModuleType(f"_mtcnn_{what}_{p.stem}")  # not in sys.modules: loading twice loads anew
    module.__file__ = str(p)
    try:
        exec(code, module.__dict__)  # noqa: S102 -- running the config file is what loading it means
    except UserError:
        raise  # e.g. a config file that loads another one that is missing
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- any failure of the user's file is reported, not raised
        raise UserError(f"{_where(p, err)}: {fail}: {_first_line(err)}") from None
    return module


def load_config(spec: str) -> Any:
    """``"path/to/config.py[:arg]"`` or ``"name[:arg]"`` → ``get_config(arg)`` of that file (validated later).

    The file is found by :func:`find_config`. Any failure of ``get_config`` is a
    one-line :class:`UserError` (a ``ValueError`` is taken as a bad ``arg``:
    ``"<spec>: <message>"``; another exception names the file, the line and the
    exception).
    """
    path, _, arg = spec.partition(":")
    module = load_module(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(f"{path}: no get_config(arg) function")
    try:
        return get_config(arg or None)
    except UserError:
        raise
    except ValueError as err:
        lines = str(err).strip().splitlines()
        raise UserError(f"{spec}: {lines[0] if lines else 'ValueError'}") from None
    except (Exception, SystemExit) as err:  # noqa: BLE001
        file = Path(module.__file__ or path)
        raise UserError(f"{_where(file, err)}: get_config({arg or None!r}) failed: {_first_line(err)}") from None


def _parse_value(text: str, current: Any) -> Any:
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
    import ml_collections  # noqa: PLC0415

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
    import ml_collections  # noqa: PLC0415

    config = load_config(spec)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{spec}: get_config must return an ml_collections.ConfigDict")
    for key, val in overrides:
        apply_override(config, key, val)
    validate(config)
    return config


# ----------------------------------------------------------------------------- validation


def _keys(c: ml_collections.ConfigDict, prefix: str = "") -> dict:
    import ml_collections  # noqa: PLC0415

    out = {}
    for k, v in c.items():
        name = prefix + k
        out[name] = v
        if isinstance(v, ml_collections.ConfigDict):
            out.update(_keys(v, name + "."))
    return out


#: Settings that do not change what a training run or recipe step makes: where the data lies, how
#: often a run logs, evaluates and checkpoints, how many checkpoints it keeps, the evaluation batch,
#: loader workers. A rerun may change these and still resume (:func:`settings_change`).
NEUTRAL_KEYS = frozenset({"data_root", "root", "workers", "log_every", "eval_every", "checkpoint_every",
                          "keep_checkpoints", "eval_batch_size"})


def flat_settings(tree: Any, keys: Optional[Iterable[str]] = None) -> dict:
    """``{"optimizer.learning_rate": 0.01, ...}``: the JSON-plain nested dict ``tree`` (``keys``: only
    these keys, dotted paths such as ``"rnet.data"`` allowed) flattened to dotted keys, less
    :data:`NEUTRAL_KEYS` at any depth."""
    flat: dict = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in NEUTRAL_KEYS:
                    walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    for key in tree if keys is None else keys:
        value, found = tree, True
        for part in key.split("."):
            found = isinstance(value, dict) and part in value and part not in NEUTRAL_KEYS
            if not found:
                break
            value = value[part]
        if found:
            walk(key, value)
    return flat


def settings_change(made: dict, now: dict) -> list:
    """``["rnet.alpha.landmarks: 0.5 -> 0.0", ...]``: the flat settings both have that differ, sorted.

    A key only one side has is not a change: the config schema grows (a new key
    comes with the default that keeps the old behaviour), and a run made before
    it must still resume.
    """
    import json  # noqa: PLC0415

    return [f"{k}: {json.dumps(made[k])} -> {json.dumps(now[k])}"
            for k in sorted(set(made) & set(now)) if made[k] != now[k]]


def read_settings_record(path: Path, which: str) -> Optional[dict]:
    """The settings record (a JSON object) at ``path``; None when there is none. One that cannot be
    read is a :class:`UserError`: ``"<path> is damaged: cannot tell which settings <which>"``."""
    import json  # noqa: PLC0415

    try:
        made = json.loads(Path(path).read_text())
        if not isinstance(made, dict):
            raise ValueError
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise UserError(f"{path} is damaged: cannot tell which settings {which}") from None
    return made


def describe_change(change: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` entries of :func:`settings_change`, and how many more."""
    more = f"; and {len(change) - shown} more" if len(change) > shown else ""
    return "; ".join(change[:shown]) + more


def _fail(key: str, value: Any, why: str) -> NoReturn:
    raise UserError(f"invalid value for config.{key}: {value!r} ({why})")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check keys against :func:`base_config` and values against their ranges.

    Raises :class:`UserError` with one line naming the first offending key.
    """
    import ml_collections  # noqa: PLC0415

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

    def number(k: str, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
               integer: bool = False) -> None:
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
    if not isinstance(config.augment.flip, bool):
        _fail("augment.flip", config.augment.flip, "expected True or False")
    number("augment.colour", 0.0, 0.9)
    if not isinstance(config.get("samples", ""), str):
        _fail("samples", config.samples, "expected a folder path, or '' to cut windows")
    if not isinstance(o.decay_at, tuple) or not all(
        isinstance(f, (int, float)) and 0 < f < 1 for f in o.decay_at
    ):
        _fail("optimizer.decay_at", o.decay_at, "a tuple of fractions in (0, 1)")
    for k in ("wider_images", "landmark_faces", "negatives_per_image", "negatives_per_face", "crops_per_face",
              "crops_per_landmark_face"):
        number(f"data.{k}", 0, integer=True)
    number("data.val_every", 2, integer=True)
    number("data.workers", 0, integer=True)
    number("data.seed", -1, integer=True)
    from mtcnn_jax.data.landmarks import FORMATS  # noqa: PLC0415

    if config.data.landmark_format not in FORMATS:
        _fail("data.landmark_format", config.data.landmark_format, f"one of {', '.join(FORMATS)}")
    number("data.min_face", 1, integer=True)
    return config


def check_batch_fits(settings: Any, n_devices: int, n_processes: int = 1) -> None:
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


def accept_overrides(parser: argparse.ArgumentParser) -> None:
    """Let an argparse (sub-)parser take ``--config.KEY=VALUE`` options.

    argparse would reject them as unknown; they are taken out of the arguments
    (:func:`split_overrides`) before ``parser`` sees the rest, and collected, in
    order, in ``namespace.config_overrides``.
    """
    parse_known = parser.parse_known_args

    def parse_known_args(args: Optional[Sequence[str]] = None,
                         namespace: Optional[argparse.Namespace] = None) -> tuple[argparse.Namespace, list[str]]:
        overrides, rest = split_overrides(args or [])
        ns, extra = parse_known(rest, namespace)
        ns.config_overrides = list(getattr(ns, "config_overrides", [])) + overrides
        return ns, extra

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign, assignment]
