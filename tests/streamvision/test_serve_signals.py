"""``streamvision serve`` (and ``demo --serve``) on its own local Ray, stopped by a signal to its
whole process group.

``kill -- -PGID`` and systemd's default ``KillMode=control-group`` send SIGTERM to Ray's
processes too. The service must then leave at once with one ``error:`` line (no 60 s wait for
a dead GCS, no abort), and the next start must answer everything it had written (whatever
the shards' snapshots lack is replayed from RocksDB). The CLI runs as subprocesses in a
session of their own, each starting a Ray of its own beside the test session's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from streamvision.api.client import ServiceClient
from tests.cluster.test_service import _free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DIM = 32
FIRST_ID, LATER_ID = 1, 100_000
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the CLI starts its own Ray


def _cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "streamvision.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _import(tmp: Path, data: Path, x: np.ndarray, first_id: int) -> None:
    path = tmp / f"emb-{first_id}.npy"
    np.save(path, x)
    _cli("import", str(path), "--data", str(data), "--first-id", str(first_id))


def _serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    """The service in a new session (its own process group), once it printed that it serves."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamvision.cli", "serve", "--data", str(data),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=ENV,
                                start_new_session=True)
    deadline = time.monotonic() + 240
    while "serving" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.5)
    return proc


def _still_running(pids: list[int], timeout: float) -> list[str]:
    """The processes of ``pids`` still running after ``timeout`` s, by name."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(p.cmdline())[:80])
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_sigterm_to_the_whole_process_group_exits_at_once_and_the_restart_replays_what_it_wrote(tmp_path):
    data, port, log = tmp_path / "cams", _free_port(), tmp_path / "serve.log"
    first, later = _unit(400, seed=1), _unit(300, seed=2)
    _import(tmp_path, data, first, FIRST_ID)  # no service yet: written and snapshotted directly

    proc = _serve(data, port, log)
    group = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]  # Ray's GCS, raylet, workers
    _import(tmp_path, data, later, LATER_ID)  # through the service
    os.killpg(proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = proc.wait(timeout=45)  # without the watch: a 60 s wait for the dead GCS, then an abort
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 2, log.read_text()[-2000:]
    assert time.monotonic() - signalled < 30
    assert "Ray's processes stopped under the service" in log.read_text()
    assert _still_running(group, timeout=15) == []

    log = tmp_path / "serve-again.log"
    proc = _serve(data, port, log)
    try:
        with ServiceClient(f"http://127.0.0.1:{port}") as client:
            assert client.stats()["ntotal"] == len(first) + len(later)
            assert [row[0].patch_id for row in client.similar(later[[0, 299]], k=1)] == [LATER_ID, LATER_ID + 299]
            assert client.similar(first[7], k=1)[0].patch_id == FIRST_ID + 7
    finally:
        proc.send_signal(signal.SIGTERM)  # to the service alone: a clean stop
        assert proc.wait(timeout=120) == 0
    assert log.read_text().rstrip().endswith("stopped")


def test_the_serving_demo_leaves_at_once_when_a_signal_to_its_group_stops_its_ray(tmp_path):
    port, log = _free_port(), tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamvision.cli", "demo", "--data", str(tmp_path / "demo"),
                                 "--featurizer", "histogram", "--limit", "20", "--port", str(port), "--serve"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        code = proc.wait(timeout=45)  # without the watch: a 60 s wait for the dead GCS, then an abort
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 2, log.read_text()[-2000:]
    assert time.monotonic() - signalled < 30
    assert "Ray's processes stopped under the service" in log.read_text()
