"""Train-step throughput per stage, beside the machine's own float32 matmul peak, in one run.

    .venv/bin/python benchmarks/train_throughput.py                 # the mini recipe's three steps
    .venv/bin/python benchmarks/train_throughput.py --seconds 20    # longer timing per stage
    .venv/bin/python benchmarks/train_throughput.py --formulations cpu   # only the CPU step

For P-Net, R-Net and O-Net it builds the train step exactly as the recipe
(``configs/cascade.py:mini``) runs it — :func:`mtcnn_jax.train.make_train_step`
with the stage's model, optimizer, α, OHEM count and batch composition, on all
local devices — feeds it batches drawn as the loop draws them
(:func:`mtcnn_jax.train.sample_batch` over an in-memory sample set), and prints:

* samples/s and ms/step (median over timed rounds, after compilation);
* GFLOP/s of the networks' forward and backward passes, counted from the layer
  shapes: the forward FLOPs are read off the traced forward pass (every
  convolution and matrix product: ``2 × outputs × multiply-adds per output``), and
  a training step costs three forwards (outputs, gradient of the inputs, gradient
  of the weights) less the first layer's input gradient, which is not computed;
* the host's share: how long drawing and gathering one batch takes, against the
  step (the loop draws the next batch while the step runs only if this is
  smaller);
* each step formulation side by side (``--formulations``, default both):
  ``modules``, the ``flax.linen`` modules in one jitted program (the step before
  :mod:`mtcnn_jax.train_nets`), and ``cpu``, the chunked step the recipe runs on
  the CPU backend, with the speed-up of the second over the first;
* the peak: a 2048 × 2048 float32 matrix product in JAX on the same devices, the
  limit the steps are compared with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtcnn_jax import config_utils, losses, models, train  # noqa: E402
from mtcnn_jax.settings import TrainSettings  # noqa: E402


def forward_flops(stage: str, landmarks: bool, batch: int = 1) -> int:
    """FLOPs of one forward pass of ``batch`` samples, from the convolutions and matrix products traced."""
    size = models.INPUT_SIZE[stage]
    model = models.create(stage, landmarks=landmarks)
    params = jax.eval_shape(lambda: models.init_params(stage, jax.random.key(0), landmarks=landmarks))
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(
        params, jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32))
    total = 0
    for eqn in jaxpr.jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            kernel = eqn.invars[1].aval.shape  # HWIO
            total += 2 * int(np.prod(out)) * int(kernel[0] * kernel[1] * kernel[2])
        elif eqn.primitive.name == "dot_general":
            out = eqn.outvars[0].aval.shape
            (contract, _), _ = eqn.params["dimension_numbers"]
            k = int(np.prod([eqn.invars[0].aval.shape[d] for d in contract]))
            total += 2 * int(np.prod(out)) * k
    return total


def first_layer_flops(stage: str, batch: int = 1) -> int:
    """FLOPs of the first convolution (its input gradient is the one a train step skips)."""
    size = models.INPUT_SIZE[stage]
    k = {"pnet": (3, 10), "rnet": (3, 28), "onet": (3, 32)}[stage]
    out = size - k[0] + 1
    return 2 * batch * out * out * k[1] * k[0] * k[0] * 3


def matmul_peak(seconds: float = 3.0, n: int = 2048) -> float:
    """GFLOP/s of an ``n × n`` float32 matrix product in JAX (median of timed calls)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def synthetic_samples(size: int, n: int, seed: int = 0) -> dict:
    """An in-memory sample set of ``n`` random crops with every type, in the store's layout."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "type": np.tile(np.arange(4, dtype=np.int32), n // 4 + 1)[:n],
        "box": rng.normal(0, 0.2, (n, 4)).astype(np.float32),
        "landmarks": rng.uniform(0, 1, (n, 10)).astype(np.float32),
    }


def measure_stage(s: TrainSettings, seconds: float, formulation: str) -> dict:
    """Time the recipe's train step of stage ``s`` (see the module docstring)."""
    stage, size = s.stage, models.INPUT_SIZE[s.stage]
    mesh = train.make_mesh()
    composition = dict(s.batch)
    batch_size = sum(composition.values())
    model = models.create(stage, landmarks=s.landmarks)
    tx = train.make_optimizer(s.optimizer, s.total_steps)
    k = losses.ohem_k(s.ohem_ratio, composition["negative"] + composition["positive"]) if s.ohem_ratio < 1 else None
    step = train.make_train_step(model, tx, dict(s.alpha), k, mesh, formulation=formulation)
    params = models.init_params(stage, jax.random.key(0), landmarks=s.landmarks)
    state = train.replicate(train.create_train_state(params, tx), mesh)
    data = synthetic_samples(size, 20_000)
    by_type = [np.flatnonzero(data["type"] == c) for c in range(4)]

    def draw(i):
        idx = train.sample_batch(by_type, composition, s.seed, i)
        return {f: data[f][idx] for f in ("image", "type", "box", "landmarks")}

    state, m = step(state, train.shard_batch(draw(0), mesh))  # compile
    jax.block_until_ready(m)
    host, device, i = [], [], 1
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(device) < 10:
        t0 = time.perf_counter()
        batch = train.shard_batch(draw(i), mesh)
        t1 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        t2 = time.perf_counter()
        host.append(t1 - t0)
        device.append(t2 - t1)
        i += 1
    step_s = float(np.median(device))
    fwd = forward_flops(stage, s.landmarks, batch_size)
    flops = 3 * fwd - first_layer_flops(stage, batch_size)
    return {"stage": stage, "formulation": formulation, "batch": batch_size, "ms_per_step": 1e3 * step_s,
            "samples_per_s": batch_size / step_s,
            "gflops": flops / step_s / 1e9, "gflop_per_step": flops / 1e9, "host_ms": 1e3 * float(np.median(host)),
            "steps_timed": len(device)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/cascade.py:mini", help="cascade config whose stages are timed")
    p.add_argument("--stages", default="pnet,rnet,onet")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per stage (default 8)")
    p.add_argument("--formulations", default="modules,cpu", help="train step formulations to time, in turn")
    args = p.parse_args(argv)
    from mtcnn_jax import recipe  # noqa: PLC0415

    config = config_utils.load_config(args.config)
    cs = recipe.cascade_settings(config)
    peak = matmul_peak()
    forms = args.formulations.split(",")
    rows = [measure_stage(getattr(cs, stage), args.seconds, f) for stage in args.stages.split(",") for f in forms]
    first = {r["stage"]: r for r in rows if r["formulation"] == forms[0]}
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"float32 matmul peak {peak:.0f} GFLOP/s")
    print(f"| stage | step | batch | ms/step | samples/s | × {forms[0]} | GFLOP/step | GFLOP/s | % of peak "
          "| host ms/batch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = r["samples_per_s"] / first[r["stage"]]["samples_per_s"]
        print(f"| {r['stage']} | {r['formulation']} | {r['batch']} | {r['ms_per_step']:.1f} | "
              f"{r['samples_per_s']:,.0f} | {speedup:.2f} | {r['gflop_per_step']:.3f} | {r['gflops']:.1f} | "
              f"{100 * r['gflops'] / peak:.0f}% | {r['host_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
