"""IndexShard: exact search against numpy, threshold boundary, filters, upsert, removal, bad input."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from operators.index.shard import IndexShard, choose_device, gpu_available, gpu_capable, gpu_eligible
from operators.index.topk import top_k_rows
from streamvision.core.errors import InputError


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.choice(10**12, 500, replace=False).astype(np.int64) + 1, unit(rng, 500, 32)


def test_flat_top_k_equals_numpy(data):
    ids, x = data
    shard = IndexShard(32, "Flat", normalized=True)
    shard.upsert(ids, x)
    q = x[:7] + 0.01
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    D, I = shard.search(q, 10)
    scores = q @ x.T
    expect = np.argsort(-scores, axis=1)[:, :10]
    assert (I == ids[expect]).all()
    np.testing.assert_allclose(D, np.take_along_axis(scores, expect, 1), rtol=1e-5)


def test_blas_scan_equals_faiss_scan_for_one_query_and_batches(data):
    ids, x = data
    shard = IndexShard(32, "Flat", normalized=True)
    shard.upsert(ids, x)
    shard.remove(ids[:50])  # positions shift: the scan must map them to the right ids
    q = x[50:90]
    for queries in (q[:1], q):  # a matrix-vector product; a matrix product
        D, I = shard.search(queries, 8)
        D_faiss, I_faiss = shard.index.search(queries, 8)
        assert (I == I_faiss).all() and (I[:, 0] == ids[50:50 + len(queries)]).all()
        np.testing.assert_allclose(D, D_faiss, atol=1e-6)
    small = IndexShard(32, "Flat")
    small.upsert(ids[:2], x[:2])
    D, I = small.search(x[:1], 4)  # k larger than the shard: -1 ids past the end
    assert I[0, :2].tolist() == ids[:2].tolist() and (I[0, 2:] == -1).all()


def test_top_k_rows_is_exact_with_ties_and_wide_rows():
    rng = np.random.default_rng(3)
    for scores in (rng.standard_normal((4, 50_000)).astype(np.float32),  # sampled bound path
                   np.round(rng.standard_normal((4, 50_000)), 1).astype(np.float32),  # many ties
                   rng.standard_normal((3, 40)).astype(np.float32)):  # narrow rows
        top, values = top_k_rows(scores, 10)
        np.testing.assert_array_equal(values, -np.sort(-scores, axis=1)[:, :10])
        np.testing.assert_array_equal(np.take_along_axis(scores, top, 1), values)
        assert all(len(set(row)) == 10 for row in top.tolist())


def test_refined_sq8_reranks_exactly_and_filters(data):
    ids, x = data
    shard = IndexShard(32, "SQ8,RFlat", normalized=True)
    shard.train(x)
    shard.upsert(ids, x)
    assert shard.append_only  # FAISS cannot remove from a refining index
    q = x[:5]
    D, I = shard.search(q, 10)
    scores = q @ x.T
    expect = np.argsort(-scores, axis=1)[:, :10]
    assert (I[:, 0] == ids[:5]).all()
    np.testing.assert_allclose(D, np.take_along_axis(scores, expect, 1), atol=1e-5)  # float32 scores
    allowed = ids[200:230]
    D, I = shard.search(q, 4, ids=allowed)
    expect = allowed[np.argsort(-(q @ x[200:230].T), axis=1)[:, :4]]
    assert (I == expect).all()


def test_threshold_is_strictly_greater_at_the_boundary():
    shard = IndexShard(2, "Flat")
    x = np.array([[1.0, 0.0], [0.5, 0.0], [0.25, 0.0]], np.float32)  # exact binary fractions
    shard.upsert(np.array([1, 2, 3]), x)
    _, D, I = shard.range_search(np.array([[1.0, 0.0]], np.float32), 0.5)
    assert I.tolist() == [1]  # 0.5 is not > 0.5
    _, _, I = shard.range_search(np.array([[1.0, 0.0]], np.float32), 0.4999)
    assert sorted(I.tolist()) == [1, 2]


def test_filtered_search_only_returns_allowed_ids(data):
    ids, x = data
    shard = IndexShard(32, "Flat")
    shard.upsert(ids, x)
    allowed = ids[100:140]
    D, I = shard.search(x[:3], 5, ids=allowed)
    assert np.isin(I, allowed).all()
    expect = ids[100:140][np.argsort(-(x[:3] @ x[100:140].T), axis=1)[:, :5]]
    assert (I == expect).all()
    lims, _, I = shard.range_search(x[:1], -1.0, ids=allowed)
    assert sorted(I.tolist()) == sorted(allowed.tolist())
    D, I = shard.search(x[:1], 3, ids=np.array([], np.int64))
    assert (I == -1).all()


def test_upsert_same_id_is_one_entry_and_replaces(data):
    ids, x = data
    shard = IndexShard(32, "Flat")
    shard.upsert(ids, x)
    shard.upsert(ids[:50], x[:50])
    assert shard.ntotal == len(ids)
    shard.upsert(ids[:1], x[1:2])  # replace the vector of ids[0]
    assert shard.ntotal == len(ids)
    np.testing.assert_array_equal(shard.reconstruct(ids[:1]), x[1:2])
    shard.upsert(np.array([7, 7]), x[:2])  # the last vector given wins
    np.testing.assert_array_equal(shard.reconstruct(np.array([7])), x[1:2])


def test_removal(data):
    ids, x = data
    shard = IndexShard(32, "Flat")
    shard.upsert(ids, x)
    assert shard.remove(ids[:10]) == 10
    assert shard.remove(ids[:10]) == 0
    assert shard.ntotal == len(ids) - 10
    _, I = shard.search(x[:10], 1)
    assert not np.isin(I, ids[:10]).any()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 31), np.float32), "must be"),
        (np.full((2, 32), np.nan, np.float32), "NaN or inf"),
        (np.full((2, 32), np.inf, np.float32), "NaN or inf"),
        (np.ones((2, 32), np.float32), "L2-normalized"),
    ],
)
def test_bad_vectors_are_refused_and_change_nothing(data, bad, message):
    ids, x = data
    shard = IndexShard(32, "Flat", normalized=True)
    shard.upsert(ids, x)
    before = shard.search(x[:5], 5)
    with pytest.raises(InputError, match=message):
        shard.upsert(np.array([1, 2]), bad)
    with pytest.raises(InputError, match=message):
        shard.search(bad, 3)
    assert shard.ntotal == len(ids)
    after = shard.search(x[:5], 5)
    assert (before[1] == after[1]).all()


def test_bad_ids_and_factory_strings():
    with pytest.raises(InputError, match="index_factory"):
        IndexShard(8, "NoSuchIndex42")
    with pytest.raises(InputError, match="dimension"):
        IndexShard(0, "Flat")
    shard = IndexShard(4, "Flat")
    with pytest.raises(InputError, match="non-negative"):
        shard.upsert(np.array([-1]), np.ones((1, 4), np.float32))
    with pytest.raises(InputError, match="ids for"):
        shard.upsert(np.array([1, 2, 3]), np.ones((1, 4), np.float32))
    assert shard.ntotal == 0


def test_ivf_pq_needs_training_then_reports_recall():
    rng = np.random.default_rng(2)
    x = unit(rng, 16, 32)[rng.integers(0, 16, 3000)] + 0.05 * rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # clustered, like real image features
    shard = IndexShard(32, "IVF16,PQ8", normalized=True)
    with pytest.raises(InputError, match="trained"):
        shard.upsert(np.arange(1, 3001), x)
    assert shard.ntotal == 0 and not shard.is_trained
    shard.train(x)
    shard.upsert(np.arange(1, 3001), x)
    assert shard.is_trained and shard.ntotal == 3000
    assert shard.stats()["bytes_per_vector"] <= 4 * 32 // 8  # codes (+ list number), not fp32
    flat = IndexShard(32, "Flat")
    flat.upsert(np.arange(1, 3001), x)
    _, exact = flat.search(x[:50], 1)
    _, approx = shard.search(x[:50], 10)
    recall = np.mean([exact[i, 0] in approx[i] for i in range(50)])
    assert recall >= 0.8  # 8-byte codes keep the true nearest in the top-10 of most queries


def test_hnsw_is_append_only_and_skips_known_ids():
    rng = np.random.default_rng(3)
    x = unit(rng, 200, 16)
    shard = IndexShard(16, "HNSW32")
    assert shard.append_only
    shard.upsert(np.arange(1, 201), x)
    shard.upsert(np.arange(1, 101), x[:100])
    assert shard.ntotal == 200
    with pytest.raises(InputError, match="append-only"):
        shard.remove(np.array([1]))
    assert shard.ntotal == 200


def test_loaded_hnsw_is_still_append_only(tmp_path):
    shard = IndexShard(16, "HNSW16")
    shard.upsert(np.arange(1, 11), unit(np.random.default_rng(8), 10, 16))
    shard.save(tmp_path / "h.faiss")
    loaded = IndexShard.load(tmp_path / "h.faiss")
    assert loaded.append_only
    loaded.upsert(np.arange(1, 11), unit(np.random.default_rng(8), 10, 16))
    assert loaded.ntotal == 10


@pytest.mark.parametrize("factory, capable", [
    ("Flat", True), ("IVF16,Flat", True), ("IVF16,SQ8", True), ("IVF16,PQ4", True), ("PCA8,Flat", True),
    ("HNSW16", False), ("SQ8", False), ("SQ8,RFlat", False), ("PQ4", False), ("IVF16,PQ4x4fs", False),
])
def test_only_kinds_faiss_holds_on_a_gpu_are_gpu_capable(factory, capable):
    assert gpu_capable(factory, 16) is capable
    shard = IndexShard(16, factory, append_only=True)
    assert gpu_eligible(shard.index, shard.append_only) is capable


def test_gpu_only_for_append_only_shards_and_cpu_fallback_here():
    assert choose_device("Flat", append_only=False) == "cpu"
    assert choose_device("Flat", append_only=True) == ("gpu" if gpu_available() else "cpu")
    assert choose_device("HNSW16", append_only=True) == "cpu"  # forced append-only, but no GPU kind
    shard = IndexShard(8, "Flat", append_only=True)
    assert shard.device == choose_device("Flat", True)
    assert IndexShard(8, "HNSW16").device == "cpu"
    assert IndexShard(8, "SQ8,RFlat").device == "cpu"
    if not gpu_available():
        with pytest.raises(InputError, match="needs CUDA with faiss-gpu"):
            IndexShard(8, "Flat", append_only=True, device="gpu")


@pytest.mark.parametrize("factory", ["HNSW16", "SQ8,RFlat", "SQ8"])
def test_a_gpu_shard_of_a_kind_faiss_cannot_hold_there_is_refused_on_any_machine(factory):
    with pytest.raises(InputError, match="kind FAISS holds on a GPU"):
        IndexShard(16, factory, append_only=True, device="gpu")


def test_save_and_load_round_trip(tmp_path, data):
    ids, x = data
    shard = IndexShard(32, "SQ8")
    shard.train(x)
    shard.upsert(ids, x)
    shard.save(tmp_path / "s.faiss")
    loaded = IndexShard.load(tmp_path / "s.faiss", factory="SQ8")
    assert loaded.ntotal == len(ids) and loaded.is_trained
    assert (loaded.search(x[:4], 5)[1] == shard.search(x[:4], 5)[1]).all()
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(InputError, match="cannot read"):
        IndexShard.load(tmp_path / "junk.faiss")



@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "SQ8", "HNSW16", "SQ8,RFlat"])
def test_a_mapped_shard_answers_as_a_read_one_and_reads_its_own_file_on_the_first_write(tmp_path, data, factory):
    ids, x = data
    shard = IndexShard(32, factory, normalized=True)
    shard.train(x)
    shard.upsert(ids[:400], x[:400])
    shard.save(tmp_path / "s.faiss")
    read = IndexShard.load(tmp_path / "s.faiss", factory=factory, normalized=True)
    mapped = IndexShard.load(tmp_path / "s.faiss", factory=factory, normalized=True, mapped=True)
    assert mapped.mapped and not read.mapped
    assert mapped.append_only == read.append_only and mapped.stats() == read.stats()
    for got, want in zip(mapped.search(x[::50], 5), read.search(x[::50], 5)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mapped.ids(), read.ids())
    assert mapped.contains(ids[398:402]).tolist() == [True, True, False, False]
    IndexShard(32, "Flat").save(tmp_path / "s.faiss")  # a new snapshot renamed over the mapped file
    mapped.upsert(ids[300:], x[300:])  # held ids (kept, or overwritten in place) and new ones
    assert not mapped.mapped and mapped.ntotal == 500  # the first write read the file it mapped
    assert (mapped.search(x[450:451], 1)[1] == ids[450]).all()
    assert (mapped.search(x[:1], 1)[1] == ids[0]).all()
    if not mapped.append_only:
        assert mapped.remove(ids[:10]) == 10 and mapped.ntotal == 490


def test_a_mapped_load_of_a_missing_or_foreign_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        IndexShard.load(tmp_path / "none.faiss", mapped=True)
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(InputError, match="cannot read"):
        IndexShard.load(tmp_path / "junk.faiss", mapped=True)
    faiss.write_index(faiss.IndexFlatIP(4), str(tmp_path / "bare.faiss"))
    with pytest.raises(InputError, match="not an id-mapped"):
        IndexShard.load(tmp_path / "bare.faiss", mapped=True)

@pytest.fixture
def removed_ids(monkeypatch) -> list[np.ndarray]:
    """Records every batch of ids given to FAISS's ``remove_ids`` (a scan of the whole index)."""
    calls: list[np.ndarray] = []
    original = faiss.IndexIDMap.remove_ids

    def spy(index: faiss.IndexIDMap, ids: np.ndarray) -> int:
        calls.append(np.array(ids))
        return original(index, ids)

    monkeypatch.setattr(faiss.IndexIDMap, "remove_ids", spy)
    return calls


@pytest.fixture
def one_thread():
    """HNSW builds its graph in parallel, in no fixed order; one thread makes it repeatable."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def built(factory: str, sample: np.ndarray, *batches: tuple[np.ndarray, np.ndarray]) -> IndexShard:
    """A new shard of ``factory`` trained on ``sample``, then upserted ``batches`` in order."""
    shard = IndexShard(32, factory)
    shard.train(sample)
    for ids, x in batches:
        shard.upsert(ids, x)
    return shard


def assert_same_search(shard: IndexShard, reference: IndexShard, q: np.ndarray, k: int = 10) -> None:
    D, I = shard.search(q, k)
    D_ref, I_ref = reference.search(q, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "SQ8", "HNSW32", "SQ8,RFlat"])
def test_upserting_new_ids_never_scans_the_index(data, factory, removed_ids, monkeypatch):
    ids, x = data
    shard = built(factory, x, (ids[:400], x[:400]))
    monkeypatch.setattr(IndexShard, "ids", lambda self: pytest.fail("upsert copied every id held"))
    for start in range(400, 500, 16):
        shard.upsert(ids[start:start + 16], x[start:start + 16])
    assert removed_ids == [] and shard.ntotal == 500
    assert shard.contains(ids).all() and not shard.contains(np.array([0])).any()


@pytest.mark.parametrize("factory", ["Flat", "SQ8", "SQ8,RFlat", "HNSW32"])
def test_replacing_held_ids_searches_like_a_fresh_index_of_the_final_vectors(
    data, factory, removed_ids, one_thread
):
    ids, x = data
    new = unit(np.random.default_rng(5), 500, 32)
    shard = built(factory, x, (ids[:400], x[:400]))
    shard.upsert(np.concatenate([ids[100:200], ids[400:]]), np.concatenate([new[100:200], x[400:]]))
    final = x.copy()
    if not shard.append_only:  # append-only shards skip the ids they hold
        final[100:200] = new[100:200]
    reference = built(factory, x, (ids[:400], final[:400]), (ids[400:], final[400:]))
    assert shard.ntotal == 500 and shard.contains(ids).all()
    assert_same_search(shard, reference, np.concatenate([final[90:210:3], x[100:200:5], new[100:200:5]]))
    np.testing.assert_allclose(shard.reconstruct(ids[90:210]), reference.reconstruct(ids[90:210]), atol=1e-6)
    assert all(np.isin(batch, ids[100:200]).all() for batch in removed_ids)  # only held ids
    if factory == "Flat":
        assert removed_ids == []  # overwritten in place
        np.testing.assert_array_equal(shard.reconstruct(ids[100:200]), new[100:200])


@pytest.mark.parametrize("factory", ["Flat", "SQ8"])
def test_remove_then_upsert_then_search_stays_consistent(data, factory):
    ids, x = data
    new = unit(np.random.default_rng(6), 500, 32)
    shard = built(factory, x, (ids[:400], x[:400]))
    assert shard.remove(ids[:50]) == 50  # FAISS compacts the positions of the rest
    assert not shard.contains(ids[:50]).any() and shard.contains(ids[50:400]).all()
    shard.upsert(ids[25:75], new[25:75])  # 25 removed ids come back, 25 held ids are replaced
    shard.upsert(ids[400:], x[400:])
    final = np.concatenate([new[25:75], x[75:]])
    reference = built(factory, x, (ids[25:], final))
    assert shard.ntotal == 475 and shard.contains(ids[25:]).all() and not shard.contains(ids[:25]).any()
    q = np.concatenate([final[::7], x[:50:5]])
    assert_same_search(shard, reference, q)
    allowed = ids[::3]
    np.testing.assert_array_equal(shard.search(q, 5, ids=allowed)[1], reference.search(q, 5, ids=allowed)[1])
    np.testing.assert_allclose(shard.reconstruct(ids[25:75]), reference.reconstruct(ids[25:75]), atol=1e-6)
    with pytest.raises(InputError, match="not in this shard"):
        shard.reconstruct(ids[:1])


@pytest.mark.parametrize("factory", ["Flat", "SQ8"])
def test_a_loaded_shard_replaces_the_ids_it_holds(tmp_path, data, factory):
    ids, x = data
    new = unit(np.random.default_rng(7), 20, 32)
    built(factory, x, (ids, x)).save(tmp_path / "s.faiss")
    loaded = IndexShard.load(tmp_path / "s.faiss", factory=factory)
    assert loaded.contains(ids).all()
    loaded.upsert(ids[:20], new)
    final = np.concatenate([new, x[20:]])
    assert loaded.ntotal == len(ids)
    assert (loaded.search(new, 1)[1][:, 0] == ids[:20]).all()
    assert_same_search(loaded, built(factory, x, (ids, final)), np.concatenate([new, x[:20]]))


def test_contains_checks_its_ids():
    shard = IndexShard(4, "Flat")
    assert shard.contains(np.array([3])).tolist() == [False]
    assert shard.contains(np.zeros(0, np.int64)).tolist() == []
    with pytest.raises(InputError, match="non-negative"):
        shard.contains(np.array([-1]))


@pytest.mark.parametrize("mapped", [False, True])
def test_a_shard_file_of_faiss_reverse_map_kind_written_before_still_loads_and_works(tmp_path, data, mapped):
    ids, x = data
    assert type(IndexShard(32, "Flat").index) is faiss.IndexIDMap  # no reverse map to build at every open
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(32))  # what shards wrote before 2026-12-08
    old.add_with_ids(x[:100], ids[:100])
    faiss.write_index(old, str(tmp_path / "old.faiss"))
    shard = IndexShard.load(tmp_path / "old.faiss", factory="Flat", normalized=True, mapped=mapped)
    assert (shard.search(x[:3], 1)[1][:, 0] == ids[:3]).all()
    np.testing.assert_array_equal(shard.reconstruct(ids[5:8]), x[5:8])
    shard.upsert(ids[50:150], x[50:150])
    assert shard.ntotal == 150 and shard.remove(ids[:10]) == 10
    np.testing.assert_array_equal(shard.reconstruct(ids[140:141]), x[140:141])
