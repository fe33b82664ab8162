"""A real multi-node Ray cluster on this machine: 3 nodes of 1 CPU with custom resources, the
pipeline placed by them, Kafka partitions split between source replicas on different nodes,
a worker node removed mid-stream, shard actors spread over the nodes
(``multinode_driver.py``, in its own process: the session's Ray stays as it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from operators.producers import FrameProducer
from operators.producers.frame_reader import FrameReader

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("multinode_driver.py")
CAMERAS, PER_CAMERA = ("cam-a", "cam-b", "cam-c"), 40


@pytest.fixture(scope="module")
def outcome(broker, vtest_path, tmp_path_factory):
    images = [image for _, (image, _) in zip(range(len(CAMERAS) * PER_CAMERA), FrameReader(str(vtest_path)))]
    with FrameProducer(broker.bootstrap_servers, "multinode", partitions=2) as producer:
        for c, camera in enumerate(CAMERAS):
            chunk = images[c * PER_CAMERA:(c + 1) * PER_CAMERA]
            producer.send_frames([(im, i / 10) for i, im in enumerate(chunk)], camera=camera, kind="jpeg", quality=85)
    root = tmp_path_factory.mktemp("multinode")
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, str(DRIVER), broker.bootstrap_servers, str(root), str(len(images))],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_pipeline_is_placed_by_resources_and_splits_the_partitions(outcome):
    ref = outcome["reference"]
    assert outcome["nodes"] == 3 and ref["frames"] == len(CAMERAS) * PER_CAMERA
    where = ref["placement"]
    assert sorted(n for n, actors in where.items() if "SourceActor" in actors) != []
    assert sum(actors.count("SourceActor") for actors in where.values()) == 2
    assert max(actors.count("SourceActor") for actors in where.values()) == 1  # two nodes, one each
    assert where["head"].count("SinkActor") == 1  # the store's node
    assert ref["replicas_with_input"] == 2  # both replicas read partitions of the topic


def test_removing_a_node_mid_stream_leaves_the_store_of_an_uninterrupted_run(outcome):
    removed = outcome["removed"]
    assert removed["removed"] is not None and removed["removed"]["at_written"] < len(CAMERAS) * PER_CAMERA
    assert outcome["alive_nodes"] == 2
    assert outcome["stored_frames"] == {"reference": len(CAMERAS) * PER_CAMERA, "removed": len(CAMERAS) * PER_CAMERA}
    assert outcome["same_store"]


def test_shard_actors_spread_over_the_nodes_and_answer_as_the_local_index(outcome):
    shards = outcome["shards"]
    assert shards["shard_nodes"] == 3
    assert shards["held"] == len(CAMERAS) * PER_CAMERA
    assert shards["same_ids"] and shards["max_score_diff"] < 1e-5
