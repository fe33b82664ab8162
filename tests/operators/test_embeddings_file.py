"""read_embeddings: .npy and .parquet embeddings in chunks, with ids and metadata; bad files refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.index.filters import Where, where_ids
from operators.sinks.collection_writer import CollectionWriter
from operators.sinks.store_sink import local_shards
from operators.sources.embeddings_file import read_embeddings
from streamvision.core.errors import InputError

D = 16


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _parquet(path, n=10, **columns):
    x = _unit(n)
    table = {"id": pa.array(np.arange(1000, 1000 + n), pa.int64()),
             "vector": pa.array([row.tolist() for row in x], pa.list_(pa.float32())), **columns}
    pq.write_table(pa.table(table), path)
    return x


def test_npy_chunks_ids_and_sources(tmp_path):
    x = _unit(10)
    path = tmp_path / "emb.npy"
    np.save(path, x.astype(np.float64))  # any float dtype; handed on as float32
    chunks = list(read_embeddings(path, chunk=4, first_id=100))
    assert [len(ids) for ids, _, _ in chunks] == [4, 4, 2]
    ids = np.concatenate([c[0] for c in chunks])
    assert ids.dtype == np.int64 and ids.tolist() == list(range(100, 110))
    vectors = np.concatenate([c[1] for c in chunks])
    assert vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(vectors, x, rtol=1e-6)
    metas = [m for c in chunks for m in c[2]]
    assert metas == [{"source": {"file": str(path), "row": i}} for i in range(10)]
    assert [c[0].tolist() for c in read_embeddings(path)] == [list(range(1, 11))]  # defaults


def test_parquet_ids_vectors_and_metadata_columns(tmp_path):
    path = tmp_path / "emb.parquet"
    labels = ["car", None, "person", "car", "van", "car", "person", None, "car", "bus"]
    x = _parquet(path, label=pa.array(labels), camera=pa.array([f"cam{i % 3}" for i in range(10)]),
                 ts=pa.array(np.arange(10) * 1.5), note=pa.array([f"n{i}" for i in range(10)]),
                 tags=pa.array([["a", "b"]] * 10))
    chunks = list(read_embeddings(path, chunk=4))
    assert sum(len(c[0]) for c in chunks) == 10 and all(len(c[0]) <= 4 for c in chunks)
    ids = np.concatenate([c[0] for c in chunks])
    assert ids.tolist() == list(range(1000, 1010))
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), x)
    metas = [m for c in chunks for m in c[2]]
    assert metas[0] == {"source": {"file": str(path), "row": 0}, "label": "car", "camera": "cam0", "ts": 0.0, "note": "n0"}
    assert "label" not in metas[1]  # a null is left out
    assert [m["source"]["row"] for m in metas] == list(range(10))
    assert all("tags" not in m for m in metas)  # nested columns are not metadata
    assert [m["camera"] for m in metas] == [f"cam{i % 3}" for i in range(10)]


def test_imported_parquet_rows_are_found_by_their_metadata(tmp_path):
    path = tmp_path / "emb.parquet"
    cams = [f"cam{i % 3}" for i in range(12)]
    _parquet(path, n=12, label=pa.array(["car" if i % 2 else "person" for i in range(12)]),
             camera=pa.array(cams), ts=pa.array(100.0 + np.arange(12)))
    writer = CollectionWriter(tmp_path / "data", local_shards, dim=D)
    positions = [writer.import_vectors(ids, x, metas) for ids, x, metas in read_embeddings(path, chunk=5)]
    assert positions == [1, 2, 3]
    got = where_ids(writer.store, Where(label="car", camera="cam1"))
    assert got.tolist() == [1000 + i for i in range(12) if i % 2 and cams[i] == "cam1"]
    got = where_ids(writer.store, Where(start=103.0, end=107.0))
    assert got.tolist() == list(range(1003, 1007))
    assert writer.store.lineage(1004)[0]["source"] == {"file": str(path), "row": 4}
    writer.close()


def test_bad_npy_files_are_refused(tmp_path):
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read"):
        list(read_embeddings(pickled))  # never unpickled
    ints = tmp_path / "ints.npy"
    np.save(ints, np.ones((3, 4), np.int32))
    with pytest.raises(InputError, match=r"\(n, d\) float array"):
        list(read_embeddings(ints))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones(4, np.float32))
    with pytest.raises(InputError, match=r"\(n, d\) float array"):
        list(read_embeddings(flat))
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"definitely not numpy")
    with pytest.raises(InputError, match="cannot read"):
        list(read_embeddings(junk))


def test_bad_parquet_files_and_paths_are_refused(tmp_path):
    no_id = tmp_path / "no_id.parquet"
    pq.write_table(pa.table({"vector": pa.array([[1.0, 0.0]])}), no_id)
    with pytest.raises(InputError, match="needs an 'id' and a 'vector' column"):
        list(read_embeddings(no_id))
    text_id = tmp_path / "text_id.parquet"
    pq.write_table(pa.table({"id": pa.array(["a"]), "vector": pa.array([[1.0, 0.0]])}), text_id)
    with pytest.raises(InputError, match="integer column"):
        list(read_embeddings(text_id))
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2]), "vector": pa.array([[1.0, 0.0], [1.0]])}), ragged)
    with pytest.raises(InputError, match="equal-length lists"):
        list(read_embeddings(ragged))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 nope")
    with pytest.raises(InputError, match="as Parquet"):
        list(read_embeddings(junk))
    with pytest.raises(InputError, match="not found"):
        read_embeddings(tmp_path / "missing.npy")
    (tmp_path / "emb.csv").write_text("1,2\n")
    with pytest.raises(InputError, match=".npy or .parquet"):
        read_embeddings(tmp_path / "emb.csv")
