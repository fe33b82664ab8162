"""Names of a collection's actors, and the record a running service leaves in its data directory.

A served data directory holds ``service.json`` (URL, Ray address, pid) while the service
runs; pipelines whose sink names that directory find the service's writer through it, and
the CLI finds the service's URL.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cluster.processes import pid_alive

#: The Ray namespace of every named service actor.
NAMESPACE = "streamvision"
SERVICE_FILE = "service.json"


def collection_key(data: str | Path) -> str:
    """A short stable key of a data directory (its resolved path), for actor names."""
    return hashlib.sha1(str(Path(data).resolve()).encode()).hexdigest()[:12]


def writer_name(data: str | Path) -> str:
    """Name of the collection's writer actor."""
    return f"writer-{collection_key(data)}"


def shard_name(data: str | Path, shard: int, shards: int) -> str:
    """Name of one of the collection's shard actors."""
    return f"shard-{collection_key(data)}-{shard}-of-{shards}"


def write_record(data: str | Path, record: dict[str, Any]) -> None:
    """Leave ``service.json`` in a served data directory (atomically)."""
    path = Path(data) / SERVICE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def read_record(data: str | Path) -> dict[str, Any] | None:
    """The record of the service serving ``data``, or ``None`` when none runs (a record left
    by a service that died is ignored)."""
    path = Path(data) / SERVICE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not pid_alive(int(record.get("pid", -1))):
        return None
    return record


def served_ray_address(data: str | Path) -> str | None:
    """The Ray address of the service serving ``data``, or ``None`` when none runs."""
    record = read_record(data)
    return None if record is None else str(record["ray_address"])


def remove_record(data: str | Path) -> None:
    """Remove ``service.json`` (the service stopped)."""
    (Path(data) / SERVICE_FILE).unlink(missing_ok=True)
