"""`ray job submit -- streamvision run pipeline.yaml` against a real local head (`ray start --head`)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from streamvision.api.connect import connect

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_head(temp_dir: Path) -> None:
    """Stop only this head's processes (``ray stop`` would stop every Ray on the machine)."""
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in proc.info["cmdline"] or []):
                procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=30)


def test_ray_job_submit_runs_a_pipeline_on_a_head(vtest_path, tmp_path):
    temp_dir = Path(tempfile.mkdtemp(prefix="svray", dir="/tmp"))
    dashboard = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    data = tmp_path / "data"
    (job_dir / "pipeline.yaml").write_text(
        f"name: job\nsource: {{op: video_file, path: {vtest_path}, every: 20}}\n"
        f"steps:\n  - {{op: whole_frame}}\n  - {{op: color_histogram}}\nsink: {{op: store, data: {data}}}\n")
    # every port chosen free, so this head never clashes with another Ray on the machine
    ports = {flag: str(_free_port()) for flag in (
        "--port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
        "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port", "--ray-client-server-port")}
    started = subprocess.run(
        ["ray", "start", "--head", "--num-cpus", "2", *[x for kv in ports.items() for x in kv],
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--temp-dir", str(temp_dir),
         "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        submit = ["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(job_dir),
                  "--", "streamvision", "run", "pipeline.yaml"]
        deadline = time.time() + 300
        while True:  # the dashboard and job agent may need a moment after `ray start` returns
            done = subprocess.run(submit, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
                                  timeout=600)
            not_ready = ("No available agent", "Failed to connect to Ray")
            if done.returncode == 0 or not any(m in done.stdout + done.stderr for m in not_ready) \
                    or time.time() > deadline:
                break
            time.sleep(5)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "40 frames, 40 patches written" in done.stdout + done.stderr
    finally:
        _stop_head(temp_dir)
    with connect(data) as sv:
        assert sv.index.ntotal == 40
        assert sorted(sv.lineage(pid)[-1]["frame_no"] for pid, _ in sv.store.iter_vectors()) == list(range(0, 795, 20))
