"""Replicas: K runs of one stage trained as one compiled program.

A sweep over seeds, OHEM ratios and α weights trains networks that differ only
in numbers: the same stage, batch, optimizer and schedule. :func:`train_replicas`
trains such a group together: params and optimizer states are stacked on a
leading axis of K (:func:`stack`) and the train step
(:func:`mtcnn_jax.train.make_train_step` with ``replicas=True``) is ``jax.vmap``-ed
over it, inside the data-parallel ``shard_map``. Each replica has

* its own seed: its init (``models.init_params`` with its seed), its batches
  (:func:`mtcnn_jax.train.sample_batch` with its seed) and its augmentation;
* its own α (det, box, landmarks) and OHEM ratio, passed as traced values
  (``hyper``: ``alpha`` float32[K, 3], ``keep`` int32[K]), so one compilation
  serves the whole grid.

What replicas share: the stage, the cut sample sets (cut once, with the first
replica's seed, or given as ``data``), batch composition, optimizer and
schedule, number of steps, eval and checkpoint cadence. Each replica's params
after N steps are those a separate :func:`mtcnn_jax.train.train_and_evaluate`
run with its settings and the same sample sets reaches (to float rounding;
``tests/test_replicas.py``).

Devices: the mesh is ``(replica, data)`` (:func:`mtcnn_jax.train.make_mesh` with
``replica_shards``). On CPUs the replicas are split over the devices
(``JAX_NUM_CPU_DEVICES`` = cores: each core runs its own replicas, which uses
two cores better than one step split over both); on one GPU everything is one
device. A batch is ``[K, B, ...]``, split over ``replica`` and ``data``.
Replica runs use one host (``jax.process_count() == 1``).

Layout of ``workdir`` (the group's folder): ``samples/`` (as a single run),
``checkpoints/<step>/`` (Orbax, the stacked state), ``replicas.json`` (the
members' names and settings); each member's ``rundir`` gets ``config.json`` and
``metrics.jsonl`` / ``tensorboard/`` as a single run would. An interrupted group
resumes from its latest checkpoint, all replicas at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtcnn_jax import losses, models
from mtcnn_jax.settings import TrainSettings

#: What may differ between the replicas of one group (everything else must agree).
PER_REPLICA = ("seed", "alpha", "ohem_ratio")


def stack(trees: Sequence) -> object:
    """Pytrees of equal structure → one pytree whose leaves have a leading axis of ``len(trees)``."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree, k: int) -> list:
    """The inverse of :func:`stack`: ``k`` pytrees, the ``i``-th taking index ``i`` of every leaf."""
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


def shared_settings(settings: TrainSettings, cut: bool = True) -> dict:
    """The settings that every replica of a group must share (all but :data:`PER_REPLICA`; with ``cut``,
    the seed the windows are cut with too; without, none of ``data``, as when the samples are given)."""
    d = settings.to_dict()
    d["data"]["seed"] = settings.data.cut_seed(settings.seed)  # the windows: cut with one seed for all
    if not cut:
        d.pop("data")
    for key in PER_REPLICA:
        d.pop(key)
    return d


def can_share(a: TrainSettings, b: TrainSettings) -> bool:
    """Whether runs of ``a`` and ``b`` can be replicas of one program."""
    return shared_settings(a) == shared_settings(b)


def _first_difference(a: dict, b: dict, prefix: str = "") -> Optional[tuple]:
    for key in a:
        if isinstance(a[key], dict) and isinstance(b.get(key), dict):
            found = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        elif a[key] != b.get(key):
            return f"{prefix}{key}", b.get(key), a[key]
    return None


def check_group(settings: Sequence[TrainSettings], cut: bool = True) -> None:
    """ValueError naming the first setting in which a replica differs from the first one
    (``cut``: as :func:`shared_settings`)."""
    if not settings:
        raise ValueError("no replicas to train")
    first = shared_settings(settings[0], cut)
    for i, s in enumerate(settings[1:], 1):
        found = _first_difference(first, shared_settings(s, cut))
        if found:
            key, theirs, ours = found
            raise ValueError(f"replica {i} differs from replica 0 in {key} ({theirs!r} vs {ours!r}): "
                             f"only {', '.join(PER_REPLICA)} may differ")


def ohem_keep(settings: TrainSettings) -> int:
    """How many det losses a step of ``settings`` keeps: :func:`mtcnn_jax.losses.ohem_k`, or all of them."""
    n_det = settings.batch["negative"] + settings.batch["positive"]
    return losses.ohem_k(settings.ohem_ratio, n_det) if settings.ohem_ratio < 1.0 else n_det


def hyper_params(settings: Sequence[TrainSettings]) -> dict:
    """The traced per-replica settings of the step: ``alpha`` float32[K, 3] (:data:`losses.TASKS` order), ``keep`` int32[K]."""
    return {
        "alpha": np.array([[s.alpha[t] for t in losses.TASKS] for s in settings], np.float32),
        "keep": np.array([ohem_keep(s) for s in settings], np.int32),
    }


def replica_shards(k: int, n_devices: int) -> int:
    """How many parts the ``k`` replicas are split into over ``n_devices``: the largest divisor of
    ``n_devices`` that divides ``k`` (the rest of the devices split each replica's batch)."""
    return max(d for d in range(1, n_devices + 1) if n_devices % d == 0 and k % d == 0)


def _replica_batch(train_set, index_by_type, settings: Sequence[TrainSettings], step: int) -> dict:
    """The ``[K, B, ...]`` host batch of ``step``: each replica's own draw and augmentation, as a single run's."""
    from mtcnn_jax.data.samples import augment  # noqa: PLC0415
    from mtcnn_jax.data.store import FIELDS  # noqa: PLC0415
    from mtcnn_jax.train import sample_batch  # noqa: PLC0415

    parts = []
    for s in settings:
        idx = sample_batch(index_by_type, dict(s.batch), s.seed, step)
        batch = {f: train_set[f][idx] for f in FIELDS}
        if s.augment.flip or s.augment.colour:
            batch = augment(batch, s.augment.flip, s.augment.colour, np.random.default_rng([s.seed, step, 0, 1]))
        parts.append(batch)
    return {f: np.stack([p[f] for p in parts]) for f in FIELDS}


def train_replicas(settings: Sequence[TrainSettings], workdir, rundirs: Sequence, progress: bool = True,
                   max_steps: Optional[int] = None, data: Optional[tuple] = None, overwrite: bool = False,
                   devices=None):
    """Train the replicas ``settings`` together; returns ``(stacked_state, [val_metrics of each replica])``.

    ``workdir``: the group's folder (samples, checkpoints); ``rundirs[i]``: replica
    ``i``'s folder (its ``config.json`` and metrics log). ``data``, ``max_steps``,
    ``overwrite`` as for :func:`mtcnn_jax.train.train_and_evaluate`. ``devices``:
    the devices to use (default all of this host's). A group folder with
    checkpoints resumes only with the members it was started with
    (:func:`mtcnn_jax.train.check_same_replicas`: one line otherwise).
    """
    from mtcnn_jax import runs  # noqa: PLC0415

    with runs.interruptible():
        return _train_replicas(list(settings), workdir, list(rundirs), progress, max_steps, data, overwrite, devices)


def _train_replicas(settings, workdir, rundirs, progress, max_steps, data, overwrite, devices):
    import orbax.checkpoint as ocp  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from mtcnn_jax import files, train  # noqa: PLC0415
    from mtcnn_jax.metrics_log import MetricsLog  # noqa: PLC0415
    from mtcnn_jax.runs import (check_interrupt, check_workdir, deferred_interrupts,  # noqa: PLC0415
                                open_checkpoints, write_checkpoint_manifest)

    settings = [TrainSettings.of(s) for s in settings]
    check_group(settings, cut=data is None)
    if len(rundirs) != len(settings):
        raise ValueError(f"{len(settings)} replicas but {len(rundirs)} run folders")
    if jax.process_count() != 1:
        raise ValueError("replica runs use one host: run the sweep's groups on each host separately")
    base, k = settings[0], len(settings)
    workdir = check_workdir(workdir, train.input_folders(base), overwrite)
    stage = base.stage
    devices = jax.local_devices() if devices is None else list(devices)
    mesh = train.make_mesh(devices, replica_shards(k, len(devices)))
    composition = dict(base.batch)
    n_data = mesh.shape[train.DATA_AXIS]
    if sum(composition.values()) % n_data:
        raise ValueError(f"a batch of {sum(composition.values())} cannot be split over {n_data} devices")
    train.check_same_replicas(workdir, settings)
    files.write_json(workdir / "replicas.json", {"members": [str(r) for r in rundirs],
                                                 "settings": [s.to_dict() for s in settings]}, indent=2)
    for s, rundir in zip(settings, rundirs):
        Path(rundir).mkdir(parents=True, exist_ok=True)
        files.write_json(Path(rundir) / "config.json", s.to_dict(), indent=2)

    train_set, val_set, index_by_type = train.run_samples(base, workdir, data, progress=progress)

    model = models.create(stage, landmarks=base.landmarks)
    tx = train.make_optimizer(base.optimizer, base.total_steps)
    schedule = train.make_schedule(base.optimizer, base.total_steps)
    state = stack([train.create_train_state(models.init_params(stage, jax.random.key(s.seed), landmarks=base.landmarks),
                                            tx) for s in settings])
    state = train.replicate(state, mesh)
    hyper = train.replicate(hyper_params(settings), mesh)
    manager, state, start = open_checkpoints(workdir / train.CHECKPOINTS_DIR, state, base.keep_checkpoints)

    step_fn = train.make_train_step(model, tx, None, None, mesh, replicas=True)
    eval_step = train.make_eval_step(model, None, base.threshold)
    logs = [MetricsLog(r, start) for r in rundirs]
    alphas = [dict(s.alpha) for s in settings]

    def evaluate_all(state):
        params = unstack(jax.device_get(state.params), k)
        return [train.evaluate(eval_step, p, val_set, a, base.eval_batch_size) for p, a in zip(params, alphas)]

    end = base.total_steps if max_steps is None else min(base.total_steps, start + max_steps)
    val_metrics, val_step = [], -1
    bar = tqdm(range(start, end), initial=start, total=base.total_steps, disable=not progress,
               desc=f"train {k} × {stage}", dynamic_ncols=True)
    if start == 0:
        val_metrics, val_step = evaluate_all(state), 0
        for log, m in zip(logs, val_metrics):
            log.write(0, "val", m)
    t0 = time.time()
    for step in bar:
        check_interrupt()
        batch = _replica_batch(train_set, index_by_type, settings, step)
        state, metrics = step_fn(state, train.shard_batch(batch, mesh, replicas=True), hyper)
        done = step + 1
        if done % base.log_every == 0 or done == base.total_steps:
            stacked = jax.device_get(metrics)
            for i, log in enumerate(logs):
                m = {key: float(v[i]) for key, v in stacked.items()}
                m["lr"] = float(schedule(step))
                m["steps_per_s"] = (done - start) / max(1e-9, time.time() - t0)
                log.write(done, "train", m)
            bar.set_postfix(loss=f"{float(np.mean(stacked['loss'])):.4f}")
        if done % base.eval_every == 0 or done == base.total_steps:
            val_metrics, val_step = evaluate_all(state), done
            for log, m in zip(logs, val_metrics):
                log.write(done, "val", m)
        if done % base.checkpoint_every == 0 or done == base.total_steps:
            with deferred_interrupts():
                manager.save(done, args=ocp.args.StandardSave(state))
                write_checkpoint_manifest(workdir / train.CHECKPOINTS_DIR / str(done))
    if val_step != end:
        val_metrics = evaluate_all(state)
    manager.wait_until_finished()
    manager.close()
    for log in logs:
        log.close()
    return state, val_metrics


def split_cpu_devices() -> None:
    """Before JAX starts: one CPU device per core (at most 8), so that replicas split over the cores
    (each core runs its own replicas: 2.8× the throughput of sequential runs for short P-Net runs on 2
    cores, against 1.0× on one device; ``benchmarks/replica_throughput.py``). Nothing when
    ``JAX_NUM_CPU_DEVICES`` is set, or when JAX has already started (accelerators are not affected)."""
    import os  # noqa: PLC0415

    if "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    try:
        jax.config.update("jax_num_cpu_devices", max(1, min(8, os.cpu_count() or 1)))
    except RuntimeError:  # the backend is already up
        pass


def replica_state(state, i: int):
    """Replica ``i`` of a stacked train state, on the host (its params are a single run's params pytree)."""
    return jax.tree.map(lambda x: np.asarray(x[i]), jax.device_get(state))


__all__ = ["PER_REPLICA", "stack", "unstack", "shared_settings", "can_share", "check_group", "ohem_keep",
           "hyper_params", "replica_shards", "train_replicas", "replica_state", "split_cpu_devices"]
