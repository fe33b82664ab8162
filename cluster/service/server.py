"""``streamvision serve``: start (or attach to) a collection's actors and the HTTP front end.

Per served data directory: the writer actor (which starts the shard actors once the vector
dimension is known), then one Ray Serve application, :class:`~cluster.service.frontend.QueryFrontend`,
bound to 127.0.0.1 unless told otherwise (any other address needs a token). While it runs,
each directory holds ``service.json`` (URL, Ray address, pid), through which pipelines and
the CLI find it. :meth:`LiveService.stop` (SIGTERM, Ctrl-C) snapshots every shard, stops
the front end and the actors, and removes the records: nothing is lost, and the next start
loads the snapshots instead of replaying.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import serve

from cluster.local import ensure_ray, local_ray_env
from cluster.service import names
from cluster.service.ingress import LOOPBACK, check_port_free, direct_ingress_env, fallback_proxy_port
from cluster.service.serve_instance import Plan, ingress_plan, record_direct_ingress, serve_running, shutdown_serve
from cluster.service.shards import ActorShards
from cluster.service.writer import launch_writer, wait_ready
from operators.sinks.collection_writer import read_manifest
from streamvision.core.errors import ConfigError

APP_NAME = "streamvision"


@dataclass
class LiveService:
    """A running service (see the module docstring)."""

    collections: dict[str, Path]
    url: str
    writers: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        """Snapshot every shard, then stop the front end and the actors; remove the records.
        Serve's controller stays (see :mod:`cluster.service.serve_instance`).

        Also undoes a start that was interrupted part way (whatever was launched is stopped)."""
        try:
            ray.get([writer.close.remote() for writer in self.writers.values()])  # the snapshots
        finally:
            try:
                serve.delete(APP_NAME)
            finally:
                for name, data in self.collections.items():
                    names.remove_record(data)
                    self._kill(name, data)

    def _kill(self, name: str, data: Path) -> None:
        writer = self.writers.get(name)
        if writer is not None:
            ray.kill(writer, no_restart=True)
        manifest = read_manifest(data)  # a new collection gets shards (and a dim) with its first vectors
        shards = int(manifest.get("shards", 2)) if manifest.get("dim") else 0
        for s in range(shards):
            try:
                ray.kill(ray.get_actor(names.shard_name(data, s, shards), namespace=names.NAMESPACE), no_restart=True)
            except ValueError:
                pass  # never started


def _collections(data_dirs: list[str | Path]) -> dict[str, Path]:
    collections: dict[str, Path] = {}
    for data in data_dirs:
        path = Path(data).resolve()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--data {data} is not a directory")
        if path.name in collections:
            raise ConfigError(f"two served directories are named {path.name!r}: collections need distinct names")
        if names.read_record(path) is not None:
            raise ConfigError(f"{path} is already served ({names.read_record(path)['url']}); stop that service first")
        collections[path.name] = path
    if not collections:
        raise ConfigError("serve at least one --data directory")
    return collections


def _refuse_a_second_service() -> None:
    """One service per Ray cluster: Serve has one HTTP proxy port, and the app's name is fixed."""
    if serve_running() and APP_NAME in serve.status().applications:
        raise ConfigError("a StreamVision service already runs on this Ray cluster: serve all its collections "
                          "from one `streamvision serve --data A --data B`, or stop it first")


def _start_front_end(collections: dict[str, Path], host: str, port: int, token: str | None,
                     kafka: str | None, plan: Plan) -> None:
    """The front end's replica, which answers HTTP on ``port`` itself (direct ingress,
    :mod:`cluster.service.ingress`) on a Serve controller this service starts or one a previous
    service left, else through the proxy on ``port`` of a Serve someone else started.

    When a controller starts, ``serve.start`` returns only once its fallback proxy is up; the
    replica is deployed as soon as the controller exists instead, so that the two start together
    (on 2 cores, 1.5-2 s of a cold start). ``serve.run`` then attaches to that controller. The
    front end's module (FastAPI, the query engine: 1.5-2 s on 2 cores) is imported here, while the
    controller's process starts."""
    args = ({n: str(p) for n, p in collections.items()}, token, kafka, host)
    if plan == "proxy":  # checks that its proxy listens where asked
        serve.start(http_options={"host": host, "port": port})
        from cluster.service.frontend import QueryFrontend

        serve.run(QueryFrontend.bind(*args), name=APP_NAME, route_prefix="/", blocking=False)
        return
    if plan == "restart":
        shutdown_serve()
    env = direct_ingress_env(port)
    # A local Ray started with Serve's settings (ensure_ray(env=...)) has them in every process; a
    # runtime_env would cost each of Serve's actors a second Python start (Ray's setup_worker, about
    # 1.2 s of CPU on 2 cores, twice on a cold start's longest chain: the controller, then the replica).
    options = {} if env.items() <= local_ray_env().items() else {"runtime_env": {"env_vars": env}}
    with ThreadPoolExecutor(1) as pool:
        started = None
        if plan != "reuse":
            started = pool.submit(serve.start, http_options={"host": host, "port": fallback_proxy_port(host)},
                                  logging_config={"enable_access_log": False}, controller_options=options)
        from cluster.service.frontend import FRONTEND_CPUS, QueryFrontend

        while started is not None and not serve_running():
            if started.done():
                started.result()  # raises why Serve did not start
                break
            time.sleep(0.02)
        frontend = QueryFrontend.options(ray_actor_options={"num_cpus": FRONTEND_CPUS, **options})
        serve.run(frontend.bind(*args), name=APP_NAME, route_prefix="/", blocking=False)
        if started is not None:
            started.result()
            record_direct_ingress(host, port)


def start_service(
    data_dirs: list[str | Path],
    *,
    port: int = 8000,
    host: str = LOOPBACK,
    token: str | None = None,
    address: str | None = None,
    writer_options: dict[str, Any] | None = None,
    kafka: str | None = None,
) -> LiveService:
    """Start serving the data directories; returns once ``GET /v1/health`` would answer.

    Args:
        data_dirs: collections to serve (created empty where missing).
        port: HTTP port of the front end.
        host: interface to bind; anything but 127.0.0.1 needs ``token``.
        token: bearer token required on every route but ``/v1/health``.
        address: Ray cluster to run on (default: ``RAY_ADDRESS``, else a new local Ray).
        writer_options: options of new collections (``index_factory``, ``shards``).
        kafka: bootstrap servers the pipelines read from, for the web page's lag and dead letters.

    Raises:
        ConfigError: bound beyond loopback without a token, a port already taken, a directory
            already served or unreadable.
    """
    if host != LOOPBACK and not token:
        raise ConfigError(f"binding to {host} exposes the API beyond this machine: give --token (or bind 127.0.0.1)")
    collections = _collections(data_dirs)
    ensure_ray(address, env=direct_ingress_env(port))
    _refuse_a_second_service()
    plan = ingress_plan(host, port)
    if plan != "proxy":  # the front end will bind the port itself
        check_port_free(host, port)
    service = LiveService(collections, url=f"http://{LOOPBACK if host == LOOPBACK else host}:{port}")
    try:
        _launch(service, host, port, token, writer_options or {}, kafka, plan)
    except BaseException:  # an error, or SIGTERM / Ctrl-C while starting: leave nothing running
        service.stop()
        raise
    record = {"url": service.url, "pid": os.getpid(), "ray_address": ray.get_runtime_context().gcs_address,
              "started": time.time(), "collections": {n: str(p) for n, p in collections.items()}}
    for data in collections.values():
        names.write_record(data, record)
    return service


def _launch(service: LiveService, host: str, port: int, token: str | None, writer_options: dict[str, Any],
            kafka: str | None, plan: Plan) -> None:
    collections = service.collections
    with ThreadPoolExecutor(1) as pool:  # the front end's controller, proxy and replica are the longest
        front_end = pool.submit(_start_front_end, collections, host, port, token, kafka, plan)  # chain: start it first
        for data in collections.values():  # then the shards, which queries need
            manifest = read_manifest(data)
            if manifest.get("dim"):
                ActorShards.launch(data, int(manifest["dim"]), manifest.get("factory", "Flat"),
                                   int(manifest.get("shards", 2)))
        front_end.result()
    for name, data in collections.items():  # and last the writers, which only ingest needs
        service.writers[name] = launch_writer(data, dict(writer_options))
    for name, data in collections.items():
        wait_ready(service.writers[name], data)  # which waits for its shards
