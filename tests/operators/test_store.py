"""The RocksDB lineage store and the store sink: writes, lineage both ways, indexes, reopen."""

from __future__ import annotations

import numpy as np
import pytest

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
    sink.write(vectors_batch)  # a replay changes nothing
    assert sink.stats() == {"written": 20, "vectors": 20, "indexed": 10}
    sink.close()
    manifest = read_manifest(tmp_path / "data")
    assert manifest["dim"] == 64
    (tmp_path / "data" / "index" / "main.faiss").unlink()  # lose the snapshot: replay from RocksDB
    again = StoreSink(data=str(tmp_path / "data"))
    again.open()
    assert again.stats()["indexed"] == 10 and again.committed_offsets() == {("cam", 0): 10}
    again.close()


def test_sink_without_its_index_stores_vectors_and_queries_still_find_them(tmp_path, vectors_batch):
    from streamvision.api.query import connect

    data = tmp_path / "data"
    (data / "index").mkdir(parents=True)
    (data / "index" / "main.faiss").write_bytes(b"stale")  # an earlier run's snapshot would fall behind
    sink = StoreSink(data=str(data), keep_index=False)
    sink.open()
    assert not (data / "index" / "main.faiss").exists()
    sink.write(vectors_batch)
    assert sink.stats() == {"written": 10, "vectors": 10, "indexed": 0}  # nothing held in memory
    bad = vectors_batch.take(np.arange(2))
    bad.vectors = np.full_like(bad.vectors, np.nan)
    with pytest.raises(InputError, match="NaN"):  # checked as strictly as by the index
        sink.write(bad)
    sink.close()
    with connect(data) as collection:  # the index is built from the stored vectors
        best = collection.similar(vectors_batch.vectors[3], k=1)[0]
    assert best.patch_id == int(vectors_batch.ids[3]) and best.score == pytest.approx(1.0, abs=1e-5)


def test_sink_refuses_vectors_of_another_dimension(tmp_path, vectors_batch):
    sink = StoreSink(data=str(tmp_path / "data"))
    sink.write(vectors_batch)
    sink.close()
    other = StoreSink(data=str(tmp_path / "data"))
    other.dim = 128
    with pytest.raises(ConfigError, match="holds 64-d vectors"):
        other.open()
