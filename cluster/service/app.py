"""The live service as a Ray Serve application builder, for a KubeRay ``RayService``.

``streamvision serve`` starts the service from a driver process. A RayService instead names an
import path and its arguments in ``serveConfigV2``, and Serve's controller calls
:func:`build_app` inside the cluster (the Helm chart's ``templates/rayservice.yaml``)::

    applications:
      - name: streamvision
        route_prefix: /
        import_path: cluster.service.app:build_app
        args: {data: [/data/service/cams], kafka: "kafka:9092", index_factory: Flat, shards: 2, port: 8000}

It does what ``streamvision serve`` does before its front end takes requests: starts (or
attaches to: they are named, detached actors) each collection's writer, which starts the
collection's shards, waits until they are ready and writes ``service.json``, through which
pipelines on that cluster write through the writer; then it returns the same
:class:`~cluster.service.frontend.QueryFrontend` application. Building it again (a changed
``serveConfigV2``) attaches to the running writers.

The bearer token comes from ``STREAMVISION_TOKEN`` (never from ``args``, which anyone who can
read the RayService sees). Serve's proxy listens beyond loopback on a cluster, so a missing
token is refused, as ``streamvision serve --host 0.0.0.0`` without ``--token`` is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import ray
from ray.serve import Application

from cluster.service import names
from cluster.service.frontend import QueryFrontend
from cluster.service.writer import launch_writer, wait_ready
from streamvision.core.errors import ConfigError

#: Where the bearer token is read from (also ``streamvision serve --token``'s variable).
TOKEN_ENV = "STREAMVISION_TOKEN"


@dataclass(frozen=True)
class ServiceArgs:
    """The ``args`` of the Serve application (``streamvision serve``'s options of the same names).

    Attributes:
        data: data directories to serve, one collection each (created empty where missing).
        kafka: bootstrap servers the pipelines read, for the web page's lag and dead letters.
        index_factory: FAISS index of new collections.
        shards: index shards of new collections.
        port: the HTTP port of Serve's proxy (``http_options.port``), recorded in ``service.json``.
    """

    data: list[str]
    kafka: str | None = None
    index_factory: str = "Flat"
    shards: int = 2
    port: int = 8000

    @classmethod
    def parse(cls, args: dict[str, Any]) -> "ServiceArgs":
        """Check ``args`` (unknown names, types) and fill in the defaults.

        Raises:
            ConfigError: an unknown or missing argument, or one of the wrong type.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(f"unknown service argument(s) {unknown}; known: {sorted(known)}")
        parsed = cls(**{"data": [], **args})
        if (not isinstance(parsed.data, list) or not parsed.data
                or not all(isinstance(d, str) and d for d in parsed.data)):
            raise ConfigError("service argument data: give a non-empty list of data directories")
        if isinstance(parsed.shards, bool) or not isinstance(parsed.shards, int) or parsed.shards < 1:
            raise ConfigError(f"service argument shards must be an integer >= 1, got {parsed.shards!r}")
        return parsed

    def collections(self) -> dict[str, Path]:
        """``name -> resolved directory`` of every collection (names are the directories' names).

        Raises:
            ConfigError: two directories share a name.
        """
        collections: dict[str, Path] = {}
        for data in self.data:
            path = Path(data).resolve()
            if path.name in collections:
                raise ConfigError(f"two served directories are named {path.name!r}: collections need distinct names")
            collections[path.name] = path
        return collections


def _start_writers(collections: dict[str, Path], writer_options: dict[str, Any], url: str) -> None:
    """Start (or attach to) every collection's writer, wait until ready, write ``service.json``."""
    writers = {name: launch_writer(data, dict(writer_options)) for name, data in collections.items()}
    record = {"url": url, "ray_address": ray.get_runtime_context().gcs_address, "started": time.time(),
              # the raylet, this task's parent: the record holds while this Ray node runs (Ray
              # restarts a writer that dies; the builder's own worker may exit)
              "pid": os.getppid(), "collections": {n: str(p) for n, p in collections.items()}}
    for name, data in collections.items():
        wait_ready(writers[name], data)
        names.write_record(data, record)


def build_app(args: dict[str, Any]) -> Application:
    """The query service's Serve application (``import_path: cluster.service.app:build_app``).

    Args:
        args: :class:`ServiceArgs` as a dict (``serveConfigV2``'s ``args``).

    Raises:
        ConfigError: bad ``args``, no ``STREAMVISION_TOKEN``, or a directory its writer cannot open.
    """
    options = ServiceArgs.parse(args)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(f"set {TOKEN_ENV}: the service's HTTP API listens beyond loopback on a cluster")
    collections = options.collections()
    _start_writers(collections, {"index_factory": options.index_factory, "shards": options.shards},
                   url=f"http://127.0.0.1:{options.port}")
    return QueryFrontend.bind({n: str(p) for n, p in collections.items()}, token, options.kafka)
