"""The query engine and the embedded client over a collection written by a real pipeline.

vtest.avi is decoded with PyAV (VideoFileSource), cut into whole-frame patches and
featurized with the colour histogram, in this process, into a StoreSink: the first 30 s
as camera "left", the next 30 s as camera "right". Queries then come as image files, RGB
arrays, JPEG bytes, patch ids, vectors and batches, embedded (``streamvision.connect``)
and through :meth:`CollectionQueries.answer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

import streamvision
from operators.base import OperatorContext
from operators.featurizers.color_histogram import ColorHistogram
from operators.index.joins import nested_loop_self_join
from operators.index.sharded import ShardedIndex, layout
from operators.patches.whole_frame import WholeFramePatches
from operators.query.engine import CollectionQueries
from operators.query.json_form import decode_query, encode_query
from operators.sinks.store_sink import StoreSink, read_manifest
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from streamvision.api.query import Collection, Match
from streamvision.core.errors import InputError

EVERY = 3
OWN = object()  # stands for a patch id of the collection in the parameters below
CAMERAS = (("left", 0.0, 30.0), ("right", 30.0, 60.0))


@dataclass
class Ingested:
    data: Path
    video: str
    ids: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    frame_no: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    images: dict[int, np.ndarray] = field(default_factory=dict)  # patch id -> RGB frame, a few
    writes: int = 0

    def arrays(self):
        return (np.array(self.ids, np.int64), np.concatenate(self.vectors), np.array(self.cameras),
                np.array(self.frame_no), np.array(self.ts))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, vtest_path) -> Ingested:
    out = Ingested(tmp_path_factory.mktemp("collection") / "vtest", str(vtest_path))
    whole, hist = WholeFramePatches(), ColorHistogram(bins=4, grid=2)
    for op in (whole, hist):
        op.setup(OperatorContext())
    sink = StoreSink(data=str(out.data), featurizer=hist.spec(), shards=2)
    sink.open()
    for camera, start, end in CAMERAS:
        source = VideoFileSource(path=str(vtest_path), every=EVERY, start=start, end=end, camera=camera)
        source.open()
        for frames in source.read(32):
            patches = hist.process(whole.process(frames))
            assert sink.write(patches) == len(frames)
            out.writes += 1
            out.ids += patches.ids.tolist()
            out.vectors.append(patches.vectors)
            out.cameras += patches.cameras
            out.frame_no += patches.frame_no.tolist()
            out.ts += patches.pts.tolist()
            for i in (0, len(frames) // 2):
                out.images[int(patches.ids[i])] = frames.images[i].copy()
        source.close()
    sink.close()
    return out


@pytest.fixture(scope="module")
def collection(ingested):
    with streamvision.connect(ingested.data) as opened:
        yield opened


@pytest.fixture(scope="module")
def engine(ingested):
    """The engine by hand: a read-only store, in-process shards, the manifest."""
    store = LineageStore(layout(ingested.data)[1], read_only=True)
    manifest = read_manifest(ingested.data)
    index = ShardedIndex.open(ingested.data, manifest["dim"], manifest["factory"], manifest["shards"])
    yield CollectionQueries("vtest", store, index, manifest)
    index.close()
    store.close()


def _picks(ingested, n=4):
    """A few frames spread over both cameras: (patch id, RGB image)."""
    items = sorted(ingested.images.items(), key=lambda kv: ingested.ids.index(kv[0]))
    return [items[i] for i in np.linspace(0, len(items) - 1, n).astype(int)]


def test_the_pipeline_wrote_a_collection_that_records_its_featurizer(ingested, collection):
    ids, x, cameras, _, _ = ingested.arrays()
    assert len(ids) == 200 and set(cameras) == {"left", "right"}
    stats = collection.stats()
    assert isinstance(collection, Collection)
    assert stats["ntotal"] == len(ids) and stats["dim"] == 256 and stats["factory"] == "Flat"
    assert stats["featurizer"] == {"op": "color_histogram", "options": {"bins": 4, "grid": 2}}
    assert stats["position"] == ingested.writes
    assert sum(s["replayed"] for s in stats["shards"]) == 0  # the sink snapshotted at close
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_an_image_path_an_rgb_array_jpeg_bytes_and_a_patch_id_find_the_frame_itself(
        tmp_path, ingested, collection):
    for pid, image in _picks(ingested):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        path = tmp_path / f"{pid}.png"
        assert cv2.imwrite(str(path), bgr)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        for query in (str(path), path, image, jpeg.tobytes(), pid):
            matches = collection.similar(query, k=5)
            assert len(matches) == 5 and all(isinstance(m, Match) for m in matches)
            assert matches[0].patch_id == pid, type(query)
            assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
        for query in (path, image, pid):  # lossless: the very same vector
            assert collection.similar(query, k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_batch_gives_one_result_list_per_row_equal_to_the_single_rows(ingested, collection, engine):
    ids, x, _, _, _ = ingested.arrays()
    rows = x[[3, 77, 150]]
    batch = collection.similar(rows, k=6)
    assert len(batch) == 3 and all(len(r) == 6 for r in batch)
    for r in range(3):
        single = collection.similar(rows[r], k=6)
        assert [(m.patch_id, m.score) for m in batch[r]] == [(m.patch_id, m.score) for m in single]
    assert [r[0].patch_id for r in batch] == ids[[3, 77, 150]].tolist()
    assert engine.answer("similar", {"query": rows, "k": 6})["batch"] is True
    assert engine.answer("similar", {"query": rows[0], "k": 6})["batch"] is False
    one = collection.similar(rows[:1], k=2)  # (1, d) is a batch of one
    assert len(one) == 1 and len(one[0]) == 2
    scores = rows @ x.T
    for r in range(3):
        np.testing.assert_allclose([m.score for m in batch[r]], np.sort(scores[r])[::-1][:6], atol=1e-5)


def test_threshold_counts_are_exact(ingested, collection, engine):
    ids, x, cameras, _, ts = ingested.arrays()
    q = x[[10, 120]]
    scores = q @ x.T
    for t in (0.9, 0.98, 0.995):
        doc = engine.answer("threshold", {"query": q, "t": t, "limit": 3})
        assert doc["counts"] == [int((s > t).sum()) for s in scores]
        assert [len(r) for r in doc["results"]] == [min(3, int((s > t).sum())) for s in scores]
        for r in range(2):
            want = ids[scores[r] > t][np.argsort(-scores[r][scores[r] > t], kind="stable")]
            assert {m["patch_id"] for m in doc["results"][r]} <= set(want.tolist())
            assert doc["results"][r][0]["patch_id"] == ids[[10, 120][r]]
    assert len(collection.threshold(q[0], 0.98)) == int((scores[0] > 0.98).sum())
    window = (cameras == "right") & (ts >= 40.0) & (ts < 50.0)
    hits = collection.threshold(q[1], 0.9, where={"camera": "right", "start": 40.0, "end": 50.0})
    assert sorted(m.patch_id for m in hits) == sorted(ids[window & (scores[1] > 0.9)].tolist())
    assert len(hits) > 0


def test_the_lineage_of_a_match_goes_down_to_the_frame_and_its_file_position(ingested, collection):
    ids, _, cameras, frame_no, ts = ingested.arrays()
    pid, image = _picks(ingested)[2]
    i = ingested.ids.index(pid)
    match = collection.similar(image, k=1)[0]
    assert match.patch_id == pid
    source = {"kind": "file", "file": ingested.video, "frame_no": int(frame_no[i])}
    assert match.lineage["source"] == source
    assert match.lineage["camera"] == cameras[i] and match.lineage["frame_no"] == frame_no[i]
    assert match.lineage["ts"] == pytest.approx(ts[i]) and match.lineage["model"] == "color_histogram:b4g2"
    chain = collection.lineage(match.patch_id)
    assert [link.get("model") for link in chain[:2]] == ["color_histogram:b4g2", "whole_frame"]
    assert chain[0]["patch_id"] == pid and chain[0]["parent"] == chain[1]["patch_id"]
    assert chain[1]["bbox"] == [0.0, 0.0, 768.0, 576.0]
    assert chain[-1]["frame"] == source and chain[-1]["camera"] == cameras[i]
    assert frame_no[i] % EVERY == 0 and chain[-1]["ts"] == pytest.approx(frame_no[i] / 10.0)


def test_near_duplicates_and_a_camera_join_equal_nested_loops(ingested, engine):
    ids, x, cameras, _, _ = ingested.arrays()
    left = cameras == "left"
    doc = engine.answer("near_duplicates", {"t": 0.995, "where": {"camera": "left"}, "limit": 10_000})
    a, b, s = nested_loop_self_join(ids[left], x[left], 0.995)
    assert doc["count"] == len(a) > 0
    assert {(p["a"]["patch_id"], p["b"]["patch_id"]) for p in doc["results"]} == set(zip(a.tolist(), b.tolist()))
    doc = engine.answer("join", {"left": {"camera": "left"}, "right": {"camera": "right"}, "t": 0.99, "limit": 5})
    pairs = x[left] @ x[~left].T
    assert doc["count"] == int((pairs > 0.99).sum()) > 0
    assert len(doc["results"]) == 5
    best = np.sort(pairs.ravel())[::-1][:5]
    np.testing.assert_allclose([p["score"] for p in doc["results"]], best, atol=1e-5)
    assert all(p["a"]["lineage"]["camera"] == "left" and p["b"]["lineage"]["camera"] == "right"
               for p in doc["results"])


@pytest.mark.parametrize("kind, params, message", [
    ("similar", {"query": np.full(100, 0.1, np.float32)}, "must be"),
    ("similar", {"query": np.full(256, np.nan, np.float32)}, "NaN"),
    ("similar", {"query": np.full(256, 1.0, np.float32)}, "normalized"),
    ("similar", {"query": np.full((2, 3, 256), 0.0625, np.float32)}, "query vector"),
    ("similar", {"query": "x" * 3 + ".png"}, "not found"),
    ("similar", {"query": b"\x89PNG not really"}, "readable image"),
    ("similar", {"query": np.zeros((8, 8, 4), np.uint8)}, "RGB"),
    ("similar", {"query": True}, "boolean"),
    ("similar", {"query": 12345}, "no vector stored for patch 12345"),
    ("similar", {"query": OWN, "k": 0}, "k must be"),
    ("similar", {"query": OWN, "k": True}, "k must be"),
    ("similar", {"query": OWN, "k": 10_001}, "k must be"),
    ("similar", {"query": OWN, "where": {"colour": "red"}}, "unknown where field"),
    ("similar", {"query": OWN, "where": {"start": "noon"}}, "finite number"),
    ("similar", {"query": OWN, "kk": 3}, "bad parameters"),
    ("similar", {}, "bad parameters"),
    ("threshold", {"query": OWN, "t": float("nan")}, "finite"),
    ("threshold", {"query": OWN, "t": "0.5"}, "finite"),
    ("join", {"left": None, "right": {"camera": "left"}, "t": 0.9}, "filter on each side"),
    ("lineage", {"patch_id": 12345}, "no patch with id 12345"),
    ("lineage", {"patch_id": "7"}, "integer"),
    ("nearest", {"query": OWN}, "unknown query 'nearest'"),
])
def test_bad_queries_raise_input_error_and_change_nothing(ingested, engine, kind, params, message):
    params = {k: (ingested.ids[0] if v is OWN else v) for k, v in params.items()}
    before = engine.answer("stats", {})
    with pytest.raises(InputError, match=message):
        engine.answer(kind, params)
    assert engine.answer("stats", {}) == before


def test_the_embedded_client_refuses_a_directory_without_vectors(tmp_path):
    with pytest.raises(InputError, match="holds no indexed vectors"):
        streamvision.connect(tmp_path)


# ---------------------------------------------------------------------- the JSON form of a query
def test_json_forms_round_trip(tmp_path, ingested, engine):
    ids, x, _, _, _ = ingested.arrays()
    vector = decode_query(json.loads(json.dumps(encode_query(x[5]))))
    np.testing.assert_array_equal(vector, x[5])
    batch = decode_query(json.loads(json.dumps(encode_query(x[:3]))))
    assert batch.shape == (3, 256) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, x[:3])
    assert decode_query(json.loads(json.dumps(encode_query(np.int64(ids[4]))))) == ids[4]
    pid, image = _picks(ingested)[1]
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert decode_query(json.loads(json.dumps(encode_query(jpeg.tobytes())))) == jpeg.tobytes()
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert decode_query(encode_query(path)) == path.read_bytes()
    png = decode_query(encode_query(image))  # an RGB array travels as a lossless PNG
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR),
                                               cv2.COLOR_BGR2RGB), image)
    for form in (encode_query(image), encode_query(path), encode_query(pid), encode_query(x[ids.tolist().index(pid)])):
        assert engine.answer("similar", {"query": decode_query(form), "k": 1})["results"][0][0]["patch_id"] == pid


@pytest.mark.parametrize("form, message", [
    ({"vector": [0.6, 0.8], "patch_id": 3}, "one of"),
    ({}, "one of"),
    ([0.6, 0.8], "one of"),
    ({"vectr": [0.6, 0.8]}, "unknown query field"),
    ({"vector": [0.6, "a"]}, "numbers only"),
    ({"vector": ["0.6", "0.8"]}, "numbers only"),
    ({"vector": [True, False]}, "numbers only"),
    ({"vector": [0.6, None]}, "numbers only"),
    ({"vector": [10 ** 400, 0.0]}, "numbers only"),
    ({"vector": "0.6,0.8"}, "list of numbers"),
    ({"vector": [[0.6, 0.8]]}, "flat list"),
    ({"vectors": [[0.6, 0.8], [1.0]]}, "numbers only"),
    ({"vectors": [[True, False]]}, "numbers only"),
    ({"vectors": []}, "1 to 4096"),
    ({"vectors": [0.6, 0.8]}, "equal-length lists"),
    ({"image": "not base64!"}, "not valid base64"),
    ({"image": 12}, "base64 string"),
    ({"patch_id": True}, "non-negative integer"),
    ({"patch_id": -1}, "non-negative integer"),
    ({"patch_id": 3.0}, "non-negative integer"),
])
def test_json_forms_refuse_bad_input(form, message):
    with pytest.raises(InputError, match=message):
        decode_query(form)


def test_encode_refuses_what_is_no_query(tmp_path):
    with pytest.raises(InputError, match="boolean"):
        encode_query(True)
    with pytest.raises(InputError, match="not found"):
        encode_query(tmp_path / "missing.png")
    with pytest.raises(InputError, match=r"\(d,\) or \(n, d\)"):
        encode_query(np.zeros((2, 2, 2), np.float32))
