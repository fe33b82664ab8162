"""The RocksDB lineage store and the store sink: writes, lineage both ways, indexes, reopen."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import streamvision

from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink, read_manifest
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def vectors_batch(vtest_path):
    source = VideoFileSource(path=str(vtest_path), start=20.0, end=21.0)
    source.open()
    frames = next(iter(source.read(10)))
    source.close()
    frames.meta["offset_ranges"] = [["cam", 0, 0, 9, 0]]
    return ColorHistogram(bins=4, grid=1).process(WholeFramePatches().process(frames))


@pytest.fixture(scope="module")
def later_batch(vtest_path):
    """Ten later frames of the same video (other patch ids, other vectors)."""
    source = VideoFileSource(path=str(vtest_path), start=50.0, end=51.0)
    source.open()
    frames = next(iter(source.read(10)))
    source.close()
    return ColorHistogram(bins=4, grid=1).process(WholeFramePatches().process(frames))


def test_write_and_read_back(tmp_path, vectors_batch):
    with LineageStore(tmp_path / "db") as store:
        assert store.write_patches(vectors_batch, offsets={("cam", 0): 10}) == 10
        pid = int(vectors_batch.ids[3])
        chain = store.lineage(pid)
        assert [link.get("model") for link in chain[:2]] == ["color_histogram:b4g1", "whole_frame"]
        assert chain[-1]["frame"]["frame_no"] == 203 and chain[-1]["ts"] == pytest.approx(20.3)
        parent = chain[1]["patch_id"]
        assert store.children(parent) == [pid]
        assert np.allclose(store.vectors([pid])[0], vectors_batch.vectors[3])
        assert sorted(store.ids_by_time(vectors_batch.cameras[0], 20.2, 20.5)) == sorted(
            int(i) for i in vectors_batch.ids[2:5])
        assert store.offsets() == {("cam", 0): 10}
        with pytest.raises(KeyError):
            store.lineage(12345)


def test_rewrite_is_idempotent_and_reopen_keeps_everything(tmp_path, vectors_batch):
    with LineageStore(tmp_path / "db") as store:
        store.write_patches(vectors_batch)
        store.write_patches(vectors_batch)
        counts = {cf: store.count(cf) for cf in ("patches", "vectors", "frames", "lineage_down")}
    assert counts == {"patches": 20, "vectors": 10, "frames": 10, "lineage_down": 20}
    with LineageStore(tmp_path / "db", read_only=True) as again:
        assert {cf: again.count(cf) for cf in counts} == counts


def test_labels_index(tmp_path, vectors_batch):
    labelled = vectors_batch.take(np.arange(4))
    labelled.labels = ["person", "car", "person", ""]
    with LineageStore(tmp_path / "db") as store:
        store.write_patches(labelled)
        assert sorted(store.ids_by_label("person")) == sorted(int(labelled.ids[i]) for i in (0, 2))
        assert store.ids_by_label("car", camera=labelled.cameras[0]) == [int(labelled.ids[1])]
        assert store.ids_by_label("van") == []


def test_read_only_open_of_a_missing_store(tmp_path):
    with pytest.raises(InputError, match="no StreamVision store"):
        LineageStore(tmp_path / "nothing", read_only=True)


def test_sink_indexes_tracks_offsets_and_recovers_the_index(tmp_path, vectors_batch):
    sink = StoreSink(data=str(tmp_path / "data"))
    sink.open()
    sink.write(vectors_batch)
    assert sink.last_offsets == {("cam", 0): 10}
    sink.write(vectors_batch)  # a replay changes nothing but takes a new position
    assert sink.last_offsets == {("cam", 0): 10}  # the watermark acked again, nothing newer completed
    assert sink.committed_offsets() == {("cam", 0): 10}
    assert sink.stats() == {"written": 20, "vectors": 20, "position": 2, "indexed": 10, "segments": 0,
                            "segments_failed": 0, "segments_queued": 0}
    sink.close()
    assert sink.stats()["indexed"] == 10  # the last stats survive close
    manifest = read_manifest(tmp_path / "data")
    assert manifest["dim"] == 64 and manifest["shards"] == 2
    snapshots = sorted((tmp_path / "data" / "index").glob("shard-*-of-2/snapshot.json"))
    assert len(snapshots) == 2
    shutil.rmtree(tmp_path / "data" / "index")  # lose every snapshot: replay from RocksDB
    again = StoreSink(data=str(tmp_path / "data"))
    again.open()
    assert again.stats()["indexed"] == 10 and again.committed_offsets() == {("cam", 0): 10}
    again.close()


def test_sink_without_its_index_stores_vectors_and_readers_replay_them(tmp_path, vectors_batch, later_batch):
    data = tmp_path / "data"
    first = StoreSink(data=str(data))  # an earlier run with its index: snapshots at position 1
    first.write(vectors_batch)
    first.close()
    sink = StoreSink(data=str(data), keep_index=False)
    sink.open()
    sink.write(later_batch)
    assert sink.stats() == {"written": 10, "vectors": 10, "position": 2, "indexed": 0, "segments": 0,
                            "segments_failed": 0, "segments_queued": 0}  # nothing held in memory
    bad = later_batch.take(np.arange(2))
    bad.vectors = np.full_like(bad.vectors, np.nan)
    with pytest.raises(InputError, match="NaN"):  # checked as strictly as by the index
        sink.write(bad)
    bad.vectors = later_batch.vectors[:2] * 3.0
    with pytest.raises(InputError, match="normalized"):  # a stored bad row would stop every reader's replay
        sink.write(bad)
    sink.close()
    with streamvision.connect(data) as collection:  # snapshot (position 1) + replay of position 2 only
        stats = collection.stats()
        assert stats["ntotal"] == 20 and stats["position"] == 2
        assert sum(s["replayed"] for s in stats["shards"]) == 10
        assert [s["snapshot_position"] for s in stats["shards"]] == [1, 1]
        for batch in (vectors_batch, later_batch):
            best = collection.similar(batch.vectors[3], k=1)[0]
            assert best.patch_id == int(batch.ids[3]) and best.score == pytest.approx(1.0, abs=1e-5)


def test_position_counts_writes_that_store_vectors(tmp_path, vectors_batch, vtest_path):
    source = VideoFileSource(path=str(vtest_path), start=30.0, end=30.5)
    source.open()
    pixels = WholeFramePatches().process(next(iter(source.read(10))))  # no vectors
    source.close()
    with LineageStore(tmp_path / "db") as store:
        assert store.position == 0
        store.write_patches(pixels)
        assert store.position == 0 and store.count("vector_log") == 0
        store.write_patches(vectors_batch)
        assert store.position == 1
        store.write_patches(vectors_batch.take([]), offsets={("cam", 0): 3})  # offsets only
        assert store.position == 1 and store.offsets() == {("cam", 0): 3}
        assert store.write_vectors(np.array([1, 2]), np.eye(64, dtype=np.float32)[:2]) == 2
        assert store.write_vectors(np.zeros(0, np.int64), np.zeros((0, 64), np.float32)) == 2
        store.write_patches(vectors_batch)  # a rewrite is a new write
        assert store.position == 3
        assert store.count("vector_log") == 10 + 2 + 10
        assert [(p, len(ids)) for p, ids, _ in store.vectors_since(0)] == [(3, 22)]
        chunks = [(p, len(ids)) for p, ids, _ in store.vectors_since(0, chunk=10)]
        assert chunks == [(1, 10), (3, 10), (3, 2)]  # a chunk is named by the last position it reaches
        assert [(p, len(ids)) for p, ids, _ in store.vectors_since(1)] == [(3, 12)]
        assert list(store.vectors_since(3)) == []
    with LineageStore(tmp_path / "db", read_only=True) as again:
        assert again.position == 3  # kept as the keys of vector_log
    with LineageStore(tmp_path / "db") as writer:  # the lock was released by close()
        assert writer.write_vectors(np.array([3]), np.eye(64, dtype=np.float32)[2:3]) == 4


def test_close_releases_the_store_while_the_object_lives(tmp_path, vectors_batch):
    store = LineageStore(tmp_path / "db")
    store.write_patches(vectors_batch)
    store.close()
    store.close()  # twice is harmless
    other = LineageStore(tmp_path / "db")  # `store` is still referenced here
    assert other.position == 1
    other.close()


def test_a_following_store_catches_up_with_the_writer(tmp_path, vectors_batch, later_batch):
    with LineageStore(tmp_path / "db") as writer:
        writer.write_patches(vectors_batch)
        follower = LineageStore(tmp_path / "db", follow=tmp_path / "secondary")
        assert follower.position == 1 and follower.read_only
        writer.write_patches(later_batch, offsets={("cam", 0): 20})
        assert follower.position == 1  # not yet
        follower.catch_up()
        assert follower.position == 2 and follower.offsets() == {("cam", 0): 20}
        (position, ids, _), = list(follower.vectors_since(1))
        assert position == 2 and sorted(ids.tolist()) == sorted(later_batch.ids.tolist())
        follower.close()


def test_multi_get_range_seeks_and_the_model_index(tmp_path, vectors_batch):
    with LineageStore(tmp_path / "db") as store:
        store.write_patches(vectors_batch)
        ids = [int(i) for i in vectors_batch.ids]
        metas = store.patches([ids[2], 12345, ids[0]])
        assert metas[1] is None and metas[0]["frame_no"] == 202 and metas[2]["frame_no"] == 200
        assert store.patches([]) == []
        camera = vectors_batch.cameras[0].encode()
        keys = list(store.keys_between("by_time", camera + b"\x00", camera + b"\x01"))
        assert len(keys) == 10 and keys == sorted(keys)
        assert store.first_key("by_time", b"") == keys[0]
        assert store.first_key("by_time", b"\xff") is None
        model = b"color_histogram:b4g1\x00"
        by_model = list(store.keys_between("by_model", model, model[:-1] + b"\x01"))
        assert sorted(int.from_bytes(k[-8:], "big") for k in by_model) == sorted(ids)


def test_sink_refuses_vectors_of_another_dimension(tmp_path, vectors_batch):
    sink = StoreSink(data=str(tmp_path / "data"))
    sink.write(vectors_batch)
    sink.close()
    other = StoreSink(data=str(tmp_path / "data"))
    other.dim = 128
    with pytest.raises(ConfigError, match="holds 64-d vectors"):
        other.open()
