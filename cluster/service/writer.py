"""A collection's one RocksDB writer, as a named Ray actor feeding the shard actors.

Pipelines whose sink names a served data directory hand their batches to this actor
(``cluster.actors.SinkActor`` finds it by name); ``streamvision import`` sends it
embeddings. It runs one call at a time, so the store's positions and the shards' order
agree. Ray restarts it after a crash; it reopens the store and reads its offsets back, and
retried calls are idempotent (patch ids are deterministic).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import ray

from cluster.service.names import NAMESPACE, writer_name
from cluster.service.shards import ActorShards
from operators.index.sharded import ShardSet
from operators.sinks.collection_writer import CollectionWriter
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch

#: CPUs it reserves: none by default, so that pipelines sized for a 2-core machine fit beside the
#: service (it is mostly idle between queries); raise it on a cluster to keep cores for it.
WRITER_CPUS = 0.0


def start_shards(data: Path, dim: int, factory: str, shards: int) -> ShardSet:
    """The collection's shard actors (started, or those already running)."""
    return ActorShards.start(data, dim, factory, shards)


@ray.remote
class WriterActor:
    """Holds the collection's :class:`CollectionWriter`, whose shards are actors."""

    def __init__(self, data: str, options: dict[str, Any]) -> None:
        self.writer = CollectionWriter(data, start_shards, **options)

    def pid(self) -> int:
        """The actor's process id (for operators, and for the failure tests that kill it)."""
        return os.getpid()

    def ready(self) -> dict[str, Any]:
        """The manifest facts once the writer is open (and its shards, if the dimension is known)."""
        return {"dim": self.writer.dim, "factory": self.writer.factory, "shards": self.writer.shard_count}

    def adopt(self, featurizer: dict[str, Any] | None, dim: int | None) -> None:
        """Record a pipeline's featurizer and dimension if the collection has none yet."""
        self.writer.adopt(featurizer, dim)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets durably done (stored and applied): what sources resume from."""
        return self.writer.committed_offsets()

    def write(self, batch: PatchBatch) -> dict[str, Any]:
        """Write one batch (store, then shards); ``{"written", "offsets", "position"}``."""
        return self.writer.write(batch)

    def import_vectors(self, ids: np.ndarray, vectors: np.ndarray, metas: list[dict[str, Any]] | None) -> int:
        """Store and index embeddings (bulk import); returns the store position."""
        return self.writer.import_vectors(ids, vectors, metas)

    def set_labels(self, ids: list[int], label: str, by: str | None) -> int:
        """Set a user label on patches (:class:`operators.stores.labels.UserLabels`)."""
        from operators.stores.labels import UserLabels

        return UserLabels(self.writer.store).set(ids, label, by=by)

    def snapshot(self) -> None:
        """Snapshot every shard now."""
        self.writer.snapshot()

    def stats(self) -> dict[str, Any]:
        """Counts of this writer's life."""
        return self.writer.stats()

    def close(self) -> None:
        """Snapshot the shards and close the store (before the service stops); kept runs still
        queued for compaction stay as their messages, for the next writer."""
        self.writer.close(finish_compaction=False)


def launch_writer(data: str | Path, options: dict[str, Any]) -> Any:
    """Create the collection's writer actor (or attach to the running one) without waiting for it."""
    return WriterActor.options(
        name=writer_name(data), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=WRITER_CPUS, max_restarts=-1, max_task_retries=-1,
    ).remote(str(Path(data).resolve()), options)


def wait_ready(actor: Any, data: str | Path) -> dict[str, Any]:
    """Wait until a launched writer has opened its collection; its :meth:`WriterActor.ready` facts.

    Raises:
        ConfigError: the directory cannot be opened (another writer holds it, other vectors).
    """
    try:
        return ray.get(actor.ready.remote())
    except ray.exceptions.RayActorError as exc:
        ray.kill(actor, no_restart=True)
        raise ConfigError(f"cannot open {data} for writing: {exc}") from exc


def find_writer(data: str | Path) -> Any | None:
    """The running writer actor of a served data directory, or ``None``."""
    try:
        return ray.get_actor(writer_name(data), namespace=NAMESPACE)
    except ValueError:
        return None
