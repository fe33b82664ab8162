"""The sharded vector index service: one Ray actor per FAISS shard.

Client API (the same as the in-process :class:`operators.index.sharded.ShardedIndex`;
all logic is in :class:`operators.index.sharded.ShardSet`)::

    svc = VectorIndexService.open(data_dir, dim, factory="Flat", shards=2, *,
                                  store=None, normalized=True, append_only=False,
                                  wal=True, num_cpus=1.0)
    svc.train(sample)                          # IVF / PQ factories, same sample to every shard
    svc.upsert(ids, vectors) -> int            # total held afterwards; same id twice = one entry
    svc.remove(ids) -> int                     # how many were held
    svc.search(q, k, where_ids=None) -> (D, I)             # (nq, k); I == -1 where none
    svc.threshold(q, t, where_ids=None) -> (lims, D, I)    # inner product > t, best first
    svc.near_duplicates(t, where_ids=None) -> (ids_a, ids_b, scores)   # ids_a < ids_b
    svc.join(ids_a, ids_b, t) -> (ids_a, ids_b, scores)    # e.g. two cameras
    svc.items(where_ids=None) -> (ids, vectors)
    svc.snapshot(offsets=None) -> [per-shard snapshot meta]
    svc.stats() -> {"ntotal", "dim", "shards": [per-shard stats]}
    svc.close()

``where_ids`` come from the RocksDB secondary indexes
(:func:`operators.index.filters.where_ids`) and become a FAISS ``IDSelectorBatch``.

Layout: shards live in ``DATA/index-service/shard-s-of-n/`` (snapshot, offsets, write-ahead
log); a shard (re)starting replays its log and the newer vectors of the lineage store
(``store``, default ``DATA/lineage``). Patch ids are routed to shards by a hash of the id;
queries fan out to every shard at once and merge. Each shard actor scans with its own
core, so one query uses every core the shards were given. Actors restart on failure
(``max_restarts=-1``) and come back with all their data; calls in flight are retried.

GPU: when the Ray cluster has GPUs and ``append_only=True``, each shard actor asks for a
fraction of a GPU and keeps a GPU copy for unfiltered searches if faiss-gpu is installed
(:func:`operators.index.shard.choose_device`); otherwise it scans on CPU. Same API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import ray

from cluster.local import ensure_ray

from operators.index.durable import DurableShard
from operators.index.sharded import ShardSet, layout
from operators.index.shard import IndexShard
from streamvision.errors import ConfigError


@ray.remote
class ShardActor:
    """Holds one :class:`DurableShard`; rebuilt from disk whenever Ray restarts it."""

    def __init__(self, root: str, shard: int, shards: int, dim: int, factory: str, options: dict[str, Any]) -> None:
        self.shard = DurableShard(root, shard, shards, dim, factory, **options)

    def call(self, method: str, *args: Any) -> Any:
        """Run ``DurableShard.<method>(*args)``."""
        return getattr(self.shard, method)(*args)


class VectorIndexService(ShardSet):
    """Client of N :class:`ShardActor` s; see the module docstring for the API."""

    def __init__(self, actors: list[Any], dim: int, normalized: bool) -> None:
        super().__init__(dim, len(actors), normalized)
        self.actors = actors

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        dim: int,
        factory: str = "Flat",
        shards: int = 2,
        *,
        store: str | Path | None = None,
        normalized: bool = True,
        append_only: bool = False,
        wal: bool = True,
        num_cpus: float = 1.0,
    ) -> "VectorIndexService":
        """Start (or reconnect the data of) ``shards`` shard actors under ``data_dir``.

        Uses the running Ray instance (else ``RAY_ADDRESS``'s cluster, else a new local one).

        Raises:
            InputError: unknown factory string or bad dimension.
            ConfigError: the directory holds shards of another factory / dimension.
        """
        IndexShard(dim, factory)  # fail fast and clearly on a bad factory string or dim
        ensure_ray()
        root, store_path = layout(data_dir, store)
        gpus = ray.cluster_resources().get("GPU", 0) if append_only else 0
        options = {"normalized": normalized, "append_only": append_only,
                   "store": None if store_path is None else str(store_path), "wal": wal}
        actors = [
            ShardActor.options(
                num_cpus=num_cpus, num_gpus=min(1.0, gpus / shards) if gpus else 0,
                max_restarts=-1, max_task_retries=-1,
            ).remote(str(root), s, shards, dim, factory, options)
            for s in range(shards)
        ]
        service = cls(actors, dim, normalized)
        try:
            service._all("stats")
        except ray.exceptions.RayActorError as exc:
            service.close()
            raise ConfigError(f"cannot open the index shards under {root}: {exc}") from exc
        return service

    def _each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        refs = [actor.call.remote(method, *a) for actor, a in zip(self.actors, args)]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None

    def close(self) -> None:
        """Stop the shard actors (their data stays on disk)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> "VectorIndexService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
