"""Messages an operator or the sink fails on are dead-lettered once; the rest of their batch goes on.

Real broker, real vtest.avi frames, the real store sink. Twelve one-frame JPEG messages in
batches of four; a user operator raises on frame 5 (a bug that only some input triggers), and a
user featurizer step scales frame 9's vector off the unit sphere, which the store's writer
refuses (the sink fails on that batch). Both messages land in ``<topic>.dlq`` with their
original bytes and reason ``processing-failed``; every other frame is stored and every offset is
done; a second read by the same group writes no letter twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

import streamvision
from operators.base import Operator
from operators.featurizers.color_histogram import ColorHistogram
from operators.kafka import wire
from operators.kafka.settings import KafkaSettings, ensure_topic
from operators.patches.whole_frame import WholeFramePatches
from operators.producers.frame_reader import FrameReader
from operators.sinks.store_sink import StoreSink
from operators.sources.kafka_source import KafkaSource
from operators.stores.lineage_store import LineageStore
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType
from streamvision.plan.dataflow import Dataflow

pytestmark = pytest.mark.integration
TOPIC, MESSAGES, OPERATOR_FAILS, SINK_FAILS = "failing", 12, 5, 9


@pytest.fixture(scope="module")
def sent(broker, vtest_path) -> list[bytes]:
    return send_messages(broker.bootstrap_servers, vtest_path)


def send_messages(servers: str, vtest_path: Path) -> list[bytes]:
    """Twelve one-frame JPEG messages of vtest.avi (frame numbers 0..11); their payloads."""
    images = [im for _, (im, _) in zip(range(MESSAGES), FrameReader(str(vtest_path)))]
    ensure_topic(KafkaSettings(servers), TOPIC, partitions=1)
    producer = KafkaProducer(bootstrap_servers=servers, max_request_size=16 * 1024 * 1024)
    values = []
    for i, image in enumerate(images):
        msg = wire.encode_image(image, camera="cam", ts=1000.0 + i, frame_no=i, quality=80)
        producer.send(TOPIC, key=b"cam", value=msg.value, headers=msg.headers).get(timeout=30)
        values.append(msg.value)
    producer.close()
    return values


def _user_operators() -> tuple[Operator, Operator]:
    """Defined here, so that Ray pickles them by value into the actors."""

    class Picky(Operator[PatchBatch, PatchBatch]):
        name = "picky"

        def input_type(self):
            return PatchType(kind="pixels")

        def output_type(self, upstream):
            return upstream

        def process(self, batch):
            if OPERATOR_FAILS in batch.frame_no.tolist():
                raise ValueError(f"picky cannot handle frame {OPERATOR_FAILS}")
            return batch

    class Scaled(Operator[PatchBatch, PatchBatch]):
        name = "scaled"

        def input_type(self):
            return PatchType(kind="vector")

        def output_type(self, upstream):
            return upstream

        def process(self, batch):
            if batch.vectors is None:
                return batch
            vectors = batch.vectors.copy()
            vectors[batch.frame_no == SINK_FAILS] *= 2.0  # no longer unit norm: the writer refuses it
            return PatchBatch(**{**batch.__dict__, "vectors": vectors})

    return Picky(), Scaled()


def flow(servers: str, data: Path) -> Dataflow:
    """The failing graph: twelve messages in, two of them rejected downstream."""
    picky, scaled = _user_operators()
    source = KafkaSource(topic=TOPIC, bootstrap_servers=servers, group_id="g-failing",
                         until_end=True, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    graph = Dataflow("failing")
    (graph.source(source, max_batch=4)
         .then(WholeFramePatches(), num_cpus=0.25)
         .then(picky, num_cpus=0.25)
         .then(ColorHistogram(bins=4, grid=2), num_cpus=0.25)
         .then(scaled, num_cpus=0.25)
         .sink(StoreSink(data=str(data))))
    return graph


def letters(servers: str) -> list:
    """Every letter in the topic's dead-letter topic."""
    dlq = KafkaConsumer(f"{TOPIC}.dlq", bootstrap_servers=servers, auto_offset_reset="earliest",
                        consumer_timeout_ms=4000)
    found = list(dlq)
    dlq.close()
    return found


def _stored(data: Path) -> tuple[list[int], dict]:
    with LineageStore(data / "lineage", read_only=True) as store:
        frames = sorted(store.frame(k)["frame_no"] for k, _ in store.scan("frames"))
        return frames, store.offsets()


def test_messages_an_operator_or_the_sink_fails_on_are_dead_lettered_once(ray_cluster, broker, sent, tmp_path):
    report = streamvision.run(flow(broker.bootstrap_servers, tmp_path / "a"))
    stats = report.sources["kafka"]
    assert stats["messages"] == MESSAGES
    assert stats["dead_letters"] == stats["dead_letters.processing-failed"] == 2
    frames, offsets = _stored(tmp_path / "a")
    assert frames == [i for i in range(MESSAGES) if i not in (OPERATOR_FAILS, SINK_FAILS)]
    assert offsets == {(TOPIC, 0): MESSAGES}  # the rejected messages are done too
    got = letters(broker.bootstrap_servers)
    assert [int(dict(r.headers)["sv-dlq-offset"]) for r in got] == [OPERATOR_FAILS, SINK_FAILS]
    assert [r.value for r in got] == [sent[OPERATOR_FAILS], sent[SINK_FAILS]]  # the original bytes
    errors = [dict(r.headers)["sv-error"].decode() for r in got]
    # (the planner fuses the four operators into one node, named after them all)
    assert errors[0].startswith("processing-failed: whole_frame->picky->") and "cannot handle frame 5" in errors[0]
    assert errors[1].startswith("processing-failed: store") and "norm" in errors[1]
    assert all(dict(r.headers)["sv-dlq-late"] == b"1" for r in got)

    # the same group reads every message again into a fresh directory: no letter written twice
    again = streamvision.run(flow(broker.bootstrap_servers, tmp_path / "b")).sources["kafka"]
    assert again["dead_letters"] == again["dead_letters_already_sent"] == 2
    assert len(letters(broker.bootstrap_servers)) == 2
    assert _stored(tmp_path / "b") == _stored(tmp_path / "a")
    # a rerun into the first directory has nothing left to do
    rerun = streamvision.run(flow(broker.bootstrap_servers, tmp_path / "a")).sources["kafka"]
    assert rerun["messages"] == 0 and len(letters(broker.bootstrap_servers)) == 2
