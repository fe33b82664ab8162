"""Labels over the live service's HTTP API and the CLI beside it, kept across a restart; MOP
trained on the patches an SQL query selects among the labelled ones (real vtest.avi frames)."""

from __future__ import annotations

import json
import socket

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from cluster.runtime import run_dataflow
from cluster.service.server import start_service
from operators.featurizers.color_histogram import ColorHistogram
from operators.index.sharded import STORE_DIRNAME
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from operators.stores.labels import UserLabels
from operators.stores.lineage_store import LineageStore
from operators.training.mst import load_model_selection_table
from streamvision.api.mop import fit_multiple, labelled_patches
from streamvision.cli.app import app
from streamvision.plan.dataflow import Dataflow

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def collection(ray_cluster, vtest_path, tmp_path_factory):
    """60 real frames of vtest.avi as colour-histogram patches; their ids by frame number."""
    data = tmp_path_factory.mktemp("labels") / "cam"
    flow = Dataflow("labels-ingest")
    (flow.source(VideoFileSource(path=str(vtest_path), end=6.0), max_batch=8, num_cpus=0.25)
         .then(WholeFramePatches(), num_cpus=0.25)
         .then(ColorHistogram(bins=4, grid=2), num_cpus=0.25)
         .sink(StoreSink(data=str(data)), num_cpus=0.25))
    run_dataflow(flow)
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:
        ids = {store.patch(pid)["frame_no"]: pid for pid in store.row_ids()}
    return data, ids


def test_labels_over_http_and_the_cli_beside_the_service_survive_a_restart(collection):
    data, ids = collection
    port = _free_port()
    service = start_service([data], port=port)
    try:
        url = f"http://127.0.0.1:{port}"
        answer = httpx.post(f"{url}/v1/patches/label", json={"patch_ids": [ids[0], ids[1]], "label": "empty",
                                                             "by": "ana"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["labelled"] == 2
        bad = httpx.post(f"{url}/v1/patches/label", json={"patch_ids": [123], "label": "empty"}, timeout=60)
        assert bad.status_code == 400 and "no patch with id 123" in bad.json()["error"]
        # the CLI finds the service from the data directory (its writer holds the store)
        done = CliRunner().invoke(app, ["label", str(ids[2]), "--as", "busy", "--data", str(data), "--by", "ben"])
        assert done.exit_code == 0, done.output
        shown = httpx.get(f"{url}/v1/patches/{ids[2]}/label", timeout=60).json()
        assert shown["label"]["label"] == "busy" and shown["label"]["by"] == "ben"
    finally:
        service.stop()
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:  # after the service stopped
        labels = UserLabels(store)
        assert labels.get(ids[0])["by"] == "ana" and labels.get(ids[1])["label"] == "empty"
        assert labels.get(ids[2])["label"] == "busy"
        assert labels.get(ids[3]) is None


def test_mop_trains_on_the_labelled_patches_an_sql_query_selects(collection, tmp_path):
    data, ids = collection
    with LineageStore(data / STORE_DIRNAME) as store:
        labels = UserLabels(store)
        labels.set([ids[n] for n in range(0, 30)], "early", by="t")
        labels.set([ids[n] for n in range(30, 60)], "late", by="t")
    sql = "SELECT patch_id FROM patches WHERE frame_no >= 10 AND frame_no < 50"
    chosen = labelled_patches(data, sql=sql)
    assert len(chosen) == 40 and chosen.classes == ("early", "late") and chosen.input_shape == (ColorHistogram(bins=4, grid=2).dim,)
    mst = load_model_selection_table(["head_linear", "head_mlp"], {"lr": [3e-2]}, {"batch_size": [8]})
    run = fit_multiple(data, mst, 4, 2, sql=sql, validation=0.25, out_dir=tmp_path / "run", seed=0)
    assert run.data_bytes == chosen.take(np.arange(30)).nbytes  # the 40 selected rows less the 10 held out
    for key in mst.keys:  # every configuration learns from them
        loss = {r["epoch"]: r["train_loss"] for r in run.results if r["model"] == key}
        assert loss[4] < loss[1]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["classes"] == ["early", "late"]
