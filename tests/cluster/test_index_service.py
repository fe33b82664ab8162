"""The Ray vector index service: exactness, filters, shard kill and restart, joins, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cluster.index_service import VectorIndexService
from operators.index.filters import Where, where_ids
from operators.index.joins import nested_loop_join, nested_loop_self_join
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.lineage import FileKey
from streamvision.cli.index import app as cli_app
from streamvision.core.patches import PatchBatch

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
def photos(sample_dir: Path) -> PatchBatch:
    """Histogram patches of opencv-doc's real sample photos; camera = file type, label by brightness."""
    files = sorted(p for p in sample_dir.iterdir() if p.suffix in (".jpg", ".png"))
    images, names = [], []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            names.append(path.name)
    n = len(images)
    assert n >= 50
    frames = PatchBatch.whole_frames(
        keys=[FileKey(name, 0).encode() for name in names],
        cameras=[name.rsplit(".", 1)[1] for name in names], frame_no=np.zeros(n),
        pts=np.zeros(n), wall_time=100.0 + np.arange(n), size=(1, 1), operator="whole_frame",
    )
    batch = frames.derive(np.stack([histogram(im) for im in images]), operator="hist4")
    batch.labels = ["dark" if im.mean() < 110 else "bright" for im in images]
    return batch


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def service(ray_cluster, tmp_path):
    svc = VectorIndexService.open(tmp_path, DIM, shards=2, num_cpus=0.5)
    yield svc
    svc.close()


def test_top_k_threshold_batched_equal_numpy_on_photos_and_random(service, photos):
    rng = np.random.default_rng(7)
    x = np.concatenate([photos.vectors, unit(rng, 2000)])
    ids = np.concatenate([photos.ids, rng.choice(10**15, 2000, replace=False).astype(np.int64) + 1])
    assert service.upsert(ids, x) == len(ids)
    assert service.upsert(ids[:100], x[:100]) == len(ids)  # idempotent
    q = np.concatenate([photos.vectors[:20], unit(rng, 30)])  # one batch of 50 queries
    D, I = service.search(q, 10)
    scores = q @ x.T
    expect = np.argsort(-scores, axis=1)[:, :10]
    assert (I == ids[expect]).all()
    np.testing.assert_allclose(D, np.take_along_axis(scores, expect, 1), rtol=1e-5)
    lims, Dt, It = service.threshold(q, 0.3)
    for i in range(len(q)):
        assert set(It[lims[i]:lims[i + 1]].tolist()) == set(ids[scores[i] > 0.3].tolist())
    # boundary: the exact score of a stored vector against itself's neighbour is not > itself
    s = float(Dt[lims[0] + 1])  # second best of query 0
    _, _, It = service.threshold(q[:1], s)
    assert len(It) == 1
    stats = service.stats()
    assert stats["ntotal"] == len(ids) and len(stats["shards"]) == 2
    assert all(sh["ntotal"] > 0 for sh in stats["shards"])


def test_killed_shard_comes_back_with_all_its_data(service, photos):
    ids, x = photos.ids, photos.vectors
    service.upsert(ids[:30], x[:30])
    service.snapshot({("cam", 0): 30})
    service.upsert(ids[30:], x[30:])
    service.remove(ids[:3])
    before = service.search(x, 5)
    import ray

    ray.kill(service.actors[0], no_restart=False)
    ray.kill(service.actors[1], no_restart=False)
    # ray.kill is asynchronous: an old instance may still answer for a moment, so wait until
    # both restarted shards report their replay (or fail after a minute)
    deadline = time.monotonic() + 60
    while True:
        stats = service.stats()
        replayed = sum(sh["replayed"]["log"] for sh in stats["shards"])
        if replayed == len(ids) - 30 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert replayed == len(ids) - 30
    after = service.search(x, 5)
    assert (before[1] == after[1]).all()
    assert stats["ntotal"] == len(ids) - 3
    assert all(sh["snapshot_offsets"] == [["cam", 0, 30]] for sh in stats["shards"])


def test_open_replays_the_lineage_store_and_filters_by_metadata(ray_cluster, tmp_path, photos):
    with LineageStore(tmp_path / "lineage") as store:
        store.write_patches(photos)
    with LineageStore(tmp_path / "lineage", read_only=True) as store:
        dark_jpg = where_ids(store, Where(label="dark", camera="jpg"))
        late = where_ids(store, Where(start=130.0))
    cams, labels = np.array(photos.cameras), np.array(photos.labels)
    assert set(dark_jpg.tolist()) == set(photos.ids[(labels == "dark") & (cams == "jpg")].tolist())
    assert len(dark_jpg) > 3 and len(late) == len(photos) - 30
    with VectorIndexService.open(tmp_path, DIM, shards=2, num_cpus=0.5) as svc:
        assert svc.ntotal == len(photos)
        D, I = svc.search(photos.vectors[:5], 3, where_ids=dark_jpg)
        allowed = np.isin(photos.ids, dark_jpg)
        expect = photos.ids[allowed][np.argsort(-(photos.vectors[:5] @ photos.vectors[allowed].T), axis=1)[:, :3]]
        assert (I == expect).all()
        _, _, It = svc.threshold(photos.vectors[:1], -1.0, where_ids=late)
        assert sorted(It.tolist()) == sorted(late.tolist())


def test_joins_through_the_service_equal_nested_loop(service, photos):
    ids, x = photos.ids, photos.vectors
    service.upsert(ids, x)
    got = service.near_duplicates(0.8)
    expect = nested_loop_self_join(ids, x, 0.8)
    assert len(got[0]) > 0
    np.testing.assert_array_equal(got[0], expect[0])
    np.testing.assert_array_equal(got[1], expect[1])
    np.testing.assert_allclose(got[2], expect[2], atol=1e-5)
    jpg = np.array(photos.cameras) == "jpg"
    got = service.join(ids[jpg], ids[~jpg], 0.7)
    expect = nested_loop_join(ids[jpg], x[jpg], ids[~jpg], x[~jpg], 0.7)
    assert len(got[0]) > 0
    np.testing.assert_array_equal(got[0], expect[0])
    np.testing.assert_array_equal(got[1], expect[1])
    np.testing.assert_allclose(got[2], expect[2], atol=1e-5)


def test_bad_input_is_refused_and_changes_nothing(service, photos, tmp_path):
    ids, x = photos.ids, photos.vectors
    service.upsert(ids, x)
    before = service.search(x[:5], 5)
    bad = x[:4].copy()
    bad[2] *= 3
    with pytest.raises(InputError, match="L2-normalized"):
        service.upsert(ids[:4] + 7, bad)
    bad[2] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        service.upsert(ids[:4] + 7, bad)
    with pytest.raises(InputError, match=r"\(n, 256\)"):
        service.upsert(ids[:4], x[:4, :100])
    with pytest.raises(InputError, match=r"\(n, 256\)"):
        service.search(x[:1, :100], 3)
    assert service.ntotal == len(ids)
    assert (service.search(x[:5], 5)[1] == before[1]).all()
    with pytest.raises(InputError, match="index_factory"):
        VectorIndexService.open(tmp_path / "other", DIM, factory="IVF-bogus", shards=2)
    with pytest.raises(ConfigError, match="not 'SQ8'"):
        VectorIndexService.open(tmp_path, DIM, factory="SQ8", shards=2, num_cpus=0.5)


def test_append_only_service_falls_back_to_cpu_without_gpu(ray_cluster, tmp_path, photos):
    with VectorIndexService.open(tmp_path, DIM, "SQ8", shards=2, append_only=True, num_cpus=0.5) as svc:
        svc.train(photos.vectors)
        svc.upsert(photos.ids, photos.vectors)
        stats = svc.stats()
        has_gpu = ray_cluster.cluster_resources().get("GPU", 0) > 0
        assert {sh["device"] for sh in stats["shards"]} == ({"gpu"} if has_gpu else {"cpu"})
        assert all(sh["append_only"] for sh in stats["shards"])
        _, I = svc.search(photos.vectors[:10], 1)
        assert (I[:, 0] == photos.ids[:10]).mean() >= 0.9  # SQ8 codes: approximate, but close
        with pytest.raises(InputError, match="append-only"):
            svc.remove(photos.ids[:1])
        assert svc.ntotal == len(photos)


@pytest.fixture
def data_dir(tmp_path, photos) -> Path:
    """A data directory as `streamvision ingest` leaves it: manifest + lineage store."""
    with LineageStore(tmp_path / "lineage") as store:
        store.write_patches(photos)
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "dim": DIM, "factory": "Flat"}))
    return tmp_path


def run_cli(*args: str) -> dict:
    result = CliRunner().invoke(cli_app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_threshold_near_duplicates_join_with_lineage(data_dir, photos):
    ids, x = photos.ids, photos.vectors
    out = run_cli("threshold", "--data", str(data_dir), "--patch", str(ids[0]), "--t", "0.6")
    scores = x @ x[0]
    assert out["count"] == int((scores > 0.6).sum())
    assert {r["patch_id"] for r in out["results"]} == set(ids[scores > 0.6].tolist())
    top = out["results"][0]
    assert top["lineage"]["source"]["kind"] == "file" and top["lineage"]["camera"] == photos.cameras[0]
    assert (data_dir / "index-service" / "shard-0-of-2" / "index.faiss").exists()  # snapshotted after the fill

    out = run_cli("threshold", "--data", str(data_dir), "--patch", str(ids[0]), "--t", "0.6", "--camera", "png")
    assert {r["patch_id"] for r in out["results"]} == set(ids[(scores > 0.6) & (np.array(photos.cameras) == "png")].tolist())

    out = run_cli("near-duplicates", "--data", str(data_dir), "--t", "0.8", "--limit", "100000")
    expect = nested_loop_self_join(ids, x, 0.8)
    assert out["count"] == len(expect[0])
    assert {(r["a"]["patch_id"], r["b"]["patch_id"]) for r in out["results"]} == set(zip(*map(np.ndarray.tolist, expect[:2])))

    out = run_cli("join", "--data", str(data_dir), "--camera-a", "jpg", "--camera-b", "png", "--t", "0.7")
    jpg = np.array(photos.cameras) == "jpg"
    png = np.array(photos.cameras) == "png"
    expect = nested_loop_join(ids[jpg], x[jpg], ids[png], x[png], 0.7)
    assert out["count"] == len(expect[0]) > 0
    assert all(r["a"]["lineage"]["camera"] == "jpg" and r["b"]["lineage"]["camera"] == "png" for r in out["results"])

    stats = run_cli("index-stats", "--data", str(data_dir))
    assert stats["ntotal"] == len(ids)
    assert all(s["replayed"]["store"] == 0 for s in stats["shards"])  # loaded from the snapshot this time


def test_cli_bad_input_is_a_clear_error(data_dir):
    result = CliRunner().invoke(cli_app, ["threshold", "--data", str(data_dir), "--patch", "12345"])
    assert isinstance(result.exception, InputError) and "no vector stored for patch 12345" in str(result.exception)
    result = CliRunner().invoke(cli_app, ["threshold", "--data", str(data_dir)])
    assert result.exit_code != 0 and "--patch" in result.output
