"""The embedded Tansu broker: start, readiness, port clashes, detached start/status/stop, CLI."""

from __future__ import annotations

import socket

import pytest
from kafka import KafkaAdminClient
from typer.testing import CliRunner

from cluster import broker as broker_mod
from cluster.broker import BrokerError, EmbeddedBroker, broker_ready, read_status, stop_recorded
from streamvision.cli.kafka import broker_app


def test_context_manager_runs_a_reachable_broker_on_localhost(tmp_path):
    with EmbeddedBroker(state_dir=tmp_path) as broker:
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            assert admin.list_topics() == []
        finally:
            admin.close()
        assert broker.is_running()
        assert (tmp_path / "broker.pid").read_text().strip() == str(broker.pid)
        assert "listening on: tcp://127.0.0.1:" in (tmp_path / "broker.log").read_text()
        assert read_status(tmp_path).running
    assert not broker.is_running()
    assert not broker_ready(f"127.0.0.1:{port}", timeout_s=0.5)
    assert not (tmp_path / "broker.pid").exists()


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedBroker(state_dir=tmp_path, port=port).start()


def test_tansu_exiting_zero_on_a_clash_is_detected(tmp_path, monkeypatch):
    """Skip the up-front port check so the real Tansu hits the clash and exits with status 0."""
    with EmbeddedBroker(state_dir=tmp_path / "first") as first:
        monkeypatch.setattr(broker_mod, "port_in_use", lambda port: False)
        second = EmbeddedBroker(state_dir=tmp_path / "second", port=first.port)
        with pytest.raises(BrokerError, match="already in use"):
            second.start()
        assert not second.is_running()
        assert first.is_running() and broker_ready(first.bootstrap_servers)


def test_detached_broker_is_found_and_stopped_by_state_dir(tmp_path):
    broker = EmbeddedBroker(state_dir=tmp_path).start(detach=True)
    try:
        status = read_status(tmp_path)
        assert status.running and status.pid == broker.pid and status.port == broker.port
        with pytest.raises(BrokerError, match="already runs"):
            EmbeddedBroker(state_dir=tmp_path).start()
    finally:
        assert stop_recorded(tmp_path)
    assert not read_status(tmp_path).running
    assert not stop_recorded(tmp_path)


def test_cli_start_status_stop(tmp_path):
    runner = CliRunner()
    args = ["--state-dir", str(tmp_path)]
    started = runner.invoke(broker_app, ["start", *args])
    try:
        assert started.exit_code == 0, started.output
        servers = started.output.strip().splitlines()[-1]
        assert servers.startswith("127.0.0.1:") and broker_ready(servers)
        status = runner.invoke(broker_app, ["status", *args])
        assert status.exit_code == 0 and "broker running" in status.output
    finally:
        stopped = runner.invoke(broker_app, ["stop", *args])
    assert stopped.exit_code == 0 and "broker stopped" in stopped.output
    after = runner.invoke(broker_app, ["status", *args])
    assert after.exit_code == 1 and "no broker recorded" in after.output
