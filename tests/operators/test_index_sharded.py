"""ShardedIndex on real image features: exactness, where= filters from RocksDB, durability."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from operators.index.filters import Where, where_ids
from operators.index.joins import nested_loop_self_join
from operators.index.sharded import ShardedIndex
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.lineage import FileKey
from streamvision.core.patches import PatchBatch

FRAMES = 240


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


def test_real_features_top_k_and_threshold_equal_numpy(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=3) as index:
        assert index.upsert(ids, x) == len(ids)
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
        D, I = index.search(x[:4], 6, where_ids=dark_b)
        allowed = np.isin(ids, dark_b)
        scores = x[:4] @ x[allowed].T
        expect = ids[allowed][np.argsort(-scores, axis=1)[:, :6]]
        assert (I == expect).all()
        _, _, It = index.threshold(x[:1], -1.0, where_ids=window)
        assert sorted(It.tolist()) == sorted(window.tolist())
        a, b, _ = index.near_duplicates(0.97, where_ids=dark_b)
        assert np.isin(a, dark_b).all() and np.isin(b, dark_b).all()
    with pytest.raises(InputError, match="empty"):
        Where(start=5.0, end=1.0)


def test_near_duplicates_and_camera_join_equal_nested_loop(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    cams = np.array(vtest_patches.cameras)
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:
        index.upsert(ids, x)
        got = index.near_duplicates(0.98)
        expect = nested_loop_self_join(ids, x, 0.98)
        assert len(got[0]) > 0
        np.testing.assert_array_equal(got[0], expect[0])
        np.testing.assert_array_equal(got[1], expect[1])
        np.testing.assert_allclose(got[2], expect[2], atol=1e-5)
        a, b, s = index.join(ids[cams == "a"], ids[cams == "b"], 0.98)
        assert len(a) > 0 and np.isin(a, ids[cams == "a"]).all() and np.isin(b, ids[cams == "b"]).all()
        with pytest.raises(InputError, match="not in the index"):
            index.join(np.array([12345]), ids[:3], 0.9)


def test_restart_replays_log_and_snapshot_keeps_offsets(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:
        index.upsert(ids[:100], x[:100])
        index.snapshot({("frames", 0): 100})
        index.upsert(ids[100:], x[100:])  # newer than the snapshot: only in the log
        index.remove(ids[:5])
        before = index.search(x[:20], 5)
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:
        stats = index.stats()
        assert stats["ntotal"] == len(ids) - 5
        assert all(s["snapshot_offsets"] == [["frames", 0, 100]] for s in stats["shards"])
        assert sum(s["replayed"]["log"] for s in stats["shards"]) == len(ids) - 100
        after = index.search(x[:20], 5)
        assert (before[1] == after[1]).all()
    with pytest.raises(ConfigError, match="not 'SQ8'"):
        ShardedIndex.open(tmp_path, dim=x.shape[1], factory="SQ8", shards=2)


def test_removed_ids_are_not_resurrected_from_the_store(tmp_path, store, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2, store=store) as index:
        assert index.remove(ids[:7]) == 7
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2, store=store) as index:
        assert index.ntotal == len(ids) - 7
        held, _ = index.items()
        assert not np.isin(ids[:7], held).any()


def test_bad_input_leaves_every_shard_unchanged(tmp_path, vtest_patches):
    ids, x = vtest_patches.ids, vtest_patches.vectors
    with ShardedIndex.open(tmp_path, dim=x.shape[1], shards=2) as index:
        index.upsert(ids, x)
        bad = x[:10].copy()
        bad[7] *= 2.0  # one unnormalized row among good ones
        with pytest.raises(InputError, match="normalized"):
            index.upsert(ids[:10] + 1, bad)
        bad[7] = np.nan
        with pytest.raises(InputError, match="NaN"):
            index.upsert(ids[:10] + 1, bad)
        with pytest.raises(InputError, match="must be"):
            index.search(np.ones((1, 3), np.float32), 3)
        assert index.ntotal == len(ids)
        held, _ = index.items()
        assert set(held.tolist()) == set(ids.tolist())
