"""The integer SQ8 scan: each kernel exact against numpy; SQ8 shards equal FAISS's own SQ8 search,
SQ8,RFlat shards equal the exact search, on colour histograms of the real vtest.avi."""

from __future__ import annotations

from pathlib import Path

import av
import faiss
import numpy as np
import pytest

from operators.featurizers.color_histogram import color_histogram
from operators.index.shard import IndexShard
from operators.index.sq8_codes import KERNEL_MISSING, Sq8Codes, best_kernel, integer_scores, kernels


@pytest.fixture(scope="module")
def tile_features(vtest_path: Path) -> np.ndarray:
    """1024-d square-rooted colour histograms (4 levels, 4x4 grid) of 96x96 tiles of 60 frames."""
    tiles = []
    with av.open(str(vtest_path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == 60:
                break
            image = frame.to_ndarray(format="rgb24")
            for y in range(0, image.shape[0] - 95, 96):
                for x in range(0, image.shape[1] - 95, 96):
                    tiles.append(np.sqrt(color_histogram(image[y:y + 96, x:x + 96], bins=4, grid=4)))
    v = np.stack(tiles).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_kernel_is_built_and_every_kernel_is_exact():
    assert kernels(), KERNEL_MISSING
    assert best_kernel() == kernels()[0] and kernels()[-1] == "scalar"
    rng = np.random.default_rng(7)
    for d in (1, 15, 63, 64, 100, 1280):  # tails of every vector width
        codes = rng.integers(0, 256, (37, d), dtype=np.uint8)  # 37 rows: not a multiple of 4
        queries = rng.integers(-127, 128, (3, d), dtype=np.int8)
        expect = queries.astype(np.int64) @ codes.astype(np.int64).T
        for kernel in kernels():
            np.testing.assert_array_equal(integer_scores(codes, queries, kernel), expect, err_msg=kernel)
    extreme = np.full((5, 4096), 255, np.uint8)  # no 16-bit saturation, no int32 overflow
    for kernel in kernels():
        assert (integer_scores(extreme, np.full((1, 4096), 127, np.int8), kernel) == 255 * 127 * 4096).all()
        assert (integer_scores(extreme, np.full((1, 4096), -127, np.int8), kernel) == -255 * 127 * 4096).all()


def test_integer_scores_refuses_bad_input():
    codes = np.zeros((4, 8), np.uint8)
    with pytest.raises(ValueError, match="uint8 codes and int8 queries"):
        integer_scores(codes.astype(np.int8), np.zeros((1, 8), np.int8))
    with pytest.raises(ValueError, match=r"queries \(nq, d\)"):
        integer_scores(codes, np.zeros((1, 9), np.int8))
    with pytest.raises(ValueError, match="not available"):
        integer_scores(codes, np.zeros((1, 8), np.int8), kernel="avx9000")


def test_codes_view_decodes_as_faiss_does(tile_features):
    for qtype in (faiss.ScalarQuantizer.QT_8bit, faiss.ScalarQuantizer.QT_8bit_uniform):
        sq = faiss.IndexScalarQuantizer(1024, qtype, faiss.METRIC_INNER_PRODUCT)
        sq.train(tile_features)
        sq.add(tile_features)
        codes = Sq8Codes.of(sq)
        rows = np.arange(0, len(tile_features), 7)
        np.testing.assert_allclose(codes.decode(rows), sq.reconstruct_batch(rows), atol=1e-6)
    l2 = faiss.IndexScalarQuantizer(1024, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    l2.train(tile_features)
    assert Sq8Codes.of(l2) is None  # the integer scan ranks by inner product only
    assert Sq8Codes.of(faiss.IndexScalarQuantizer(1024, faiss.ScalarQuantizer.QT_4bit)) is None


@pytest.mark.parametrize("batch", [1, 16])
def test_sq8_shard_scan_equals_faiss_and_refined_equals_exact(tile_features, batch):
    x = tile_features
    ids = np.arange(len(x), dtype=np.int64) * 11 + 5
    queries = x[::97][:batch]
    exact = IndexShard(1024, "Flat", normalized=True)
    exact.upsert(ids, x)
    D_exact, I_exact = exact.search(queries, 10)

    sq8 = IndexShard(1024, "SQ8", normalized=True)
    sq8.train(x)
    sq8.upsert(ids, x)
    assert sq8.stats()["scan_kernel"] == f"sq8-{best_kernel()}"
    D, I = sq8.search(queries, 10)
    D_faiss, I_faiss = sq8.index.search(queries, 10)  # FAISS's own float scan of the same codes
    assert (I[:, 0] == ids[::97][:batch]).all()
    assert (I == I_faiss).mean() >= 0.98  # near ties may swap places; the scores say how near
    np.testing.assert_allclose(np.sort(D, axis=1), np.sort(D_faiss, axis=1), atol=2e-3)

    refined = IndexShard(1024, "SQ8,RFlat", normalized=True)
    refined.train(x)
    refined.upsert(ids, x)
    D, I = refined.search(queries, 10)
    assert (I == I_exact).all()
    np.testing.assert_allclose(D, D_exact, atol=1e-5)


def test_sq8_shard_with_fewer_vectors_than_k():
    shard = IndexShard(4, "SQ8")
    x = np.eye(4, dtype=np.float32)
    shard.train(x)
    shard.upsert(np.array([3, 4]), x[:2])
    D, I = shard.search(x[:1], 5)
    assert I[0].tolist() == [3, 4, -1, -1, -1]


def test_without_the_kernel_sq8_shards_fall_back_to_faiss(monkeypatch, tile_features):
    import operators.index.shard as shard_module

    monkeypatch.setattr(shard_module, "best_kernel", lambda: None)
    shard = IndexShard(1024, "SQ8,RFlat")
    shard.train(tile_features)
    shard.upsert(np.arange(len(tile_features)), tile_features)
    assert shard.stats()["scan_kernel"] == "faiss"
    D, I = shard.search(tile_features[:3], 5)
    assert I[:, 0].tolist() == [0, 1, 2]


def test_a_shard_shared_between_threads_searches_while_it_grows(tile_features):
    from concurrent.futures import ThreadPoolExecutor

    x = np.tile(tile_features, (4, 1))  # enough adds that FAISS moves its code buffer
    shard = IndexShard(1024, "SQ8,RFlat")
    shard.train(tile_features)
    shard.upsert(np.arange(100), x[:100])

    def grow() -> None:
        for start in range(100, len(x), 50):
            chunk = x[start:start + 50]
            shard.upsert(np.arange(start, start + len(chunk)), chunk)

    def look() -> list[np.ndarray]:
        return [shard.search(x[:4], 5)[1] for _ in range(60)]

    with ThreadPoolExecutor(2) as pool:
        grown, seen = pool.submit(grow), pool.submit(look)
        grown.result()
        results = seen.result()
    assert shard.ntotal == len(x)
    assert all(((I >= 0) & (I < len(x))).all() for I in results)
