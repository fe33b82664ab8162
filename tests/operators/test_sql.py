"""SQL over patches on collections written from the real vtest.avi.

Two collections: whole frames featurized with the colour histogram (cameras "left" and
"right"), and NanoDet-m detections (real COCO labels) featurized the same way. Every answer is
checked against the same question asked another way: the index API, or a Python scan of every
stored patch.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import streamvision
from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.query.sql import plan_sql
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from streamvision.cli.app import app
from streamvision.core.errors import InputError

VEHICLES = ("car", "truck", "bus")


def _ingest(data: Path, video: str, ops: list, parts: list[tuple[str, float, float]], every: int) -> dict[int, np.ndarray]:
    for op in ops:
        op.setup(OperatorContext())
    sink = StoreSink(data=str(data), featurizer=ops[-1].spec(), shards=2)
    sink.open()
    frames_by_id: dict[int, np.ndarray] = {}
    for camera, start, end in parts:
        source = VideoFileSource(path=str(video), every=every, start=start, end=end, camera=camera)
        source.open()
        for frames in source.read(16):
            batch = frames
            for op in ops:
                batch = op.process(batch)
            sink.write(batch)
            if len(frames_by_id) < 4 and len(batch):
                frames_by_id[int(batch.ids[0])] = frames.images[0].copy()
        source.close()
    sink.close()
    return frames_by_id


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory, vtest_path):
    data = tmp_path_factory.mktemp("sql") / "frames"
    images = _ingest(data, str(vtest_path), [WholeFramePatches(), ColorHistogram(bins=4, grid=2)],
                     [("left", 0.0, 30.0), ("right", 30.0, 60.0)], every=5)
    return data, images


@pytest.fixture(scope="module")
def objects_dir(tmp_path_factory, vtest_path):
    data = tmp_path_factory.mktemp("sql") / "objects"
    _ingest(data, str(vtest_path), [NanoDetDetector(), ColorHistogram(bins=4, grid=2)], [("cam", 0.0, 80.0)], every=40)
    return data


def _metas(data: Path) -> list[dict]:
    """The metadata of every row patch, read by a scan of the time index."""
    with LineageStore(data / "lineage", read_only=True) as store:
        return store.patches(list(store.row_ids()))


def test_the_memsql_query_runs_as_written_and_uses_the_index(frames_dir):
    data, images = frames_dir
    with streamvision.connect(data) as sv:
        pid = next(iter(images))
        table = sv.sql("SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9", q=pid)
        expected = {m.patch_id for m in sv.threshold(pid, 0.9)}
        assert set(table.column("patch_id").to_pylist()) == expected and pid in expected
        # the same statement with DuckDB computing every inner product itself (OR defeats the rewrite)
        scanned = sv.sql("SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9 OR false", q=pid)
        assert set(scanned.column("patch_id").to_pylist()) == expected
        doc = sv.answer("sql", sql="SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9", params={"q": pid})
        assert doc["plan"][0]["detail"].startswith("index range search") and doc["candidates"] == len(expected)


def test_top_k_with_filters_equals_the_similar_query_and_takes_images(frames_dir, tmp_path):
    data, images = frames_dir
    pid, image = next(iter(images.items()))
    path = tmp_path / "query.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with streamvision.connect(data) as sv:
        table = sv.sql("SELECT patch_id, camera, DOT_PRODUCT(vector, :q) AS s FROM patches WHERE camera = 'right' "
                       "ORDER BY DOT_PRODUCT(vector, :q) DESC LIMIT 5", q=str(path))
        expected = sv.similar(str(path), k=5, where={"camera": "right"})
        assert table.column("patch_id").to_pylist() == [m.patch_id for m in expected]
        assert np.allclose(table.column("s").to_pylist(), [m.score for m in expected], atol=1e-5)
        assert set(table.column("camera").to_pylist()) == {"right"}
        # a predicate the index cannot apply: more candidates fetched, DuckDB filters, still exact
        odd = sv.sql("SELECT patch_id FROM patches WHERE frame_no % 2 = 1 ORDER BY DOT_PRODUCT(vector, :q) DESC "
                     "LIMIT 3", q=pid).column("patch_id").to_pylist()
        ranked = [m.patch_id for m in sv.similar(pid, k=500)]
        frame_no = {m.patch_id: m.lineage["frame_no"] for m in sv.similar(pid, k=500)}
        assert odd == [p for p in ranked if frame_no[p] % 2 == 1][:3]


def test_explain_shows_the_rewrite(frames_dir):
    data, _ = frames_dir
    with streamvision.connect(data) as sv:
        plan = sv.sql("EXPLAIN SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.8 AND label = 'car' "
                      "AND ts >= 10", q=[0.1] * sv.dim).to_pylist()
    assert plan[0] == {"step": "candidates", "detail": "index range search: DOT_PRODUCT(vector, :q) > 0.8"}
    assert plan[1]["detail"] == "label='car' time in [9.999999, None)"
    assert "__dot_q > 0.8" in plan[2]["detail"]


def test_q2_counts_frames_with_a_vehicle_from_the_metadata_index(objects_dir):
    metas = _metas(objects_dir)
    truth = len({m["frame_no"] for m in metas if m.get("label") in VEHICLES})
    assert truth > 0
    with streamvision.connect(objects_dir) as sv:
        doc = sv.answer("sql", sql="SELECT count(DISTINCT frame_no) AS frames FROM patches "
                                   "WHERE label IN ('car', 'truck', 'bus')")
        assert doc["rows"] == [[truth]]
        assert doc["plan"][0]["detail"] == "metadata index seeks (no vectors, no pixels)"
        assert doc["candidates"] == sum(1 for m in metas if m.get("label") in VEHICLES) < len(metas)
        by_label = sv.sql("SELECT label, count(*) AS n FROM patches GROUP BY label ORDER BY label").to_pylist()
        counts: dict[str, int] = {}
        for m in metas:
            counts[m["label"]] = counts.get(m["label"], 0) + 1
        assert by_label == [{"label": k, "n": v} for k, v in sorted(counts.items())]
        buckets = sv.sql("SELECT camera, floor(ts / 20) AS bucket, count(*) AS n FROM patches WHERE label = :l "
                         "GROUP BY ALL ORDER BY ALL", l="person").to_pylist()
        assert sum(b["n"] for b in buckets) == counts["person"] and len(buckets) > 1


@pytest.mark.parametrize("statement, params, message", [
    ("SELECT colour FROM patches", {}, "colour"),
    ("SELEC patch_id FROM patches", {}, "syntax error"),
    ("DROP TABLE patches", {}, "only SELECT"),
    ("INSERT INTO patches (patch_id) VALUES (1)", {}, "only SELECT"),
    ("COPY patches TO '/tmp/out.csv'", {}, "only SELECT"),
    ("ATTACH '/tmp/x.db' AS x", {}, "only SELECT"),
    ("SELECT * FROM read_csv('/etc/passwd')", {}, "only the table `patches`"),
    ("SELECT * FROM patches, (SELECT * FROM read_text('/etc/hostname'))", {}, "only the table `patches`"),
    ("SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9", {"q": [0.5, 0.5]}, "got shape (1, 2)"),
    ("SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9", {}, "missing ['q']"),
    ("SELECT patch_id FROM patches WHERE camera = :c", {"c": "left", "x": 1}, "unknown ['x']"),
    ("SELECT 1; SELECT 2", {}, "one statement"),
])
def test_bad_statements_are_clear_errors_and_change_nothing(frames_dir, statement, params, message):
    data, _ = frames_dir
    before = _metas(data)
    with streamvision.connect(data) as sv:
        with pytest.raises(InputError, match=re.escape(message)):
            sv.sql(statement, **params)
    assert _metas(data) == before


def test_the_plan_pushes_only_what_the_index_can_apply():
    plan = plan_sql("SELECT * FROM patches WHERE label = 'car' AND camera = 'c1' AND ts > 5 AND ts < 9 "
                    "AND score > 0.5 ORDER BY DOT_PRODUCT(vector, :q) DESC LIMIT 4")
    assert plan.search == "similar" and plan.where == {"label": "car", "camera": "c1", "start": 5.0 - 1e-6,
                                                       "end": 9.0 + 1e-6}
    assert not plan.exact_pushdown and plan.k == 10_000  # score and the time bounds are re-checked by DuckDB
    exact = plan_sql("SELECT * FROM patches WHERE camera = 'c1' ORDER BY DOT_PRODUCT(vector, :q) DESC LIMIT 4 OFFSET 2")
    assert exact.exact_pushdown and exact.k == 6
    nested = plan_sql("SELECT count(*) FROM (SELECT * FROM patches WHERE label = 'car')")
    assert nested.search is None and nested.where == {}  # nothing pushed below a subquery


def test_cli_sql_prints_the_same_document(frames_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    data, images = frames_dir
    pid = next(iter(images))
    result = CliRunner().invoke(app, ["sql", "SELECT camera, count(*) AS n FROM patches GROUP BY camera ORDER BY camera",
                                      "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    metas = _metas(data)
    assert doc["rows"] == [[c, sum(1 for m in metas if m["camera"] == c)] for c in ("left", "right")]
    shown = CliRunner().invoke(app, ["sql", "SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.99",
                                     "--param", f"q={pid}", "--data", str(data)])
    assert shown.exit_code == 0 and str(pid) in shown.output
