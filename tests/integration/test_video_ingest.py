"""End to end on the real vtest.avi: ingest every frame, query, lineage, reopen, bad input, CLI."""

from __future__ import annotations

import streamvision

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from operators.stores.lineage_store import LineageStore
from streamvision.api.demo import extract_frame
from streamvision.core.errors import InputError
from streamvision.plan.pipelines import video_ingest_flow
from streamvision.api.connect import connect

pytestmark = pytest.mark.integration
FRAMES = 795


@pytest.fixture(scope="module")
def ingested(ray_cluster, vtest_path, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("ingest") / "data"
    report = streamvision.run(video_ingest_flow(vtest_path, data, featurizer="histogram"))
    assert report.frames == FRAMES and not report.stopped_early
    return data


def _store_digest(data: Path) -> dict[str, frozenset[bytes]]:
    """Every key and value in the store (to prove nothing changed)."""
    with LineageStore(data / "lineage", read_only=True) as store:
        return store.contents()


def test_every_frame_becomes_a_patch_with_lineage(ingested):
    with connect(ingested) as sv:
        assert sv.index.ntotal == FRAMES
        assert sv.store.count("frames") == FRAMES
        frame_numbers = set()
        for pid, _ in sv.store.iter_vectors():
            chain = sv.lineage(pid)
            assert chain[-1]["frame"]["kind"] == "file" and chain[-1]["frame"]["file"].endswith("vtest.avi")
            frame_numbers.add(chain[-1]["frame_no"])
        assert frame_numbers == set(range(FRAMES))


@pytest.mark.parametrize("k", [30, 400, 650])
def test_query_with_frame_k_finds_frame_k_then_its_neighbours(ingested, vtest_path, tmp_path, k):
    image = extract_frame(vtest_path, k, tmp_path / f"frame{k}.png")
    with connect(ingested) as sv:
        matches = sv.similar(image, k=5)
    assert matches[0].lineage["frame_no"] == k
    assert matches[0].score == pytest.approx(1.0, abs=1e-4)
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    neighbours = [m.lineage["frame_no"] for m in matches[1:]]
    assert all(abs(n - k) <= 6 for n in neighbours), neighbours
    assert matches[0].lineage["ts"] == pytest.approx(k / 10)


def test_threshold_returns_exactly_the_vectors_above_t(ingested):
    with connect(ingested) as sv:
        ids, vectors = zip(*sv.store.iter_vectors())
        X = np.stack(vectors)
        q = X[200]
        scores = np.sort(X @ q)[::-1]
        # a threshold in the widest gap between ranks 20 and 40, so float32 summation order cannot flip a pair
        gap = int(np.argmax(scores[19:40] - scores[20:41])) + 19
        t = float(scores[gap] + scores[gap + 1]) / 2
        got = {m.patch_id for m in sv.threshold(q, t)}
        expected = {int(i) for i, s in zip(ids, X @ q) if s > t}
    assert got == expected and 20 <= len(got) <= 41


def test_reopened_store_has_everything(ingested):
    before = _store_digest(ingested)
    with connect(ingested) as sv:
        assert sv.index.ntotal == FRAMES
    assert _store_digest(ingested) == before


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated"])
def test_bad_input_leaves_the_store_as_it_was(ingested, vtest_path, tmp_path, kind):
    from tests.operators.test_video_source import write_bad_video

    before = _store_digest(ingested)
    bad = write_bad_video(kind, tmp_path, vtest_path)
    with pytest.raises(InputError):
        streamvision.run(video_ingest_flow(bad, ingested, featurizer="histogram"))
    assert _store_digest(ingested) == before


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamvision.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_query_and_lineage_json(ingested, vtest_path, tmp_path):
    image = extract_frame(vtest_path, 123, tmp_path / "q.png")
    done = _cli("query", "similar", str(image), "--data", str(ingested), "-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["query"]["k"] == 3 and doc["batch"] is False and len(doc["results"][0]) == 3
    top = doc["results"][0][0]
    assert top["lineage"]["frame_no"] == 123 and top["score"] > 0.999
    assert top["lineage"]["source"]["file"].endswith("vtest.avi")
    done = _cli("lineage", str(top["patch_id"]), "--data", str(ingested), "--json")
    assert done.returncode == 0, done.stderr
    chain = json.loads(done.stdout)["chain"]
    assert chain[0]["patch_id"] == top["patch_id"] and chain[-1]["frame"]["frame_no"] == 123
    done = _cli("lineage", "42", "--data", str(ingested), "--json")
    assert done.returncode == 2 and "no patch with id 42" in done.stderr


def test_cli_ingest_refuses_bad_input_with_one_clear_line(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello\n")
    done = _cli("ingest", str(bad), "--data", str(tmp_path / "data"))
    assert done.returncode == 2
    assert "error:" in done.stderr and "not a readable video" in done.stderr
    assert "Traceback" not in done.stderr
