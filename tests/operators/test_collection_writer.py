"""CollectionWriter: the store first (one WriteBatch with the offsets a batch completes), then
the shards; bad input writes nothing; imports; the manifest. Real vtest.avi histograms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from operators.index.filters import Where, where_ids
from operators.index.sharded import ShardedIndex, layout
from operators.sinks.collection_writer import MANIFEST, CollectionWriter, read_manifest
from operators.sinks.store_sink import local_shards
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError
from tests.operators.test_index_sharded import DIM, vtest_patches  # noqa: F401 - a fixture

SPEC = {"op": "color_histogram", "options": {"bins": 4, "grid": 2}}


def _batch(patches, rows, ranges=None):
    batch = patches.take(np.asarray(rows))
    batch.meta = {"offset_ranges": ranges} if ranges is not None else {}
    return batch


class _CountingDB:
    """Stands in for the store's RocksDB handle and counts the WriteBatches written."""

    def __init__(self, db):
        self.db, self.writes = db, 0

    def write(self, wb):
        self.writes += 1
        return self.db.write(wb)

    def __getattr__(self, name):
        return getattr(self.db, name)


def _state(writer: CollectionWriter) -> dict:
    store = writer.store
    shards = writer.index.stats()["shards"] if writer.index is not None else []
    return {
        "position": store.position,
        **{cf: store.count(cf) for cf in ("patches", "vectors", "vector_log", "frames", "by_time", "by_label")},
        "offsets": store.offsets(),
        "committed": writer.committed_offsets(),
        "ntotal": [s["ntotal"] for s in shards],
        "shard_positions": [s["position"] for s in shards],
    }


def test_offsets_are_stored_in_the_same_write_and_survive_reopen(tmp_path, vtest_patches):
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    counting = writer.store._db = _CountingDB(writer.store._db)
    # messages 5..9 of partition 0 first: not contiguous with the resume point 0, nothing done
    ack = writer.write(_batch(vtest_patches, range(50, 100), [["frames", 0, 5, 9, 0]]))
    assert ack == {"written": 50, "offsets": {}, "position": 1}
    assert writer.store.offsets() == {} and counting.writes == 1
    ack = writer.write(_batch(vtest_patches, range(50), [["frames", 0, 0, 4, 0], ["frames", 1, 0, 2, 0]]))
    assert ack["offsets"] == {("frames", 0): 10, ("frames", 1): 3} and ack["position"] == 2
    assert counting.writes == 2  # patches, vectors and offsets went in one WriteBatch
    with LineageStore(layout(tmp_path)[1], read_only=True) as reader:  # what a crash right now would leave
        assert reader.offsets() == {("frames", 0): 10, ("frames", 1): 3}
        assert reader.count("vectors") == 100 and reader.position == 2
    assert writer.index.ntotal == 100  # applied to the shards before the offsets were reported done
    # a message split over two batches is done once both halves are written
    writer.write(_batch(vtest_patches, range(100, 110), [["frames", 1, 3, 3, 0, 0, 2]]))
    assert writer.store.offsets()[("frames", 1)] == 3
    writer.write(_batch(vtest_patches, range(110, 120), [["frames", 1, 3, 3, 0, 1, 2]]))
    assert writer.store.offsets()[("frames", 1)] == 4
    # an empty batch (every patch filtered out) still completes its offsets
    empty = _batch(vtest_patches, [], [["frames", 0, 10, 11, 0]])
    assert writer.write(empty) == {"written": 0, "offsets": {("frames", 0): 12}, "position": 4}
    final = writer.committed_offsets()
    assert final == {("frames", 0): 12, ("frames", 1): 4}
    writer.store._db = counting.db
    del counting
    writer.close()
    again = CollectionWriter(tmp_path, local_shards)
    assert again.committed_offsets() == final == again.store.offsets()
    # a re-read or retried batch (its first ack lost with a killed sink) acks the watermark again:
    # the run learns the partition is done, and nothing moves
    ack = again.write(_batch(vtest_patches, range(120, 130), [["frames", 0, 3, 11, 0]]))
    assert ack["offsets"] == {("frames", 0): 12} and again.committed_offsets() == final
    again.close()


def test_bad_vectors_raise_and_change_nothing(tmp_path, vtest_patches):
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    writer.write(_batch(vtest_patches, range(100), [["frames", 0, 0, 9, 0]]))
    before = _state(writer)
    assert before["position"] == 1 and before["committed"] == {("frames", 0): 10}
    ranges = [["frames", 0, 10, 19, 0]]
    nan = _batch(vtest_patches, range(100, 110), ranges)
    nan.vectors = nan.vectors.copy()
    nan.vectors[3, 17] = np.nan
    with pytest.raises(InputError, match="NaN"):
        writer.write(nan)
    unnormalized = _batch(vtest_patches, range(100, 110), ranges)
    unnormalized.vectors = unnormalized.vectors.copy()
    unnormalized.vectors[6] *= 1.5
    with pytest.raises(InputError, match="normalized"):
        writer.write(unnormalized)
    with pytest.raises(InputError, match="must be"):
        writer.import_vectors(np.arange(1, 11), vtest_patches.vectors[:10, :100])
    with pytest.raises(InputError, match="must agree"):
        writer.import_vectors(np.arange(1, 11), vtest_patches.vectors[:10], metas=[{}] * 9)
    with pytest.raises(InputError, match="must agree"):
        writer.import_vectors(np.arange(1, 10), vtest_patches.vectors[:10])
    assert _state(writer) == before
    # the refused batch did not advance the offsets: the good retry completes them
    ack = writer.write(_batch(vtest_patches, range(100, 110), ranges))
    assert ack["offsets"] == {("frames", 0): 20} and ack["position"] == 2
    writer.close()


def test_a_store_only_writer_refuses_what_the_shards_would_refuse(tmp_path, vtest_patches):
    writer = CollectionWriter(tmp_path, None, dim=DIM)
    assert writer.index is None
    writer.write(_batch(vtest_patches, range(20)))
    before = _state(writer)
    bad = _batch(vtest_patches, range(20, 30))
    bad.vectors = bad.vectors * 2.0
    with pytest.raises(InputError, match="normalized"):
        writer.write(bad)
    bad.vectors[:] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        writer.write(bad)
    assert _state(writer) == before
    writer.close()
    with ShardedIndex.open(tmp_path, DIM, "Flat", 2) as index:  # readers can still replay the store
        assert index.ntotal == 20


def test_imported_vectors_with_metadata_are_found_by_where_filters(tmp_path, vtest_patches):
    x = vtest_patches.vectors[:120]
    ids = np.arange(1, 121, dtype=np.int64)
    labels = np.array(["dark" if i % 3 else "bright" for i in range(120)])
    cameras = np.array([f"cam{i % 4}" for i in range(120)])
    ts = 500.0 + np.arange(120) * 0.5
    models = np.array(["clip" if i < 60 else "dino" for i in range(120)])
    metas = [{"label": str(labels[i]), "camera": str(cameras[i]), "ts": float(ts[i]), "model": str(models[i]),
              "source": {"file": "emb.parquet", "row": i}} for i in range(120)]
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    assert writer.import_vectors(ids[:70], x[:70], metas[:70]) == 1
    assert writer.import_vectors(ids[70:], x[70:], metas[70:]) == 2
    assert writer.import_vectors(ids[:0], x[:0], []) == 2  # nothing to store takes no position
    assert writer.store.position == 2 and writer.index.ntotal == 120
    cases = [
        (Where(label="bright"), labels == "bright"),
        (Where(camera="cam2", start=520.0, end=540.0), (cameras == "cam2") & (ts >= 520) & (ts < 540)),
        (Where(start=510.0, end=530.0), (ts >= 510) & (ts < 530)),
        (Where(model="dino", camera="cam1"), (models == "dino") & (cameras == "cam1")),
        (Where(label="dark", model="clip", start=505.0), (labels == "dark") & (models == "clip") & (ts >= 505)),
    ]
    for where, mask in cases:
        got = where_ids(writer.store, where)
        assert mask.any(), where
        assert got.tolist() == ids[mask].tolist(), where
        D, I = writer.index.search(x[5], 3, where_ids=got)
        assert np.isin(I[I >= 0], ids[mask]).all()
        scores = x[mask] @ x[5]
        assert I[0, 0] == ids[mask][np.argmax(scores)]
    chain = writer.store.lineage(7)
    assert len(chain) == 1 and chain[0]["source"] == {"file": "emb.parquet", "row": 6} and chain[0]["label"] == "bright"
    writer.close()
    with ShardedIndex.open(tmp_path, DIM, "Flat", 2) as index:
        assert index.ntotal == 120 and sum(s["replayed"] for s in index.stats()["shards"]) == 0


def test_manifest_and_adopt(tmp_path, vtest_patches):
    data = tmp_path / "c"
    writer = CollectionWriter(data, local_shards, index_factory="Flat", shards=3, featurizer=SPEC)
    assert writer.index is None and read_manifest(data) == {}  # no dimension yet: nothing recorded
    writer.adopt(None, DIM)
    assert read_manifest(data) == {"version": 2, "dim": DIM, "factory": "Flat", "shards": 3, "featurizer": SPEC}
    assert writer.index is not None and writer.index.shards == 3
    with pytest.raises(ConfigError, match="holds 256-d vectors"):
        writer.adopt(SPEC, 128)
    writer.write(_batch(vtest_patches, range(30)))
    writer.close()
    # a reopen takes the collection's own settings over the caller's defaults
    again = CollectionWriter(data, local_shards, index_factory="HNSW32", shards=5)
    assert (again.dim, again.factory, again.shard_count, again.featurizer) == (DIM, "Flat", 3, SPEC)
    assert again.index.ntotal == 30
    again.close()
    with pytest.raises(ConfigError, match="holds 256-d vectors"):
        CollectionWriter(data, local_shards, dim=128)
    # a collection without a featurizer learns it from the first pipeline that writes to it
    bare = CollectionWriter(tmp_path / "bare", local_shards, dim=DIM)
    assert read_manifest(tmp_path / "bare")["featurizer"] is None
    bare.adopt(SPEC, DIM)
    assert read_manifest(tmp_path / "bare")["featurizer"] == SPEC
    bare.adopt({"op": "other"}, None)  # the recorded one stays
    assert read_manifest(tmp_path / "bare")["featurizer"] == SPEC
    bare.close()
    # the first batch sets the dimension when nobody said it
    late = CollectionWriter(tmp_path / "late", local_shards)
    late.write(_batch(vtest_patches, range(5)))
    assert read_manifest(tmp_path / "late")["dim"] == DIM
    late.close()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        read_manifest(tmp_path / "broken")
    (tmp_path / "broken" / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match="readable JSON"):
        CollectionWriter(tmp_path / "broken", local_shards)
    assert json.loads((data / MANIFEST).read_text())["dim"] == DIM


def test_snapshots_every_n_vectors_so_a_crash_replays_at_most_that(tmp_path, vtest_patches):
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2, snapshot_every_vectors=100)
    for rows in np.array_split(np.arange(240), 5):  # 48 each: a snapshot after the third write
        writer.write(_batch(vtest_patches, rows))
    assert [s["snapshot_position"] for s in writer.index.stats()["shards"]] == [3, 3]
    writer.index.close()
    writer.store.close()  # a crash: the last two writes are only in the store
    with ShardedIndex.open(tmp_path, DIM, "Flat", 2) as index:
        assert index.ntotal == 240
        assert sum(s["replayed"] for s in index.stats()["shards"]) == 96


def test_ranges_done_out_of_order_survive_a_writer_restart(tmp_path, vtest_patches):
    """What is done past the watermark is stored with it: a restarted writer (sink) still knows
    it, so the watermark moves over it once the gap is filled (else it would stall for good)."""
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    writer.write(_batch(vtest_patches, range(20, 30), [["frames", 0, 5, 9, 0]]))  # ahead of the gap 0..4
    writer.write(_batch(vtest_patches, range(30, 35), [["frames", 0, 12, 12, 0, 0, 2]]))  # half of message 12
    writer.close()  # the sink restarts
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    assert writer.committed_offsets() == {}
    ack = writer.write(_batch(vtest_patches, range(20), [["frames", 0, 0, 4, 0], ["frames", 0, 10, 11, 0]]))
    assert ack["offsets"] == {("frames", 0): 12}  # 0..4 joined the stored 5..9, then 10..11
    writer.close()
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    ack = writer.write(_batch(vtest_patches, range(35, 40), [["frames", 0, 12, 12, 0, 1, 2]]))
    assert ack["offsets"] == {("frames", 0): 13}  # the other half, stored before the restart
    assert writer.store.offset_state() == {}  # nothing left past the watermark
    writer.close()
