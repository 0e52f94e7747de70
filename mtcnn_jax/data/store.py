"""The sample store: training samples of one stage as a TFDS dataset in array_record format.

Every on-disk set of training samples has this one format: the windows cut from
annotated images (:mod:`mtcnn_jax.data.samples`), written by ``mtcnn-jax train``
into its workdir and by the cascade into ``pnet_samples/``, and the windows mined
for R-Net and O-Net (:mod:`mtcnn_jax.data.mining`). Samples are written once and
then read at random by the train loop. TFDS's ``array_record`` format gives
random access by index and needs no TensorFlow, neither to write nor to read
(every feature is a raw ``Tensor``, so nothing is image-encoded through TF).

One example::

    image      uint8[S, S, 3]   the crop, RGB, S = models.INPUT_SIZE[stage] (12 / 24 / 48)
    type       int32            the sample type, a mtcnn_jax.losses code (NEGATIVE .. LANDMARK)
    box        float32[4]       regression target (dx1, dy1, dx2, dy2) in units of the crop size
    landmarks  float32[10]      x1..x5, y1..y5 relative to the crop (0 = left/top edge, 1 = right/bottom)

Layout on disk: ``<data_dir>/mtcnn_samples/<stage>/1.0.0/`` (TFDS's own). TFDS
writes into a temporary folder and renames it when complete, so an interrupted
write leaves nothing that looks finished, and a store that exists is reused
(:func:`write_store` returns at once): generation is resumable per stage. A
*pair* of stores, ``<folder>/train`` and ``<folder>/val``, is what a stage trains
and evaluates on (:func:`write_sets`, :func:`read_sets`); :func:`cached_sets`
keeps such a pair with the settings it was made with, and :func:`link_sets`
copies one by hard links.

Damage: a store whose files were changed after it was written (a truncated or
overwritten array_record shard, a missing or garbled ``dataset_info.json``) is
refused when it is read with :class:`StoreDamaged`, a one-line
:class:`~mtcnn_jax.errors.UserError` naming the store and the reason (riegeli's
chunk hashes catch changed bytes). :func:`write_sets` and :func:`cached_sets`,
which manage stores a run makes for itself, delete a damaged store and make it
again, saying so in one line on stderr (``mtcnn-jax: <store>: damaged sample
store (<reason>): <what is done>``).

Example order: TFDS shuffles by key when writing, unless the store is written
``ordered`` (then the examples stay in the order given, which is what lets
``mtcnn-jax train`` read back exactly the arrays it cut). The train loop draws
its own random indices either way (:func:`mtcnn_jax.train.sample_batch`: the
stage's type mix, deterministic for (seed, step)) and reads them with
:meth:`SampleStore.get` or, prefetched by Grain's threads with a checkpointable
iterator state, :meth:`SampleStore.loader` (:meth:`SampleStore.batches` for a
given list of index batches).

Reading: records are read with array_record's reader, set for random access
(sequential, with readahead, for a whole store), and decoded by slicing a
batch's records as one byte array at the offsets where TFDS's own serializer
puts each feature (:class:`_Columns`, :func:`decode_records`); a record that
does not fit goes through TFDS's NumPy parser (about 100× slower per record:
10× slower random reads, 20× slower whole-store loads). Training loads a stage's stores into memory
(:meth:`SampleStore.load`) and draws from there. ``benchmarks/store_throughput.py``
measures these paths, the decoder this replaced and Grain's own
``ArrayRecordDataSource`` against the P-Net train step (``benchmarks/README.md``).

This module is over 500 lines because the format has one home: the writer, the
reader (whose slicing must agree byte for byte with what the writer produces)
and the train / val pairs built on them.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from mtcnn_jax import files
from mtcnn_jax.errors import UserError
from mtcnn_jax.losses import SAMPLE_TYPES
from mtcnn_jax.models import INPUT_SIZE

if TYPE_CHECKING:
    import grain

#: The fields of every example, in this order (the layout of a sample set in memory too).
FIELDS = ("image", "type", "box", "landmarks")


class StoreDamaged(UserError):
    """A sample store that cannot be read as written: ``"<store folder>: damaged sample store (<reason>)"``."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = _first_line(reason)
        super().__init__(f"{self.path}: damaged sample store ({self.reason})")


def _first_line(text) -> str:
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else type(text).__name__ if isinstance(text, BaseException) else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _why(err: BaseException) -> str:
    """A one-line reason for a read error."""
    return _first_line(err) or type(err).__name__


def _notice(message: str) -> None:
    print(f"mtcnn-jax: {message}", file=sys.stderr, flush=True)


def allocate(n: int, size: int) -> Dict[str, np.ndarray]:
    """An uninitialised sample set of ``n`` examples of side ``size`` (``n = 0``: the empty set)."""
    return {
        "image": np.empty((n, size, size, 3), np.uint8),
        "type": np.empty(n, np.int32),
        "box": np.empty((n, 4), np.float32),
        "landmarks": np.empty((n, 10), np.float32),
    }


@functools.lru_cache(maxsize=None)
def _builder_class():
    """The TFDS builder, defined once, on first use (importing this module stays cheap;
    TFDS registers builder classes by name, so a second definition would clash)."""
    import tensorflow_datasets as tfds

    class LocalInfo(tfds.core.DatasetInfo):
        """The store's DatasetInfo: a local dataset, never on the TFDS bucket."""

        def initialize_from_bucket(self):
            # TFDS asks the bucket for a new dataset's metadata: with GCS disabled it finds
            # nothing, but it makes a temporary folder first and never removes it (one empty
            # /tmp/tmp*tfds per store written).
            pass

    class MtcnnSamples(tfds.core.GeneratorBasedBuilder):
        """MTCNN training samples of one stage (config name = stage)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Crops with type, box and landmark targets."}
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=stage) for stage in INPUT_SIZE]

        def __init__(self, *, examples: Optional[Iterable[Mapping]] = None, ordered: bool = False, **kwargs):
            self._examples = examples
            self._ordered = ordered
            super().__init__(file_format="array_record", **kwargs)

        def _info(self):
            size = INPUT_SIZE[self.builder_config.name]
            return LocalInfo(
                builder=self,
                description="MTCNN training samples (mtcnn_jax.data.store)",
                disable_shuffling=self._ordered,  # keys are 0, 1, ...: the order given
                features=tfds.features.FeaturesDict(
                    {
                        # raw bytes, not one int64 per pixel: far smaller, and parsed with one frombuffer
                        "image": tfds.features.Tensor(
                            shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                        ),
                        "type": tfds.features.Scalar(dtype=np.int32),
                        "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                        "landmarks": tfds.features.Tensor(shape=(10,), dtype=np.float32),
                    }
                ),
            )

        # Nothing is downloaded: TFDS's "Downloading and preparing dataset" lines on stdout would only mislead.
        def _log_download_bytes(self):
            pass

        def _log_download_done(self):
            pass

        def _split_generators(self, dl_manager):
            if self._examples is None:
                raise ValueError("no examples to write (this store was opened for reading)")
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for key, ex in enumerate(self._examples):
                yield key, {name: ex[name] for name in FIELDS}

    return MtcnnSamples


def _builder(data_dir: Path, stage: str, examples=None, ordered: bool = False):
    if stage not in INPUT_SIZE:
        raise ValueError(f"unknown stage {stage!r} (expected one of {', '.join(INPUT_SIZE)})")
    return _builder_class()(examples=examples, ordered=ordered, data_dir=str(data_dir), config=stage)


def _version_dir(data_dir, stage: str) -> Path:
    return Path(data_dir) / "mtcnn_samples" / stage / "1.0.0"


def store_exists(data_dir, stage: str) -> bool:
    """Whether a complete store for ``stage`` is under ``data_dir``."""
    return (_version_dir(data_dir, stage) / "dataset_info.json").is_file()


def store_incomplete(data_dir, stage: str) -> bool:
    """Whether ``stage``'s store folder is there without its ``dataset_info.json``: damage, since TFDS
    writes a store into a temporary folder and renames it only when it is complete."""
    return _version_dir(data_dir, stage).is_dir() and not store_exists(data_dir, stage)


def write_store(examples: Iterable[Mapping], data_dir, stage: str, ordered: bool = False) -> "SampleStore":
    """Write ``examples`` (dicts with the fields of the module docstring) as ``stage``'s store.

    ``ordered``: keep the examples in the order given (else TFDS shuffles them by
    key). A complete store already under ``data_dir`` is kept as it is (the
    examples are not consumed). Returns the store opened for reading.
    """
    data_dir = Path(data_dir)
    if not store_exists(data_dir, stage):
        import tensorflow_datasets as tfds

        data_dir.mkdir(parents=True, exist_ok=True)
        # What a damaged store or a killed write left: TFDS would take a version folder without
        # dataset_info.json for a finished store and write nothing.
        shutil.rmtree(_version_dir(data_dir, stage), ignore_errors=True)
        for leftover in _version_dir(data_dir, stage).parent.glob("incomplete.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        _builder(data_dir, stage, examples, ordered).download_and_prepare(
            download_config=tfds.download.DownloadConfig(verify_ssl=False)
        )
    return SampleStore(data_dir, stage)


def examples_from_arrays(arrays: Mapping[str, np.ndarray]) -> Iterator[Dict[str, np.ndarray]]:
    """Stacked arrays (``image [N, S, S, 3]``, ``type [N]``, ``box [N, 4]``, ``landmarks [N, 10]``) → examples."""
    n = len(arrays["type"])
    for name in FIELDS:
        if len(arrays[name]) != n:
            raise ValueError(f"field {name!r} has {len(arrays[name])} rows, type has {n}")
    for i in range(n):
        yield {
            "image": np.asarray(arrays["image"][i], np.uint8),
            "type": np.int32(arrays["type"][i]),
            "box": np.asarray(arrays["box"][i], np.float32),
            "landmarks": np.asarray(arrays["landmarks"][i], np.float32),
        }


# ----------------------------------------------------------------------------- decoding records
#
# Each record is a ``tf.train.Example`` written by TFDS's serializer from the
# store's feature specs. TFDS's own NumPy parser (``deserialize_example_np``,
# what ``as_data_source()`` decodes with, no TensorFlow) takes about 50 µs a
# record, 100× the slicing below: it makes random reads from disk 10× and
# whole-store loads 20× slower (``benchmarks/README.md``). Every feature has a
# fixed size, so every record of a store is the same bytes around its payloads,
# and TFDS's serializer itself says which bytes those are: :class:`_Columns`
# serializes probe examples through TFDS (``features.serialize_example``) and
# protobuf, and a batch is decoded by slicing its records joined as one
# ``uint8[B, L]`` array, after checking every record's other bytes against that
# template. A record that does not match (another length: a type code ≥ 128;
# other bytes) goes through TFDS's parser. No wire format is parsed here.


def _entries(features, example: Mapping) -> Tuple[bytes, Dict[str, bytes]]:
    """``example`` serialized by TFDS, and each feature's map entry as it is in there
    (serialized alone by protobuf: a ``Features`` with that one entry)."""
    from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2  # noqa: PLC0415

    whole = features.serialize_example(example)
    feature = tf_example_pb2.Example.FromString(whole).features.feature
    return whole, {name: tf_feature_pb2.Features(feature={name: feature[name]}).SerializeToString()
                   for name in FIELDS}


class _Columns:
    """Where the payload of each field sits in the records of one store: ``spans[name] = (start, end)``.

    ``length``: the record length L; ``fixed``: int64[K], the offsets of the other
    bytes (tags, lengths, feature names), ``template``: uint8[K] their values.
    protobuf writes a map's entries in an order of its own (it differs between
    processes), so the template is put together from the probe's entries in the
    order that matches ``record``, a record of the store. :meth:`of` returns
    ``None`` when no order matches (then every record goes through TFDS's parser).
    """

    def __init__(self, features, size: int, record: bytes):
        nbytes = {"image": 3 * size * size, "type": 1, "box": 16, "landmarks": 40}  # the type code: one varint byte
        zero = {name: np.zeros(a.shape[1:], a.dtype) for name, a in allocate(0, size).items()}
        whole, base = _entries(features, zero)
        header = whole[: len(whole) - sum(map(len, base.values()))]  # Example's tag and length of its Features
        at = {}  # each payload's span inside its entry: the bytes that change when only that field does
        ones = np.frombuffer(b"\1" * 4, "<f4")[0]  # a float32 whose four bytes are all 1
        for name in FIELDS:
            probe = dict(zero, **{name: np.full_like(zero[name], 1 if name in ("image", "type") else ones)})
            a, b = (np.frombuffer(e[name], np.uint8) for e in (base, _entries(features, probe)[1]))
            changed = np.flatnonzero(a != b) if len(a) == len(b) else np.empty(0, np.int64)
            if len(changed) != nbytes[name] or changed[-1] - changed[0] + 1 != nbytes[name]:
                raise ValueError(f"feature {name!r} is not {nbytes[name]} bytes in one piece")
            at[name] = int(changed[0])
        got = np.frombuffer(record, np.uint8)
        if len(got) != len(whole):
            raise ValueError(f"a record of {len(got)} bytes, not {len(whole)}")
        for order in itertools.permutations(FIELDS):
            template = np.frombuffer(header + b"".join(base[name] for name in order), np.uint8)
            starts = len(header) + np.cumsum([0] + [len(base[name]) for name in order[:-1]])
            spans = {name: (int(s) + at[name], int(s) + at[name] + nbytes[name]) for name, s in zip(order, starts)}
            payload = np.zeros(len(template), bool)
            for lo, hi in spans.values():
                payload[lo:hi] = True
            fixed = np.flatnonzero(~payload)
            if np.array_equal(got[fixed], template[fixed]):
                self.length, self.spans, self.fixed, self.template = len(template), spans, fixed, template[fixed]
                return
        raise ValueError("the record is not an example of these features")

    @classmethod
    def of(cls, features, size: int, record: bytes) -> Optional["_Columns"]:
        try:
            return cls(features, size, record)
        except (ValueError, KeyError, TypeError):  # not these features, or a record of something else
            return None


def decode_records(records: Sequence[bytes], features, size: int, columns: Optional[_Columns]
                   ) -> Dict[str, np.ndarray]:
    """Serialized examples → ``image uint8[B, S, S, 3]``, ``type int32[B]``, ``box float32[B, 4]``,
    ``landmarks float32[B, 10]`` (S = ``size``; ``features``: the store's TFDS features).

    Records that match ``columns`` are decoded together by slicing one
    ``uint8[B, L]`` array; the others one by one by TFDS's parser.
    """
    n = len(records)
    out = allocate(n, size)
    sliced = np.zeros(n, bool)
    if columns is not None and n:
        rows = np.flatnonzero(np.fromiter(map(len, records), np.int64, n) == columns.length)
        if len(rows):
            raw = np.frombuffer(b"".join(records if len(rows) == n else [records[i] for i in rows.tolist()]), np.uint8)
            raw = raw.reshape(len(rows), columns.length)
            t = columns.spans["type"][0]
            ok = (raw[:, columns.fixed] == columns.template).all(axis=1) & (raw[:, t] < 0x80)  # a one-byte varint
            rows, raw = rows[ok], raw[ok]
            sliced[rows] = True
            for name in FIELDS:
                a, b = columns.spans[name]
                column = raw[:, a:b] if name in ("image", "type") else raw[:, a:b].copy().view("<f4")
                out[name][rows] = column.reshape((len(rows),) + out[name].shape[1:])
    for i in np.flatnonzero(~sliced).tolist():
        example = features.deserialize_example_np(records[i])
        for name in FIELDS:
            out[name][i] = example[name]
    return out


class SampleStore:
    """Random access to a written store: ``len(store)``, ``store.types``, ``store.get(indices)``, ``store.loader``.

    Reads go to the array_record files: one ``ArrayRecordReader`` per shard,
    opened for random access (the reader's own advice: no readahead, no reader
    threads; a file buffer of a few KiB, not the 32 KiB of array_record's and
    Grain's ``ArrayRecordDataSource``, since each record is one small zstd chunk:
    that data source reads batches 1.5-1.7× slower), and the records decoded
    with :func:`decode_records`. Parallelism comes from Grain's threads in
    :meth:`loader` and :meth:`batches`. :meth:`load` copies the whole store into
    memory once (``len × (3·S² + 60)`` bytes: 0.5 GB for a million P-Net
    samples), after which :meth:`get` is a NumPy gather.

    The files stay a plain TFDS dataset:
    ``tfds.builder_from_directory(<data_dir>/mtcnn_samples/<stage>/1.0.0).as_data_source()``
    reads them (so does :meth:`get_via_tfds`, the reference the tests compare with).
    """

    def __init__(self, data_dir, stage: str):
        if not store_exists(data_dir, stage):
            raise FileNotFoundError(f"{Path(data_dir)}: no complete {stage} sample store")
        self.stage = stage
        self.size = INPUT_SIZE[stage]
        self.path = Path(data_dir)
        try:  # TFDS's metadata: dataset_info.json, the split's shards and their lengths
            builder = _builder(Path(data_dir), stage)
            self._source = builder.as_data_source()["train"]  # TFDS's own decoding (reference, slow)
            self._features = builder.info.features
            # (file, first record in it, record count) per shard, from TFDS's split metadata
            self._shards = [(str(fi.filename), int(fi.skip),
                             int(fi.take) if fi.take >= 0 else int(fi.examples_in_shard) - int(fi.skip))
                            for fi in builder.info.splits["train"].file_instructions]
        except Exception as err:  # noqa: BLE001 (protobuf, JSON, KeyError...: all mean garbled metadata)
            raise StoreDamaged(data_dir, f"cannot read its metadata: {_why(err)}") from None
        for path, _, _ in self._shards:
            if not os.path.isfile(path):
                raise StoreDamaged(data_dir, f"{os.path.basename(path)} is missing")
        self._ends = np.cumsum([take for _, _, take in self._shards])
        self._options = "readahead_buffer_size:0,max_parallelism:0"
        # one read from the file holds one record and its chunk header: 4 KiB (P-Net, R-Net), 8 KiB (O-Net)
        self._buffer = max(4096, 1 << int(np.ceil(np.log2(3 * self.size**2 + 1024))))
        self._readers: list = [None] * len(self._shards)
        self._lock = threading.Lock()
        self._columns: Optional[_Columns] = None
        self._columns_known = False
        self._types: Optional[np.ndarray] = None
        self._memory: Optional[Dict[str, np.ndarray]] = None

    @property
    def nbytes(self) -> int:
        """Bytes the store takes in memory once loaded."""
        return len(self) * (3 * self.size * self.size + 4 * (1 + 4 + 10))

    @property
    def in_memory(self) -> bool:
        """Whether :meth:`load` has run (reads are then served from memory)."""
        return self._memory is not None

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    # -- raw records

    def _reader(self, shard: int):
        if self._readers[shard] is None:
            with self._lock:
                if self._readers[shard] is None:
                    from array_record.python import array_record_module  # noqa: PLC0415

                    path, skip, take = self._shards[shard]
                    reader = array_record_module.ArrayRecordReader(
                        path, self._options, file_reader_buffer_size=self._buffer)
                    self._check_length(reader, path, skip + take)
                    self._readers[shard] = reader
        return self._readers[shard]

    def _records(self, indices) -> list:
        """Serialized examples at ``indices`` (int[B]), in that order. IndexError when out of range."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise IndexError(f"index {bad} out of range for a store of {len(self)} examples")
        try:
            if len(self._shards) == 1:
                return self._reader(0).read((idx + self._shards[0][1]).tolist())
            shard = np.searchsorted(self._ends, idx, side="right")
            out: list = [None] * len(idx)
            for k in np.unique(shard):
                rows = np.flatnonzero(shard == k)
                first = self._ends[k] - self._shards[k][2]
                got = self._reader(int(k)).read((idx[rows] - first + self._shards[k][1]).tolist())
                for r, rec in zip(rows, got):
                    out[r] = rec
            return out
        except (RuntimeError, IndexError) as err:  # array_record / riegeli: truncated file, hash mismatch, ...
            raise StoreDamaged(self.path, _why(err)) from None

    def _scan(self, chunk: int) -> Iterator[list]:
        """Every serialized example in store order, as lists of at most ``chunk``.

        Sequential reads through a reader of its own with readahead (faster than
        the random-access reader for a whole store), closed at the end.
        """
        from array_record.python import array_record_module  # noqa: PLC0415

        for path, skip, take in self._shards:
            try:
                reader = array_record_module.ArrayRecordReader(
                    path, "readahead_buffer_size:4M,max_parallelism:1", file_reader_buffer_size=1 << 20)
            except RuntimeError as err:  # array_record / riegeli: truncated file, hash mismatch, ...
                raise StoreDamaged(self.path, _why(err)) from None
            try:
                self._check_length(reader, path, skip + take)
                for a in range(skip, skip + take, chunk):
                    try:
                        records = reader.read(a, min(a + chunk, skip + take))
                    except (RuntimeError, IndexError) as err:
                        raise StoreDamaged(self.path, _why(err)) from None
                    if len(records) != min(chunk, skip + take - a):
                        raise StoreDamaged(self.path, f"{os.path.basename(path)} holds fewer records than recorded")
                    yield records
            finally:
                try:
                    reader.close()
                except RuntimeError:  # a damaged file complains again when closed; the damage is raised above
                    pass

    def _check_length(self, reader, path: str, needed: int) -> None:
        """StoreDamaged unless the shard ``path`` (open in ``reader``) holds at least ``needed`` records."""
        try:
            n = reader.num_records()
        except RuntimeError as err:
            raise StoreDamaged(self.path, _why(err)) from None
        if n < needed:
            raise StoreDamaged(self.path, f"{os.path.basename(path)} holds {n} records, {needed} were written")

    def _decode(self, records: Sequence[bytes]) -> Dict[str, np.ndarray]:
        if not self._columns_known and len(records):
            self._columns = _Columns.of(self._features, self.size, records[0])
            self._columns_known = True
        try:
            out = decode_records(records, self._features, self.size, self._columns)
        except Exception as err:  # noqa: BLE001 (a record TFDS cannot parse, or of the wrong size)
            raise StoreDamaged(self.path, f"a record cannot be decoded: {_why(err)}") from None
        bad = (out["type"] < 0) | (out["type"] >= len(SAMPLE_TYPES))
        if bad.any():
            raise StoreDamaged(self.path, f"a record has the sample type {int(out['type'][bad][0])}")
        return out

    # -- examples

    def load(self, chunk: int = 8192) -> "SampleStore":
        """Read every example into memory (sequentially, ``chunk`` records at a time); returns ``self``."""
        if self._memory is None:
            parts = [self._decode(records) for records in self._scan(max(1, chunk))]
            self._memory = {name: np.concatenate([p[name] for p in parts]) if parts else
                            self._decode([])[name] for name in FIELDS}
            self._types = self._memory["type"]
        return self

    @property
    def types(self) -> np.ndarray:
        """int32[N], the type of every example (read once, then cached)."""
        if self._types is None:
            parts = [self._decode(records)["type"] for records in self._scan(8192)]
            self._types = np.concatenate(parts) if parts else np.empty(0, np.int32)
        return self._types

    def index_by_type(self) -> Dict[int, np.ndarray]:
        """``{type code: int64[M] indices}`` for drawing batches of a fixed composition."""
        t = self.types
        return {code: np.flatnonzero(t == code) for code in range(len(SAMPLE_TYPES))}

    def get(self, indices: Sequence[int]) -> Dict[str, np.ndarray]:
        """The examples at ``indices`` (int[B], repeats allowed), stacked in that order:
        ``image uint8[B, S, S, 3]``, ``type int32[B]``, ``box float32[B, 4]``, ``landmarks float32[B, 10]``.

        From memory after :meth:`load`, else from the files. IndexError when an index is out of range.
        """
        if self._memory is not None:
            idx = np.asarray(indices, np.int64)
            return {name: arr[idx] for name, arr in self._memory.items()}
        return self._decode(self._records(indices))

    def get_via_tfds(self, indices: Sequence[int]) -> Dict[str, np.ndarray]:
        """Same as :meth:`get`, read and decoded by TFDS itself (the reference for the fast path; slow)."""
        idx = [int(i) for i in indices]
        exs = self._source.__getitems__(idx)
        return {name: np.stack([np.asarray(ex[name]) for ex in exs]) for name in FIELDS}

    def batches(self, index_batches: Iterable[Sequence[int]], prefetch: int = 4,
                workers: int = 2) -> Iterator[Dict[str, np.ndarray]]:
        """``get(idx)`` for each ``idx`` of ``index_batches``, in that order, read ``prefetch`` batches ahead.

        The caller decides which indices form each batch (the train loop draws a
        fixed composition per type, deterministic per step:
        :func:`mtcnn_jax.train.sample_batch`); :meth:`loader` reads them, so
        ``index_batches`` is taken whole first (a list of index arrays). Batches
        come out in the order of ``index_batches`` whatever the threads do, so the
        result equals ``prefetch=0`` (each batch read when asked for). An error
        reading a batch is raised here, when that batch is due.
        """
        plan = list(index_batches)
        loader = self.loader(plan.__getitem__, len(plan), prefetch=prefetch, workers=workers)
        try:
            yield from loader
        finally:
            loader.close()

    def loader(self, draw: Callable[[int], Sequence[int]], stop: int, start: int = 0, prefetch: int = 4,
               workers: int = 2) -> "grain.DatasetIterator":
        """The batches ``get(draw(step))`` of steps ``start .. stop - 1``, read from the files by Grain.

        ``draw(step)`` gives a step's indices, deterministic per step: the train
        loop's own draw, ``functools.partial(train.sample_batch, index_by_type,
        composition, seed)``. Returns a ``grain.DatasetIterator`` over a Grain
        ``MapDataset`` of the steps: up to ``prefetch`` batches are read ahead by
        ``workers`` threads (the array_record reader and the decoding release the
        GIL for most of the work; ``prefetch=0``: no thread), in step order.
        ``get_state()`` (``{"next_index": k}`` after k batches) can be saved with a
        checkpoint; ``set_state(state)`` on a new loader over the same steps goes
        on with the batch of step ``start + k``. ``close()`` stops the threads.
        """
        import grain  # noqa: PLC0415, F811 (Grain imports JAX: only when a loader is made)

        steps = grain.MapDataset.range(start, stop).map(lambda step: self.get(draw(step)))
        options = grain.ReadOptions(num_threads=max(0, workers) if prefetch > 0 else 0,
                                    prefetch_buffer_size=max(0, prefetch))
        return iter(steps.to_iter_dataset(options))


# ----------------------------------------------------------------------------- train / val pairs

#: The two stores of a stage's samples inside their folder.
SPLITS = ("train", "val")
#: Beside a pair kept by :func:`cached_sets`: the settings it was made with (JSON).
SETTINGS_FILE = "settings.json"


def counts(samples: Mapping[str, np.ndarray]) -> Dict[str, int]:
    """Number of samples of each type, by name: ``{"negative": …, "positive": …, "part": …, "landmark": …}``.

    ``samples`` needs only its ``type`` array.
    """
    t = np.asarray(samples["type"])
    return {name: int(np.sum(t == code)) for code, name in enumerate(SAMPLE_TYPES)}


def _quiet_tfds() -> None:
    import tensorflow_datasets as tfds  # noqa: PLC0415

    tfds.disable_progress_bar()


def sets_exist(folder, stage: str) -> bool:
    """Whether both stores of ``folder`` (``train/``, ``val/``) are complete."""
    return all(store_exists(Path(folder) / split, stage) for split in SPLITS)


def write_sets(folder, stage: str, make: Callable[[str], Mapping[str, np.ndarray]], ordered: bool = False,
               again: str = "making it again") -> dict:
    """Write ``make("train")`` and ``make("val")`` (sample sets) as the stores ``folder/train`` and ``folder/val``.

    A split whose store is already complete is not made again; an empty set is a
    :class:`UserError`. A store that is there but damaged (:class:`StoreDamaged`)
    is deleted and made again, with one line on stderr ending in ``again``.
    ``ordered``: as :func:`write_store`. Returns ``{"train": counts, "val": counts}``
    (:func:`counts`).
    """
    folder = Path(folder)
    _quiet_tfds()
    out = {}
    for split in SPLITS:
        path = folder / split
        types, damage = None, None
        if store_incomplete(path, stage):
            damage = StoreDamaged(path, "its dataset_info.json is missing")
        elif store_exists(path, stage):
            try:
                types = SampleStore(path, stage).types  # reads and checks every record
            except StoreDamaged as err:
                damage = err
        if damage is not None:
            _notice(f"{damage}: {again}")
            shutil.rmtree(path)
        if types is None:
            arrays = make(split)
            if len(arrays["type"]) == 0:
                raise UserError(f"{folder}: no {split} samples were made (see the summary above)")
            types = write_store(examples_from_arrays(arrays), path, stage, ordered).types
        out[split] = counts({"type": types})
    return out


def read_sets(folder, stage: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """``(train, val)`` sample sets (arrays in memory, store order) read back from :func:`write_sets`' stores.

    :class:`StoreDamaged` when a store is missing, incomplete or cannot be read as written.
    """
    sets = []
    for split in SPLITS:
        path = Path(folder) / split
        if not store_exists(path, stage):
            raise StoreDamaged(path, "its dataset_info.json is missing" if store_incomplete(path, stage)
                               else f"no {stage} sample store there")
        s = SampleStore(path, stage).load()
        sets.append(s.get(np.arange(len(s))))
    return sets[0], sets[1]


def remove_sets(folder) -> None:
    """Delete the pair of stores in ``folder`` and the settings recorded with it (settings first)."""
    folder = Path(folder)
    if (folder / SETTINGS_FILE).exists():
        os.unlink(folder / SETTINGS_FILE)
    for split in SPLITS:
        shutil.rmtree(folder / split, ignore_errors=True)


def _recorded(folder: Path) -> Optional[object]:
    try:
        return json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None


def cached_sets(folder, stage: str, settings: Mapping, make: Callable[[], Tuple[Mapping, Mapping]],
                write: bool = True, again: str = "making the samples again"
                ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """``stage``'s train and held-out sets, kept in ``folder`` with the ``settings`` they were made with.

    When ``folder/settings.json`` records ``settings`` (JSON values) and both
    stores are complete, they are read back. Otherwise ``make()`` makes
    ``(train, val)``; with ``write`` the folder is emptied, the sets are written
    as ordered stores (:func:`write_sets`) and ``settings`` is recorded last, so a
    pair interrupted while being written is made again; the sets are returned as
    read back from the stores, the arrays ``make()`` gave. Without ``write`` (the
    other processes of a multi-host run) they are returned as made.

    A recorded pair that is damaged (a store missing, incomplete or unreadable:
    :class:`StoreDamaged`) is made again the same way, after one line on stderr
    saying which store, why, and ``again``.
    """
    folder = Path(folder)
    want = json.loads(json.dumps(dict(settings)))
    if _recorded(folder) == want:
        try:
            return read_sets(folder, stage)
        except StoreDamaged as err:
            _notice(f"{err}: {again}")
    made = make()
    if not write:
        return made[0], made[1]
    remove_sets(folder)
    write_sets(folder, stage, dict(zip(SPLITS, made)).__getitem__, ordered=True)
    files.write_json(folder / SETTINGS_FILE, want, indent=2, sort_keys=True)
    return read_sets(folder, stage)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def link_sets(source, target) -> bool:
    """Make ``target`` a copy of the :func:`cached_sets` folder ``source``, its files hard-linked.

    Files are copied where a link cannot be made. The copy is made under a
    temporary name and renamed when complete, so an interrupted one leaves no
    folder that looks finished. Nothing is written into a linked file later
    (stores are written into new folders and renamed; the settings file is
    replaced), so the two folders stay independent. Returns False (and makes
    nothing) when ``source`` holds no recorded pair or ``target`` exists.
    """
    source, target = Path(source), Path(target)
    if target.exists() or source.resolve() == target.resolve() or _recorded(source) is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):  # copies cut short by a kill
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copytree(source, tmp, copy_function=_link_or_copy)
    os.rename(tmp, target)
    return True
