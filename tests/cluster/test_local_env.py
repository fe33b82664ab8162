"""``ensure_ray(env=...)``: a local Ray started with environment variables runs every process with
them (how ``streamvision serve`` gives Ray Serve its direct-ingress settings without a runtime_env),
leaves the driver's own environment as it was, and records them for :func:`local_ray_env`.

The Ray runs in a fresh Python process: the test session already holds an in-process Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, os, ray
from cluster.local import ensure_ray, local_ray_env

ensure_ray(num_cpus=1, env={"SV_PROBE_SETTING": "on", "SV_PROBE_KEPT": "theirs"})

@ray.remote(num_cpus=0)
class Probe:
    def environ(self, names):
        return {name: os.environ.get(name) for name in names}

names = ["SV_PROBE_SETTING", "SV_PROBE_KEPT"]
print(json.dumps({"worker": ray.get(Probe.remote().environ.remote(names)),
                  "driver": {name: os.environ.get(name) for name in names},
                  "recorded": local_ray_env()}))
ray.shutdown()
print(json.dumps({"after_shutdown": local_ray_env()}))
"""


def test_a_local_ray_runs_its_workers_with_the_environment_it_was_given() -> None:
    env = {**os.environ, "SV_PROBE_KEPT": "mine"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    seen, after = lines
    assert seen["worker"] == {"SV_PROBE_SETTING": "on", "SV_PROBE_KEPT": "theirs"}
    assert seen["driver"] == {"SV_PROBE_SETTING": None, "SV_PROBE_KEPT": "mine"}  # put back after the start
    assert seen["recorded"] == {"SV_PROBE_SETTING": "on", "SV_PROBE_KEPT": "theirs"}
    assert after == {"after_shutdown": {}}  # no Ray, nothing known of its environment
