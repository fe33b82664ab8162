"""The Ray Serve instance the service deploys its front end on: started, kept, reused.

Serve's controller is a detached actor of the Ray cluster. The service starts it with direct
ingress on ``--port`` (:mod:`cluster.service.ingress`) and records that port in the cluster's
key-value store. Stopping the service deletes its application only, as ``serve run`` leaves
Serve running: the next service on the same cluster and port deploys its front end on the kept
controller, and a restart skips the controller's and the fallback proxy's start (on 2 cores with
1 M vectors, a restart on a running cluster went 16.3 -> 9.5 s, ``benchmarks/live.py``). What
the next service finds decides how it starts (:func:`ingress_plan`).
"""

from __future__ import annotations

import json
from typing import Literal

import ray
from ray import serve
from ray.experimental import internal_kv

#: The name Ray Serve gives its controller actor (in the ``serve`` namespace).
SERVE_CONTROLLER = "SERVE_CONTROLLER_ACTOR"
#: Where the service records the direct-ingress address of a Serve controller it started.
KV_NAMESPACE = b"streamvision"
KV_KEY = b"serve-direct-ingress"

#: ``start``: no Serve runs, start one with direct ingress; ``reuse``: the kept one ingresses
#: directly on this address; ``restart``: a kept one on another address, serving nothing (stopped,
#: then started anew); ``proxy``: someone else's Serve, reached through its proxy on its port.
Plan = Literal["start", "reuse", "restart", "proxy"]


def _controller_id() -> str | None:
    """The actor id of this Ray cluster's Serve controller (it may still be starting), or ``None``."""
    try:
        return ray.get_actor(SERVE_CONTROLLER, namespace="serve")._actor_id.hex()
    except ValueError:
        return None


def serve_running() -> bool:
    """Whether this Ray cluster has a Serve controller (it may still be starting)."""
    return _controller_id() is not None


def record_direct_ingress(host: str, port: int) -> None:
    """Record that the running Serve controller was started by a service ingressing on ``host:port``."""
    record = {"host": host, "port": port, "controller": _controller_id()}
    internal_kv._internal_kv_put(KV_KEY, json.dumps(record), overwrite=True, namespace=KV_NAMESPACE)


def recorded_direct_ingress() -> tuple[str, int] | None:
    """The ``(host, port)`` of :func:`record_direct_ingress` if the controller it names still runs."""
    raw = internal_kv._internal_kv_get(KV_KEY, namespace=KV_NAMESPACE)
    record = json.loads(raw) if raw else {}
    if not record or record.get("controller") != _controller_id():
        return None
    return str(record["host"]), int(record["port"])


def ingress_plan(host: str, port: int) -> Plan:
    """How a service ingressing on ``host:port`` gets a Serve controller (see :data:`Plan`)."""
    if not serve_running():
        return "start"
    kept = recorded_direct_ingress()
    if kept == (host, port):
        return "reuse"
    if kept is not None and not serve.status().applications:
        return "restart"
    return "proxy"


def shutdown_serve() -> None:
    """Stop the Serve instance and forget its record."""
    serve.shutdown()
    internal_kv._internal_kv_del(KV_KEY, namespace=KV_NAMESPACE)
