"""A collection's index shards as Ray actors: the only index of a served collection.

Each :class:`ShardActor` holds one :class:`~operators.index.live_shard.LiveShard` (a
snapshot plus replay of the store's newer writes) and is a named, detached actor in the
``streamvision`` namespace, restarted by Ray after a crash (``max_restarts=-1``); a
restarted shard replays from the store, and Ray retries the calls it had in flight
(``max_task_retries=-1``), which are idempotent. A collection's shards go to the cluster's
nodes in turn (:func:`spread_over_nodes`), so they scan in parallel and a lost node costs
its shards' replay. :class:`ActorShards` is the client: all logic (routing by patch id,
fan-out, merging, joins) is in :class:`~operators.index.sharded.ShardSet`, shared with the
in-process shards.

GPU: when the Ray cluster has GPUs and the shards may keep a GPU copy (append-only, and a
kind FAISS holds on a GPU: ``Flat`` or ``IVF...``, not ``HNSW``, ``RFlat`` or plain ``SQ8``;
:func:`operators.index.shard.gpu_eligible`), each shard actor asks for a fraction of a GPU and
keeps a GPU copy for unfiltered searches if faiss-gpu is installed
(:func:`operators.index.shard.choose_device`); every other shard asks for none and scans on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.service.names import NAMESPACE, shard_name
from operators.index.live_shard import LiveShard
from operators.index.shard import IndexShard, gpu_eligible
from operators.index.sharded import ShardSet, layout
from streamvision.core.errors import ConfigError

#: Logical memory (bytes) a shard actor reserves: a token, not its real size. Ray honours a soft
#: node affinity only for actors that ask for some resource; a zero-resource actor lands anywhere.
SHARD_MEMORY = 1 << 20
#: CPUs it reserves: none by default, so that pipelines sized for a 2-core machine fit beside the
#: service (it is mostly idle between queries); raise it on a cluster to keep cores for it.
SHARD_CPUS = 0.0


def gpus_per_shard(cluster_gpus: float, shards: int, probe: IndexShard) -> float:
    """The GPU fraction each of ``shards`` actors asks for: an equal share of the cluster's GPUs
    (at most one each) when the shard may keep a GPU copy (:func:`gpu_eligible`), else none."""
    if cluster_gpus <= 0 or not gpu_eligible(probe.index, probe.append_only):
        return 0.0
    return min(1.0, cluster_gpus / shards)


def spread_over_nodes(shards: int, need_gpu: bool = False) -> list[NodeAffinitySchedulingStrategy]:
    """Where each of ``shards`` actors goes: the cluster's alive nodes (with a GPU, if the shards
    ask for one) in turn, so that they scan in parallel and one node's loss costs few shards.

    Soft: a shard whose node is gone or full, now or at a restart, runs wherever Ray finds
    room (Ray's own ``"SPREAD"`` is best effort, and puts zero-CPU actors together).
    """
    nodes = sorted(n["NodeID"] for n in ray.nodes()
                   if n["Alive"] and (not need_gpu or n["Resources"].get("GPU", 0) > 0))
    nodes = nodes or [ray.get_runtime_context().get_node_id()]
    return [NodeAffinitySchedulingStrategy(node_id=nodes[s % len(nodes)], soft=True) for s in range(shards)]


@ray.remote
class ShardActor:
    """Holds one :class:`LiveShard`; rebuilt from its snapshot and the store whenever Ray restarts it."""

    def __init__(self, root: str, shard: int, shards: int, dim: int, factory: str, options: dict[str, Any]) -> None:
        self.shard = LiveShard(root, shard, shards, dim, factory, **options)

    def pid(self) -> int:
        """The actor's process id (for operators, and for the failure tests that kill it)."""
        return os.getpid()

    def node(self) -> str:
        """The id of the Ray node the actor runs on."""
        return ray.get_runtime_context().get_node_id()

    def call(self, method: str, *args: Any) -> Any:
        """Run ``LiveShard.<method>(*args)``."""
        return getattr(self.shard, method)(*args)


class ActorShards(ShardSet):
    """Client of a collection's N :class:`ShardActor` s (see :class:`ShardSet` for the API)."""

    def __init__(self, actors: list[Any], dim: int, normalized: bool = True) -> None:
        super().__init__(dim, len(actors), normalized)
        self.actors = actors

    @classmethod
    def launch(
        cls,
        data_dir: str | Path,
        dim: int,
        factory: str = "Flat",
        shards: int = 2,
        *,
        normalized: bool = True,
        append_only: bool = False,
        num_cpus: float = SHARD_CPUS,
    ) -> "ActorShards":
        """Create the collection's shard actors (or attach to those running), without waiting.

        Raises:
            InputError: unknown factory string or bad dimension.
        """
        probe = IndexShard(dim, factory, append_only=append_only, device="cpu")  # fails fast on a bad factory or dim
        root, store = layout(data_dir)
        gpus = gpus_per_shard(ray.cluster_resources().get("GPU", 0.0), shards, probe)
        options = {"normalized": normalized, "append_only": append_only, "store": str(store)}
        actors = [
            ShardActor.options(
                name=shard_name(data_dir, s, shards), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                num_cpus=num_cpus, num_gpus=gpus, memory=SHARD_MEMORY, scheduling_strategy=place,
                max_restarts=-1, max_task_retries=-1,
            ).remote(str(root), s, shards, dim, factory, options)
            for s, place in enumerate(spread_over_nodes(shards, gpus > 0))
        ]
        return cls(actors, dim, normalized)

    @classmethod
    def start(cls, data_dir: str | Path, dim: int, factory: str = "Flat", shards: int = 2, **options: Any,
              ) -> "ActorShards":
        """:meth:`launch`, then wait until every shard has loaded its snapshot and replayed.

        Raises:
            InputError: unknown factory string or bad dimension.
            ConfigError: the directory holds shards of another factory / dimension.
        """
        service = cls.launch(data_dir, dim, factory, shards, **options)
        try:
            service._all("stats")
        except ray.exceptions.RayActorError as exc:
            service.stop()
            raise ConfigError(f"cannot open the index shards under {layout(data_dir)[0]}: {exc}") from exc
        return service

    @classmethod
    def attach(cls, data_dir: str | Path, dim: int, shards: int, normalized: bool = True) -> "ActorShards":
        """The running shard actors of a collection (started by :meth:`start`).

        Raises:
            ConfigError: they are not running.
        """
        try:
            actors = [ray.get_actor(shard_name(data_dir, s, shards), namespace=NAMESPACE) for s in range(shards)]
        except ValueError as exc:
            raise ConfigError(f"the shards of {data_dir} are not running: {exc}") from exc
        return cls(actors, dim, normalized)

    def _each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        refs = [actor.call.remote(method, *a) for actor, a in zip(self.actors, args)]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None

    def stop(self) -> None:
        """Stop the shard actors (their state is the store plus their snapshots)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
