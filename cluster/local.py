"""Connecting to Ray: an existing cluster, the one a job runs in, or a new local one."""

from __future__ import annotations

import os
from pathlib import Path

import ray

#: Worker processes a local Ray starts at once (at least; Ray's default is the CPU count).
STARTUP_CONCURRENCY = 8


def _send_token_if_any() -> None:
    """Join a token-authenticated cluster (Ray 2.60's default) with the token in ``~/.ray/auth_token``.

    Ray reads ``RAY_AUTH_MODE`` into its config when imported; like ``ray.init()`` does for a
    local cluster, switch this process to token mode when a token exists and no mode was set.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None or not (Path.home() / ".ray" / "auth_token").exists():
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: the environment variable alone
        os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


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
        _send_token_if_any()
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=False)
        return
    # Ray starts at most num_cpus worker processes at once; a service starts about nine (shards,
    # writers, Serve's controller, proxy and replica), mostly waiting on imports and disk reads.
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(max(os.cpu_count() or 1, STARTUP_CONCURRENCY)))
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
