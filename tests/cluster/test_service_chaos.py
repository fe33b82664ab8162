"""The live service under failure: kill -9 of a shard actor, of the writer and of the HTTP front end
mid-stream, then a whole restart, on the real parts; every run ends with the answers of an
uninterrupted one (up to the last float bits: a batch's BLAS scan rounds differently over a
mapped snapshot than over the same vectors read into memory, :mod:`tests.ranking`).

Its own module: one service runs per Ray cluster, and this test starts and stops its own.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import psutil
import pytest

import streamvision
from cluster.service import names
from cluster.service.serve_instance import SERVE_CONTROLLER, ingress_plan, shutdown_serve
from cluster.service.writer import find_writer
from streamvision.core.errors import ConfigError, InputError
from tests.cluster.test_service import _answers, _client, _flow, _free_port, _queries, _start
from tests.cluster.test_service import images, reference, topics  # noqa: F401  (module fixtures)
from tests.ranking import assert_same_ranking

pytestmark = pytest.mark.integration


def _kill_minus_9(actor) -> None:
    import ray

    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)


def _front_end_pid() -> int:
    """The process of the front end's Serve replica (it answers HTTP itself: direct ingress)."""
    found = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"].startswith("ray::ServeReplica:streamvision")]
    assert len(found) == 1, found
    return found[0]


def _answers_again(port: int, within_s: float) -> float:
    """Seconds until the service on ``port`` answers a query again."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        try:
            with _client(port) as client:
                client.stats()
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - refused, or a 5xx while Serve restarts the replica
            time.sleep(0.2)
    raise AssertionError(f"the service on port {port} did not answer again within {within_s}s")


def test_kill_a_shard_the_writer_and_the_front_end_mid_stream_then_restart_the_service(
        ray_cluster, broker, topics, reference, tmp_path):
    import ray

    data = tmp_path / "chaos"
    port = _free_port()
    with socket.socket() as taken:  # a port something else listens on is refused before anything starts
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            _start(data, port)
    assert names.read_record(data) is None
    service = _start(data, port)
    expected = _answers(streamvision.connect(reference), _queries(reference))
    try:
        runner = threading.Thread(target=lambda: streamvision.run(_flow(broker, topics[0], data, "chaos")))
        runner.start()
        deadline = time.monotonic() + 120
        with _client(port) as client:
            while time.monotonic() < deadline:  # wait for the first vectors, then kill mid-stream
                try:
                    if client.stats()["ntotal"] > 10:
                        break
                except InputError:
                    pass
                time.sleep(0.1)
            shard = ray.get_actor(names.shard_name(data, 0, 2), namespace=names.NAMESPACE)
            _kill_minus_9(shard)
            time.sleep(1.0)
            _kill_minus_9(find_writer(data))
            os.kill(_front_end_pid(), signal.SIGKILL)  # Serve restarts it on the same port
            assert _answers_again(port, within_s=120) >= 0
            runner.join(timeout=300)
            assert not runner.is_alive()
        streamvision.run(_flow(broker, topics[1], data, "chaos"))
        with _client(port) as client:
            assert_same_ranking(_answers(client, _queries(reference)), expected)
        connected = httpx.Client(timeout=10)  # still connected at the stop: the server closes the connection
        connected.get(f"http://127.0.0.1:{port}/v1/health").raise_for_status()
    finally:
        service.stop()
    connected.close()
    assert _time_wait_on(port)  # which holds the port for 60 s: the restart below must bind it anyway
    assert names.read_record(data) is None
    controller = _serve_controller()
    assert ingress_plan("127.0.0.1", port) == "reuse"  # stopping deleted the app only
    started = time.monotonic()
    service = _start(data, port)  # a whole restart: snapshots load, nothing replays
    try:
        with _client(port) as client:
            assert_same_ranking(_answers(client, _queries(reference)), expected)
            restart_s = time.monotonic() - started
            stats = client.stats()
            assert all(s["replayed"] == 0 for s in stats["shards"]), stats["shards"]
        assert _serve_controller() == controller  # deployed on the kept controller, answering on its port
    finally:
        service.stop()
    assert restart_s < 120


def test_serve_is_kept_for_its_port_replaced_on_another_and_someone_elses_is_reached_through_its_proxy(
        ray_cluster, tmp_path):
    from ray import serve

    data, port, other = tmp_path / "cams", _free_port(), _free_port()
    _start(data, port).stop()
    kept = _serve_controller()
    assert (ingress_plan("127.0.0.1", port), ingress_plan("127.0.0.1", other)) == ("reuse", "restart")
    service = _start(data, other)  # the idle kept Serve ingressed on `port`: a new one, on `other`
    try:
        assert _serve_controller() != kept
        assert _health(other) == {"status": "ok", "collections": ["cams"]}
        with pytest.raises(ConfigError, match="already runs on this Ray cluster"):
            _start(tmp_path / "doors", port)
    finally:
        service.stop()
    shutdown_serve()
    assert ingress_plan("127.0.0.1", port) == "start"
    serve.start(http_options={"host": "127.0.0.1", "port": other})  # Serve of another team: no record
    try:
        assert ingress_plan("127.0.0.1", other) == "proxy"
        service = _start(data, other)  # its proxy, on its port, reaches the front end
        try:
            assert _health(other) == {"status": "ok", "collections": ["cams"]}
        finally:
            service.stop()
        assert serve.status().applications == {}  # theirs stays up, our app is gone
    finally:
        serve.shutdown()


def _time_wait_on(port: int, within_s: float = 10.0) -> bool:
    """Whether a connection the server on ``port`` closed first waits in TIME_WAIT."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if any(c.status == psutil.CONN_TIME_WAIT and c.laddr and c.laddr.port == port
               for c in psutil.net_connections(kind="tcp")):
            return True
        time.sleep(0.1)
    return False


def _health(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=10).json()


def _serve_controller() -> str:
    import ray

    return ray.get_actor(SERVE_CONTROLLER, namespace="serve")._actor_id.hex()
