"""Poison messages on the real embedded broker, between good frames of the real vtest.avi.

Each hostile message of the reliability issue (a segment of too many frames, a raw message of
millions of 1x1 frames, a JPEG whose header declares 30000x30000, a header name that is not
UTF-8, ``sv-ts: 1e20``, an ffconcat script sent as H.264, a camera id with a NUL byte) is
dead-lettered once with its reason while the pipeline keeps running: the good frames are
stored, the source's memory stays far below what the bad ones would cost, and reading the
topic again (the same group, into a fresh directory: every message re-read) writes no
dead letter twice.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

import streamvision
from operators.featurizers.color_histogram import ColorHistogram
from operators.kafka import wire
from operators.kafka.settings import KafkaSettings, ensure_topic
from operators.patches.whole_frame import WholeFramePatches
from operators.producers.frame_reader import FrameReader
from operators.producers.segments import encode_h264_segment
from operators.sinks.store_sink import StoreSink
from operators.sources.kafka_source import KafkaSource
from operators.stores.lineage_store import LineageStore
from streamvision.plan.dataflow import Dataflow

pytestmark = pytest.mark.integration
TOPIC = "poison"
LIMITS = {"frames": 20}  # a 30-frame segment is too long; the defaults elsewhere


class _RawName(str):
    """A header name whose bytes on the wire are not UTF-8 (the producer encodes names itself)."""

    def encode(self, *args, **kwargs) -> bytes:  # noqa: ARG002 - str's signature
        return b"sv-\xff\xfe"


@pytest.fixture(scope="module")
def images(vtest_path):
    return [image for _, (image, _) in zip(range(50), FrameReader(str(vtest_path)))]


def _good(images, i: int) -> tuple[bytes, list]:
    msg = wire.encode_image(images[i], camera="cam", ts=1000.0 + i, frame_no=i, quality=80)
    return msg.value, msg.headers


def _with(headers: list, **changes: bytes) -> list:
    return [(k, changes.get(k.removeprefix("sv-").replace("-", "_"), v)) for k, v in headers]


@pytest.fixture(scope="module")
def poisoned(broker, images, vtest_path):
    return send_poisoned(broker.bootstrap_servers, TOPIC, images, vtest_path)


def send_poisoned(servers: str, topic: str, images: list, vtest_path: Path) -> tuple[list[str], int]:
    """Good frames 0..7 and a 10-frame segment, with one hostile message between each two;
    returns the reasons the hostile ones must be dead-lettered for, and the messages sent."""
    ensure_topic(KafkaSettings(servers), topic, partitions=1)
    jpeg = _good(images, 0)
    long_clip = encode_h264_segment(images[20:50], rate=10.0)  # 30 frames, no sv-count
    long_header = wire.Header(kind=wire.KIND_H264, camera="cam", ts=5.0, frame0=100, shape=(576, 768))
    bomb = bytearray(jpeg[0])
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
    raw_header = wire.Header(kind=wire.KIND_RAW, camera="cam", ts=6.0, frame0=200, shape=(1, 1))
    script = f"ffconcat version 1.0\nfile '{vtest_path}'\n".encode()
    clip = encode_h264_segment(images[8:18], rate=10.0)
    segment = wire.encode_segment_message(clip, camera="cam", ts=2000.0, frame0=8, pts=0.8, count=10,
                                          shape=(576, 768))
    bad = [
        ("oversize", long_clip, long_header.to_kafka()),
        ("oversize", bytes(3 * 100_000), raw_header.to_kafka()),
        ("oversize", bytes(bomb), jpeg[1]),
        ("unparsable-record", jpeg[0], [*jpeg[1], (_RawName("sv-x"), b"1")]),
        ("bad-header", jpeg[0], _with(jpeg[1], ts=b"1e20")),
        ("corrupt-segment", script, wire.Header(kind=wire.KIND_H264, camera="cam", ts=7.0, frame0=300).to_kafka()),
        ("bad-header", jpeg[0], _with(jpeg[1], camera=b"cam\x00b")),
    ]
    sends = []
    for i, (_, value, headers) in enumerate(bad):
        sends += [_good(images, i), (value, headers)]
    sends += [(segment.value, segment.headers), _good(images, 7)]
    producer = KafkaProducer(bootstrap_servers=servers, max_request_size=16 * 1024 * 1024)
    for value, headers in sends:  # one record batch each (the client parses a batch whole)
        producer.send(topic, key=b"cam", value=value, headers=headers).get(timeout=30)
    producer.close()
    return [reason for reason, _, _ in bad], len(sends)


def _flow(broker, data: Path) -> Dataflow:
    source = KafkaSource(topic=TOPIC, bootstrap_servers=broker.bootstrap_servers, group_id="g-poison",
                         until_end=True, limits=LIMITS, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    flow = Dataflow("poison")
    (flow.source(source, max_batch=8)
         .then(WholeFramePatches())
         .then(ColorHistogram(bins=4, grid=2))
         .sink(StoreSink(data=str(data))))
    return flow


def _letters(broker) -> list:
    dlq = KafkaConsumer(f"{TOPIC}.dlq", bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                        consumer_timeout_ms=4000)
    letters = list(dlq)
    dlq.close()
    return letters


def _frame_numbers(data: Path) -> list[int]:
    with LineageStore(data / "lineage", read_only=True) as store:
        return sorted(store.frame(k)["frame_no"] for k, _ in store.scan("frames"))


def test_every_poison_message_is_dead_lettered_once_and_good_frames_flow(ray_cluster, broker, poisoned, tmp_path):
    reasons, messages = poisoned
    report = streamvision.run(_flow(broker, tmp_path / "a"))
    stats = report.sources["kafka"]
    assert stats["messages"] == messages and stats["dead_letters"] == len(reasons)
    assert _frame_numbers(tmp_path / "a") == list(range(18))  # frames 0..7 and the segment's 8..17
    with LineageStore(tmp_path / "a" / "lineage", read_only=True) as store:
        assert store.offsets() == {(TOPIC, 0): messages}  # the bad messages' offsets are done too
    letters = _letters(broker)
    assert [wire.error_reason(dict(r.headers)["sv-error"]) for r in letters] == reasons
    assert [int(dict(r.headers)["sv-dlq-offset"]) for r in letters] == [2 * i + 1 for i in range(len(reasons))]
    # the 30000x30000 JPEG (2.7 GB), the 30-frame segment and the million tiny frames cost nothing:
    assert stats["max_rss_mb"] < 1024

    # the same group reads every message again (a fresh directory resumes from the log start)
    again = streamvision.run(_flow(broker, tmp_path / "b")).sources["kafka"]
    assert again["dead_letters"] == len(reasons) and again["dead_letters_already_sent"] == len(reasons)
    assert len(_letters(broker)) == len(reasons)  # no letter written twice
    assert _frame_numbers(tmp_path / "b") == list(range(18))

    # and a rerun into the first directory resumes after the end: nothing read, nothing sent
    rerun = streamvision.run(_flow(broker, tmp_path / "a")).sources["kafka"]
    assert rerun["messages"] == 0 and len(_letters(broker)) == len(reasons)
