"""Training MTCNN's networks: train state, optimizer, data-parallel step, eval, loop.

Everything here is a plain function over plain pytrees, so a notebook can call
the same code the ``mtcnn-jax train`` command runs:

* :class:`TrainState` — ``(params, opt_state, step)``, a NamedTuple pytree.
* :func:`make_optimizer` — optax SGD with momentum (or Adam), a ``step``,
  ``cosine`` or ``constant`` learning-rate schedule and L2 weight decay, from
  :class:`mtcnn_jax.settings.OptimizerSettings`.
* :func:`make_train_step` — the jitted update, data-parallel over a 1-D mesh
  named ``data`` with ``jax.shard_map``: the global batch is split over the
  devices, params and optimizer state are replicated, the state is donated.
* :func:`make_eval_step` / :func:`evaluate` — the held-out metrics of
  :func:`mtcnn_jax.losses.eval_sums` / :func:`~mtcnn_jax.losses.finish_eval`
  over a whole sample set.
* :func:`train_and_evaluate` — the loop: samples (cut once and kept as sample
  stores in the workdir), batches, logging (:class:`mtcnn_jax.metrics_log.MetricsLog`),
  Orbax checkpoints and resume.
* :func:`check_workdir` — the output policy for a workdir (``train``, ``sweep``,
  ``train-cascade``): a folder that can be written, outside the training data
  unless ``overwrite``.
* :func:`open_checkpoints` — the newest checkpoint that restores; damaged ones
  (files truncated, changed or missing since they were written: each checkpoint
  records its files' sizes and SHA-256) are moved aside, saying so in one line.

Batches are dicts of host arrays: ``image`` uint8[B, S, S, 3] (RGB, S = 12 / 24 /
48), ``type`` int32[B] (:mod:`mtcnn_jax.losses` codes), ``box`` float32[B, 4]
and ``landmarks`` float32[B, 10] targets (see :mod:`mtcnn_jax.data.samples`).

Several hosts: call ``jax.distributed.initialize()`` first (``mtcnn-jax train
--distributed``); the mesh then spans ``jax.devices()`` of all hosts, each host
draws its own ``1 / process_count`` of every global batch (seeded by step and
process index) and :func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``. Only the process 0 writes logs;
Orbax checkpoints are written collectively.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mtcnn_jax import losses, models
from mtcnn_jax.files import sha256_file
from mtcnn_jax.settings import OptimizerSettings, TrainSettings

DATA_AXIS = "data"
#: The workdir's folder of cut samples: sample stores ``train/`` and ``val/`` and their ``settings.json``.
SAMPLES_DIR = "samples"
#: The workdir's folder of Orbax checkpoints, one ``<step>/`` each.
CHECKPOINTS_DIR = "checkpoints"
#: Written into each checkpoint folder once Orbax has finished it: its files' sizes and SHA-256.
CHECKPOINT_MANIFEST = "mtcnn_jax_files.json"


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree of arrays."""

    params: Any
    opt_state: Any
    step: jax.Array  # int32[]


# ----------------------------------------------------------------------------- optimizer


def make_schedule(opt: OptimizerSettings, total_steps: int) -> optax.Schedule:
    """Learning-rate schedule of ``opt`` (a config's ``optimizer`` group).

    ``step``: ``learning_rate`` multiplied by ``decay_factor`` at each of
    ``decay_at`` (fractions of ``total_steps``); ``cosine``: cosine decay to 0
    over ``total_steps``; ``constant``. ``warmup_steps`` > 0 prepends a linear
    warm-up from 0.
    """
    lr = float(opt.learning_rate)
    name = opt.schedule
    warmup = int(opt.warmup_steps)
    decay_steps = max(1, total_steps - warmup)
    if name == "constant":
        sched = optax.constant_schedule(lr)
    elif name == "step":
        bounds = {max(1, int(round(f * decay_steps))): float(opt.decay_factor) for f in opt.decay_at}
        sched = optax.piecewise_constant_schedule(lr, bounds)
    elif name == "cosine":
        sched = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        raise ValueError(f"unknown schedule {name!r}")
    if warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
    return sched


def make_optimizer(opt: OptimizerSettings, total_steps: int) -> optax.GradientTransformation:
    """Optional ``clip_by_global_norm(clip_grad_norm)`` (0 = off), ``add_decayed_weights(weight_decay)``
    (L2, as Caffe), then SGD with momentum or Adam, on :func:`make_schedule`'s learning rate."""
    sched = make_schedule(opt, total_steps)
    parts = []
    if opt.clip_grad_norm:
        parts.append(optax.clip_by_global_norm(float(opt.clip_grad_norm)))
    if opt.weight_decay:
        parts.append(optax.add_decayed_weights(float(opt.weight_decay)))
    if opt.name == "sgd":
        parts.append(optax.sgd(sched, momentum=float(opt.momentum) or None))
    elif opt.name == "adam":
        parts.append(optax.adam(sched))
    else:
        raise ValueError(f"unknown optimizer {opt.name!r}")
    return optax.chain(*parts)


def create_train_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- mesh & batches


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree, mesh):
    """Put a pytree on every device of ``mesh`` (replicated, ``P()``)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: Mapping[str, np.ndarray], mesh) -> dict:
    """Host-local batch (this process's part) → global arrays split over ``data``."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def _flat(out: models.NetOutput):
    """Network outputs → per-sample ``[N, C]`` (P-Net on a 12×12 window gives [N, 1, 1, C])."""
    n = out.logits.shape[0]
    lm = None if out.landmarks is None else out.landmarks.reshape(n, -1)
    return out.logits.reshape(n, -1), out.box.reshape(n, -1), lm


# ----------------------------------------------------------------------------- steps


def make_train_step(model, tx, alpha: Mapping[str, float], ohem_k: Optional[int], mesh) -> Callable:
    """The jitted data-parallel update ``(state, batch) -> (state, metrics)``.

    ``batch`` arrays are sharded over ``data`` (:func:`shard_batch`), ``state``
    is replicated and donated. Inside ``shard_map`` each device computes its
    share of the global loss (:func:`mtcnn_jax.losses.multitask_loss` with
    ``axis_name="data"``: global OHEM selection and global counts). Because the
    params enter replicated (``P()``) and ``check_vma`` is on, ``jax.grad``
    already returns the gradient summed over devices, which is the gradient of
    the global loss; no ``pmean`` is applied (an extra one would change the
    step by the device count; tests/test_train.py
    checks that 4 devices give the single-device step).

    metrics: ``loss``, ``det``, ``box``, ``landmarks`` (global batch values),
    ``n_det``/``n_box``/``n_landmarks``, ``grad_norm``, ``param_norm``, ``lr``
    (the learning rate is not known here: filled by the loop).
    """
    alpha = {k: float(v) for k, v in alpha.items()}

    def local_step(state: TrainState, batch):
        def loss_fn(params):
            out = model.apply({"params": params}, models.normalize(batch["image"]))
            logits, box, lm = _flat(out)
            terms = losses.multitask_loss(logits, box, lm, batch, alpha, ohem_k, axis_name=DATA_AXIS)
            return terms.total, terms

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        psum = lambda x: jax.lax.psum(x, DATA_AXIS)
        metrics = {
            "loss": psum(terms.total),
            "det": psum(terms.det),
            "box": psum(terms.box),
            "landmarks": psum(terms.landmarks),
            "n_det": terms.n_det,
            "n_box": terms.n_box,
            "n_landmarks": terms.n_landmarks,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
        }
        return TrainState(params, opt_state, state.step + 1), metrics

    step = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()))
    return jax.jit(step, donate_argnums=0)


def make_eval_step(model, alpha: Mapping[str, float], threshold: float) -> Callable:
    """Jitted ``(params, batch) -> sums``: :func:`mtcnn_jax.losses.eval_sums` of ``model``'s outputs.

    ``batch`` also carries ``valid`` bool[N] (False for padding). ``alpha`` does
    not enter the sums (:func:`evaluate` weighs the task losses with it); it is
    taken so that the eval step is made like the train step.
    """
    del alpha

    def sums(params, batch):
        out = model.apply({"params": params}, models.normalize(batch["image"]))
        return losses.eval_sums(*_flat(out), batch, threshold)

    return jax.jit(sums)


def evaluate(eval_step, params, samples: Mapping[str, np.ndarray], alpha: Mapping[str, float],
             batch_size: int = 1024) -> dict:
    """Run ``eval_step`` (:func:`make_eval_step`) over every sample (the last batch padded, ``valid`` masked);
    the :data:`mtcnn_jax.losses.EVAL_METRICS` (:func:`mtcnn_jax.losses.finish_eval` with ``alpha``)."""
    n = len(samples["type"])
    total = None
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        valid = idx < n
        idx = np.minimum(idx, n - 1)
        batch = {k: samples[k][idx] for k in ("image", "type", "box", "landmarks")}
        batch["valid"] = valid
        sums = jax.device_get(eval_step(params, batch))
        total = sums if total is None else {k: total[k] + sums[k] for k in total}
    return losses.finish_eval(total, alpha)


# ----------------------------------------------------------------------------- workdir


def check_workdir(workdir, inputs: Iterable = (), overwrite: bool = False, option: str = "--workdir") -> Path:
    """The output policy for a training workdir; returns it as an absolute path, created.

    Refused with a one-line :class:`~mtcnn_jax.errors.UserError` naming ``option``:
    a path that exists and is not a folder; a folder that cannot be created or
    written into; and, unless ``overwrite``, a folder that is one of ``inputs``
    (the training data folders), lies inside one or holds one
    (:class:`mtcnn_jax.files.OutputPolicy`).
    """
    from mtcnn_jax.errors import UserError  # noqa: PLC0415
    from mtcnn_jax.files import OutputPolicy  # noqa: PLC0415

    path = os.fspath(workdir)
    OutputPolicy([os.fspath(p) for p in inputs if p], overwrite).check_folder(option, path)
    try:  # os.access can say yes where writing fails (an immutable folder, some network file systems)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{option}: cannot write into {path} ({err.strerror or err})") from None
    return Path(path).resolve()


def data_folders(data) -> list:
    """The input folders of :class:`mtcnn_jax.settings.DataSettings` ``data``: its root, WIDER and landmark folders."""
    root = Path(data.root)
    return [root, root / data.wider, root / data.landmarks]


def os_error_line(err: OSError) -> str:
    """An ``OSError`` as one line: ``"<path>: <reason>"``."""
    reason = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{err.filename}: {reason}" if err.filename is not None else reason


# ----------------------------------------------------------------------------- interrupts

_pending_signals: list = []
_guard_depth = [0]
_deferring = [0]


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within it, a SIGINT or SIGTERM that has a Python handler is also remembered; see :func:`check_interrupt`.

    Python raises KeyboardInterrupt (and ``mtcnn-jax`` raises it for SIGTERM)
    wherever the main thread is when the signal comes; when that is a garbage
    collector callback (JAX registers one) the exception is printed as
    "ignored" and lost, and the run would go on. The long loops (training
    steps, sweep runs, recipe steps) call :func:`check_interrupt` at every
    iteration, so such a signal still stops them. Main thread only (elsewhere
    it does nothing); re-entrant. Inside :func:`deferred_interrupts` a signal is
    only remembered.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    if _guard_depth[0] == 0:
        del _pending_signals[:]
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                def remember(num, frame, previous=previous):
                    _pending_signals.append(num)
                    if not _deferring[0] and not _in_gc_callback(frame):  # (there it would be lost, with a traceback)
                        previous(num, frame)

                installed[signum] = previous
                signal.signal(signum, remember)
    _guard_depth[0] += 1
    try:
        yield
    finally:
        _guard_depth[0] -= 1
        for signum, previous in installed.items():
            signal.signal(signum, previous)
        if _guard_depth[0] == 0:
            del _pending_signals[:]


def _in_gc_callback(frame, depth: int = 20) -> bool:
    """Whether ``frame`` (or one of its callers, ``depth`` up) runs a garbage-collector callback."""
    import gc  # noqa: PLC0415

    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    codes.discard(None)
    while frame is not None and depth > 0:
        if frame.f_code in codes:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within :func:`interruptible`, a signal that comes inside this block takes effect when it ends
    (KeyboardInterrupt then): for writing a checkpoint, which Orbax finishes in threads of its own that an
    interrupt would leave half done (and complaining at exit)."""
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if not _deferring[0]:
        check_interrupt()


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a signal came within :func:`interruptible` (whether or not it was raised then)."""
    if _pending_signals:
        del _pending_signals[:]
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------- checkpoints


def write_checkpoint_manifest(step_dir) -> None:
    """Record the size and SHA-256 of every file of the finished checkpoint folder ``step_dir``."""
    from mtcnn_jax import files  # noqa: PLC0415

    step_dir = Path(step_dir)
    listing = {p.relative_to(step_dir).as_posix(): [p.stat().st_size, sha256_file(p)]
               for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != CHECKPOINT_MANIFEST}
    files.write_json(step_dir / CHECKPOINT_MANIFEST, {"files": listing}, indent=None, sort_keys=True)


def checkpoint_damage(step_dir) -> Optional[str]:
    """Why the checkpoint folder ``step_dir`` is not as it was written, from its manifest; None when it is,
    or when it has no manifest (then only restoring it tells)."""
    step_dir = Path(step_dir)
    try:
        listing = json.loads((step_dir / CHECKPOINT_MANIFEST).read_text())["files"]
        items = [(str(name), int(size), str(digest)) for name, (size, digest) in listing.items()]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its list of files {CHECKPOINT_MANIFEST} is damaged"
    for name, size, digest in items:
        path = step_dir / name
        try:
            actual = path.stat().st_size
            if actual != size:
                return f"{name} has {actual} bytes, {size} were written"
            if sha256_file(path) != digest:
                return f"{name} differs from what was written"
        except OSError:
            return f"{name} is missing"
    return None


def _ignore_closed_loop_callbacks() -> None:
    """Silence the "Event loop is closed" errors that Orbax's reads still in flight report (through
    ``sys.unraisablehook``, long after the fact) once a restore has failed; other reports pass on."""
    previous = sys.unraisablehook
    if getattr(previous, "_mtcnn_jax_filter", False):
        return

    def hook(unraisable):
        err = unraisable.exc_value
        if isinstance(err, RuntimeError) and str(err) == "Event loop is closed":
            return
        previous(unraisable)

    hook._mtcnn_jax_filter = True
    sys.unraisablehook = hook


def _move_aside(directory: Path, step: int) -> Path:
    n = 1
    while (directory / f"{step}.corrupt-{n}").exists():
        n += 1
    target = directory / f"{step}.corrupt-{n}"
    os.rename(directory / str(step), target)
    return target


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Orbax logs its own ERROR lines (through absl) about a checkpoint it cannot read; the caller reports
    those in one line of its own."""
    import logging  # noqa: PLC0415

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _step_dirs(directory: Path) -> list:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def open_checkpoints(directory, state, keep: int, main: bool = True):
    """The workdir's checkpoints: ``(manager, state, step)``, ``state`` restored from the newest checkpoint
    that can be restored (``step`` 0 and ``state`` as given when there is none).

    A checkpoint is damaged when its files differ from its manifest
    (:func:`checkpoint_damage`, checked before Orbax opens the folder), or,
    lacking one, when Orbax cannot restore it. Damaged ones are renamed
    ``<step>.corrupt-<n>`` (by the first process only; Orbax does not see them
    then) and one line on stderr names them, why, and the step training resumes
    from. A checkpoint whose files are as written but that does not restore into
    ``state`` (a config with other shapes or another optimizer) is a one-line
    :class:`~mtcnn_jax.errors.UserError`. ``keep``: how many checkpoints Orbax
    keeps. Orbax's temporary folders of a save cut short by a kill are removed.
    """
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    directory = Path(directory)
    bad, skip = [], set()
    for step in reversed(_step_dirs(directory)) if directory.is_dir() else ():
        why = checkpoint_damage(directory / str(step))
        if why is not None:
            bad.append((step, why, _move_aside(directory, step).name if main else None))
            skip.add(step)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=main)
    with _quiet_orbax():
        manager = ocp.CheckpointManager(directory, options=options)
    restored, start = state, 0
    _ignore_closed_loop_callbacks()
    for step in sorted(set(manager.all_steps()) - skip, reverse=True):
        step_dir = directory / str(step)
        verified = (step_dir / CHECKPOINT_MANIFEST).is_file()
        try:
            with _quiet_orbax(), deferred_interrupts():  # Orbax reads in threads of its own: let them finish
                restored, start = manager.restore(step, args=ocp.args.StandardRestore(state)), step
            break
        except Exception as err:  # noqa: BLE001 (Orbax and TensorStore raise many kinds)
            line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            line = line if len(line) <= 200 else line[:197] + "..."
            if verified:
                raise UserError(f"{step_dir}: cannot restore this checkpoint into the config's state ({line}): "
                                "train with the config it was made with, or use another --workdir") from None
            bad.append((step, line, _move_aside(directory, step).name if main else None))
    if bad:
        manager.reload()
        if main:
            what = "; ".join(f"checkpoint {step} ({why}): moved to {name}" for step, why, name in bad)
            then = f"resuming from step {start}" if start else "no checkpoint left: starting from step 0"
            print(f"mtcnn-jax: {directory}: cannot restore {what}; {then}", file=sys.stderr, flush=True)
    return manager, restored, start


# ----------------------------------------------------------------------------- the loop


def sample_batch(index_by_type, composition: Mapping[str, int], seed: int, step: int, process: int = 0,
                 n_processes: int = 1) -> np.ndarray:
    """Indices of this process's part of the global batch of ``step``.

    Stateless: drawn from ``np.random.default_rng([seed, step, process])``, so a
    resumed run sees exactly the batches an uninterrupted one sees. Each type
    contributes ``composition[type] / n_processes`` samples, drawn without
    replacement where there are enough; the batch is then shuffled.
    """
    rng = np.random.default_rng([seed, step, process])
    parts = []
    for code, name in enumerate(losses.SAMPLE_TYPES):
        n = composition[name] // n_processes
        if n:
            pool = index_by_type[code]
            parts.append(pool[rng.choice(len(pool), n, replace=n > len(pool))])
    idx = np.concatenate(parts)
    return idx[rng.permutation(len(idx))]


def merge_pretrained(params, pretrained):
    """Params with every layer ``pretrained`` has taken from it; shapes must agree.

    Layers it lacks (the released P-Net and R-Net have no landmark head) are kept
    fresh, with their kernels zeroed: the pretrained features are large, and a
    randomly initialised head on top of them starts with a huge loss whose
    gradient wrecks the trained layers (P-Net at lr 0.01 diverges).
    """
    out = dict(params)
    for name in out:
        if name not in pretrained and "kernel" in out[name]:
            out[name] = dict(out[name], kernel=jnp.zeros_like(out[name]["kernel"]))
    for name, layer in pretrained.items():
        if name not in out:
            continue
        for leaf in layer:
            if np.shape(layer[leaf]) != np.shape(out[name][leaf]):
                raise ValueError(f"pretrained {name}/{leaf} has shape {np.shape(layer[leaf])}")
        out[name] = jax.tree.map(jnp.asarray, dict(layer))
    return out


def cut_samples(settings: TrainSettings, workdir, write: bool = True, progress: bool = True) -> tuple[dict, dict]:
    """The train and held-out samples ``settings.data`` cuts for the stage, kept in ``workdir/samples``.

    Stored as sample stores ``samples/train`` and ``samples/val`` (ordered: read
    back, they are the arrays as cut) with ``samples/settings.json``, what they
    depend on (the data settings but ``workers``, the window size, the seed). A
    rerun with the same settings reads them back; with other settings they are
    cut again and replace them. ``write=False`` (the other processes of a
    multi-host run) reads them when they are there and cuts them in memory when
    not. A damaged store is cut again, saying so in one line. See
    :func:`mtcnn_jax.data.store.cached_sets`.
    """
    from mtcnn_jax.data import samples, store  # noqa: PLC0415

    size = models.INPUT_SIZE[settings.stage]
    key = {"data": settings.data.cut_key(), "size": size, "seed": settings.seed}
    make = lambda: samples.build(settings.data, size, settings.seed, progress=progress)  # noqa: E731
    return store.cached_sets(Path(workdir) / SAMPLES_DIR, settings.stage, key, make, write=write,
                             again="cutting the samples again")


def train_and_evaluate(config, workdir, init: str = "scratch", progress: bool = True,
                       max_steps: Optional[int] = None, data: Optional[tuple] = None, overwrite: bool = False):
    """Train ``config.stage`` on samples cut per ``config.data``; returns ``(state, val_metrics)``.

    ``config``: a stage config (``ml_collections.ConfigDict``, validated and
    converted here) or its :class:`mtcnn_jax.settings.TrainSettings`.

    workdir gets: ``config.json``, ``samples/`` (the cut samples as sample stores
    ``train/`` and ``val/`` with the settings they were cut with, reused on
    resume when ``config.data``, the window size and the seed are unchanged:
    :func:`cut_samples`), ``checkpoints/<step>/`` (Orbax, written to a temporary
    folder and renamed when complete, so a kill never leaves a half checkpoint
    that would be restored), ``metrics.jsonl`` (one JSON object per log:
    ``step``, ``split`` "train"/"val", metrics) and ``tensorboard/`` event files
    (:mod:`mtcnn_jax.metrics_log`).

    Rerun on the same workdir, it restores the latest checkpoint and continues;
    batches depend only on (seed, step), so the result equals an uninterrupted
    run's. ``init="pretrained"`` starts from the authors' weights
    (:func:`mtcnn_jax.pretrained.load_pretrained`), keeping fresh heads they lack.
    ``max_steps`` stops early (after that many steps of this call; testing).
    ``data=(train_set, val_set)`` trains on given sample sets (dicts of arrays as
    :mod:`mtcnn_jax.data.samples` makes them, e.g. mined samples read from
    sample stores) instead of cutting random windows; nothing is cut or kept
    then, and ``config.data`` is not used.

    The workdir is checked first (:func:`check_workdir`: a writable folder, not
    inside ``config.data``'s folders unless ``overwrite``). A damaged latest
    checkpoint is moved aside and training resumes from the newest one that
    restores (:func:`open_checkpoints`); damaged sample stores are cut again.
    Interrupted (KeyboardInterrupt, SIGTERM through the command line, a kill),
    it leaves every finished checkpoint and no partial one.
    """
    with interruptible():
        return _train_and_evaluate(config, workdir, init, progress, max_steps, data, overwrite)


def _train_and_evaluate(config, workdir, init: str, progress: bool, max_steps: Optional[int],
                        data: Optional[tuple], overwrite: bool):
    import orbax.checkpoint as ocp  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from mtcnn_jax import config_utils, files  # noqa: PLC0415
    from mtcnn_jax.data.store import FIELDS  # noqa: PLC0415
    from mtcnn_jax.metrics_log import MetricsLog  # noqa: PLC0415

    config = TrainSettings.of(config)
    workdir = check_workdir(workdir, data_folders(config.data), overwrite)
    main = jax.process_index() == 0
    stage, size = config.stage, models.INPUT_SIZE[config.stage]
    mesh = make_mesh()
    config_utils.check_batch_fits(config, mesh.size, jax.process_count())
    if main:
        files.write_json(workdir / "config.json", config.to_dict(), indent=2)

    if data is not None:
        train_set, val_set = data
        for name, part in (("train", train_set), ("val", val_set)):
            if tuple(np.shape(part["image"])[1:]) != (size, size, 3):
                raise ValueError(f"{name} samples are {np.shape(part['image'])[1:]}, {stage} needs {size}×{size}×3")
    else:
        train_set, val_set = cut_samples(config, workdir, write=main, progress=progress)
    index_by_type = [np.flatnonzero(train_set["type"] == c) for c in range(len(losses.SAMPLE_TYPES))]
    composition = dict(config.batch)
    for code, name in enumerate(losses.SAMPLE_TYPES):
        if composition[name] and not len(index_by_type[code]):
            raise ValueError(f"no {name} samples were cut: set config.batch.{name}=0 or cut more")

    model = models.create(stage, landmarks=config.landmarks)
    params = models.init_params(stage, jax.random.key(config.seed), landmarks=config.landmarks)
    if init == "pretrained":
        from mtcnn_jax.pretrained import load_pretrained  # noqa: PLC0415

        params = merge_pretrained(params, load_pretrained()[stage])
    elif init != "scratch":
        raise ValueError(f"unknown init {init!r} (scratch or pretrained)")
    tx = make_optimizer(config.optimizer, config.total_steps)
    schedule = make_schedule(config.optimizer, config.total_steps)
    alpha = dict(config.alpha)
    k = None
    if config.ohem_ratio < 1.0:
        k = losses.ohem_k(config.ohem_ratio, composition["negative"] + composition["positive"])
    state = replicate(create_train_state(params, tx), mesh)

    manager, state, start = open_checkpoints(workdir / CHECKPOINTS_DIR, state, config.keep_checkpoints, main)

    train_step = make_train_step(model, tx, alpha, k, mesh)
    eval_step = make_eval_step(model, alpha, config.threshold)
    log = MetricsLog(workdir, start, main)
    end = config.total_steps if max_steps is None else min(config.total_steps, start + max_steps)
    val_metrics, val_step = {}, -1
    bar = tqdm(range(start, end), initial=start, total=config.total_steps, disable=not (progress and main),
               desc=f"train {stage}", dynamic_ncols=True)
    if start == 0:  # the untrained network's held-out numbers, for comparison
        val_metrics, val_step = evaluate(eval_step, state.params, val_set, alpha, config.eval_batch_size), 0
        log.write(0, "val", val_metrics)
    t0 = time.time()
    for step in bar:
        check_interrupt()
        idx = sample_batch(index_by_type, composition, config.seed, step, jax.process_index(), jax.process_count())
        batch = {f: train_set[f][idx] for f in FIELDS}
        state, metrics = train_step(state, shard_batch(batch, mesh))
        done = step + 1
        if done % config.log_every == 0 or done == config.total_steps:
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            m["lr"] = float(schedule(step))
            m["steps_per_s"] = (done - start) / max(1e-9, time.time() - t0)
            log.write(done, "train", m)
            bar.set_postfix(loss=f"{m['loss']:.4f}")
        if done % config.eval_every == 0 or done == config.total_steps:
            val_metrics, val_step = evaluate(eval_step, state.params, val_set, alpha, config.eval_batch_size), done
            log.write(done, "val", val_metrics)
            if progress and main:
                bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in val_metrics.items()))
        if done % config.checkpoint_every == 0 or done == config.total_steps:
            with deferred_interrupts():  # a checkpoint is written whole, or not at all
                manager.save(done, args=ocp.args.StandardSave(state))
                if main:
                    write_checkpoint_manifest(workdir / CHECKPOINTS_DIR / str(done))
    if val_step != end:  # stopped between evals, or rerun on a finished workdir: not logged
        val_metrics = evaluate(eval_step, state.params, val_set, alpha, config.eval_batch_size)
    manager.wait_until_finished()
    manager.close()
    log.close()
    return state, val_metrics
