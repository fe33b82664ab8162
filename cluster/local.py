"""Connecting to Ray: an existing cluster, the one a job runs in, or a new local one."""

from __future__ import annotations

import os

import ray


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Make sure this process is connected to Ray.

    Reuses a connection already made; else connects to ``address`` (or to the cluster a
    ``ray job submit`` job runs in, via ``RAY_ADDRESS``); else starts a local Ray with the
    dashboard bound to 127.0.0.1.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=False)
        return
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
