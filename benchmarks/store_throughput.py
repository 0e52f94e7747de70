"""Sample store read rate against the P-Net train step's consumption, on this machine.

    python benchmarks/store_throughput.py [--samples 60000] [--steps 30]

Writes a P-Net store of random 12×12 samples to a temporary folder, then prints
one table: samples per second the store delivers (``SampleStore.batches``,
random indices, a background thread, the P-Net config's batch composition of
192/64/64/128) and samples per second one P-Net train step consumes (the real
jitted, data-parallel step of ``mtcnn_jax.train`` with OHEM, measured after
compilation), and their ratios, reading from the array_record files and from
memory after ``SampleStore.load()``. Issue 4 asks for a ratio of at least 3.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from mtcnn_jax import config_utils, losses, models, train
from mtcnn_jax.data import store as st

COMPOSITION = {"negative": 192, "positive": 64, "part": 64, "landmark": 128}  # configs/pnet.py


def plan(index_by_type, n_batches, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        yield np.concatenate([rng.choice(index_by_type[code], COMPOSITION[name])
                              for code, name in enumerate(losses.SAMPLE_TYPES)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    batch = sum(COMPOSITION.values())
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.integers(0, 256, (args.samples, 12, 12, 3), dtype=np.uint8),
        "type": rng.choice(4, args.samples, p=[3 / 7, 1 / 7, 1 / 7, 2 / 7]).astype(np.int32),
        "box": rng.normal(0, 0.1, (args.samples, 4)).astype(np.float32),
        "landmarks": rng.uniform(size=(args.samples, 10)).astype(np.float32),
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = st.write_store(st.examples_from_arrays(arrays), tmp, "pnet")
        write_s = time.perf_counter() - t
        by_type = store.index_by_type()
        n_read = 4 * args.steps
        t = time.perf_counter()
        for b in store.batches(plan(by_type, n_read)):
            pass
        read_rate = n_read * batch / (time.perf_counter() - t)
        t = time.perf_counter()
        store.load()
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        for b in store.batches(plan(by_type, n_read)):
            pass
        memory_rate = n_read * batch / (time.perf_counter() - t)

        mesh = train.make_mesh()
        model = models.create("pnet", landmarks=True)
        tx = train.make_optimizer(config_utils.base_config().optimizer, 1000)
        state = train.replicate(train.create_train_state(models.init_params("pnet", jax.random.key(0), True), tx), mesh)
        step = train.make_train_step(model, tx, {"det": 1.0, "box": 0.5, "landmarks": 0.5},
                                     losses.ohem_k(0.7, COMPOSITION["negative"] + COMPOSITION["positive"]), mesh)
        batches = [train.shard_batch(b, mesh) for b in store.batches(plan(by_type, args.steps + 3, seed=1))]
        for b in batches[:3]:  # compile and warm up
            state, m = step(state, b)
        jax.block_until_ready(state)
        t = time.perf_counter()
        for b in batches[3:]:
            state, m = step(state, b)
        jax.block_until_ready(state)
        step_rate = args.steps * batch / (time.perf_counter() - t)

    print(f"store: {args.samples} P-Net samples written in {write_s:.1f} s; batch {batch}; "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
    print(f"| what | samples/s | × train step |\n|---|---|---|\n"
          f"| P-Net train step consumes | {step_rate:,.0f} | 1.0 |\n"
          f"| store read from disk (random batches, prefetch thread) | {read_rate:,.0f} | {read_rate / step_rate:.1f} |\n"
          f"| store loaded into memory (load: {load_s:.1f} s) | {memory_rate:,.0f} | {memory_rate / step_rate:.1f} |")


if __name__ == "__main__":
    main()
