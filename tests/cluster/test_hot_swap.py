"""Hot swap on the real parts: vtest.avi through EfficientNet-Lite0 into RocksDB, heads trained
with MOP on the collection's user-labelled patches, swapped into the running pipeline.

A swap and a rollback mid-stream leave every frame processed exactly once, by exactly one
model version, as its lineage says; a featurizer swap sends the rest of the stream to a new
collection while the old one keeps its vectors and keeps answering.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cluster import hot_swap
from cluster.hot_swap import DeployError
from cluster.runtime import RunReport, run_dataflow
from operators.featurizers.color_histogram import ColorHistogram
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.index.filters import Where, where_ids
from operators.index.sharded import STORE_DIRNAME
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from operators.training.classifier import MopClassifier, model_version
from operators.training.mst import load_model_selection_table
from streamvision.api.labels import set_labels
from streamvision.api.mop import export_model_of, fit_multiple
from streamvision.api.query import Collection
from streamvision.cli.app import app
from streamvision.plan.dataflow import Dataflow

pytestmark = pytest.mark.integration
SECONDS = 12.0  # 120 frames of vtest.avi


def _features(flow: Dataflow, video: Path, end: float):
    return (flow.source(VideoFileSource(path=str(video), end=end), max_batch=4, num_cpus=0.25)
                .then(WholeFramePatches(), num_cpus=0.25)
                .then(EfficientNetLite0Featurizer(), num_cpus=1))


@pytest.fixture(scope="module")
def heads(ray_cluster, vtest_path, tmp_path_factory):
    """Two heads (two model versions) trained on user-labelled frames of a real collection."""
    root = tmp_path_factory.mktemp("swap")
    data = root / "labelled"
    flow = Dataflow("swap-train")
    _features(flow, vtest_path, 6.0).sink(StoreSink(data=str(data)), num_cpus=0.25)
    run_dataflow(flow)
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:
        frames = {pid: store.patch(pid)["frame_no"] for pid in store.row_ids()}
    early = [pid for pid, n in frames.items() if n < 30]
    set_labels(data, early, "early", by="test")
    set_labels(data, [pid for pid in frames if pid not in early], "late", by="test")
    mst = load_model_selection_table(["head_linear", "head_mlp"], {"lr": [1e-2]}, {"batch_size": [16]})
    run = fit_multiple(data, mst, 2, 2, validation=0.2, out_dir=root / "run", seed=0)
    paths = [export_model_of(run, key, root / f"head-{i}.pt") for i, key in enumerate(mst.keys)]
    return root, paths


def _run_in_thread(flow: Dataflow) -> tuple[threading.Thread, dict[str, Any]]:
    state: dict[str, Any] = {"written": 0}

    def progress(p: Any) -> None:
        state["written"] = p.written

    def target() -> None:
        try:
            state["report"] = run_dataflow(flow, progress=progress)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            state["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, state


def _wait_written(state: dict[str, Any], at_least: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while state["written"] < at_least and "error" not in state and "report" not in state:
        assert time.monotonic() < deadline, f"only {state['written']} patches written"
        time.sleep(0.05)


def _frames_by_model(data: Path) -> list[tuple[int, str]]:
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:
        return sorted((m["frame_no"], m["model"]) for m in store.patches(list(store.row_ids())))


def _paced_store_sink(data: Path, delay_s: float) -> StoreSink:
    """A store sink that takes at least ``delay_s`` per batch: the stream outlasts the deploy
    commands sent while it runs (a stream that ended first would have no pipeline to swap)."""

    class PacedStoreSink(StoreSink):
        def write(self, batch: Any) -> Any:
            time.sleep(delay_s)
            return super().write(batch)

    return PacedStoreSink(data=str(data))


def test_swap_and_rollback_mid_stream_process_every_frame_once(heads, vtest_path, tmp_path):
    _, (first, second) = heads
    v1, v2 = model_version(first), model_version(second)
    out = tmp_path / "out"
    flow = Dataflow("swap-cam")
    _features(flow, vtest_path, SECONDS).then(MopClassifier(model=str(first)), num_cpus=0.25) \
        .sink(_paced_store_sink(out, 0.15), num_cpus=0.25)  # 30 batches of 4: at least 4.5 s
    thread, state = _run_in_thread(flow)
    _wait_written(state, 24)
    swapped = hot_swap.deploy("swap-cam", "mop_classifier", {"model": str(second)})
    _wait_written(state, state["written"] + 24)
    done = CliRunner().invoke(app, ["deploy", "--rollback", "--pipeline", "swap-cam"])  # one command
    assert done.exit_code == 0, done.output
    rolled = json.loads(done.output)
    thread.join(timeout=300)
    assert "error" not in state, state.get("error")
    report: RunReport = state["report"]

    assert swapped["applied"]["old"] == v1 and swapped["applied"]["new"] == v2
    assert rolled["applied"]["old"] == v2 and rolled["applied"]["new"] == v1  # the rollback restores v1
    rows = _frames_by_model(out)
    total = int(SECONDS * 10)
    assert [n for n, _ in rows] == list(range(total))  # every frame, once
    models = [m for _, m in rows]
    changes = [i for i in range(1, total) if models[i] != models[i - 1]]
    assert len(changes) == 2 and models[0] == v1 and models[changes[0]] == v2 and models[-1] == v1
    # what the classifier replicas counted per version is what the lineage says
    assert report.versions["mop_classifier"] == {v1: models.count(v1), v2: models.count(v2)}
    assert sum(report.versions["mop_classifier"].values()) == report.frames == total
    assert [d["applied"]["new"] for d in report.deployments] == [v2, v1]
    with LineageStore(out / STORE_DIRNAME, read_only=True) as store:  # queries filter by model version
        by_v2 = where_ids(store, Where.of({"model": v2}))
        assert sorted(store.patch(int(i))["frame_no"] for i in by_v2) == list(range(changes[0], changes[1]))


def test_a_featurizer_swap_writes_into_a_new_collection(ray_cluster, vtest_path, tmp_path):
    old, new = tmp_path / "effnet", tmp_path / "histogram"
    flow = Dataflow("swap-featurizer")
    _features(flow, vtest_path, SECONDS).sink(StoreSink(data=str(old)), num_cpus=0.25)
    node = next(n.id for n in flow.nodes if n.id.startswith("efficientnet"))
    thread, state = _run_in_thread(flow)
    _wait_written(state, 24)
    with pytest.raises(DeployError, match="not comparable"):
        hot_swap.deploy("swap-featurizer", "color_histogram", {"bins": 4}, node=node)
    applied = hot_swap.deploy("swap-featurizer", "color_histogram", {"bins": 4}, node=node,
                              collection=str(new))["applied"]
    thread.join(timeout=300)
    assert "error" not in state, state.get("error")

    before, after = _frames_by_model(old), _frames_by_model(new)
    assert sorted(n for n, _ in before + after) == list(range(int(SECONDS * 10)))  # every frame, once
    assert max(n for n, _ in before) < min(n for n, _ in after)  # cut at a batch boundary
    assert {m for _, m in before} == {applied["old"]}
    assert {m for _, m in after} == {"color_histogram:b4g2"} and applied["new"] == ColorHistogram.name
    with Collection(old) as a, Collection(new) as b:  # the old collection keeps answering, with its own vectors
        assert a.stats()["dim"] == 1280 and b.stats()["dim"] == ColorHistogram(bins=4, grid=2).dim
        with LineageStore(old / STORE_DIRNAME, read_only=True) as store:
            pid = next(iter(store.row_ids()))
            query = store.vectors([pid])[0]
        hits = a.similar(query, k=3)
        assert hits[0].patch_id == pid
