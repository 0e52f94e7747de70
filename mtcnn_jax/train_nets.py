"""P-Net, R-Net and O-Net forward passes for training, written for XLA on the CPU.

The same networks as :mod:`mtcnn_jax.models` with the same params pytrees (a
landmark head where the params have one), the same inputs (uint8 RGB windows)
and the same outputs (:class:`mtcnn_jax.models.NetOutput`, equal to the
``flax.linen`` modules' up to float rounding), differentiable, and formulated
for how XLA's CPU backend runs a training step of these small networks
(``benchmarks/README.md``, "Train step on the CPU", has the timings):

* **Max pooling as strided slices, with its own gradient.** The gradient of
  ``lax.reduce_window`` (``select_and_scatter_add``) is several times slower than
  the pooling itself; here each axis is pooled as the maximum of the
  ``window`` strided slices, and the gradient routes ``dy`` to the first
  maximum of each window (as ``reduce_window``'s does) with one compare, one
  select and one strided pad per slice (:func:`max_pool_ceil`).
* **The 3-channel first convolutions as patches × matrix** (as
  :mod:`mtcnn_jax.inference`), the shifted copies padded from 27 to 32 columns,
  which XLA's matrix product takes better; their input gradient is not needed.
* **Convolutions that cover their whole input as matrix products** (P-Net's
  conv3 on a 12×12 window: ``[N, 144] × [144, 32]``; its 1×1 heads as one
  ``[32, 16]`` product), the others as XLA's own convolution.

What makes the step itself fast — running it in chunks of a few dozen windows,
so that no program's temporaries leave the caches or fault fresh pages in every
step — is :func:`chunked_train_step` below, which
:func:`mtcnn_jax.train.make_train_step` returns on the CPU; :data:`CHUNK` holds
the chunk size per network. Which formulation a step runs (this one on the CPU
backend, the modules elsewhere or with ``MTCNN_JAX_NETS=modules``) is
:func:`formulation`'s decision.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mtcnn_jax import losses, models, train
from mtcnn_jax.models import NetOutput, _flatten_whc, ceil_pool_geometry, normalize
from mtcnn_jax.networks import xla_options

#: Windows per chunk of the CPU train step (:func:`mtcnn_jax.train.make_train_step`): each chunk's
#: program keeps its temporaries in a few MB (measured in ``benchmarks/README.md``).
CHUNK = {"pnet": 448, "rnet": 64, "onet": 8}
#: Windows per chunk of the replica step, all of a device's replicas together (a replica's
#: share: this over their number, at least 1). Measured with the mini recipe's batches, 8
#: replicas on 2 CPU devices (4 each): R-Net 5,458 samples/s in chunks of 16 windows a replica,
#: against 3,857 in 64 and 4,672 in one program of 448; O-Net 844 in one program of 120 a
#: replica (what 1024 gives), against 756 in chunks of 4 and 607 in 8; P-Net 0.0099 ms a window
#: (forward and backward) in chunks of 112 a replica against 0.016 in 448.
REPLICA_CHUNK = {"pnet": 896, "rnet": 64, "onet": 1024}

#: The stage each module class is.
STAGES = {"PNet": "pnet", "RNet": "rnet", "ONet": "onet"}


def formulation(devices=None) -> str:
    """``"cpu"`` (this module) when every device is a CPU and ``MTCNN_JAX_NETS`` is not ``modules``, else ``"modules"``.

    The same switch as the detector's (:func:`mtcnn_jax.networks.cpu_formulation`):
    ``MTCNN_JAX_NETS=modules`` makes training run the ``flax.linen`` modules too.
    """
    if os.environ.get("MTCNN_JAX_NETS", "") == "modules":
        return "modules"
    devices = jax.devices() if devices is None else list(devices)
    return "cpu" if all(d.platform == "cpu" for d in devices) else "modules"


def stage_of(model) -> str:
    """``"pnet"``, ``"rnet"`` or ``"onet"`` for a :mod:`mtcnn_jax.models` module."""
    return STAGES[type(model).__name__]


# ----------------------------------------------------------------------------- layers


def channel_sum(t: jax.Array) -> jax.Array:
    """``t`` summed over every axis but the last, as a ``[1, M] × [M, C]`` product (XLA's CPU reduction over
    the leading axes to a few channels is several times slower)."""
    t = t.reshape(-1, t.shape[-1])
    return (jnp.ones((1, t.shape[0]), t.dtype) @ t)[0]


@jax.custom_vjp
def add_bias(y, bias):
    """``y + bias`` (over the last axis), whose bias gradient is a :func:`channel_sum`."""
    return y + bias


add_bias.defvjp(lambda y, bias: (y + bias, None), lambda _, g: (g, channel_sum(g)))


@jax.custom_vjp
def _prelu(x, alpha):
    return jnp.where(x >= 0, x, alpha * x)


def _prelu_fwd(x, alpha):
    return _prelu(x, alpha), (x, alpha)


def _prelu_bwd(res, g):
    x, alpha = res
    positive = x >= 0
    return jnp.where(positive, g, alpha * g), channel_sum(jnp.where(positive, 0.0, x * g))


_prelu.defvjp(_prelu_fwd, _prelu_bwd)


def prelu(params, x):
    """Per-channel PReLU (:class:`mtcnn_jax.models.PReLU`), its slope gradient a :func:`channel_sum`."""
    return _prelu(x, params["alpha"])


def dense(params, x):
    return add_bias(x @ params["kernel"], params["bias"])


def conv(params, x):
    """A VALID, stride-1 convolution with a ``flax.linen.Conv``'s params; a matrix product when it covers ``x``."""
    kh, kw, ci, co = params["kernel"].shape
    n, h, w, _ = x.shape
    if (h, w) == (kh, kw):
        return add_bias(x.reshape(n, -1) @ params["kernel"].reshape(-1, co), params["bias"]).reshape(n, 1, 1, co)
    y = jax.lax.conv_general_dilated(x, params["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return add_bias(y, params["bias"])


def conv_patches(params, x, width: int = 32):
    """:func:`conv` as one matrix product: the ``kh × kw`` shifted copies of ``x`` side by side, a column of
    ones and zero columns up to ``width``, times the kernel with the bias as a row (so that its gradient
    is part of the kernel's).

    Only the 3-channel first layers run this way: the inner convolutions of R-Net
    and O-Net as patches take a tenth to a fifth off a chunk's gradient program
    alone, but the whole chunked step gets slower (O-Net 135 → 160 ms, R-Net
    82 → 94 ms at the ``mini`` recipe's batches, 2026-12-03).
    """
    kh, kw, ci, co = params["kernel"].shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    k = kh * kw * ci
    width = max(width, k + 1)
    parts = [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)]
    parts.append(jnp.ones((n, oh, ow, 1), x.dtype))
    rows = [params["kernel"].reshape(k, co), params["bias"][None]]
    if width > k + 1:
        parts.append(jnp.zeros((n, oh, ow, width - k - 1), x.dtype))
        rows.append(jnp.zeros((width - k - 1, co), params["kernel"].dtype))
    cols = jnp.concatenate(parts, axis=-1)
    return (cols.reshape(-1, width) @ jnp.concatenate(rows)).reshape(n, oh, ow, co)


def _slices(x, window: int, stride: int, axis: int):
    """Cell ``i`` of every window along ``axis``, ``i < window``: ``window`` arrays of Caffe's ceil-rounded
    number of windows (:func:`mtcnn_jax.models.ceil_pool_geometry`), a cell past the end of ``x`` (only the
    last, partial window has one) -inf. The -inf pad goes on each window-sized slice, where XLA fuses it
    into the maximum, not on ``x``, which it would copy."""
    n = x.shape[axis]
    n_out, _ = ceil_pool_geometry(n, window, stride)
    out = []
    for i in range(window):
        have = min(n_out, -(-(n - i) // stride))
        part = jax.lax.slice_in_dim(x, i, i + (have - 1) * stride + 1, stride, axis)
        if have < n_out:
            widths = [(0, 0, 0)] * x.ndim
            widths[axis] = (0, n_out - have, 0)
            part = jax.lax.pad(part, jnp.array(-jnp.inf, x.dtype), widths)
        out.append(part)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_along(x, window: int, stride: int, axis: int):
    """Max over windows of ``window`` cells, ``stride`` apart, along ``axis`` (Caffe's ceil rounding)."""
    return functools.reduce(jnp.maximum, _slices(x, window, stride, axis))


def _max_along_fwd(x, window, stride, axis):
    y = _max_along(x, window, stride, axis)
    return y, (x, y)


def _max_along_bwd(window, stride, axis, res, g):
    """The gradient to the first maximum of each window, gathered rather than scattered.

    Input cell ``p = q·stride + r`` is cell ``i = r + m·stride`` of window ``q - m``
    for every ``m ≥ 0`` with ``i < window``, so the cells of one residue ``r`` take
    ``Σ_m g[q - m]·[window q - m's first maximum is its cell r + m·stride]``: a few
    shifted copies of the window-sized gradient, added; the ``stride`` residues are
    then interleaved. (Padding each window's share back into place and adding
    them, the plain transpose, costs a quarter more of the O-Net step.)
    """
    x, y = res
    n, n_out = x.shape[axis], y.shape[axis]
    shares, taken = [], None
    for s in _slices(x, window, stride, axis):
        hit = s == y
        if taken is not None:
            hit = hit & ~taken
        taken = hit if taken is None else taken | hit
        shares.append(jnp.where(hit, g, 0.0))
    per_residue = -(-n // stride)
    residues = []
    for r in range(stride):
        total = None
        for m in range((window - 1 - r) // stride + 1):
            widths = [(0, 0, 0)] * x.ndim
            widths[axis] = (m, per_residue - n_out - m, 0)  # negative: cut (cells past the end of x)
            part = jax.lax.pad(shares[r + m * stride], jnp.zeros((), g.dtype), widths)
            total = part if total is None else total + part
        residues.append(total)
    shape = list(x.shape)
    shape[axis] = per_residue * stride
    dx = jnp.stack(residues, axis=axis + 1).reshape(shape)
    return (jax.lax.slice_in_dim(dx, 0, n, axis=axis),)


_max_along.defvjp(_max_along_fwd, _max_along_bwd)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
    """:func:`mtcnn_jax.models.max_pool_ceil` (Caffe's ceil rounding) as strided slices, with a cheap gradient.

    The gradient goes to the first maximum of each window along each axis (ties
    are the only case where this can differ from ``reduce_window``'s choice, and
    tied cells of a window hold equal values, so the params' gradient is the same
    wherever they come from equal input patches).
    """
    if not 1 <= stride <= window <= min(x.shape[1:3]):
        raise ValueError(f"max_pool_ceil: needs 1 <= stride <= window <= height, width; got stride {stride}, "
                         f"window {window} on {x.shape[1]}x{x.shape[2]}")
    return _max_along(_max_along(x, window, stride, 1), window, stride, 2)


def _heads(params, x) -> NetOutput:
    """The face, box and (where the params have one) landmark heads of ``x`` as one matrix product."""
    names = [h for h in ("face", "box", "landmarks") if h in params]
    kernels = [params[h]["kernel"].reshape(-1, params[h]["kernel"].shape[-1]) for h in names]
    out = add_bias(x @ jnp.concatenate(kernels, axis=-1), jnp.concatenate([params[h]["bias"] for h in names]))
    parts, start = [], 0
    for k in kernels:
        parts.append(out[..., start : start + k.shape[-1]])
        start += k.shape[-1]
    return NetOutput(parts[0], parts[1], parts[2] if len(parts) > 2 else None)


# ----------------------------------------------------------------------------- networks


def pnet(params, images_u8) -> NetOutput:
    """P-Net on uint8[N, H, W, 3] windows (H, W ≥ 12) → :class:`NetOutput` of shape [N, h', w', C], as the module."""
    x = normalize(images_u8)
    x = max_pool_ceil(prelu(params["prelu1"], conv_patches(params["conv1"], x)), 2, 2)
    x = prelu(params["prelu2"], conv(params["conv2"], x))
    x = prelu(params["prelu3"], conv(params["conv3"], x))
    return _heads(params, x)


def rnet(params, crops_u8) -> NetOutput:
    """R-Net on uint8[N, 24, 24, 3] → :class:`NetOutput` [N, 2], [N, 4], [N, 10] or None."""
    x = normalize(crops_u8)
    x = max_pool_ceil(prelu(params["prelu1"], conv_patches(params["conv1"], x)), 3, 2)
    x = max_pool_ceil(prelu(params["prelu2"], conv(params["conv2"], x)), 3, 2)
    x = prelu(params["prelu3"], conv(params["conv3"], x))
    x = prelu(params["prelu4"], dense(params["dense4"], _flatten_whc(x)))
    return _heads(params, x)


def onet(params, crops_u8) -> NetOutput:
    """O-Net on uint8[N, 48, 48, 3] → :class:`NetOutput` [N, 2], [N, 4], [N, 10] or None."""
    x = normalize(crops_u8)
    x = max_pool_ceil(prelu(params["prelu1"], conv_patches(params["conv1"], x)), 3, 2)
    x = max_pool_ceil(prelu(params["prelu2"], conv(params["conv2"], x)), 3, 2)
    x = max_pool_ceil(prelu(params["prelu3"], conv(params["conv3"], x)), 2, 2)
    x = prelu(params["prelu4"], conv(params["conv4"], x))
    x = prelu(params["prelu5"], dense(params["dense5"], _flatten_whc(x)))
    return _heads(params, x)


FORWARD = {"pnet": pnet, "rnet": rnet, "onet": onet}


def forward(stage: str) -> Callable:
    """``(params, images_u8) -> NetOutput`` of ``stage``."""
    return FORWARD[stage]


# ----------------------------------------------------------------------------- the chunked step


def chunk_bounds(n: int, chunk: int) -> list:
    """``[(start, stop), ...]``: ``n`` windows in ``ceil(n / chunk)`` consecutive chunks of nearly equal size."""
    parts = max(1, -(-n // max(1, int(chunk))))
    size = -(-n // parts)
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _weighted_loss(weights, out: models.NetOutput, batch) -> jax.Array:
    """``Σ weights · L``: the sample losses (:func:`mtcnn_jax.losses.sample_losses`) weighted per sample and task."""
    return jnp.sum(weights * losses.sample_losses(*train._flat(out), batch))


def replica_map(f: Callable, k: int) -> Callable:
    """``f`` over the leading axis (of length ``k``) of every argument and result, as ``jax.vmap(f)``,
    written out as ``k`` calls in one program. On the CPU this runs each replica's convolutions and
    matrix products as the single run's fast kernels, where ``jax.vmap`` makes grouped convolutions
    and batched products that XLA's CPU backend runs 1.3–2× slower per window
    (``benchmarks/replica_throughput.py``); the program is ``k`` times larger to compile."""

    def mapped(*args):
        outs = [f(*jax.tree.map(lambda x, i=i: x[i], args)) for i in range(k)]
        return jax.tree.map(lambda *o: jnp.stack(o), *outs)

    return mapped


def chunked_train_step(stage: str, tx, alpha: Optional[Mapping[str, float]], ohem_k: Optional[int], mesh,
                       chunk: Optional[int], replicas: bool = False) -> Callable:
    """:func:`mtcnn_jax.train.make_train_step`'s ``"cpu"`` formulation: the same update, computed in chunks of windows.

    XLA's CPU backend gives a program's temporaries fresh pages on every call
    (a full R-Net step at 448 windows faults in 216 MB of them, a third of its
    time) and runs the small convolutions best on small batches that stay in the
    caches. So each device's share of the batch is cut into chunks of ``chunk``
    windows, and one step is a few small jitted programs, each a ``shard_map``
    over the mesh:

    1. the forward pass of every chunk (this module's networks), outputs only;
    2. the per-sample loss weights (:func:`mtcnn_jax.losses.loss_masks`: β, the global
       OHEM selection and the global counts, as :func:`mtcnn_jax.losses.multitask_loss`)
       and the loss terms;
    3. per chunk, the gradient of its weighted loss, recomputing its forward pass,
       added up (``check_vma`` sums each over the devices, as in the one-program step);
    4. the optimizer's update (:func:`mtcnn_jax.train._apply_gradients`), state donated.

    The extra forward pass costs a third more arithmetic and is repaid several times.
    A device's share that fits in one chunk (P-Net's 448 windows of 12×12) runs
    instead as one program (:func:`mtcnn_jax.train._one_program_step` with these forward passes):
    there the dispatch of five programs would cost more than the caches save.

    ``replicas``: the step of K runs at once (:func:`mtcnn_jax.train.make_train_step`
    with ``replicas=True``): each program maps over the leading axis (:func:`replica_map`)
    and a chunk is ``chunk`` windows of every replica (default: :data:`REPLICA_CHUNK`
    shared by a device's replicas).
    """
    fwd = forward(stage)
    given = chunk
    data, rep = train.batch_spec(replicas), train.state_spec(mesh)
    options = xla_options() or None
    programs: dict = {}

    def build(n_local: int, k_local: int):
        many = (lambda f: replica_map(f, k_local)) if replicas else (lambda f: f)
        smap = lambda f, i, o: jax.shard_map(many(f), mesh=mesh, in_specs=i, out_specs=o)  # noqa: E731
        if given:
            chunk = int(given)
        else:
            chunk = max(1, REPLICA_CHUNK[stage] // k_local) if replicas else CHUNK[stage]
        bounds = chunk_bounds(n_local, chunk)
        if len(bounds) == 1:
            # pcast: the custom gradients of train_nets' layers are per device; its transpose sums them.
            one = train._one_program_step(lambda p, x: fwd(jax.lax.pcast(p, train.DATA_AXIS, to="varying"), x),
                                          tx, alpha, ohem_k, mesh, options, replicas, many)
            return {"one": one}

        def split(batch):
            return tuple({k: v[a:b] for k, v in batch.items()} for a, b in bounds)

        def forward(params, images):
            return train._flat(fwd(params, images))

        def weigh(outs, chunks, hyper=None):
            a, keep = train.loss_settings(alpha, ohem_k, hyper)
            logits, box = (jnp.concatenate([o[i] for o in outs]) for i in (0, 1))
            lm = None if outs[0][2] is None else jnp.concatenate([o[2] for o in outs])
            batch = {f: jnp.concatenate([c[f] for c in chunks]) for f in ("type", "box", "landmarks")}
            masks, counts = losses.loss_masks(logits, batch["type"], keep, lm is not None, train.DATA_AXIS)
            sums = jax.lax.psum(jnp.sum(masks * losses.sample_losses(logits, box, lm, batch), axis=0), train.DATA_AXIS)
            task = list(sums / jnp.maximum(counts, 1.0))
            total = sum(a[t] * v for t, v in zip(losses.TASKS, task))
            terms = losses.LossTerms(total, *task, *(counts[j] for j in range(3)))
            weights = masks * jnp.stack([jnp.asarray(a[t], jnp.float32) for t in losses.TASKS]) / jnp.maximum(counts, 1.0)
            return tuple(weights[a_:b_] for a_, b_ in bounds), terms

        def grad(params, batch, w):
            # The params are made device-varying before the forward pass (its layers' own gradients are
            # per device); the transpose of that cast sums the gradient over the devices.
            def loss(p):
                return _weighted_loss(w, fwd(jax.lax.pcast(p, train.DATA_AXIS, to="varying"), batch["image"]), batch)

            return jax.grad(loss)(params)

        def grad_add(acc, params, batch, w):
            return jax.tree.map(jnp.add, acc, grad(params, batch, w))

        jit = functools.partial(jax.jit, compiler_options=options)
        return {
            "split": jit(smap(split, (data,), data)),
            "forward": jit(smap(forward, (rep, data), data)),
            "weigh": jit(smap(weigh, (data, data, rep) if replicas else (data, data), (data, rep))),
            "grad": jit(smap(grad, (rep, data, data), rep)),
            "grad_add": jit(smap(grad_add, (rep, rep, data, data), rep), donate_argnums=0),
            "update": jit(smap(lambda s, g, t: train._apply_gradients(tx, s, g, t), (rep, rep, rep), (rep, rep)),
                          donate_argnums=0),
        }

    def step(state: train.TrainState, batch, hyper=None):
        n_local = batch["type"].shape[-1] // mesh.shape[train.DATA_AXIS]
        k_local = batch["type"].shape[0] // mesh.shape[train.REPLICA_AXIS] if replicas else 1
        f = programs.get((n_local, k_local))
        if f is None:
            f = programs[n_local, k_local] = build(n_local, k_local)
        extra = (hyper,) if replicas else ()
        if "one" in f:
            return f["one"](state, batch, *extra)
        chunks = f["split"](batch)
        outs = tuple(f["forward"](state.params, c["image"]) for c in chunks)
        weights, terms = f["weigh"](outs, chunks, *extra)
        grads = None
        for c, w in zip(chunks, weights):
            grads = f["grad"](state.params, c, w) if grads is None else f["grad_add"](grads, state.params, c, w)
        return f["update"](state, grads, terms)

    return step


def chunked_eval_step(stage: str, threshold: float, chunk: Optional[int] = None) -> Callable:
    """:func:`mtcnn_jax.train.make_eval_step`'s ``"cpu"`` formulation: the sums of chunks of the batch, added up."""
    fwd = forward(stage)
    chunk = int(chunk or 2 * CHUNK[stage])
    part = jax.jit(lambda params, batch: losses.eval_sums(*train._flat(fwd(params, batch["image"])), batch, threshold))

    def chunked(params, batch):
        n = len(batch["type"])
        parts = [part(params, {k: v[a:b] for k, v in batch.items()}) for a, b in chunk_bounds(n, chunk)]
        parts = jax.device_get(parts)
        return {k: sum(p[k] for p in parts) for k in parts[0]}

    return chunked
