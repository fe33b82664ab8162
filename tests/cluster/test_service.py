"""The live service on the real parts: Ray, Ray Serve, the embedded broker, RocksDB, FAISS, vtest.avi.

Kafka pipelines write into a served collection while it answers over HTTP; two pipelines
share one collection; kill -9 of a shard actor and of the writer mid-stream, and a whole
restart, each end with the answers of an uninterrupted run; the HTTP API's errors change
nothing; the service binds 127.0.0.1 only; embedded and HTTP clients return the same results.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil
import pytest

import streamvision
from cluster.runtime import _nice
from cluster.service import names
from cluster.service.server import start_service
from cluster.service.writer import find_writer
from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.producers import FrameProducer
from operators.producers.frame_reader import FrameReader
from operators.sinks.store_sink import StoreSink
from operators.sources.kafka_source import KafkaSource
from streamvision.api.client import ServiceClient, ServiceError
from streamvision.core.errors import ConfigError, InputError
from streamvision.plan.dataflow import SERVED_INGEST_NICE, Dataflow
from tests.ranking import assert_same_ranking

pytestmark = pytest.mark.integration
GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
TOKEN = "test-token-1234"
PER_CAMERA = 40
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def images(vtest_path):
    return [image for _, (image, _) in zip(range(4 * PER_CAMERA), FrameReader(str(vtest_path)))]


def _produce(broker, topic: str, images, cameras: tuple[str, ...]) -> int:
    with FrameProducer(broker.bootstrap_servers, topic, partitions=2) as producer:
        for c, camera in enumerate(cameras):
            chunk = images[c * PER_CAMERA:(c + 1) * PER_CAMERA]
            producer.send_frames([(im, 100.0 + i / 10) for i, im in enumerate(chunk)], camera=camera, kind="jpeg",
                                 quality=85)
    return len(cameras) * PER_CAMERA


def _flow(broker, topic: str, data: Path, group: str) -> Dataflow:
    flow = Dataflow(f"kafka:{topic}")
    source = KafkaSource(topic=topic, bootstrap_servers=broker.bootstrap_servers, group_id=group, until_end=True,
                         **GROUP_TIMING)
    (flow.source(source, num_cpus=0.25, max_batch=4)
         .then(WholeFramePatches(), num_cpus=0.25)
         .then(ColorHistogram(bins=4, grid=2), num_cpus=0.25)
         .sink(StoreSink(data=str(data)), num_cpus=0.25))
    return flow


@pytest.fixture(scope="module")
def topics(broker, images):
    """Topic "live" (cameras a, b, c) and topic "second" (camera d, other frames)."""
    _produce(broker, "live", images, ("cam-a", "cam-b", "cam-c"))
    with FrameProducer(broker.bootstrap_servers, "second", partitions=1) as producer:
        producer.send_frames([(im, 200.0 + i / 10) for i, im in enumerate(images[3 * PER_CAMERA:])], camera="cam-d",
                             kind="jpeg", quality=85)
    return "live", "second"


@pytest.fixture(scope="module")
def reference(ray_cluster, broker, topics, tmp_path_factory) -> Path:
    """Both topics ingested without a service (shards in the sink), uninterrupted."""
    data = tmp_path_factory.mktemp("reference")
    for topic in topics:
        streamvision.run(_flow(broker, topic, data, f"ref-{topic}"))
    return data


def _queries(reference: Path) -> np.ndarray:
    with streamvision.connect(reference) as sv:
        ids, x = sv.index.items()
    return x[:: max(1, len(x) // 12)]


def _answers(client, q: np.ndarray) -> list[list[tuple[int, float]]]:
    return [[(m.patch_id, m.score) for m in row] for row in client.similar(q, k=5)]


def _start(data: Path, port: int):
    return start_service([data], port=port, token=TOKEN)


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    """A running service on a fresh collection, with a token."""
    data = tmp_path_factory.mktemp("served") / "cams"
    port = _free_port()
    service = _start(data, port)
    yield service, data, port
    service.stop()


def _client(port: int, token: str | None = TOKEN) -> ServiceClient:
    return ServiceClient(f"http://127.0.0.1:{port}", token=token)


def test_pipelines_into_a_served_collection_yield_the_cores_to_its_queries(served, broker, topics):
    _, data, _ = served
    flow = _flow(broker, topics[0], data, "nice")
    assert set(_nice(flow).values()) == {SERVED_INGEST_NICE}  # its queries share these cores
    elsewhere = _flow(broker, topics[0], data.parent / "elsewhere", "nice")
    assert set(_nice(elsewhere).values()) == {None}  # not served: as Ray started the worker


def test_queries_are_answered_while_pipelines_write_and_match_the_reference(served, broker, topics, reference):
    service, data, port = served
    expected = _answers(streamvision.connect(reference), _queries(reference))
    total = len(streamvision.connect(reference).index.items()[0])
    seen: list[int] = []
    errors: list[BaseException] = []

    def pipeline(topic: str) -> None:
        try:
            streamvision.run(_flow(broker, topic, data, f"served-{topic}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=pipeline, args=(t,)) for t in topics]  # two pipelines, one collection
    for thread in threads:
        thread.start()
    with _client(port) as client:
        while any(t.is_alive() for t in threads):
            try:
                seen.append(client.stats()["ntotal"])
            except InputError:  # no vectors yet: the collection is new
                pass
            time.sleep(0.2)
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(set(seen)) > 2 and seen == sorted(seen)  # answered mid-stream, growing
        assert client.stats()["ntotal"] == total
        got = _answers(client, _queries(reference))
    assert_same_ranking(got, expected)
    with streamvision.connect(data) as embedded:  # read-only beside the running service
        assert_same_ranking(_answers(embedded, _queries(reference)), expected)
        counts = {cam: len(embedded.threshold(_queries(reference)[0], -1.0, where={"camera": cam}))
                  for cam in ("cam-a", "cam-b", "cam-c", "cam-d")}
    assert counts == {"cam-a": PER_CAMERA, "cam-b": PER_CAMERA, "cam-c": PER_CAMERA, "cam-d": PER_CAMERA}


def test_a_written_frame_is_answerable_by_the_next_query(served, images):
    service, data, port = served
    with _client(port) as client:
        before = client.stats()["ntotal"]
        frame = images[5][::2, ::2].copy()  # a new picture: a half-size frame
        from operators.base import OperatorContext
        from streamvision.core.frames import Frame, FrameBatch
        from streamvision.core.lineage import FileKey

        ops = [WholeFramePatches(), ColorHistogram(bins=4, grid=2)]
        batch = FrameBatch.from_frames([Frame(FileKey("half.png", 0), 0.0, 0.0, frame)])
        for op in ops:
            op.setup(OperatorContext())
            batch = op.process(batch)
        import ray

        ray.get(find_writer(data).write.remote(batch))
        top = client.similar(batch.vectors[0], k=1)[0]
        assert top.patch_id == int(batch.ids[0]) and top.score > 0.9999
        assert client.stats()["ntotal"] == before + 1
        assert client.lineage(top.patch_id)[-1]["frame"]["file"] == "half.png"


def test_sql_over_http_answers_like_the_embedded_client(served, reference):
    service, data, port = served
    q = _queries(reference)[0]
    memsql = "SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9 ORDER BY patch_id"
    per_camera = "SELECT camera, count(*) AS n FROM patches WHERE camera IN ('cam-a', 'cam-b') GROUP BY camera ORDER BY camera"
    with _client(port) as client, streamvision.connect(data) as embedded:
        served_ids = client.sql(memsql, q=q).column("patch_id").to_pylist()
        assert served_ids == embedded.sql(memsql, q=q).column("patch_id").to_pylist()
        assert set(served_ids) == {m.patch_id for m in client.threshold(q, 0.9)} and served_ids
        assert client.sql(per_camera).to_pylist() == embedded.sql(per_camera).to_pylist()
        with pytest.raises(InputError, match="only SELECT"):
            client.sql("DELETE FROM patches")
        with pytest.raises(InputError, match="colour"):
            client.sql("SELECT colour FROM patches")
    response = httpx.post(f"http://127.0.0.1:{port}/v1/sql", json={"sql": "SELECT count(*) AS n FROM patches"})
    assert response.status_code == 401  # the token guards SQL like every query


def test_pixels_of_kafka_frames_come_from_the_kept_messages(served, reference, images):
    service, data, port = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = {"cam-a": 0, "cam-b": PER_CAMERA, "cam-c": 2 * PER_CAMERA, "cam-d": 3 * PER_CAMERA}
    with _client(port) as client:
        matches = client.similar(_queries(reference)[0], k=3)
        for match in matches:
            assert client.lineage(match.patch_id)[-1]["pixels"] == "frame-file"
            crop = client.pixels(match.patch_id)
            original = images[first[match.lineage["camera"]] + match.lineage["frame_no"]]
            assert crop.shape == original.shape  # a whole-frame patch
            # the JPEG the camera sent, decoded again: within the codec's error of the original
            assert np.abs(crop.astype(np.int16) - original).mean() < 3.0
        pid = matches[0].patch_id
        png = httpx.get(f"http://127.0.0.1:{port}/v1/patches/{pid}/pixels", headers=auth)
        assert png.status_code == 200 and png.headers["x-sv-format"] == "frame-file"
        assert np.array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR),
                                           cv2.COLOR_BGR2RGB), client.pixels(pid))
        with pytest.raises(InputError, match="no patch with id 12345"):
            client.pixels(12345)
    assert httpx.get(f"http://127.0.0.1:{port}/v1/patches/{pid}/pixels").status_code == 401


def test_http_errors_are_400_with_a_message_and_change_nothing(served):
    service, data, port = served
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _client(port) as client:
        before = client.stats()
        dim = before["dim"]
        bad = {
            "wrong dimension": {"query": {"vector": [0.5] * (dim - 1)}},
            "NaN": {"query": {"vector": [float("nan")] * dim}},
            "unknown collection": {"query": {"vector": [0.1] * dim}, "collection": "nope"},
            "bad filter": {"query": {"vector": [0.1] * dim}, "where": {"colour": "red"}},
            "bad k": {"query": {"vector": [0.1] * dim}, "k": 0},
            "oversize image": {"query": {"image": "A" * (23 * 1024 * 1024)}},
            "not an image": {"query": {"image": base64.b64encode(b"GIF89a not really").decode()}},
            "two query fields": {"query": {"vector": [0.1] * dim, "patch_id": 3}},
        }
        for why, body in bad.items():
            r = httpx.post(f"{url}/v1/similar", content=json.dumps(body), headers=auth, timeout=60)
            assert r.status_code == 400, (why, r.status_code, r.text[:300])
            assert r.json()["error"], why
        r = httpx.post(f"{url}/v1/similar", content=b"{not json", headers=auth)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        assert httpx.post(f"{url}/v1/drop_everything", json={}, headers=auth).status_code == 404
        assert httpx.post(f"{url}/v1/similar", json={"query": {"patch_id": 1}}).status_code == 401
        assert httpx.get(f"{url}/v1/health").status_code == 200  # health needs no token
        with pytest.raises(InputError, match="must be"):
            client.similar(np.ones(dim + 1, np.float32))
        with pytest.raises(ServiceError, match="401"):
            _client(port, token="wrong").stats()
        assert client.stats()["ntotal"] == before["ntotal"]


def test_the_service_listens_on_loopback_only(served):
    service, data, port = served
    listening = [c for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    assert listening, f"nothing listens on port {port}"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    with pytest.raises(ConfigError, match="token"):
        start_service([data.parent / "other"], port=_free_port(), host="0.0.0.0")
    with pytest.raises(ConfigError, match="already runs"):
        start_service([data.parent / "other"], port=_free_port())


def test_cli_asks_the_service_found_from_the_data_directory(served, reference):
    service, data, port = served
    q = _queries(reference)[:2]
    vectors = data.parent / "q.npy"
    np.save(vectors, q)
    env = {**os.environ, "STREAMVISION_TOKEN": TOKEN}
    docs = []
    for target in (["--data", str(data)], ["--service", f"http://127.0.0.1:{port}"]):
        done = subprocess.run([sys.executable, "-m", "streamvision.cli", "query", "similar", "--vectors", str(vectors),
                               "-k", "3", "--json", *target], capture_output=True, text=True, timeout=180, env=env,
                              cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        docs.append(json.loads(done.stdout))
    with _client(port) as client:
        direct = client.answer("similar", query=q, k=3)
    assert docs[0]["results"] == docs[1]["results"] == direct["results"]
    assert docs[0]["batch"] is True and len(docs[0]["results"]) == 2


def test_bulk_import_through_the_service(served, tmp_path):
    service, data, port = served
    with _client(port) as client:
        before = client.stats()
        dim = before["dim"]
        rng = np.random.default_rng(7)
        x = rng.standard_normal((3000, dim)).astype(np.float32)
        path = tmp_path / "emb.npy"
        np.save(path, x)
        env = {**os.environ, "STREAMVISION_TOKEN": TOKEN}
        done = subprocess.run([sys.executable, "-m", "streamvision.cli", "import", str(path), "--data", str(data),
                               "--normalize", "--first-id", "900000000"], capture_output=True, text=True,
                              timeout=300, env=env, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        assert client.stats()["ntotal"] == before["ntotal"] + 3000
        top = client.similar(x[17] / np.linalg.norm(x[17]), k=1)[0]
        assert top.patch_id == 900000017
        assert top.lineage["source"] == {"file": str(path), "row": 17}
