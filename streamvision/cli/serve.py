"""``streamvision serve`` (the live service) and ``streamvision import`` (bulk embeddings).

    streamvision serve --data DIR [--data DIR2] [--port 8000] [--host 127.0.0.1 --token T] [--address RAY]
    streamvision import FILE.parquet|FILE.npy --data DIR [--normalize] [--first-id N]
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cluster.service.ingress import LOOPBACK, direct_ingress_env

console = Console(stderr=True)


def serve(
    data: list[Path] = typer.Option(..., "--data", help="Data directory to serve (repeat for more collections)."),
    port: int = typer.Option(8000, "--port", help="HTTP port of the query API."),
    host: str = typer.Option(LOOPBACK, "--host", help="Interface to bind; anything but 127.0.0.1 needs --token."),
    token: Optional[str] = typer.Option(None, "--token", envvar="STREAMVISION_TOKEN",
                                        help="Bearer token every route but /v1/health requires."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)."),
    index_factory: str = typer.Option("Flat", "--index-factory", help="FAISS index of new collections."),
    shards: int = typer.Option(2, "--shards", help="Index shards of new collections."),
    bootstrap_servers: Optional[str] = typer.Option(None, "--bootstrap-servers",
                                                    help="Kafka the pipelines read: the web page shows lag and dead letters."),
) -> None:
    """Serve collections until SIGTERM or Ctrl-C: shard actors, one writer each, and an HTTP JSON API."""
    started = time.monotonic()
    from cluster.local import ensure_ray, watching_own_ray

    with ThreadPoolExecutor(1) as pool:  # the service's modules (Ray Serve, FastAPI) load while Ray starts:
        server = pool.submit(importlib.import_module, "cluster.service.server")  # 1-1.5 s of a cold start
        ensure_ray(address, env=direct_ingress_env(port))  # first: connecting installs Ray's own SIGTERM
        # handler (it aborts the process); a local Ray started here gets Serve's settings for the service
        start_service = server.result().start_service
    with watching_own_ray(exit_as_ray_stopped):
        # Serve's INFO lines name its fallback proxy's URL ("Application ... is ready at"), not the service's
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # so that SIGTERM while starting acts as
        service = start_service(data, port=port, host=host, token=token,  # Ctrl-C: what started is stopped
                                writer_options={"index_factory": index_factory, "shards": shards},
                                kafka=bootstrap_servers)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"[green]serving {', '.join(service.collections)} at {service.url} "
                      f"(ready in {time.monotonic() - started:.1f}s); Ctrl-C stops")
        console.print(f"web page: {service.url}/")
        console.print(f"try: curl -s {service.url}/v1/health")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            console.print("stopping: snapshotting the shards")
            service.stop()
            console.print("[green]stopped")


def exit_as_ray_stopped() -> None:
    """Leave at once when the local Ray the service (or the demo) started loses its GCS server or raylet,
    whatever the service was doing: every call into Ray (starting, serving, snapshotting) would
    wait 60 s and then abort the process. Nothing is lost: RocksDB is the record."""
    console.print("[red]error:[/red] Ray's processes stopped under the service (a signal to the whole process group, "
                  "systemd's default KillMode? stop the service with SIGTERM to its own pid, or KillMode=mixed): "
                  "the shards' snapshots may lag; the next start replays from RocksDB what they lack", soft_wrap=True)
    sys.stderr.flush()
    os._exit(2)


def import_(
    file: Path = typer.Argument(..., help="Embeddings: .parquet (id, vector, metadata columns) or .npy (n, d)."),
    data: Path = typer.Option(..., "--data", help="Data directory (through its service if one serves it)."),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalize each vector (the index needs unit norm)."),
    first_id: int = typer.Option(1, "--first-id", help="Id of the first row of a .npy file."),
    index_factory: str = typer.Option("Flat", "--index-factory", help="FAISS index of a new collection."),
    shards: int = typer.Option(2, "--shards", help="Index shards of a new collection."),
) -> None:
    """Bulk-import existing embeddings into a collection (stored, indexed, queryable)."""
    from streamvision.api.importer import import_embeddings

    started = time.monotonic()
    total = import_embeddings(file, data, normalize=normalize, first_id=first_id, index_factory=index_factory,
                              shards=shards, progress=lambda n: console.print(f"{n} vectors", end="\r"))
    elapsed = time.monotonic() - started
    console.print(f"[green]imported {total} vectors into {data} in {elapsed:.1f}s ({total / max(elapsed, 1e-9):,.0f}/s)")
