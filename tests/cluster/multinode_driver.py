"""A 3-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), run as its own process
by ``test_multinode.py`` (the test session's own Ray stays untouched).

    python tests/cluster/multinode_driver.py BOOTSTRAP_SERVERS ROOT FRAMES

Nodes: the head and two workers, 1 CPU each, each with the custom resource ``ingest: 1``; the
head also has ``store: 1``. The pipeline reads the topic ``multinode`` with 2 Kafka source
replicas that ask for ``ingest: 1`` each (so they run on two different nodes), 2 replicas of
each operator, and a store sink that asks for ``store: 1`` (the head, whose disk holds the
store). It runs twice: uninterrupted, then while the worker node running a source replica is
removed once 40 % of the frames are written (its raylet and workers die, as when a machine or
a pod is lost). Then the collection's 3 shard actors are started on the cluster and queried.

Prints one JSON line: where each actor ran, what each run wrote, and the shards' answers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamvision  # noqa: E402
from cluster.service.shards import ActorShards  # noqa: E402
from operators.featurizers.color_histogram import ColorHistogram  # noqa: E402
from operators.index.sharded import ShardedIndex  # noqa: E402
from operators.patches.whole_frame import WholeFramePatches  # noqa: E402
from operators.sinks.collection_writer import read_manifest  # noqa: E402
from operators.sinks.store_sink import StoreSink  # noqa: E402
from operators.sources.kafka_source import KafkaSource  # noqa: E402
from operators.stores.lineage_store import BATCHING_FAMILIES, LineageStore  # noqa: E402
from streamvision.plan.dataflow import Dataflow  # noqa: E402

TOPIC = "multinode"
#: Share of the frames written when the worker node is removed.
REMOVE_AT = 0.4
SHARDS = 3


def flow(servers: str, data: Path, group: str) -> Dataflow:
    """The pipeline, placed by resources: sources on ``ingest`` nodes, the sink on the ``store`` node."""
    source = KafkaSource(topic=TOPIC, bootstrap_servers=servers, group_id=group, until_end=True,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)
    out = Dataflow(f"multinode:{group}")
    (out.source(source, replicas=2, num_cpus=0.25, max_batch=4, custom_resources={"ingest": 1})
        .then(WholeFramePatches(), replicas=2, num_cpus=0.25)
        .then(ColorHistogram(bins=4, grid=2), replicas=2, num_cpus=0.25)
        .sink(StoreSink(data=str(data), shards=SHARDS), num_cpus=0.25, custom_resources={"store": 1}))
    return out


def placement(nodes: dict[str, Any]) -> dict[str, list[str]]:
    """Per node (``head``, ``worker-1``, ...), the actor classes running on it, read from the
    process tree of each node's raylet."""
    out: dict[str, list[str]] = {}
    for name, node in nodes.items():
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        classes = []
        for proc in raylet.children(recursive=True):
            try:
                title = proc.cmdline()[0] if proc.cmdline() else ""
            except psutil.Error:
                continue
            if title.startswith("ray::") and "Actor" in title:
                classes.append(title[len("ray::"):].split(".")[0].split(" ")[0])
        out[name] = sorted(classes)
    return out


def digest(data: Path) -> dict[str, frozenset[bytes]]:
    """What the store holds, but the vector log (its positions follow batching)."""
    with LineageStore(data / "lineage", read_only=True) as store:
        return store.contents(exclude=BATCHING_FAMILIES)


def run_removing_a_node(cluster: Cluster, nodes: dict[str, Any], servers: str, data: Path, total: int
                        ) -> dict[str, Any]:
    """Run the pipeline and remove the worker node of a source replica mid-stream."""
    state: dict[str, Any] = {"removed": None, "placement": None}

    def progress(p: Any) -> None:
        if state["removed"] is None and p.written >= REMOVE_AT * total:
            where = placement(nodes)
            state["placement"] = where
            victim = next(name for name in nodes if name != "head" and "SourceActor" in where[name])
            cluster.remove_node(nodes.pop(victim), allow_graceful=False)
            state["removed"] = {"node": victim, "at_written": p.written}

    report = streamvision.run(flow(servers, data, "g-removed"), progress=progress)
    return {**state, "frames": report.frames, "written": report.written}


def main() -> None:
    servers, root, total = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"ingest": 1, "store": 1},
                                                            "include_dashboard": False})
    nodes = {"head": cluster.head_node,
             **{f"worker-{i}": cluster.add_node(num_cpus=1, resources={"ingest": 1}) for i in (1, 2)}}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        seen: dict[str, Any] = {}

        def watch(p: Any) -> None:
            if "placement" not in seen and p.written > 0:
                seen["placement"] = placement(nodes)

        started = time.monotonic()
        report = streamvision.run(flow(servers, root / "reference", "g-reference"), progress=watch)
        result: dict[str, Any] = {
            "nodes": len(ray.nodes()),
            "reference": {"frames": report.frames, "written": report.written, "placement": seen["placement"],
                          "replicas_with_input": report.sources["kafka"]["replicas_with_input"],
                          "seconds": time.monotonic() - started},
        }
        result["removed"] = run_removing_a_node(cluster, nodes, servers, root / "removed", total)
        result["alive_nodes"] = sum(n["Alive"] for n in ray.nodes())
        result["same_store"] = digest(root / "reference") == digest(root / "removed")
        result["stored_frames"] = {name: len(digest(root / name)["frames"]) for name in ("reference", "removed")}
        cluster.add_node(num_cpus=1, resources={"ingest": 1})  # a node joins again: the shards have 3 to spread over
        cluster.wait_for_nodes()
        deadline = time.monotonic() + 60  # until the scheduler sees the new node's free resources
        while ray.available_resources().get("ingest", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        result["shards"] = query_shards(root / "removed")
        print(json.dumps(result), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


def query_shards(data: Path) -> dict[str, Any]:
    """Start the collection's shard actors on the cluster; where they run and whether their
    answers equal the in-process index's over the same store."""
    manifest = read_manifest(data)
    dim = int(manifest["dim"])
    factory, shards = manifest.get("factory", "Flat"), int(manifest["shards"])
    with ShardedIndex.open(data, dim, factory, shards) as local:
        ids, vectors = local.items()
        queries = np.ascontiguousarray(vectors[:5])
        want = local.search(queries, 5)
    service = ActorShards.start(data, dim, factory, shards)
    try:
        nodes = ray.get([actor.node.remote() for actor in service.actors])
        got = service.search(queries, 5)
    finally:
        service.stop()
    return {"shard_nodes": len(set(nodes)), "held": len(ids),
            "same_ids": bool(np.array_equal(got[1], want[1])),
            "max_score_diff": float(np.abs(got[0] - want[0]).max())}


if __name__ == "__main__":
    main()
