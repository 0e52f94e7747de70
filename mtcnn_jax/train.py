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

What keeps a run safe — its workdir checked by the output policy, interrupts
that stop it between steps, checkpoints checked against the files they were
written with (a damaged one is moved aside and the newest sound one resumed) —
is :mod:`mtcnn_jax.runs`.

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

import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mtcnn_jax import losses, models
from mtcnn_jax.runs import (check_interrupt, check_workdir, data_folders, deferred_interrupts, interruptible,
                            open_checkpoints, write_checkpoint_manifest)
from mtcnn_jax.settings import OptimizerSettings, TrainSettings

DATA_AXIS = "data"
#: The mesh axis that splits replicas (:mod:`mtcnn_jax.replicas`) over devices.
REPLICA_AXIS = "replica"
#: The workdir's folder of cut samples: sample stores ``train/`` and ``val/`` and their ``settings.json``.
SAMPLES_DIR = "samples"
#: The workdir's folder of Orbax checkpoints, one ``<step>/`` each.
CHECKPOINTS_DIR = "checkpoints"


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


def make_mesh(devices=None, replica_shards: Optional[int] = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices of all hosts).

    ``replica_shards`` (replica training, :mod:`mtcnn_jax.replicas`): a 2-D mesh
    ``(replica, data)`` of shape ``(replica_shards, n_devices / replica_shards)``;
    the replicas are split over its ``replica`` axis, each replica's batch over ``data``.
    """
    devices = jax.devices() if devices is None else list(devices)
    if replica_shards is None:
        return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))
    if replica_shards < 1 or len(devices) % replica_shards:
        raise ValueError(f"{len(devices)} devices cannot be split into {replica_shards} replica shards")
    return jax.sharding.Mesh(np.asarray(devices).reshape(replica_shards, -1), (REPLICA_AXIS, DATA_AXIS))


def has_replicas(mesh) -> bool:
    """Whether ``mesh`` is a replica mesh (:func:`make_mesh` with ``replica_shards``)."""
    return REPLICA_AXIS in mesh.axis_names


def state_spec(mesh) -> P:
    """How a train state lies on ``mesh``: replicated (``P()``), or split over ``replica`` on a replica mesh."""
    return P(REPLICA_AXIS) if has_replicas(mesh) else P()


def replicate(tree, mesh):
    """Put a pytree on every device of ``mesh`` (replicated, ``P()``; on a replica mesh, the leading
    replica axis split over ``replica`` and replicated over ``data``)."""
    return jax.device_put(tree, NamedSharding(mesh, state_spec(mesh)))


def shard_batch(batch: Mapping[str, np.ndarray], mesh, replicas: bool = False) -> dict:
    """Host-local batch (this process's part) → global arrays split over ``data`` (on the second axis of
    ``[K, B, ...]`` replica batches with ``replicas``)."""
    sharding = NamedSharding(mesh, batch_spec(replicas))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def _flat(out: models.NetOutput):
    """Network outputs → per-sample ``[N, C]`` (P-Net on a 12×12 window gives [N, 1, 1, C])."""
    n = out.logits.shape[0]
    lm = None if out.landmarks is None else out.landmarks.reshape(n, -1)
    return out.logits.reshape(n, -1), out.box.reshape(n, -1), lm


# ----------------------------------------------------------------------------- steps


def make_train_step(model, tx, alpha: Optional[Mapping[str, float]], ohem_k: Optional[int], mesh,
                    formulation: Optional[str] = None, chunk: Optional[int] = None,
                    replicas: bool = False) -> Callable:
    """The data-parallel update ``(state, batch) -> (state, metrics)``.

    ``batch`` arrays are sharded over ``data`` (:func:`shard_batch`), ``state``
    is replicated and donated. Inside ``shard_map`` each device computes its
    share of the global loss (:func:`mtcnn_jax.losses.multitask_loss` with
    ``axis_name="data"``: global OHEM selection and global counts). Because the
    params enter replicated (``P()``) and ``check_vma`` is on, ``jax.grad``
    already returns the gradient summed over devices, which is the gradient of
    the global loss; no ``pmean`` is applied (an extra one would change the
    step by the device count; tests/test_train.py
    checks that 4 devices give the single-device step).

    ``formulation`` (default :func:`mtcnn_jax.train_nets.formulation` of the
    mesh's devices): ``"modules"`` runs ``model`` (``flax.linen``) in one jitted
    program; ``"cpu"`` runs :mod:`mtcnn_jax.train_nets`' forward pass of the
    same params in chunks of ``chunk`` windows per device (default
    :data:`mtcnn_jax.train_nets.CHUNK`), which XLA's CPU backend runs several
    times faster (:func:`mtcnn_jax.train_nets.chunked_train_step`). Both give the same update (the
    gradients agree to float rounding: tests/test_train_nets.py).

    metrics: ``loss``, ``det``, ``box``, ``landmarks`` (global batch values),
    ``n_det``/``n_box``/``n_landmarks``, ``grad_norm``, ``param_norm``, ``lr``
    (the learning rate is not known here: filled by the loop).

    ``replicas=True`` makes the step of K independent runs in one program
    (:mod:`mtcnn_jax.replicas`): ``(state, batch, hyper) -> (state, metrics)``
    with every leaf of ``state`` and ``metrics`` stacked on a leading axis of K,
    ``batch`` arrays ``[K, B, ...]`` split over ``replica`` and ``data``
    (``mesh`` from :func:`make_mesh` with ``replica_shards``; :func:`shard_batch`
    with ``replicas=True``) and ``hyper`` each replica's ``alpha`` float32[K, 3]
    (det, box, landmarks) and OHEM ``keep`` int32[K] (traced, so one compilation
    serves a whole grid); ``alpha`` and ``ohem_k`` are then unused. The
    ``"modules"`` formulation maps ``jax.vmap`` over the replicas, the ``"cpu"`` one
    :func:`mtcnn_jax.train_nets.replica_map`. Each replica's update is the one a
    single run of its settings makes (tests/test_replicas.py).
    """
    from mtcnn_jax import train_nets  # noqa: PLC0415

    alpha = None if replicas else {k: float(v) for k, v in alpha.items()}
    formulation = formulation or train_nets.formulation(mesh.devices.flat)
    if formulation == "cpu":
        return train_nets.chunked_train_step(train_nets.stage_of(model), tx, alpha, ohem_k, mesh, chunk, replicas)
    if formulation != "modules":
        raise ValueError(f"unknown formulation {formulation!r} (modules or cpu)")

    return _one_program_step(lambda p, x: model.apply({"params": p}, models.normalize(x)), tx, alpha, ohem_k, mesh,
                             replicas=replicas)


def loss_settings(alpha: Optional[Mapping[str, float]], ohem_k: Optional[int], hyper=None) -> tuple:
    """``(alpha, k)`` of the loss: the static ones of a single run, or one replica's traced ones from ``hyper``."""
    if hyper is None:
        return alpha, ohem_k
    return dict(zip(losses.TASKS, (hyper["alpha"][j] for j in range(3)))), hyper["keep"]


def batch_spec(replicas: bool = False) -> P:
    """The ``PartitionSpec`` of a batch: split over ``data`` on its first axis; with replicas,
    ``[K, B, ...]`` split over ``replica`` and ``data``."""
    return P(REPLICA_AXIS, DATA_AXIS) if replicas else P(DATA_AXIS)


def _one_program_step(forward: Callable, tx, alpha: Optional[Mapping[str, float]], ohem_k: Optional[int], mesh,
                      compiler_options: Optional[dict] = None, replicas: bool = False,
                      replica_map: Callable = jax.vmap) -> Callable:
    """The whole update as one jitted ``shard_map`` program; ``forward(params, images_u8) -> NetOutput``.

    ``replicas``: the step of :func:`make_train_step` with ``replicas=True``, ``replica_map(local_step)``
    over the leading axis (``jax.vmap``, or the CPU formulation's :func:`mtcnn_jax.train_nets.replica_map`)."""

    def local_step(state: TrainState, batch, hyper=None):
        a, k = loss_settings(alpha, ohem_k, hyper)

        def loss_fn(params):
            logits, box, lm = _flat(forward(params, batch["image"]))
            terms = losses.multitask_loss(logits, box, lm, batch, a, k, axis_name=DATA_AXIS)
            return terms.total, terms

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        psum = lambda x: jax.lax.psum(x, DATA_AXIS)
        terms = terms._replace(total=psum(terms.total), det=psum(terms.det), box=psum(terms.box),
                               landmarks=psum(terms.landmarks))
        return _apply_gradients(tx, state, grads, terms)

    if replicas:
        rep = state_spec(mesh)
        step = jax.shard_map(replica_map(local_step), mesh=mesh, in_specs=(rep, batch_spec(True), rep),
                             out_specs=(rep, rep))
    else:
        step = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()))
    return jax.jit(step, donate_argnums=0, compiler_options=compiler_options)


def _apply_gradients(tx, state: TrainState, grads, terms: losses.LossTerms):
    """The optimizer's update of ``state`` by ``grads``, and the step's metrics (``terms`` are global values)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": terms.total,
        "det": terms.det,
        "box": terms.box,
        "landmarks": terms.landmarks,
        "n_det": terms.n_det,
        "n_box": terms.n_box,
        "n_landmarks": terms.n_landmarks,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    }
    return TrainState(params, opt_state, state.step + 1), metrics


def make_eval_step(model, alpha: Mapping[str, float], threshold: float, formulation: Optional[str] = None,
                   chunk: Optional[int] = None) -> Callable:
    """``(params, batch) -> sums``: :func:`mtcnn_jax.losses.eval_sums` of ``model``'s outputs.

    ``batch`` also carries ``valid`` bool[N] (False for padding). ``alpha`` does
    not enter the sums (:func:`evaluate` weighs the task losses with it); it is
    taken so that the eval step is made like the train step. ``formulation`` as
    for :func:`make_train_step`: ``"cpu"`` runs :mod:`mtcnn_jax.train_nets`' forward pass
    on chunks of the batch and adds their sums.
    """
    from mtcnn_jax import train_nets  # noqa: PLC0415

    del alpha
    formulation = formulation or train_nets.formulation()
    if formulation == "modules":
        def sums(params, batch):
            out = model.apply({"params": params}, models.normalize(batch["image"]))
            return losses.eval_sums(*_flat(out), batch, threshold)

        return jax.jit(sums)
    if formulation != "cpu":
        raise ValueError(f"unknown formulation {formulation!r} (modules or cpu)")
    return train_nets.chunked_eval_step(train_nets.stage_of(model), threshold, chunk)


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
    seed = settings.data.cut_seed(settings.seed)
    key = {"data": settings.data.cut_key(), "size": size, "seed": seed}
    make = lambda: samples.build(settings.data, size, seed, progress=progress)  # noqa: E731
    return store.cached_sets(Path(workdir) / SAMPLES_DIR, settings.stage, key, make, write=write,
                             again="cutting the samples again")


def sample_sets(settings: TrainSettings, workdir, write: bool = True, progress: bool = True) -> tuple[dict, dict]:
    """The train and held-out sample sets of a run: read from ``settings.samples`` when set (a folder of
    sample stores, e.g. a recipe's ``rnet_samples``; a missing or damaged one is a one-line
    :class:`~mtcnn_jax.errors.UserError`), else cut (:func:`cut_samples`)."""
    if not settings.samples:
        return cut_samples(settings, workdir, write=write, progress=progress)
    from mtcnn_jax.data import store  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    where = (f"mtcnn-jax train-cascade writes them in <workdir>/{settings.stage}_samples; "
             "name that folder with --config.samples=DIR")
    if not Path(settings.samples).is_dir():
        raise UserError(f"config.samples: {settings.samples} is not a folder ({where})")
    try:
        return store.read_sets(Path(settings.samples), settings.stage)
    except store.StoreDamaged as err:
        raise UserError(f"config.samples: {err} ({where})") from None


def run_samples(settings: TrainSettings, workdir, data: Optional[tuple] = None, write: bool = True,
                progress: bool = True) -> tuple:
    """``(train_set, val_set, index_by_type)`` a run trains on: ``data`` when given (checked to be the
    stage's window size), else :func:`sample_sets`; ``index_by_type[code]`` the train samples of each
    type. ValueError when the batch asks for a type the set lacks."""
    stage, size = settings.stage, models.INPUT_SIZE[settings.stage]
    if data is not None:
        train_set, val_set = data
        for name, part in (("train", train_set), ("val", val_set)):
            if tuple(np.shape(part["image"])[1:]) != (size, size, 3):
                raise ValueError(f"{name} samples are {np.shape(part['image'])[1:]}, {stage} needs {size}×{size}×3")
    else:
        train_set, val_set = sample_sets(settings, workdir, write=write, progress=progress)
    index_by_type = [np.flatnonzero(train_set["type"] == c) for c in range(len(losses.SAMPLE_TYPES))]
    for code, name in enumerate(losses.SAMPLE_TYPES):
        if settings.batch[name] and not len(index_by_type[code]):
            raise ValueError(f"no {name} samples were cut: set config.batch.{name}=0 or cut more")
    return train_set, val_set, index_by_type


def input_folders(settings: TrainSettings) -> list:
    """The folders a run reads (its workdir may not lie inside one): ``data``'s, and ``samples``."""
    return data_folders(settings.data) + ([Path(settings.samples)] if settings.samples else [])


def check_same_run(workdir: Path, config: TrainSettings) -> None:
    """Refuse, in one line, to resume in ``workdir`` a run that was started with other settings.

    A rerun restores the latest checkpoint and goes on; under a changed config
    (another learning rate, α, batch, number of steps) that would finish a run
    that is neither the old one nor the new one. Only the settings that change
    what the run makes count (:data:`mtcnn_jax.config_utils.NEUTRAL_KEYS` may
    change); a folder without checkpoints has nothing to resume.
    """
    made = _started_with(Path(workdir), "config.json")
    if made is None:
        return
    change = _change(made, config)
    if change:
        _refuse(Path(workdir), f"a run started with other settings ({change})", "it")


def check_same_replicas(workdir: Path, settings: list) -> None:
    """:func:`check_same_run` for a group of replicas (:func:`mtcnn_jax.replicas.train_replicas`), whose
    ``replicas.json`` records every member's settings."""
    group = _started_with(Path(workdir), "replicas.json")
    if group is None:
        return
    made = group.get("settings")
    if not isinstance(made, list) or not all(isinstance(m, dict) for m in made):
        _refuse(Path(workdir), "a group of replicas whose replicas.json is damaged", "them")
    if len(made) != len(settings):
        _refuse(Path(workdir), f"a group of {len(made)} replicas, not {len(settings)}", "them")
    for i, (m, s) in enumerate(zip(made, settings)):
        change = _change(m, s)
        if change:
            _refuse(Path(workdir), f"replicas started with other settings (replica {i}: {change})", "them")


def _started_with(workdir: Path, record: str) -> Optional[dict]:
    """The settings record ``workdir / record`` of a run that has checkpoints to resume, else None."""
    from mtcnn_jax import config_utils  # noqa: PLC0415

    checkpoints = workdir / CHECKPOINTS_DIR
    if not (workdir / record).is_file() or not (checkpoints.is_dir()
                                                and any(p.name.isdigit() for p in checkpoints.iterdir())):
        return None
    return config_utils.read_settings_record(
        workdir / record, f"the run in {workdir} was started with (delete {checkpoints} to start it again)")


def _change(made: dict, config: TrainSettings) -> str:
    """The settings that differ between the record ``made`` and ``config``, described (empty: none)."""
    import json  # noqa: PLC0415

    from mtcnn_jax import config_utils, files  # noqa: PLC0415

    now = json.loads(json.dumps(files.json_ready(config.to_dict())))
    change = config_utils.settings_change(config_utils.flat_settings(made), config_utils.flat_settings(now))
    return config_utils.describe_change(change) if change else ""


def _refuse(workdir: Path, what: str, pronoun: str):
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    raise UserError(f"{workdir} holds {what}: a rerun would resume {pronoun}; use a new --workdir, "
                    f"or delete {workdir / CHECKPOINTS_DIR} to start {pronoun} again")


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
    run's. A rerun with other settings is refused (:func:`check_same_run`). ``init="pretrained"`` starts from the authors' weights
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
    from mtcnn_jax.data.samples import augment  # noqa: PLC0415
    from mtcnn_jax.data.store import FIELDS  # noqa: PLC0415
    from mtcnn_jax.metrics_log import MetricsLog  # noqa: PLC0415

    config = TrainSettings.of(config)
    workdir = check_workdir(workdir, input_folders(config), overwrite)
    main = jax.process_index() == 0
    stage = config.stage
    mesh = make_mesh()
    config_utils.check_batch_fits(config, mesh.size, jax.process_count())
    check_same_run(workdir, config)
    if main:
        files.write_json(workdir / "config.json", config.to_dict(), indent=2)

    train_set, val_set, index_by_type = run_samples(config, workdir, data, write=main, progress=progress)
    composition = dict(config.batch)

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
        if config.augment.flip or config.augment.colour:
            rng = np.random.default_rng([config.seed, step, jax.process_index(), 1])  # resumes alike
            batch = augment(batch, config.augment.flip, config.augment.colour, rng)
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
