"""Sample store read rate, before and after the maintained reader, against the P-Net train step, in one run.

    python benchmarks/store_throughput.py [--config configs/pnet.py] [--batches 400] [--steps 200] [--rounds 3]

1. Cuts the P-Net training samples of ``--config`` (default ``configs/pnet.py``:
   12×12 windows from ``widerface_train_mini`` and landmark faces from
   ``mtfl_lfw_train_landmarks``, by :func:`mtcnn_jax.data.samples.build`, data from
   ``$MTCNN_JAX_DATA``; ``configs/pnet.py:runlocal`` is the quick form) and writes
   them as a sample store (TFDS, array_record) in a temporary folder, as the
   cascade does (:func:`mtcnn_jax.data.store.write_store`).
2. Reads ``--batches`` batches of the train mix from it: indices drawn by
   :func:`mtcnn_jax.train.sample_batch`, exactly as the train loop draws them (the
   config's composition, 192/64/64/128 = 3:1:1:2 for P-Net, new random indices
   every step, deterministic for (seed, step)), by each reader:

   - *before*: the hand-written decoder that walked the ``tf.train.Example``
     wire format (``_Layout``, ``decode_records`` as they were in
     ``mtcnn_jax/data/store.py``; kept below for this measurement only) after the
     store's array_record readers, and the thread pool that prefetched for
     ``SampleStore.batches``;
   - *after*: :meth:`SampleStore.get` (the same readers; records sliced by the
     template of TFDS's serializer, odd records through TFDS's parser) and
     :meth:`SampleStore.loader` (Grain: a ``MapDataset`` of the steps, prefetched
     by Grain's threads, its iterator state checkpointable);
   - for comparison: TFDS's own decoding (``as_data_source()``: array_record's
     data source and ``deserialize_example_np`` per record, what a plain TFDS
     user gets without TensorFlow), and Grain's ``ArrayRecordDataSource`` over
     the store's shard files (the file instructions of its split) as the record
     source, alone and under the Grain loader. The TFDS rows read an eighth of
     the batches (they are slow).

   Each batch is read when asked for, or prefetched (4 batches ahead, 2
   threads). The array_record file was just written, so it is in the OS page
   cache: "disk" means the array_record reader and the decoding, not a cold disk.
3. Loads the whole store into memory (what ``store.read_sets`` does: training
   reads its stores into memory) by each reader, and times batches gathered
   from memory.
4. Times the P-Net train step (the real jitted, data-parallel step of
   :mod:`mtcnn_jax.train` with the config's OHEM and loss weights), after
   compilation, on batches staged in memory: the samples per second it consumes;
   and the same step fed by the prefetched disk stream, before and after
   (reading and training share the machine's cores).

The measurements run in ``--rounds`` interleaved rounds (every other one in the
reverse order, so that no reader always goes first), so that a change in the
load of a shared machine hits them alike; the table prints each one's median,
the value of every round, and the median's ratio to the step's median. The load
average is printed at the start and at the end. About three minutes with the
defaults on 2 shared cores (20-60 s of it cutting the samples).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import jax
import numpy as np

from mtcnn_jax import config_utils, losses, models, train
from mtcnn_jax.data import samples
from mtcnn_jax.data import store as st
from mtcnn_jax.errors import UserError
from mtcnn_jax.settings import TrainSettings

# ----------------------------------------------------------------------------- before (for measurement only)
#
# The hand-written decoder as it was in mtcnn_jax/data/store.py: it walked one
# record's protobuf wire format to find the payload offsets, then sliced a batch
# of records as one uint8[B, L] array (records that did not fit: protobuf).


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _len_fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        if tag & 7 != 2:
            raise ValueError(f"unexpected wire type {tag & 7}")
        n, pos = _varint(buf, pos)
        yield tag >> 3, pos, pos + n
        pos += n
    if pos != end:
        raise ValueError("field runs past its message")


class OldLayout:
    KIND = {"image": 1, "type": 3, "box": 2, "landmarks": 2}

    def __init__(self, record: bytes, size: int):
        want = {"image": 3 * size * size, "type": 1, "box": 16, "landmarks": 40}
        spans = {}
        (f, a, b), = _len_fields(record, 0, len(record))
        if f != 1 or b != len(record):
            raise ValueError("not an Example")
        for f, ea, eb in _len_fields(record, a, b):
            key = value = None
            for g, ga, gb in _len_fields(record, ea, eb):
                if g == 1:
                    key = record[ga:gb].decode()
                elif g == 2:
                    value = (ga, gb)
            if f != 1 or key not in self.KIND or value is None:
                raise ValueError(f"unexpected feature {key!r}")
            (kind, la, lb), = _len_fields(record, *value)
            if kind != self.KIND[key]:
                raise ValueError(f"feature {key!r} has kind {kind}")
            (g, va, vb), = _len_fields(record, la, lb)
            if g != 1 or vb - va != want[key]:
                raise ValueError(f"feature {key!r} holds {vb - va} bytes, expected {want[key]}")
            spans[key] = (va, vb)
        if set(spans) != set(st.FIELDS):
            raise ValueError(f"fields {sorted(spans)}")
        payload = np.zeros(len(record), bool)
        for va, vb in spans.values():
            payload[va:vb] = True
        self.length = len(record)
        self.spans = spans
        self.fixed = np.flatnonzero(~payload)
        self.template = np.frombuffer(record, np.uint8)[self.fixed].copy()


def _old_parse_records(records, size, out, rows) -> None:
    from tensorflow_datasets.proto import tf_example_pb2  # noqa: PLC0415

    parse = tf_example_pb2.Example.FromString
    for r, record in zip(rows, records):
        f = parse(record).features.feature
        out["image"][r] = np.frombuffer(f["image"].bytes_list.value[0], np.uint8).reshape(size, size, 3)
        out["type"][r] = f["type"].int64_list.value[0]
        out["box"][r] = f["box"].float_list.value
        out["landmarks"][r] = f["landmarks"].float_list.value


def old_decode_records(records: Sequence[bytes], size: int, layout: Optional[OldLayout]) -> Dict[str, np.ndarray]:
    n = len(records)
    out = st.allocate(n, size)
    fast = np.zeros(n, bool)
    if layout is not None and n:
        lengths = np.fromiter(map(len, records), np.int64, n)
        same = lengths == layout.length
        rows = np.flatnonzero(same)
        if len(rows):
            picked = records if len(rows) == n else [records[i] for i in rows]
            raw = np.frombuffer(b"".join(picked), np.uint8).reshape(len(rows), layout.length)
            ok = (raw[:, layout.fixed] == layout.template).all(axis=1)
            t0 = layout.spans["type"][0]
            ok &= raw[:, t0] < 0x80
            rows, raw = rows[ok], raw[ok]
            fast[rows] = True

            def col(name, dtype):
                a, b = layout.spans[name]
                return raw[:, a:b].copy().view(dtype)

            out["image"][rows] = col("image", np.uint8).reshape(-1, size, size, 3)
            out["type"][rows] = raw[:, t0]
            out["box"][rows] = col("box", "<f4")
            out["landmarks"][rows] = col("landmarks", "<f4")
    slow = np.flatnonzero(~fast)
    if len(slow):
        _old_parse_records([records[i] for i in slow], size, out, slow)
    return out


def old_batches(get, index_batches, prefetch: int = 4, workers: int = 2):
    """The thread pool that prefetched for ``SampleStore.batches`` before Grain did."""
    pending: "collections.deque[futures.Future]" = collections.deque()
    plan = iter(index_batches)
    pool = futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="store-read")
    try:
        for idx in plan:
            pending.append(pool.submit(get, idx))
            if len(pending) >= prefetch:
                break
        while pending:
            batch = pending.popleft().result()
            for idx in plan:
                pending.append(pool.submit(get, idx))
                break
            yield batch
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)


class Before:
    """The store's reading as it was: its array_record readers and the hand-written decoder."""

    def __init__(self, store: st.SampleStore):
        self.store = store
        self.layout = OldLayout(store._records([0])[0], store.size)

    def get(self, idx):
        return old_decode_records(self.store._records(idx), self.store.size, self.layout)

    def load(self):
        parts = [old_decode_records(records, self.store.size, self.layout) for records in self.store._scan(8192)]
        return {name: np.concatenate([p[name] for p in parts]) for name in st.FIELDS}


# ----------------------------------------------------------------------------- comparisons


class GrainSource:
    """Grain's ArrayRecordDataSource over the store's shard files, records decoded as the store decodes them."""

    def __init__(self, store: st.SampleStore):
        import grain  # noqa: PLC0415

        self.store = store
        self.source = grain.sources.ArrayRecordDataSource(store._source.dataset_info.splits["train"].file_instructions)

    def get(self, idx):
        return self.store._decode(self.source.__getitems__([int(i) for i in idx]))

    def load(self, chunk=8192):
        n = len(self.source)
        parts = [self.get(range(a, min(a + chunk, n))) for a in range(0, n, chunk)]
        return {name: np.concatenate([p[name] for p in parts]) for name in st.FIELDS}

    def loader(self, draw, stop, start=0, prefetch=4, workers=2):
        import grain  # noqa: PLC0415

        steps = grain.MapDataset.range(start, stop).map(lambda step: self.get(draw(step)))
        return iter(steps.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=prefetch)))


def tfds_get(store: st.SampleStore, idx):
    """TFDS's own reading and decoding (as_data_source), stacked."""
    return store.get_via_tfds(idx)


def tfds_load(store: st.SampleStore, chunk=8192):
    """The whole store through TFDS's parser, record by record (sequential reads, as load())."""
    features = store._features
    parts = []
    for records in store._scan(chunk):
        exs = [features.deserialize_example_np(r) for r in records]
        parts.append({name: np.stack([np.asarray(e[name]) for e in exs]) for name in st.FIELDS})
    return {name: np.concatenate([p[name] for p in parts]) for name in st.FIELDS}


# ----------------------------------------------------------------------------- the run


def plan(index_by_type, composition, seed, steps, start=0):
    """Index batches ``int64[B]`` of steps ``start .. start+steps-1``, as the train loop draws them."""
    for step in range(start, start + steps):
        yield train.sample_batch(index_by_type, composition, seed, step)


def rate(batches):
    """Samples per second delivered by iterating ``batches`` (closed at the end when it can be)."""
    t = time.perf_counter()
    n = 0
    try:
        for b in batches:
            n += len(b["type"])
    finally:
        if hasattr(batches, "close"):
            batches.close()
    return n / (time.perf_counter() - t)


def load_rate(load, n):
    """Samples per second of a whole-store load, and its seconds."""
    t = time.perf_counter()
    got = load()
    s = time.perf_counter() - t
    assert len(got["type"]) == n
    return n / s


ROWS = [  # (key, what); the keys' order is the table's
    ("step", "P-Net train step consumes (batches staged in memory)"),
    ("sync_before", "disk, each batch when asked for — before: array_record readers + hand-written decoder"),
    ("sync_after", "disk, each batch when asked for — after: `SampleStore.loader(prefetch=0)` "
                   "(same readers, TFDS-template slicing)"),
    ("sync_grain", "disk, each batch when asked for — Grain's `ArrayRecordDataSource` + the same decoding"),
    ("sync_tfds", "disk, each batch when asked for — TFDS's `as_data_source()` (its decoder, per record)"),
    ("pre_before", "disk, prefetched 4 ahead by 2 threads — before: thread pool of `batches`"),
    ("pre_after", "disk, prefetched 4 ahead by 2 threads — after: Grain loader, `SampleStore.loader`"),
    ("pre_grain", "disk, prefetched 4 ahead by 2 threads — Grain loader over Grain's `ArrayRecordDataSource`"),
    ("load_before", "whole-store load — before: sequential reads + hand-written decoder"),
    ("load_after", "whole-store load — after: `SampleStore.load()`"),
    ("load_grain", "whole-store load — Grain's `ArrayRecordDataSource` (chunks of 8192) + the same decoding"),
    ("load_tfds", "whole-store load — sequential reads + TFDS's decoder per record"),
    ("memory", "batches gathered from the loaded store, as the cascade trains"),
    ("fed_before", "P-Net train step fed by the prefetched disk stream — before"),
    ("fed_after", "P-Net train step fed by the prefetched disk stream — after (Grain loader)"),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/pnet.py", help="stage config whose samples and batch mix to use")
    ap.add_argument("--batches", type=int, default=400, help="batches read per store measurement")
    ap.add_argument("--steps", type=int, default=200, help="train steps per step measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all measurements (median reported)")
    args = ap.parse_args(argv)
    c = TrainSettings.from_config(config_utils.get(args.config))
    if c.stage != "pnet":
        ap.error(f"{args.config} trains {c.stage}; this benchmark is about the P-Net step")
    composition = dict(c.batch)
    batch = sum(composition.values())
    seed = c.seed
    load_start = os.getloadavg()

    t = time.perf_counter()
    try:
        train_set, _ = samples.build(c.data, models.INPUT_SIZE["pnet"], seed, progress=False)
    except UserError as err:  # e.g. the data are not there: say where to point MTCNN_JAX_DATA
        raise SystemExit(f"store_throughput: {err}") from None
    cut_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        import tensorflow_datasets as tfds  # noqa: PLC0415

        tfds.disable_progress_bar()
        t = time.perf_counter()
        st.write_store(st.examples_from_arrays(train_set), tmp, "pnet")
        write_s = time.perf_counter() - t
        size_mb = sum(f.stat().st_size for f in (Path(tmp) / "mtcnn_samples").rglob("*array_record*")) / 2**20

        store = st.SampleStore(tmp, "pnet")  # fresh: nothing in memory
        t = time.perf_counter()
        by_type = store.index_by_type()
        types_s = time.perf_counter() - t
        size = len(store)
        memory_store = st.SampleStore(tmp, "pnet").load()
        before, grain_source = Before(store), GrainSource(store)
        draw = functools.partial(train.sample_batch, by_type, composition, seed)

        # Every reader gives the same arrays.
        idx = draw(0)
        want = memory_store.get(idx)
        for got in (before.get(idx), store.get(idx), grain_source.get(idx), tfds_get(store, idx),
                    next(store.loader(draw, 1, prefetch=0))):
            for name in st.FIELDS:
                np.testing.assert_array_equal(got[name], want[name])
        everything = before.load()
        for name in st.FIELDS:
            np.testing.assert_array_equal(everything[name], memory_store.get(np.arange(size))[name])

        mesh = train.make_mesh()
        model = models.create("pnet", landmarks=c.landmarks)
        tx = train.make_optimizer(c.optimizer, c.total_steps)
        state = train.replicate(
            train.create_train_state(models.init_params("pnet", jax.random.key(seed), c.landmarks), tx), mesh)
        k = losses.ohem_k(c.ohem_ratio, composition["negative"] + composition["positive"]) if c.ohem_ratio < 1 else None
        step = train.make_train_step(model, tx, c.alpha, k, mesh)

        def run_steps(batches):
            """Train steps over ``batches``; samples per second (the state is carried over between calls)."""
            nonlocal state
            t = time.perf_counter()
            done = 0
            for b in batches:
                state, _ = step(state, train.shard_batch(b, mesh))
                done += len(b["type"])
            jax.block_until_ready(state)
            if hasattr(batches, "close"):
                batches.close()
            return done / (time.perf_counter() - t)

        n, m, few = args.batches, args.steps, max(1, args.batches // 8)
        run_steps(memory_store.get(i) for i in plan(by_type, composition, seed, 5))  # compile, warm up
        staged = [memory_store.get(i) for i in plan(by_type, composition, seed, m)]

        def measure(s):  # s: the first step of this round's batches
            fresh = st.SampleStore(tmp, "pnet")
            return {
                "step": lambda: run_steps(staged),
                "sync_before": lambda: rate(before.get(i) for i in plan(by_type, composition, seed, n, s)),
                "sync_after": lambda: rate(store.loader(draw, s + n, s, prefetch=0)),
                "sync_grain": lambda: rate(grain_source.get(i) for i in plan(by_type, composition, seed, n, s)),
                "sync_tfds": lambda: rate(tfds_get(store, i) for i in plan(by_type, composition, seed, few, s)),
                "pre_before": lambda: rate(old_batches(before.get, plan(by_type, composition, seed, n, s + n))),
                "pre_after": lambda: rate(store.loader(draw, s + 2 * n, s + n, prefetch=4, workers=2)),
                "pre_grain": lambda: rate(grain_source.loader(draw, s + 2 * n, s + n, prefetch=4, workers=2)),
                "load_before": lambda: load_rate(before.load, size),
                "load_after": lambda: load_rate(lambda: {"type": fresh.load().types}, size),
                "load_grain": lambda: load_rate(grain_source.load, size),
                "load_tfds": lambda: load_rate(lambda: tfds_load(store), size),
                "memory": lambda: rate(memory_store.get(i) for i in plan(by_type, composition, seed, n, s + 2 * n)),
                "fed_before": lambda: run_steps(old_batches(before.get, plan(by_type, composition, seed, m, s + 3 * n))),
                "fed_after": lambda: run_steps(store.loader(draw, s + 3 * n + m, s + 3 * n, prefetch=4, workers=2)),
            }

        # Rounds interleave the measurements, so that a change in the machine's load
        # (shared cores) hits all of them alike; the table gives each one's median.
        got: dict = {key: [] for key, _ in ROWS}
        for r in range(args.rounds):
            runs = list(measure(r * (3 * n + m)).items())  # every round reads batches of other steps
            for key, run in runs[::-1] if r % 2 else runs:  # every other round backwards: no row always first
                got[key].append(run())
        med = {key: float(np.median(v)) for key, v in got.items()}

    load_end = os.getloadavg()
    print(f"P-Net samples ({args.config}): {size:,} cut in {cut_s:.0f} s, written in {write_s:.1f} s "
          f"({size_mb:.0f} MiB of array_record), types read back in {types_s:.2f} s; batch {batch} "
          f"({'/'.join(str(composition[t]) for t in losses.SAMPLE_TYPES)}); {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s), {os.cpu_count()} CPU cores, load average "
          f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end")
    print(f"| what | samples/s (median) | samples/s in each of {args.rounds} rounds | × train step |\n|---|---|---|---|")
    for key, what in ROWS:
        if key.startswith("load_"):
            what += f" ({size / med[key]:.2f} s)"
        spread = ", ".join(f"{v:,.0f}" for v in got[key])
        print(f"| {what} | {med[key]:,.0f} | {spread} | {med[key] / med['step']:.2f} |")


if __name__ == "__main__":
    main()
