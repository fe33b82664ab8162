"""ShardedIndex on real image features: exactness, where= filters from RocksDB, durability.

Writes reach the shards as ``apply(position, ids, vectors)`` (what the store wrote at a
position); durability is the store plus shard snapshots (CollectionWriter, snapshot, reopen).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from operators.index.filters import Where, where_ids
from operators.index.joins import nested_loop_self_join
from operators.index.routing import route
from operators.index.sharded import ShardedIndex, ShardSet
from operators.sinks.collection_writer import CollectionWriter
from operators.sinks.store_sink import local_shards
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.lineage import FileKey, id_bytes, patch_id
from streamvision.core.patches import PatchBatch

FRAMES = 240
DIM = 256


def histogram(image: np.ndarray) -> np.ndarray:
    """4x4x4 joint RGB histogram of each quarter of the image, square-rooted: 256-d."""
    h, w = image.shape[:2]
    cells = []
    for gy in range(2):
        for gx in range(2):
            q = (image[gy * h // 2:(gy + 1) * h // 2, gx * w // 2:(gx + 1) * w // 2] // 64).reshape(-1, 3)
            cells.append(np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64))
    v = np.sqrt(np.concatenate(cells).astype(np.float32))
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def vtest_patches(vtest_path: Path) -> PatchBatch:
    """Whole-frame histogram patches of the first frames of the real vtest.avi.

    Even frames are camera "a", odd frames camera "b"; frames darker than the median
    are labelled "dark", the others "bright".
    """
    images = []
    with av.open(str(vtest_path)) as container:
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24"))
            if len(images) == FRAMES:
                break
    n = len(images)
    keys = [FileKey("vtest.avi", i).encode() for i in range(n)]
    frames = PatchBatch.whole_frames(
        keys=keys, cameras=["a" if i % 2 == 0 else "b" for i in range(n)], frame_no=np.arange(n),
        pts=np.arange(n) / 10.0, wall_time=1000.0 + np.arange(n) / 10.0, size=images[0].shape[:2],
        operator="whole_frame",
    )
    batch = frames.derive(np.stack([histogram(im) for im in images]), operator="hist4")
    brightness = np.array([im.mean() for im in images])
    batch.labels = ["dark" if b < np.median(brightness) else "bright" for b in brightness]
    return batch


@pytest.fixture
def store(tmp_path: Path, vtest_patches: PatchBatch) -> Path:
    path = tmp_path / "lineage"
    with LineageStore(path) as s:
        s.write_patches(vtest_patches)
    return path


def _positions(index: ShardedIndex) -> list[int]:
    return [s["position"] for s in index.stats()["shards"]]


def test_real_features_top_k_and_threshold_equal_numpy(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=3) as index:
        assert index.apply(1, ids, x) == len(ids)
        assert index.ntotal == len(ids)
        per_shard = [s["ntotal"] for s in index.stats()["shards"]]
        assert per_shard == [int((route(ids, 3) == s).sum()) for s in range(3)]
        assert min(per_shard) > 0  # the work is really spread
        q = x[::37]
        D, I = index.search(q, 8)
        scores = q @ x.T
        expect = np.argsort(-scores, axis=1, kind="stable")[:, :8]
        np.testing.assert_allclose(D, np.take_along_axis(scores, expect, 1), rtol=1e-5)
        assert (np.sort(D, axis=1)[:, ::-1] == D).all()
        assert set(I[:, 0].tolist()) == set(ids[::37].tolist())  # each frame finds itself first
        t = 0.97  # consecutive frames of a fixed camera are near-duplicates
        lims, Dt, It = index.threshold(q, t)
        for i in range(len(q)):
            got = set(It[lims[i]:lims[i + 1]].tolist())
            assert got == set(ids[scores[i] > t].tolist())
            assert len(got) > 1
            assert (np.diff(Dt[lims[i]:lims[i + 1]]) <= 0).all()  # best first


def test_where_filters_from_the_lineage_store(tmp_path, store, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    cams = np.array(vtest_patches.cameras)
    labels = np.array(vtest_patches.labels)
    with LineageStore(store, read_only=True) as s:
        dark_b = where_ids(s, Where(label="dark", camera="b"))
        window = where_ids(s, Where(camera="a", start=1001.0, end=1002.0))
        bright = where_ids(s, Where(label="bright", start=1000.0, end=1010.0))
        assert where_ids(s, Where()) is None
        assert len(where_ids(s, Where(label="car"))) == 0
    assert set(dark_b.tolist()) == set(ids[(labels == "dark") & (cams == "b")].tolist())
    assert set(window.tolist()) == set(ids[(cams == "a") & (vtest_patches.frame_no >= 10) & (vtest_patches.frame_no < 20)].tolist())
    assert len(window) == 5
    assert set(bright.tolist()) == set(ids[(labels == "bright") & (vtest_patches.frame_no < 100)].tolist())
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:  # fills itself from DATA/lineage
        assert index.ntotal == len(ids)
        assert sum(s["replayed"] for s in index.stats()["shards"]) == len(ids)
        D, I = index.search(x[:4], 6, where_ids=dark_b)
        allowed = np.isin(ids, dark_b)
        scores = x[:4] @ x[allowed].T
        expect = ids[allowed][np.argsort(-scores, axis=1)[:, :6]]
        assert (I == expect).all()
        _, _, It = index.threshold(x[:1], -1.0, where_ids=window)
        assert sorted(It.tolist()) == sorted(window.tolist())
        a, b, _ = index.near_duplicates(0.97, where_ids=dark_b)
        assert len(a) > 0
        assert np.isin(a, dark_b).all() and np.isin(b, dark_b).all()
        held, _ = index.items(where_ids=window)
        assert held.tolist() == sorted(window.tolist())
    with pytest.raises(InputError, match="empty"):
        Where(start=5.0, end=1.0)


def test_near_duplicates_and_camera_join_equal_nested_loop(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    cams = np.array(vtest_patches.cameras)
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:
        index.apply(1, ids, x)
        got = index.near_duplicates(0.98)
        expect = nested_loop_self_join(ids, x, 0.98)
        assert len(got[0]) > 0
        np.testing.assert_array_equal(got[0], expect[0])
        np.testing.assert_array_equal(got[1], expect[1])
        np.testing.assert_allclose(got[2], expect[2], atol=1e-5)
        left, right = ids[cams == "a"], ids[cams == "b"]
        a, b, s = index.join(left, right, 0.98)
        assert len(a) > 0 and np.isin(a, left).all() and np.isin(b, right).all()
        xa = dict(zip(ids.tolist(), x))
        brute = {(int(i), int(j)) for i in left for j in right if float(xa[i] @ xa[j]) > 0.98}
        assert set(zip(a.tolist(), b.tolist())) == brute
        np.testing.assert_allclose(s, [xa[i] @ xa[j] for i, j in zip(a.tolist(), b.tolist())], atol=1e-5)
        with pytest.raises(InputError, match="not in the index"):
            index.join(np.array([12345]), ids[:3], 0.9)


def test_apply_upserts_by_id_and_every_shard_learns_the_position(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=3) as index:
        index.apply(1, ids[:1], x[:1])  # one id: two of three shards get nothing but the position
        assert _positions(index) == [1, 1, 1]
        index.apply(2, ids, x)
        index.apply(3, ids, x)  # a replay changes nothing
        assert index.ntotal == len(ids) and _positions(index) == [3, 3, 3]
        index.apply(4, ids[:5], x[100:105])  # newer vectors for the same ids replace the old ones
        assert index.ntotal == len(ids)
        held, stored = index.items(ids[:5])
        order = np.argsort(ids[:5])
        np.testing.assert_array_equal(held, ids[:5][order])
        np.testing.assert_allclose(stored, x[100:105][order], atol=1e-6)
        D, I = index.search(x[100], 2)
        assert set(I[0].tolist()) == {int(ids[0]), int(ids[100])}
        index.apply(5, ids[:0], x[:0])  # a position with nothing routed anywhere
        assert _positions(index) == [5, 5, 5]
    assert not hasattr(ShardSet, "upsert") and not hasattr(ShardSet, "remove")  # writes go through the store


def test_writer_snapshot_and_reopen_keep_every_answer(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    writer = CollectionWriter(tmp_path, local_shards, dim=DIM, shards=2)
    for rows in np.array_split(np.arange(len(ids)), 4):
        writer.write(vtest_patches.take(rows))
    assert writer.store.position == 4
    before = writer.index.search(x[:20], 5)
    before_t = writer.index.threshold(x[:3], 0.97)
    writer.close()  # snapshots every shard at position 4
    with ShardedIndex.open(tmp_path, dim=DIM, shards=2) as index:
        stats = index.stats()
        assert stats["ntotal"] == len(ids)
        assert [s["snapshot_position"] for s in stats["shards"]] == [4, 4]
        assert sum(s["replayed"] for s in stats["shards"]) == 0  # everything came from the snapshots
        after = index.search(x[:20], 5)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
        for got, want in zip(index.threshold(x[:3], 0.97), before_t):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="not 'SQ8'"):
        ShardedIndex.open(tmp_path, dim=DIM, factory="SQ8", shards=2)


def test_bad_input_leaves_every_shard_unchanged(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:
        index.apply(1, ids, x)
        bad = x[:10].copy()
        bad[7] *= 2.0  # one unnormalized row among good ones
        with pytest.raises(InputError, match="normalized"):
            index.apply(2, ids[:10] + 1, bad)
        bad[7] = np.nan
        with pytest.raises(InputError, match="NaN"):
            index.apply(2, ids[:10] + 1, bad)
        with pytest.raises(InputError, match="must be"):
            index.apply(2, ids[:10] + 1, x[:10, :128])
        with pytest.raises(InputError, match="10 ids for 9 vectors"):
            index.apply(2, ids[:10] + 1, x[:9])
        with pytest.raises(InputError, match="non-negative"):
            index.apply(2, -ids[:10], x[:10])
        with pytest.raises(InputError, match="must be"):
            index.search(np.ones((1, 3), np.float32), 3)
        with pytest.raises(InputError, match="k must be"):
            index.search(x[0], 0)
        with pytest.raises(InputError, match="finite"):
            index.threshold(x[0], float("nan"))
        assert index.ntotal == len(ids)
        assert _positions(index) == [1, 1]  # no shard learned a position from a refused write
        held, stored = index.items()
        assert set(held.tolist()) == set(ids.tolist())
        np.testing.assert_allclose(stored, x[np.argsort(ids)], atol=1e-6)


def test_where_ids_equal_a_brute_force_filter(tmp_path, vtest_patches):
    """Three cameras whose names prefix each other, two models, labels and time windows."""
    n = len(vtest_patches)
    first = replace(vtest_patches, cameras=[("cam1", "cam10", "cam2")[i % 3] for i in range(n)])
    rows = np.arange(0, n, 2)
    second = first.take(rows)  # the same frames through another model: other ids
    second.ids = np.array([patch_id(id_bytes(int(p)), "hist8", 0) for p in second.parent_ids], np.int64)
    second.models = ["hist8"] * len(rows)
    second.labels = ["dark" if i % 4 else "bright" for i in range(len(rows))]
    with LineageStore(tmp_path / "lineage") as s:
        s.write_patches(first)
        s.write_patches(second)
    both = PatchBatch.concat([first, second])
    ids, cams, labels = both.ids, np.array(both.cameras), np.array(both.labels)
    models = np.array(both.models)
    ts_us = np.round(both.wall_time * 1e6).astype(np.int64)

    def window(start=None, end=None):
        lo = -1 if start is None else round(start * 1e6)
        hi = np.iinfo(np.int64).max if end is None else round(end * 1e6)
        return (ts_us >= lo) & (ts_us < hi)

    cases = [
        (Where(label="dark", camera="cam10"), (labels == "dark") & (cams == "cam10")),
        (Where(camera="cam1", start=1003.0, end=1009.5), (cams == "cam1") & window(1003.0, 1009.5)),
        (Where(start=1002.0, end=1004.0), window(1002.0, 1004.0)),  # a skip-scan over the three cameras
        (Where(start=1020.0), window(1020.0)),
        (Where(end=1000.5), window(None, 1000.5)),
        (Where(label="bright", start=1010.0, end=1015.0), (labels == "bright") & window(1010.0, 1015.0)),
        (Where(model="hist8"), models == "hist8"),
        (Where(model="hist4", camera="cam2", end=1010.0), (models == "hist4") & (cams == "cam2") & window(None, 1010.0)),
        (Where(label="dark", model="hist8"), (labels == "dark") & (models == "hist8")),
        (Where(label="bright", model="hist4", camera="cam1", start=1001.0, end=1020.0),
         (labels == "bright") & (models == "hist4") & (cams == "cam1") & window(1001.0, 1020.0)),
        (Where(camera="cam3"), np.zeros(len(ids), bool)),
        (Where(model="clip"), np.zeros(len(ids), bool)),
    ]
    with LineageStore(tmp_path / "lineage", read_only=True) as s:
        for where, mask in cases:
            got = where_ids(s, where)
            assert got.dtype == np.int64 and (np.diff(got) > 0).all(), where
            assert got.tolist() == np.unique(ids[mask]).tolist(), where.describe()
            assert where_ids(s, Where.of({k: v for k, v in where.as_dict().items() if v is not None})).tolist() == got.tolist()
    assert sum(len(np.unique(ids[m])) > 0 for _, m in cases) >= 10  # the cases really select something
    with pytest.raises(InputError, match="unknown where field"):
        Where.of({"label": "dark", "colour": "red"})
    with pytest.raises(InputError, match="must be a string"):
        Where.of({"camera": 3})
    with pytest.raises(InputError, match="finite number"):
        Where.of({"start": True})
    with pytest.raises(InputError, match="non-empty"):
        Where(label="")
