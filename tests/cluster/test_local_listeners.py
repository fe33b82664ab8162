"""A local Ray started the project's way (``cluster.local.ensure_ray``) listens on 127.0.0.1 only,
and so does the live service on it.

The Ray runs in a fresh Python process (the test session may already hold an in-process Ray from
the ``ray_cluster`` fixture): it starts Ray, starts a task worker and an actor, has a second
driver join through the loopback address (what ``streamvision run`` does with a served Ray's
recorded address), starts ``streamvision serve``'s service (Serve's controller, its fallback
proxy, the front end's replica with its own HTTP server and Serve's internal gRPC server, a
writer), then prints the listening TCP sockets of itself and of every process under it (GCS,
raylet, dashboard head, dashboard and runtime-env agents, autoscaler monitor, workers) as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: Listeners Ray cannot move off the pod/host network, by process name: none in Ray 2.60.
#: (Every Ray server binds to 127.0.0.1 once the node IP is loopback; see ``cluster.local``.)
#: An entry reads ``"process name": "why Ray cannot rebind it"``.
EXCEPTIONS: dict[str, str] = {}

#: The servers a local start runs, each of which must be seen listening (so an empty or partial
#: scan cannot pass).
EXPECTED = {"driver", "gcs_server", "raylet", "monitor.py", "dashboard.py", "ray::DashboardAgent",
            "ray::RuntimeEnvAgent", "ray::Echo", "ray::ServeController", "ray::ProxyActor",
            "ray::ServeReplica:streamvision:QueryFrontend", "ray::WriterActor"}

PROBE = f"EXPECTED = {sorted(EXPECTED)!r}\n" + r"""
EXPECTED = set(EXPECTED)
import json, os, subprocess, sys, tempfile, time
import psutil, ray
from cluster.local import ensure_ray
from cluster.service.server import start_service

ensure_ray(num_cpus=1)

@ray.remote(num_cpus=1)
def pid():
    return os.getpid()

@ray.remote(num_cpus=0)
class Echo:
    def pid(self):
        return os.getpid()

ray.get(pid.remote())
actor = Echo.remote()
ray.get(actor.pid.remote())
joined = subprocess.run(
    [sys.executable, "-c",
     "import sys, ray; from cluster.local import ensure_ray; ensure_ray(sys.argv[1]);"
     "print(ray.get(ray.remote(lambda: 42).remote()))", ray.get_runtime_context().gcs_address],
    capture_output=True, text=True, timeout=120)
service = start_service([os.path.join(tempfile.mkdtemp(), "cams")], port=int(sys.argv[1]))
def kind(process):  # ray::<worker or agent> (less the method it runs), or the binary / Python script it runs
    if process.name().startswith("ray::"):
        return process.name().split(".")[0]
    cmd = process.cmdline()
    return os.path.basename(next((arg for arg in cmd[1:] if arg.endswith(".py")), cmd[0]))

def scan():
    me = psutil.Process()
    names = {me.pid: "driver"}
    for child in me.children(recursive=True):
        try:
            names[child.pid] = kind(child)
        except psutil.Error:
            pass
    return [{"pid": c.pid, "process": names[c.pid], "ip": c.laddr.ip, "port": c.laddr.port}
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in names]

# agents and the dashboard open their ports a while after the node registers (longer on a busy machine)
deadline = time.time() + 30
while True:
    listeners = scan()
    if EXPECTED <= {entry["process"] for entry in listeners} or time.time() > deadline:
        break
    time.sleep(0.5)
print("LISTENERS " + json.dumps({"gcs_address": ray.get_runtime_context().gcs_address,
                                  "joined": joined.stdout.strip().splitlines()[-1:] or [joined.stderr[-2000:]],
                                  "listeners": listeners}))
service.stop()
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or address).is_loopback


@pytest.fixture(scope="module")
def probe() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # the autoscaler monitor and the dashboard export metrics on fixed ports (44217, 44227), which
    # the test session's own Ray (the ray_cluster fixture) may hold: give this Ray free ones
    env["AUTOSCALER_METRIC_PORT"], env["DASHBOARD_METRIC_PORT"] = (str(_free_port()) for _ in range(2))
    done = subprocess.run([sys.executable, "-c", PROBE, str(_free_port())], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("LISTENERS ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("LISTENERS "))


def test_every_ray_listener_of_a_local_start_is_on_loopback(probe):
    listeners = probe["listeners"]
    kinds = {entry["process"] for entry in listeners}
    # the servers that matter are all there (so an empty or partial scan cannot pass)
    assert EXPECTED <= kinds, kinds
    exposed = [entry for entry in listeners
               if not _loopback(entry["ip"]) and entry["process"] not in EXCEPTIONS]
    assert exposed == [], json.dumps(exposed, indent=1)
    assert probe["gcs_address"].startswith("127.0.0.1:")


def test_a_second_driver_joins_the_loopback_ray_by_its_address(probe):
    # ray.init() would dial 127.0.0.1:PORT at the routable IP; ensure_ray(address) keeps it on loopback
    assert probe["joined"] == ["42"], probe["joined"]
