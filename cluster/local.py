"""Connecting to Ray: an existing cluster, the one a job runs in, or a new local one."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import ray

#: Worker processes a local Ray starts at once (at least; Ray's default is the CPU count).
STARTUP_CONCURRENCY = 8
#: Ray's setting of the niceness its workers start at (15 by default).
WORKER_NICENESS_ENV = "RAY_worker_niceness"


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


@contextmanager
def _on_loopback(enabled: bool = True) -> Iterator[None]:
    """Run a ``ray.init()`` with 127.0.0.1 as this node's IP, so that a local Ray listens on loopback only.

    Every Ray listener (GCS, raylet, object manager, dashboard and runtime-env agents, workers,
    metrics exporters) binds to 127.0.0.1 when the node IP is loopback, and Ray takes loopback as
    the node IP when its "cluster mode" is off (Ray's default on macOS and Windows, read from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` at import). ``ray.init()`` turns a loopback
    ``_node_ip_address`` or address into the routable IP, so the mode is switched off for the
    call in this process (a later connection to a remote cluster needs the real IP) and for good
    in the processes Ray spawns. A value the user set is left alone:
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` keeps Ray's Linux behaviour (all interfaces).
    """
    from ray._private import ray_constants

    switch = getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    if not enabled or os.environ.get(switch) is not None or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    cluster_mode, os.environ[switch], ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, "0", False
    try:
        yield
    finally:
        os.environ.pop(switch, None)
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode


def _loopback_only(address: str) -> bool:
    """Whether ``address`` (``host:port``) is a Ray on this machine listening on 127.0.0.1 only.

    ``ray.init()`` dials a loopback address at this machine's routable IP; a Ray started by
    :func:`ensure_ray` does not answer there (a KubeRay head's ``RAY_ADDRESS=127.0.0.1:6379`` does).
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit() or host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        return False
    from ray._private.services import resolve_ip_for_localhost

    try:
        with socket.create_connection((resolve_ip_for_localhost(host.strip("[]")), int(port)), timeout=1):
            return False
    except OSError:
        return True


#: ``(GCS address, environment)`` of the local Ray this process started last (:func:`ensure_ray`).
_started: tuple[str, dict[str, str]] | None = None


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, env: Mapping[str, str] | None = None) -> None:
    """Make sure this process is connected to Ray.

    Reuses a connection already made; else connects to ``address`` (or to the cluster a
    ``ray job submit`` job runs in, via ``RAY_ADDRESS``); else starts a local Ray that listens
    on 127.0.0.1 only, every process of which (its workers included) runs with the environment
    variables ``env`` (:func:`local_ray_env`). A connection to an existing Ray ignores ``env``.
    """
    global _started
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address or os.environ.get("RAY_ADDRESS"):
        _send_token_if_any()
        target = address or os.environ["RAY_ADDRESS"]
        with _on_loopback(_loopback_only(target)):  # a Ray started below, by another process
            ray.init(address=target, log_to_driver=False)
        return
    # Ray starts at most num_cpus worker processes at once; a service starts about nine (shards,
    # writers, Serve's controller, proxy and replica), mostly waiting on imports and disk reads.
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(max(os.cpu_count() or 1, STARTUP_CONCURRENCY)))
    # Ray prestarts one idle worker per CPU for the first driver, which on a small machine takes
    # the cores the actors being created need (1.8 s of a 4 s start on 2 cores); actors start their own.
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    # Ray starts workers at niceness 15, below its own processes. Here they start at Ray's own 0,
    # and batch work lowers itself instead: pipelines writing into a served collection run at 19
    # (cluster.runtime), so that the service's front end, shards and writer go first on shared
    # cores (a top-10 query under live ingest: p50 42 -> 22 ms, p99 126 -> 66 ms on 2 cores).
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    env = dict(env or {})
    with _on_loopback(), _environment(env):  # Ray's processes inherit this process's environment
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    _started = (ray.get_runtime_context().gcs_address, env)


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in this process's environment within the block (what it replaced is put back)."""
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def local_ray_env() -> dict[str, str]:
    """The ``env`` every process of the Ray this process is connected to runs with: what
    :func:`ensure_ray` gave the local Ray it started; empty for any other Ray (unknown)."""
    if _started is None or not ray.is_initialized() or ray.get_runtime_context().gcs_address != _started[0]:
        return {}
    return dict(_started[1])


def cluster_capacity(address: str | None = None) -> tuple[float, float]:
    """``(CPUs, GPUs)`` of the Ray cluster this process uses (:func:`ensure_ray` first): what a
    graph sized to the machine or the cluster (``streamvision ingest``) may reserve."""
    ensure_ray(address)
    have = ray.cluster_resources()
    return float(have.get("CPU", 0.0)), float(have.get("GPU", 0.0))


def own_ray_stopped() -> bool:
    """Whether this process started a local Ray (:func:`ensure_ray`) whose GCS server or raylet
    has exited since. A signal sent to the whole process group (``kill -- -PGID``, systemd's
    default ``KillMode=control-group``) reaches Ray's processes too; a driver call into Ray then
    waits 60 s for the GCS and aborts the process."""
    node = ray._private.worker._global_node  # a connection to someone else's Ray owns no processes
    if node is None:
        return False
    from ray._private import ray_constants

    vital = {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET}
    return any(kind in vital for kind, _ in node.dead_processes())


@contextmanager
def watching_own_ray(on_stopped: Callable[[], None], poll_s: float = 0.5) -> Iterator[None]:
    """Within the block, call ``on_stopped`` on a daemon thread once :func:`own_ray_stopped`
    (Ray shut down after the block, on purpose, is not reported)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            if own_ray_stopped() and not done.is_set():
                on_stopped()
                return

    threading.Thread(target=watch, name="watch-own-ray", daemon=True).start()
    try:
        yield
    finally:
        done.set()
