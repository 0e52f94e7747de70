"""The TFDS array_record sample store: round trip, reuse, batches, no TensorFlow."""

import functools
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mtcnn_jax.data import store as st
from mtcnn_jax.errors import UserError


def _arrays(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "type": rng.integers(0, 4, n).astype(np.int32),
        "box": rng.normal(size=(n, 4)).astype(np.float32),
        "landmarks": rng.uniform(size=(n, 10)).astype(np.float32),
    }


def _rows(batch):
    """Each example as a hashable tuple of its bytes, to compare stores regardless of order."""
    return sorted(
        (batch["image"][i].tobytes(), int(batch["type"][i]), batch["box"][i].tobytes(), batch["landmarks"][i].tobytes())
        for i in range(len(batch["type"]))
    )


def test_write_read_round_trip(tmp_path):
    arrays = _arrays(300, 24)
    store = st.write_store(st.examples_from_arrays(arrays), tmp_path, "rnet")
    assert len(store) == 300 and store.size == 24
    back = store.get(range(300))
    assert back["image"].dtype == np.uint8 and back["image"].shape == (300, 24, 24, 3)
    assert back["box"].dtype == np.float32 and back["landmarks"].shape == (300, 10)
    assert _rows(back) == _rows(arrays)  # every example exactly once, bit for bit
    slow = store.get_via_tfds([3, 1, 299, 1])  # the fast parser agrees with TFDS's own decoding
    fast = store.get([3, 1, 299, 1])
    for name in st.FIELDS:
        np.testing.assert_array_equal(fast[name], slow[name])
    np.testing.assert_array_equal(np.sort(store.types), np.sort(arrays["type"]))
    by_type = store.index_by_type()
    for code in range(4):
        assert len(by_type[code]) == int((arrays["type"] == code).sum())
        assert (store.types[by_type[code]] == code).all()


def test_writing_a_store_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    # TFDS made an empty tmp*tfds folder per new store (its bucket lookup) and never removed it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store = st.write_store(st.examples_from_arrays(_arrays(20, 12)), tmp_path / "store", "pnet")
    assert len(store) == 20
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_loaded_store_serves_the_same_examples(tmp_path):
    store = st.write_store(st.examples_from_arrays(_arrays(100, 12)), tmp_path, "pnet")
    idx = [7, 0, 99, 7, 42]
    from_disk = store.get(idx)
    store.load(chunk=30)  # several chunks, the last one partial
    from_memory = store.get(idx)
    for name in st.FIELDS:
        np.testing.assert_array_equal(from_memory[name], from_disk[name])
    assert store.nbytes == 100 * (12 * 12 * 3 + 60)


def test_existing_store_is_reused_not_rewritten(tmp_path):
    st.write_store(st.examples_from_arrays(_arrays(50, 12)), tmp_path, "pnet")

    def must_not_be_read():
        raise AssertionError("examples consumed although the store exists")
        yield  # pragma: no cover

    store = st.write_store(must_not_be_read(), tmp_path, "pnet")
    assert len(store) == 50


def test_batches_prefetch_in_order_and_surface_errors(tmp_path):
    store = st.write_store(st.examples_from_arrays(_arrays(64, 12)), tmp_path, "pnet")
    plan = [[0, 1, 2], [5, 9], [63]]
    got = list(store.batches(plan, prefetch=2))
    assert [len(b["type"]) for b in got] == [3, 2, 1]
    np.testing.assert_array_equal(got[1]["image"], store.get([5, 9])["image"])
    with pytest.raises(IndexError, match="index 10000 out of range"):
        list(store.batches([[0], [10_000]]))  # raised in the consumer, when that batch is due
    with pytest.raises(IndexError):
        store.get([-1])


COMPOSITION = {"negative": 12, "positive": 4, "part": 4, "landmark": 8}  # 3:1:1:2, as configs/pnet.py


def _mix_plan(store, seed, steps):
    from mtcnn_jax import train  # noqa: PLC0415  (the train loop's own draw)

    by_type = store.index_by_type()
    return [train.sample_batch(by_type, COMPOSITION, seed, step) for step in range(steps)]


def test_batches_hold_the_train_mix_and_repeat_for_a_seed(tmp_path):
    store = st.write_store(st.examples_from_arrays(_arrays(400, 12)), tmp_path, "pnet")
    a = list(store.batches(_mix_plan(store, seed=3, steps=6)))
    for b in a:
        counts = np.bincount(b["type"], minlength=4)
        assert counts.tolist() == [12, 4, 4, 8]
    again = list(st.SampleStore(tmp_path, "pnet").batches(_mix_plan(st.SampleStore(tmp_path, "pnet"), 3, 6)))
    other = list(store.batches(_mix_plan(store, seed=4, steps=6)))
    for name in st.FIELDS:
        for x, y in zip(a, again):
            np.testing.assert_array_equal(x[name], y[name])
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, other))


@pytest.mark.parametrize("prefetch, workers", [(1, 1), (3, 2), (8, 4)])
def test_prefetch_delivers_the_batches_of_no_prefetch(tmp_path, prefetch, workers):
    store = st.write_store(st.examples_from_arrays(_arrays(500, 12)), tmp_path, "pnet")
    plan = _mix_plan(store, seed=0, steps=20)
    plain = list(store.batches(plan, prefetch=0))
    fetched = list(store.batches(iter(plan), prefetch=prefetch, workers=workers))
    assert len(fetched) == len(plain) == 20
    for x, y in zip(plain, fetched):
        for name in st.FIELDS:
            np.testing.assert_array_equal(x[name], y[name])
    # stopping early leaves no thread reading behind
    it = store.batches(plan, prefetch=prefetch, workers=workers)
    next(it)
    it.close()


def test_loader_state_saved_mid_way_resumes_with_the_same_batches(tmp_path):
    """Grain's iterator state, saved after some batches (as a checkpoint would, JSON) and set on a new
    loader over the same steps, gives the batches the first loader goes on with: those of
    ``train.sample_batch`` for each step."""
    from mtcnn_jax import train  # noqa: PLC0415

    store = st.write_store(st.examples_from_arrays(_arrays(500, 12)), tmp_path, "pnet")
    by_type = store.index_by_type()
    draw = functools.partial(train.sample_batch, by_type, COMPOSITION, 5)
    first = store.loader(draw, stop=20, start=3, prefetch=3, workers=2)
    head = [next(first) for _ in range(6)]
    state = json.loads(json.dumps(first.get_state()))
    rest = list(first)
    first.close()
    for prefetch in (0, 4):
        resumed = st.SampleStore(tmp_path, "pnet").loader(draw, stop=20, start=3, prefetch=prefetch)
        resumed.set_state(state)
        again = list(resumed)
        resumed.close()
        assert len(again) == len(rest) == 11
        for x, y in zip(rest, again):
            for name in st.FIELDS:
                np.testing.assert_array_equal(x[name], y[name])
    for step, batch in enumerate(head + rest, start=3):
        want = store.get(train.sample_batch(by_type, COMPOSITION, 5, step))
        for name in st.FIELDS:
            np.testing.assert_array_equal(batch[name], want[name])


def test_decoding_matches_tfds_whatever_the_feature_order_and_falls_back_on_odd_records(tmp_path):
    """Slicing records by the template of TFDS's serializer agrees with TFDS's own parser record by
    record, whatever order protobuf wrote the features in (it differs between processes); records that
    do not fit the template (a type code that needs a longer varint, another order) go through TFDS's parser."""
    from tensorflow_datasets.proto import tf_example_pb2  # noqa: PLC0415

    store = st.write_store(st.examples_from_arrays(_arrays(40, 12)), tmp_path, "pnet")
    features = store._features
    records = list(store._records(range(40)))
    want = {name: np.stack([np.asarray(features.deserialize_example_np(r)[name]) for r in records])
            for name in st.FIELDS}
    columns = st._Columns.of(features, 12, records[0])
    assert columns is not None and columns.spans["image"][1] - columns.spans["image"][0] == 432
    order = sorted(st.FIELDS, key=lambda name: columns.spans[name][0])

    def reordered(record):  # the same example, as a process whose protobuf orders the map the other way writes it
        whole, entries = st._entries(features, features.deserialize_example_np(record))
        return whole[: len(whole) - sum(map(len, entries.values()))] + b"".join(entries[n] for n in order[::-1])

    other = [reordered(r) for r in records]
    other_columns = st._Columns.of(features, 12, other[0])
    assert other_columns is not None and other_columns.spans != columns.spans
    for got in (st.decode_records(records, features, 12, columns),
                st.decode_records(other, features, 12, other_columns),
                st.decode_records(records, features, 12, None)):  # TFDS's parser for every record
        for name in st.FIELDS:
            np.testing.assert_array_equal(got[name], want[name])

    odd = tf_example_pb2.Example.FromString(records[5])
    odd.features.feature["type"].int64_list.value[0] = 300  # two-byte varint: the record grows by one byte
    mixed = list(records)
    mixed[5], mixed[9] = odd.SerializeToString(), other[9]
    got = st.decode_records(mixed, features, 12, columns)
    assert got["type"][5] == 300
    for name in st.FIELDS:
        np.testing.assert_array_equal(np.delete(got[name], 5, axis=0), np.delete(want[name], 5, axis=0))
    assert st._Columns.of(features, 12, b"not a record") is None


def test_store_is_a_plain_tfds_dataset(tmp_path):
    """Readable by TFDS without this module's builder class: ``builder_from_directory``."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    arrays = _arrays(30, 12)
    store = st.write_store(st.examples_from_arrays(arrays), tmp_path, "pnet")
    source = tfds.builder_from_directory(str(tmp_path / "mtcnn_samples" / "pnet" / "1.0.0")).as_data_source()["train"]
    ours = store.get(range(30))
    for i in (0, 17, 29):
        ex = source[i]
        for name in st.FIELDS:
            np.testing.assert_array_equal(np.asarray(ex[name]), ours[name][i])


def test_wrong_shape_and_unknown_stage_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        st.write_store([], tmp_path, "xnet")
    with pytest.raises(FileNotFoundError, match="no complete onet sample store"):
        st.SampleStore(tmp_path, "onet")
    bad = _arrays(5, 12)
    bad["box"] = bad["box"][:4]
    with pytest.raises(ValueError, match="field 'box' has 4 rows"):
        list(st.examples_from_arrays(bad))


def test_store_needs_no_tensorflow(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from mtcnn_jax.data import store as st\n"
        "a = {'image': np.zeros((8, 12, 12, 3), np.uint8), 'type': np.arange(8, dtype=np.int32) % 4,\n"
        "     'box': np.zeros((8, 4), np.float32), 'landmarks': np.zeros((8, 10), np.float32)}\n"
        f"s = st.write_store(st.examples_from_arrays(a), {str(tmp_path)!r}, 'pnet')\n"
        "assert len(s.get([0, 7])['type']) == 2\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_reads_across_several_shards(tmp_path):
    """Indices map to (shard, position) right when the split spans several files or file ranges
    (TFDS file instructions); emulated here by cutting the one file into three ranges."""
    store = st.write_store(st.examples_from_arrays(_arrays(40, 12)), tmp_path, "pnet")
    want = store.get(range(40))
    (path, skip, take), = store._shards
    assert (skip, take) == (0, 40)
    split = st.SampleStore(tmp_path, "pnet")
    split._shards = [(path, 0, 7), (path, 7, 20), (path, 27, 13)]
    split._ends = np.cumsum([7, 20, 13])
    split._readers = [None] * 3
    idx = [39, 0, 6, 7, 26, 27, 13, 6]
    got = split.get(idx)
    for name in st.FIELDS:
        np.testing.assert_array_equal(got[name], want[name][idx])
    np.testing.assert_array_equal(split.types, want["type"])
    split.load(chunk=5)
    for name in st.FIELDS:
        np.testing.assert_array_equal(split.get(range(40))[name], want[name])


def test_ordered_store_keeps_the_order_given(tmp_path):
    arrays = _arrays(200, 12)
    ordered = st.write_store(st.examples_from_arrays(arrays), tmp_path / "o", "pnet", ordered=True)
    back = st.SampleStore(tmp_path / "o", "pnet").load().get(range(200))
    for name in st.FIELDS:
        np.testing.assert_array_equal(back[name], arrays[name])
    np.testing.assert_array_equal(ordered.get([5, 0])["image"], arrays["image"][[5, 0]])
    shuffled = st.write_store(st.examples_from_arrays(arrays), tmp_path / "s", "pnet").get(range(200))
    assert _rows(shuffled) == _rows(arrays) and not np.array_equal(shuffled["type"], arrays["type"])


def test_sets_round_trip_and_counts(tmp_path):
    made = {"train": _arrays(60, 24, seed=1), "val": _arrays(20, 24, seed=2)}
    calls = []

    def make(split):
        calls.append(split)
        return made[split]

    counts = st.write_sets(tmp_path, "rnet", make)
    assert calls == ["train", "val"] and st.sets_exist(tmp_path, "rnet")
    for split in st.SPLITS:
        assert counts[split] == {name: int(np.sum(made[split]["type"] == code))
                                 for code, name in enumerate(("negative", "positive", "part", "landmark"))}
    assert st.write_sets(tmp_path, "rnet", make) == counts and calls == ["train", "val"]  # complete: not made again
    train, val = st.read_sets(tmp_path, "rnet")
    assert _rows(train) == _rows(made["train"]) and _rows(val) == _rows(made["val"])
    with pytest.raises(UserError, match="no train samples"):
        st.write_sets(tmp_path / "empty", "rnet", lambda split: _arrays(0, 24))


def test_cached_sets_are_reused_remade_and_linked(tmp_path):
    made = []

    def make(seed):
        def go():
            made.append(seed)
            return _arrays(30, 12, seed), _arrays(10, 12, seed + 100)
        return go

    folder = tmp_path / "a" / "samples"
    first = st.cached_sets(folder, "pnet", {"seed": 1, "n": (1, 2)}, make(1))
    for got, want in zip(first, make(1)()):
        for name in st.FIELDS:  # ordered: read back as made
            np.testing.assert_array_equal(got[name], want[name])
    made.clear()
    again = st.cached_sets(folder, "pnet", {"n": [1, 2], "seed": 1}, make(1))  # the same settings, as JSON
    assert made == [] and np.array_equal(again[0]["image"], first[0]["image"])
    # A hard-linked copy for another run: same files, and remaking it there leaves the source alone.
    copy = tmp_path / "b" / "samples"
    assert st.link_sets(folder, copy) and not st.link_sets(folder, copy)
    assert not st.link_sets(tmp_path / "nothing", tmp_path / "c" / "samples")
    record = next((copy / "train").rglob("*.array_record*"))
    assert os.path.samefile(record, folder / record.relative_to(copy))
    assert not list(copy.parent.glob(".samples*"))
    remade = st.cached_sets(copy, "pnet", {"seed": 2, "n": [1, 2]}, make(2))
    assert made == [2] and not np.array_equal(remade[0]["image"], first[0]["image"])
    kept = st.cached_sets(folder, "pnet", {"seed": 1, "n": [1, 2]}, make(1))
    assert made == [2] and np.array_equal(kept[0]["image"], first[0]["image"])
    # A pair whose settings file is missing (a write cut short) is made again.
    (folder / st.SETTINGS_FILE).unlink()
    st.cached_sets(folder, "pnet", {"seed": 1, "n": [1, 2]}, make(1))
    assert made == [2, 1] and json.loads((folder / st.SETTINGS_FILE).read_text()) == {"n": [1, 2], "seed": 1}
    # Without write (another host), a missing pair is made in memory only.
    st.cached_sets(tmp_path / "d", "pnet", {"seed": 3}, make(3), write=False)
    assert made == [2, 1, 3] and not (tmp_path / "d").exists()
