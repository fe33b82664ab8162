"""LiveShard: a snapshot at a store position plus replay of exactly what the store wrote since.

Real vtest.avi histograms (the ``vtest_patches`` fixture of test_index_sharded) written
through a CollectionWriter; a writer that dies without snapshotting is simulated by closing
its store and shard threads directly.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from operators.index.live_shard import SNAPSHOT_INDEX, SNAPSHOT_META, LiveShard, shard_dir
from operators.index.routing import route
from operators.index.sharded import ShardedIndex, layout
from operators.sinks.collection_writer import CollectionWriter
from operators.sinks.store_sink import local_shards
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError
from tests.operators.test_index_sharded import DIM, vtest_patches  # noqa: F401 - a fixture
from tests.ranking import assert_same_ranking

SHARDS = 3
FIRST = 100


def _die(writer: CollectionWriter) -> None:
    """Stop a writer the way a crash would: no snapshot, the store just closes."""
    writer.index.close()
    writer.store.close()


def _answers(index, x):
    D, I = index.search(x[::11], 7)
    lims, Dt, It = index.threshold(x[::23], 0.95)
    return D, I, lims, Dt, It


def _same_answers(got, want):
    """Equal answers up to ties (real frames do tie, and a rebuilt shard holds the same vectors
    in another insertion order, so scores may differ in the last float bits)."""
    D, I, lims, Dt, It = got
    D0, I0, lims0, Dt0, It0 = want
    assert_same_ranking([list(zip(i, d)) for i, d in zip(I.tolist(), D.tolist())],
                        [list(zip(i, d)) for i, d in zip(I0.tolist(), D0.tolist())])
    np.testing.assert_array_equal(lims, lims0)
    np.testing.assert_array_equal(It, It0)  # threshold hits break ties by id: one order
    np.testing.assert_allclose(Dt, Dt0, rtol=1e-6)


@pytest.fixture
def written(tmp_path, vtest_patches):
    """A collection: the first 100 patches in two writes, a snapshot (position 2), then the
    other 140 in three writes (positions 3..5), and a crash. Returns (data dir, answers)."""
    ids, x = vtest_patches.ids, vtest_patches.vectors
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=SHARDS)
    for rows in np.array_split(np.arange(FIRST), 2):
        writer.write(vtest_patches.take(rows))
    writer.snapshot()
    assert [s["snapshot_position"] for s in writer.index.stats()["shards"]] == [2] * SHARDS
    for rows in np.array_split(np.arange(FIRST, len(ids)), 3):
        writer.write(vtest_patches.take(rows))
    assert writer.store.position == 5
    answers = _answers(writer.index, x)
    _die(writer)
    return tmp_path, answers


def test_reopen_replays_only_the_writes_after_the_snapshot(written, vtest_patches):
    data, uninterrupted = written
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(data, DIM, "Flat", SHARDS) as index:
        stats = index.stats()
        assert stats["ntotal"] == len(ids)
        replayed = [s["replayed"] for s in stats["shards"]]
        assert sum(replayed) == len(ids) - FIRST
        owner = route(ids[FIRST:], SHARDS)
        assert replayed == [int((owner == s).sum()) for s in range(SHARDS)]
        assert [s["snapshot_position"] for s in stats["shards"]] == [2] * SHARDS
        assert [s["position"] for s in stats["shards"]] == [5] * SHARDS
        _same_answers(_answers(index, x), uninterrupted)
        held, stored = index.items()
        np.testing.assert_array_equal(held, np.sort(ids))
        np.testing.assert_allclose(stored, x[np.argsort(ids)], atol=1e-6)
        index.snapshot()  # now the snapshots cover position 5
    with ShardedIndex.open(data, DIM, "Flat", SHARDS) as index:
        assert [s["replayed"] for s in index.stats()["shards"]] == [0] * SHARDS
        _same_answers(_answers(index, x), uninterrupted)


def test_vectors_since_yields_only_what_came_after(written, vtest_patches):
    data, _ = written
    ids, x = vtest_patches.ids, vtest_patches.vectors
    batches = [rows for rows in np.array_split(np.arange(FIRST), 2)]
    batches += [rows for rows in np.array_split(np.arange(FIRST, len(ids)), 3)]
    _, store_dir = layout(data)
    with LineageStore(store_dir, read_only=True) as store:
        assert store.position == 5
        for p in range(6):
            chunks = list(store.vectors_since(p))
            got = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.int64)
            want = np.concatenate([ids[rows] for rows in batches[p:]]) if p < 5 else np.zeros(0, np.int64)
            assert sorted(got.tolist()) == sorted(want.tolist())
            if chunks:
                assert chunks[-1][0] == 5
                vectors = np.concatenate([c[2] for c in chunks])
                by_id = dict(zip(ids.tolist(), x))
                np.testing.assert_array_equal(vectors, np.stack([by_id[i] for i in got.tolist()]))
        small = list(store.vectors_since(3, chunk=7))  # positions 4 and 5 in chunks of 7
        assert all(len(c[1]) <= 7 for c in small)
        assert [c[0] for c in small] == sorted(c[0] for c in small) and small[-1][0] == 5
        assert sorted(np.concatenate([c[1] for c in small]).tolist()) == sorted(
            np.concatenate([ids[batches[3]], ids[batches[4]]]).tolist())


def test_a_rewritten_vector_replays_at_its_newer_position(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    writer.write(vtest_patches.take(np.arange(50)))
    writer.snapshot()
    newer = vtest_patches.take(np.arange(5))
    newer.vectors = x[200:205].copy()  # same ids, the vectors of other frames
    writer.write(newer)
    _die(writer)
    with LineageStore(layout(tmp_path)[1], read_only=True) as store:
        (position, got, vectors), = list(store.vectors_since(1))
        assert position == 2 and sorted(got.tolist()) == sorted(ids[:5].tolist())
    with ShardedIndex.open(tmp_path, DIM, "Flat", 2) as index:
        assert index.ntotal == 50
        assert sum(s["replayed"] for s in index.stats()["shards"]) == 5
        held, stored = index.items(ids[:5])
        order = np.argsort(ids[:5])
        np.testing.assert_allclose(stored, x[200:205][order], atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "count", "types", "not-json"])
def test_a_damaged_snapshot_is_rebuilt_from_the_store_with_a_warning(written, vtest_patches, caplog, damage):
    data, uninterrupted = written
    ids, x = vtest_patches.ids, vtest_patches.vectors
    root, _ = layout(data)
    broken = shard_dir(root, 1, SHARDS)
    if damage == "truncate":
        raw = (broken / SNAPSHOT_INDEX).read_bytes()
        (broken / SNAPSHOT_INDEX).write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        (broken / SNAPSHOT_INDEX).write_bytes(b"not a faiss index at all")
    elif damage == "count":  # the index file is fine but not the one its snapshot.json describes
        meta = json.loads((broken / SNAPSHOT_META).read_text())
        (broken / SNAPSHOT_META).write_text(json.dumps({**meta, "ntotal": meta["ntotal"] + 1}))
    elif damage == "types":  # a record of the right fields with values of the wrong types
        meta = json.loads((broken / SNAPSHOT_META).read_text())
        (broken / SNAPSHOT_META).write_text(json.dumps({**meta, "dim": str(meta["dim"]), "position": None}))
    else:
        (broken / SNAPSHOT_META).write_text("[1, 2")
    with caplog.at_level(logging.WARNING, logger="operators.index.live_shard"):
        with ShardedIndex.open(data, DIM, "Flat", SHARDS) as index:
            stats = index.stats()
            _same_answers(_answers(index, x), uninterrupted)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "rebuilding" in r.getMessage()]
    assert len(warnings) == 1 and "shard-1-of-3" in warnings[0].getMessage()
    assert stats["ntotal"] == len(ids)
    shard1 = stats["shards"][1]
    assert shard1["snapshot_position"] == 0 and shard1["position"] == 5
    assert shard1["replayed"] == int((route(ids, SHARDS) == 1).sum())  # everything of its own, again
    others = [stats["shards"][s]["replayed"] for s in (0, 2)]
    assert others == [int((route(ids[FIRST:], SHARDS) == s).sum()) for s in (0, 2)]


def test_a_missing_snapshot_replays_everything_without_a_warning(written, vtest_patches, caplog):
    data, uninterrupted = written
    ids, x = vtest_patches.ids, vtest_patches.vectors
    root, _ = layout(data)
    for s in range(SHARDS):
        (shard_dir(root, s, SHARDS) / SNAPSHOT_INDEX).unlink()
    with caplog.at_level(logging.WARNING, logger="operators.index.live_shard"):
        with ShardedIndex.open(data, DIM, "Flat", SHARDS) as index:
            assert sum(s["replayed"] for s in index.stats()["shards"]) == len(ids)
            _same_answers(_answers(index, x), uninterrupted)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_snapshot_of_another_factory_or_dim_is_a_config_error(written, vtest_patches):
    data, uninterrupted = written
    with pytest.raises(ConfigError, match="not 'SQ8'"):
        ShardedIndex.open(data, DIM, "SQ8", SHARDS)
    with pytest.raises(ConfigError, match="of dim 256"):
        LiveShard(layout(data)[0], 0, SHARDS, dim=128, store=layout(data)[1])
    with ShardedIndex.open(data, DIM, "Flat", SHARDS) as index:  # the snapshots were left alone
        assert [s["snapshot_position"] for s in index.stats()["shards"]] == [2] * SHARDS
        _same_answers(_answers(index, vtest_patches.vectors), uninterrupted)


def test_one_live_shard_without_a_store(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with pytest.raises(ConfigError, match="not in"):
        LiveShard(tmp_path, 2, 2, dim=DIM)
    shard = LiveShard(tmp_path, 0, 1, dim=DIM)  # nothing to replay from
    assert shard.index.ntotal == 0 and shard.position == 0 and shard.replayed == 0
    assert shard.apply(7, ids[:30], x[:30]) == 30
    assert shard.apply(7, ids[:30], x[:30]) == 30  # idempotent
    assert shard.index.ntotal == 30 and shard.position == 7
    shard.apply(3, ids[30:40], x[30:40])  # an older position never moves it back
    assert shard.position == 7
    meta = shard.snapshot()
    assert meta == {"factory": "Flat", "dim": DIM, "ntotal": 40, "position": 7}
    assert json.loads((shard_dir(tmp_path, 0, 1) / SNAPSHOT_META).read_text()) == meta
    again = LiveShard(tmp_path, 0, 1, dim=DIM)
    assert again.index.ntotal == 40 and again.position == 7 and again.snapshot_position == 7
    D, I = again.search(x[35:36], 1)
    assert I[0, 0] == ids[35] and D[0, 0] == pytest.approx(1.0, abs=1e-5)
    held, stored = again.items(np.array([ids[0], 999]))
    assert held.tolist() == [int(ids[0])]
    np.testing.assert_allclose(stored, x[:1], atol=1e-6)


def test_a_reopened_shard_maps_its_snapshot_and_rewrites_it_only_once_changed(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    shard = LiveShard(tmp_path, 0, 1, dim=DIM)
    shard.apply(1, ids[:30], x[:30])
    shard.snapshot()
    index_file = shard_dir(tmp_path, 0, 1) / SNAPSHOT_INDEX
    written = index_file.stat()
    again = LiveShard(tmp_path, 0, 1, dim=DIM)
    assert again.index.mapped and again.index.ntotal == 30
    assert again.snapshot() == {"factory": "Flat", "dim": DIM, "ntotal": 30, "position": 1}
    assert index_file.stat().st_ino == written.st_ino  # nothing changed: the vectors are not rewritten
    again.apply(2, ids[:0], x[:0])  # a position with nothing for this shard
    assert again.snapshot()["position"] == 2 and index_file.stat().st_ino == written.st_ino
    again.apply(3, ids[30:40], x[30:40])
    assert not again.index.mapped  # the write read the snapshot into the shard's memory first
    assert again.snapshot() == {"factory": "Flat", "dim": DIM, "ntotal": 40, "position": 3}
    assert index_file.stat().st_ino != written.st_ino
    third = LiveShard(tmp_path, 0, 1, dim=DIM)
    assert third.index.ntotal == 40 and third.position == 3 and third.replayed == 0
    D, I = third.search(x[35:36], 1)
    assert I[0, 0] == ids[35]
