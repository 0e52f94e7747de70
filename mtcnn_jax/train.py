"""Training MTCNN's networks: train state, optimizer, data-parallel step, eval, loop.

Everything here is a plain function over plain pytrees, so a notebook can call
the same code the ``mtcnn-jax train`` command runs:

* :class:`TrainState` — ``(params, opt_state, step)``, a NamedTuple pytree.
* :func:`make_optimizer` — optax SGD with momentum (or Adam), a ``step``,
  ``cosine`` or ``constant`` learning-rate schedule and L2 weight decay.
* :func:`make_train_step` — the jitted update, data-parallel over a 1-D mesh
  named ``data`` with ``jax.shard_map``: the global batch is split over the
  devices, params and optimizer state are replicated, the state is donated.
* :func:`make_eval_step` / :func:`evaluate` — loss, face/non-face accuracy,
  face recall at the stage's threshold, box and landmark errors.
* :func:`train_and_evaluate` — the loop: samples, batches, logging (JSON lines +
  TensorBoard), Orbax checkpoints and resume.

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

import json
import os
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

DATA_AXIS = "data"


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree of arrays."""

    params: Any
    opt_state: Any
    step: jax.Array  # int32[]


# ----------------------------------------------------------------------------- optimizer


def make_schedule(opt_config, total_steps: int) -> optax.Schedule:
    """Learning-rate schedule from ``config.optimizer``.

    ``step``: ``learning_rate`` multiplied by ``decay_factor`` at each of
    ``decay_at`` (fractions of ``total_steps``); ``cosine``: cosine decay to 0
    over ``total_steps``; ``constant``. ``warmup_steps`` > 0 prepends a linear
    warm-up from 0.
    """
    lr = float(opt_config.learning_rate)
    name = opt_config.schedule
    warmup = int(opt_config.warmup_steps)
    decay_steps = max(1, total_steps - warmup)
    if name == "constant":
        sched = optax.constant_schedule(lr)
    elif name == "step":
        bounds = {
            max(1, int(round(f * decay_steps))): float(opt_config.decay_factor)
            for f in opt_config.decay_at
        }
        sched = optax.piecewise_constant_schedule(lr, bounds)
    elif name == "cosine":
        sched = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        raise ValueError(f"unknown schedule {name!r}")
    if warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
    return sched


def make_optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
    """Optional ``clip_by_global_norm(clip_grad_norm)`` (0 = off), ``add_decayed_weights(weight_decay)``
    (L2, as Caffe), then SGD with momentum or Adam."""
    sched = make_schedule(opt_config, total_steps)
    parts = []
    if opt_config.clip_grad_norm:
        parts.append(optax.clip_by_global_norm(float(opt_config.clip_grad_norm)))
    if opt_config.weight_decay:
        parts.append(optax.add_decayed_weights(float(opt_config.weight_decay)))
    if opt_config.name == "sgd":
        parts.append(optax.sgd(sched, momentum=float(opt_config.momentum) or None))
    elif opt_config.name == "adam":
        parts.append(optax.adam(sched))
    else:
        raise ValueError(f"unknown optimizer {opt_config.name!r}")
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
    step by the device count: the trap in ENGINEERING.md; tests/test_train.py
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


def eval_sums(model, params, batch, alpha, threshold: float):
    """Summed eval statistics of one batch (no OHEM); combine with :func:`finish_eval`.

    ``batch`` also carries ``valid`` bool[N] (False for padding). Accuracy counts
    argmax of the logits; recall counts positives whose face probability is
    ≥ ``threshold``; ``box_err`` sums the mean absolute offset error (window
    units) of box samples; ``landmark_err`` the mean point-to-point distance
    (window units) of landmark samples.
    """
    out = model.apply({"params": params}, models.normalize(batch["image"]))
    logits, box, lm = _flat(out)
    t = batch["type"]
    valid = batch["valid"].astype(jnp.float32)
    b = losses.beta(t) * valid[:, None]
    prob = jax.nn.softmax(logits)[:, 1]
    is_pos = (t == losses.POSITIVE).astype(jnp.float32) * valid
    correct = (jnp.argmax(logits, -1) == (t == losses.POSITIVE)).astype(jnp.float32)
    sums = {
        "det_sum": jnp.sum(b[:, 0] * losses.det_loss(logits, t)),
        "n_det": jnp.sum(b[:, 0]),
        "correct": jnp.sum(b[:, 0] * correct),
        "n_pos": jnp.sum(is_pos),
        "recalled": jnp.sum(is_pos * (prob >= threshold)),
        "box_sum": jnp.sum(b[:, 1] * losses.box_loss(box, batch["box"])),
        "box_err": jnp.sum(b[:, 1] * jnp.mean(jnp.abs(box - batch["box"]), -1)),
        "n_box": jnp.sum(b[:, 1]),
        "landmarks_sum": jnp.zeros(()),
        "landmark_err": jnp.zeros(()),
        "n_landmarks": jnp.sum(b[:, 2]),
    }
    if lm is not None:
        d = (lm - batch["landmarks"]).reshape(-1, 2, 5)
        sums["landmarks_sum"] = jnp.sum(b[:, 2] * losses.landmark_loss(lm, batch["landmarks"]))
        sums["landmark_err"] = jnp.sum(b[:, 2] * jnp.mean(jnp.sqrt(jnp.sum(d * d, 1)), -1))
    return sums


def make_eval_step(model, alpha, threshold: float) -> Callable:
    """Jitted ``(params, batch) -> sums`` (see :func:`eval_sums`)."""
    alpha = {k: float(v) for k, v in alpha.items()}
    return jax.jit(lambda params, batch: eval_sums(model, params, batch, alpha, threshold))


def finish_eval(sums: Mapping[str, float], alpha: Mapping[str, float]) -> dict:
    """Summed statistics → means: ``loss`` = Σ_j α_j · mean task loss, ``accuracy``, ``recall``, …"""
    d = lambda a, b: float(sums[a]) / max(1.0, float(sums[b]))
    det, box, lm = d("det_sum", "n_det"), d("box_sum", "n_box"), d("landmarks_sum", "n_landmarks")
    return {
        "loss": alpha["det"] * det + alpha["box"] * box + alpha["landmarks"] * lm,
        "det": det,
        "box": box,
        "landmarks": lm,
        "accuracy": d("correct", "n_det"),
        "recall": d("recalled", "n_pos"),
        "box_error": d("box_err", "n_box"),
        "landmark_error": d("landmark_err", "n_landmarks"),
    }


def evaluate(eval_step, params, samples: Mapping[str, np.ndarray], alpha, batch_size: int = 1024) -> dict:
    """Run ``eval_step`` over every sample (the last batch padded, ``valid`` masked)."""
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
    return finish_eval(total, alpha)


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
    gradient wrecks the trained layers (measured: P-Net at lr 0.01 went to NaN).
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


class _Log:
    """JSON-lines metrics file plus TensorBoard events (tensorboardX), on process 0 only."""

    def __init__(self, workdir: Path, resume_step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        path = workdir / "metrics.jsonl"
        if path.exists():  # drop what a killed run logged after its last checkpoint
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                except ValueError:  # a line cut short by the kill
                    continue
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, path)
        self.file = open(path, "a")
        from tensorboardX import SummaryWriter  # noqa: PLC0415 (pulls no TensorFlow)

        self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, metrics: Mapping[str, float]):
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for k, v in metrics.items():
            self.tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def close(self):
        if self.enabled:
            self.file.close()
            self.tb.close()


def train_and_evaluate(config, workdir, init: str = "scratch", progress: bool = True,
                       max_steps: Optional[int] = None, data: Optional[tuple] = None):
    """Train ``config.stage`` on samples cut per ``config.data``; returns ``(state, val_metrics)``.

    workdir gets: ``config.json``, ``samples.npz`` (the cut samples, reused on
    resume when ``config.data``, the window size and the seed are unchanged),
    ``checkpoints/<step>/`` (Orbax, written to a temporary folder and renamed
    when complete, so a kill never leaves a half checkpoint that would be
    restored), ``metrics.jsonl`` (one JSON object per log: ``step``, ``split``
    "train"/"val", metrics) and ``tensorboard/`` event files.

    Rerun on the same workdir, it restores the latest checkpoint and continues;
    batches depend only on (seed, step), so the result equals an uninterrupted
    run's. ``init="pretrained"`` starts from the authors' weights
    (:func:`mtcnn_jax.pretrained.load_pretrained`), keeping fresh heads they lack.
    ``max_steps`` stops early (after that many steps of this call; testing).
    ``data=(train_set, val_set)`` trains on given sample sets (dicts of arrays as
    :mod:`mtcnn_jax.data.samples` makes them, e.g. mined samples read from a
    :class:`mtcnn_jax.data.store.SampleStore`) instead of cutting random windows;
    nothing is cut or cached then, and ``config.data`` is not used.
    """
    import orbax.checkpoint as ocp  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from mtcnn_jax import config_utils  
    from mtcnn_jax.data import samples  # noqa: PLC0415

    config_utils.validate(config)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    main = jax.process_index() == 0
    stage, size = config.stage, models.INPUT_SIZE[config.stage]
    mesh = make_mesh()
    config_utils.check_batch_fits(config, mesh.size, jax.process_count())
    if main:
        (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")

    cache = workdir / "samples.npz"
    # What the cut samples depend on; a cache cut with other settings is cut again.
    data_key = {k: v for k, v in config.data.to_dict().items() if k != "workers"}  # workers: same samples
    recipe = json.dumps({"data": data_key, "size": size, "seed": config.seed}, sort_keys=True)
    cached = samples.load(cache) if data is None and cache.exists() else None
    if data is not None:
        train_set, val_set = data
        for name, part in (("train", train_set), ("val", val_set)):
            if tuple(np.shape(part["image"])[1:]) != (size, size, 3):
                raise ValueError(f"{name} samples are {np.shape(part['image'])[1:]}, {stage} needs {size}×{size}×3")
    elif cached is not None and cached[2] == recipe:
        train_set, val_set = cached[:2]
    else:
        train_set, val_set = samples.build(config.data, size, config.seed)
        if main:
            samples.save(cache, train_set, val_set, recipe)
    index_by_type = [np.flatnonzero(train_set["type"] == c) for c in range(4)]
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

    manager = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False
        ),
    )
    start = manager.latest_step() or 0
    if start:
        state = manager.restore(start, args=ocp.args.StandardRestore(state))

    train_step = make_train_step(model, tx, alpha, k, mesh)
    eval_step = make_eval_step(model, alpha, config.threshold)
    log = _Log(workdir, start, main)
    end = config.total_steps if max_steps is None else min(config.total_steps, start + max_steps)
    val_metrics, val_step = {}, -1
    bar = tqdm(range(start, end), initial=start, total=config.total_steps, disable=not (progress and main),
               desc=f"train {stage}", dynamic_ncols=True)
    if start == 0:  # the untrained network's held-out numbers, for comparison
        val_metrics, val_step = evaluate(eval_step, state.params, val_set, alpha, config.eval_batch_size), 0
        log.write(0, "val", val_metrics)
    t0 = time.time()
    for step in bar:
        idx = sample_batch(index_by_type, composition, config.seed, step, jax.process_index(), jax.process_count())
        batch = {f: train_set[f][idx] for f in samples.FIELDS}
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
            manager.save(done, args=ocp.args.StandardSave(state))
    if val_step != end:  # stopped between evals, or rerun on a finished workdir: not logged
        val_metrics = evaluate(eval_step, state.params, val_set, alpha, config.eval_batch_size)
    manager.wait_until_finished()
    manager.close()
    log.close()
    return state, val_metrics
