"""KafkaSource against the real embedded broker, without Ray: decode, lineage, offsets, DLQ, groups."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from operators.kafka.settings import KafkaSettings, ensure_topic
from operators.producers import FrameProducer
from operators.producers.frame_reader import FrameReader
from operators.sinks.offsets import OffsetTracker
from operators.sources.kafka_source import FETCH_MAX_WAIT_MS, KafkaSource
from operators.kafka import wire
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.lineage import FrameKeyCodec, KafkaKey

GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@pytest.fixture(scope="module")
def images(vtest_path):
    return [image for _, (image, _) in zip(range(30), FrameReader(str(vtest_path)))]


def _source(broker, topic, group, **options) -> KafkaSource:
    return KafkaSource(topic=topic, bootstrap_servers=broker.bootstrap_servers, group_id=group,
                       until_end=True, **{**GROUP_TIMING, **options})


def _drain(source: KafkaSource, stored=None, max_batch=8, replicas=1):
    """Read to the end like the runtime does; return batches and the sink-side watermarks."""
    tracker = OffsetTracker(dict(stored or {}))
    source.open()
    source.seek(dict(stored or {}))
    source.join(replicas)
    batches = []
    try:
        for batch in source.read(max_batch):
            assert len(batch) <= max_batch
            batches.append(batch)
            advanced = tracker.complete(batch.meta["offset_ranges"])
            source.commit(advanced)
    finally:
        source.close()
    return batches, tracker.watermarks


def test_jpeg_and_h264_messages_become_frames_with_lineage_keys(broker, vtest_path):
    with FrameProducer(broker.bootstrap_servers, "s-mixed", partitions=1) as producer:
        producer.produce(str(vtest_path), camera="jpeg-cam", kind="jpeg", limit=20)
        producer.produce(str(vtest_path), camera="h264-cam", kind="h264", segment_seconds=1.2, limit=30)
    batches, marks = _drain(_source(broker, "s-mixed", "g-mixed"), max_batch=8)
    keys = [FrameKeyCodec.decode(k) for b in batches for k in b.keys]
    assert len(keys) == 50 and len(set(keys)) == 50
    assert all(isinstance(k, KafkaKey) and k.topic == "s-mixed" and k.partition == 0 for k in keys)
    jpeg = [k for b in batches for k, c in zip(b.keys, b.cameras) if c == "jpeg-cam"]
    assert [FrameKeyCodec.decode(k).offset for k in jpeg] == list(range(20))
    segs = [(FrameKeyCodec.decode(k).offset, FrameKeyCodec.decode(k).index_in_message)
            for b in batches for k, c in zip(b.keys, b.cameras) if c == "h264-cam"]
    # 30 frames at 10 fps in 1.2 s segments: 12 + 12 + 6 frames at offsets 20, 21, 22
    assert segs == [(20, i) for i in range(12)] + [(21, i) for i in range(12)] + [(22, i) for i in range(6)]
    frame_no = np.concatenate([b.frame_no[np.array(b.cameras) == "h264-cam"] for b in batches])
    assert frame_no.tolist() == list(range(30))
    assert all(b.images.shape[1:] == (576, 768, 3) for b in batches if len(b))
    # batches without frames (yielded while the group forms) complete no offsets
    assert all(not b.meta["offset_ranges"] for b in batches if not len(b))
    assert marks == {("s-mixed", 0): 23}


def test_bad_messages_go_to_the_dlq_with_reasons_and_good_ones_flow(broker, images):
    good = [wire.encode_image(im, camera="cam", ts=1.0, frame_no=i) for i, im in enumerate(images[:6])]
    truncated = good[0].value[: len(good[0].value) // 3]
    ensure_topic(KafkaSettings(broker.bootstrap_servers), "s-dlq", partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=16 * 1024 * 1024)
    sends = [
        (good[0].value, good[0].headers),
        (truncated, good[1].headers),                                              # corrupt JPEG
        (good[2].value, good[2].headers),
        (good[1].value, [(k, b"9" if k == "sv-version" else v) for k, v in good[1].headers]),  # unknown version
        (b"", good[3].headers),                                                   # empty
        (good[3].value, good[3].headers),
        (images[0][:100].tobytes(), wire.Header(kind=wire.KIND_RAW, camera="cam", ts=0, frame0=9,
                                                shape=(99, 768)).to_kafka()),     # wrong shape
        (good[4].value, good[4].headers),
    ]
    for value, headers in sends:
        producer.send("s-dlq", key=b"cam", value=value, headers=headers)
    producer.flush()
    producer.close()
    source = _source(broker, "s-dlq", "g-dlq")
    batches, marks = _drain(source)
    assert sum(len(b) for b in batches) == 4
    assert [int(n) for b in batches for n in b.frame_no] == [0, 2, 3, 4]
    assert marks == {("s-dlq", 0): 8}  # dead letters count as done: nothing blocks the watermark
    stats = source.stats()
    assert stats["dead_letters"] == 4 and stats["messages"] == 8
    assert {k: v for k, v in stats.items() if k.startswith("dead_letters.")} == {
        "dead_letters.corrupt-image": 1, "dead_letters.unknown-version": 1, "dead_letters.empty": 1,
        "dead_letters.wrong-shape": 1}
    reported = [entry for b in batches for entry in b.meta.get("dead_letters", [])]
    assert [(e[2], e[3]) for e in reported] == [(1, "corrupt-image"), (3, "unknown-version"), (4, "empty"),
                                               (6, "wrong-shape")]
    dlq = KafkaConsumer("s-dlq.dlq", bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000)
    letters = [r for _, r in zip(range(4), dlq)]
    dlq.close()
    assert len(letters) == 4
    assert letters[0].value == truncated and letters[0].key == b"cam"
    errors = [dict(r.headers)["sv-error"].decode() for r in letters]
    assert [e.split(":")[0] for e in errors] == ["corrupt-image", "unknown-version", "empty", "wrong-shape"]
    assert [dict(r.headers)["sv-dlq-offset"] for r in letters] == [b"1", b"3", b"4", b"6"]


def test_required_frame_size_sends_other_sizes_to_the_dlq(broker, images):
    with FrameProducer(broker.bootstrap_servers, "s-size", partitions=1) as producer:
        producer.send_frames([(images[0], 0.0), (images[1][:288, :384].copy(), 0.1), (images[2], 0.2)],
                             camera="c", kind="png")
    source = _source(broker, "s-size", "g-size", height=576, width=768)
    batches, marks = _drain(source)
    assert [int(n) for b in batches for n in b.frame_no] == [0, 2]
    assert source.stats()["dead_letters.wrong-shape"] == 1
    assert marks == {("s-size", 0): 3}


def test_seek_resumes_from_stored_offsets_and_commit_reaches_kafka(broker, images):
    with FrameProducer(broker.bootstrap_servers, "s-seek", partitions=2) as producer:
        for cam in ("a", "b", "c", "d"):
            producer.send_frames([(im, i / 10) for i, im in enumerate(images[:5])], camera=cam, kind="jpeg",
                                 quality=50)
    first, marks = _drain(_source(broker, "s-seek", "g-seek"))
    assert sum(len(b) for b in first) == 20
    assert sum(marks.values()) == 20
    partition = next(p for (_, p), n in marks.items() if n >= 5)
    stored = {("s-seek", partition): marks[("s-seek", partition)] - 3}
    stored.update({key: n for key, n in marks.items() if key[1] != partition})
    again, _ = _drain(_source(broker, "s-seek", "g-seek-2"), stored=stored)
    offsets = sorted(FrameKeyCodec.decode(k).offset for b in again for k in b.keys)
    assert offsets == [marks[("s-seek", partition)] - 3 + i for i in range(3)]
    probe = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id="g-seek")
    committed = {p: probe.committed(TopicPartition("s-seek", p)) for p in (0, 1)}
    probe.close()
    assert committed == {p: marks.get(("s-seek", p)) for p in (0, 1)}


def test_two_sources_in_one_group_split_the_partitions(broker, images):
    cameras = {}  # two cameras per partition, by the producer's key partitioner
    for name in (f"cam{i}" for i in range(1000)):
        partition = (murmur2(name.encode()) & 0x7FFFFFFF) % 4
        if len(cameras.setdefault(partition, [])) < 2:
            cameras[partition].append(name)
    with FrameProducer(broker.bootstrap_servers, "s-split", partitions=4) as producer:
        for cam in sorted(c for names in cameras.values() for c in names):
            producer.send_frames([(im, i / 10) for i, im in enumerate(images[:4])], camera=cam,
                                 kind="jpeg", quality=40)
    results: dict[int, list] = {}
    # One sink below both members, as in the runtime: every member hears the group's durable
    # offsets and ends with the group. A member that takes over a partition when the other
    # leaves resumes where the other left it (the two members end at different times, and the
    # first to leave hands its partitions to the other).
    sink, sink_lock = OffsetTracker({}), threading.Lock()

    def run(i: int) -> None:
        # join() waits at most a session timeout for the share: room for the second member to
        # start 5 s later and the group to rebalance on a loaded machine (the embedded broker
        # completes a join phase in 5 s steps: 10 s on an idle machine, over 20 s once in CI)
        source = _source(broker, "s-split", "g-split", idle_end_s=15.0, session_timeout_ms=45000)
        source.end_with_group()
        source.open()
        source.join(2)
        batches = []
        try:
            for batch in source.read(8):
                batches.append(batch)
                with sink_lock:
                    sink.complete(batch.meta["offset_ranges"])
                    durable = sink.watermarks
                source.commit(durable)
        finally:
            source.close()
        results[i] = batches

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    threads[0].start()
    # later than the broker's 3 s initial rebalance delay: the first member is handed all four
    # partitions and must wait for its share
    time.sleep(5.0)
    threads[1].start()
    for t in threads:
        t.join(240)  # the end waits out the leaver's session too (about 100 s in all)
    keys = [[FrameKeyCodec.decode(k) for b in results[i] for k in b.keys] for i in range(2)]
    # every frame read once, two partitions each
    assert sorted((k.partition, k.offset) for ks in keys for k in ks) == [(p, o) for p in range(4) for o in range(8)]
    parts = [{k.partition for k in ks} for ks in keys]
    assert len(parts[0]) == len(parts[1]) == 2 and not parts[0] & parts[1]


def test_per_camera_order_is_kept(broker, images):
    with FrameProducer(broker.bootstrap_servers, "s-order", partitions=3) as producer:
        for round_ in range(4):
            for cam in ("north", "south", "east", "west"):
                producer.send_frames([(images[round_], round_ / 10)], camera=cam, kind="jpeg", quality=40,
                                     frame0=round_)
    batches, _ = _drain(_source(broker, "s-order", "g-order"), max_batch=3)
    seen: dict[str, list[int]] = {}
    for b in batches:
        for cam, n in zip(b.cameras, b.frame_no):
            seen.setdefault(cam, []).append(int(n))
    assert seen == {cam: [0, 1, 2, 3] for cam in ("north", "south", "east", "west")}


def test_bad_options():
    with pytest.raises(ConfigError, match="height and width"):
        KafkaSource(topic="t", bootstrap_servers="127.0.0.1:1", height=10)
    with pytest.raises(ConfigError, match="dead-letter"):
        KafkaSource(topic="t.dlq", bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ConfigError, match="unknown Kafka client option"):
        KafkaSource(topic="t", bootstrap_servers="127.0.0.1:1", kafka_options={"sasl_pw": "x"})


def test_the_broker_holds_an_empty_fetch_briefly_unless_told_otherwise(broker):
    """kafka-python's 500 ms default held frames sent every 100 ms for 140 ms (median) in the
    embedded broker; ``kafka_options`` still decide."""
    ensure_topic(KafkaSettings(broker.bootstrap_servers), "s-wait", partitions=1)
    for options, expected in (({}, FETCH_MAX_WAIT_MS), ({"fetch_max_wait_ms": 300}, 300)):
        source = _source(broker, "s-wait", "g-wait", kafka_options=options)
        source.open()
        try:
            assert source._consumer.config["fetch_max_wait_ms"] == expected
        finally:
            source.close()
    assert FETCH_MAX_WAIT_MS <= 100


def test_resume_offset_past_the_end_is_a_clear_error(broker, images):
    """A recreated topic (the embedded broker forgets topics) must not silently reuse lineage keys."""
    with FrameProducer(broker.bootstrap_servers, "s-gone", partitions=1) as producer:
        producer.send_frames([(images[0], 0.0), (images[1], 0.1)], camera="c", kind="jpeg", quality=40)
    with pytest.raises(InputError, match="outside the topic's log"):
        _drain(_source(broker, "s-gone", "g-gone"), stored={("s-gone", 0): 50})


_ZOMBIE = """
import sys
from kafka import KafkaConsumer
consumer = KafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3], enable_auto_commit=False,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)
while not consumer.assignment():
    consumer.poll(timeout_ms=200)
print("assigned", flush=True)
while True:
    consumer.poll(timeout_ms=200)
"""


def test_a_source_restarted_before_the_dead_members_session_expires_reads_everything(broker, images, tmp_path):
    """A member killed -9 keeps its partitions until its session expires; a source started at
    once must wait for them (rejoin), not read its own share and end."""
    import subprocess
    import sys

    with FrameProducer(broker.bootstrap_servers, "s-zombie", partitions=4) as producer:
        for cam in range(8):
            producer.send_frames([(im, i / 10) for i, im in enumerate(images[:3])], camera=f"cam{cam}",
                                 kind="jpeg", quality=40)
    zombie = subprocess.Popen([sys.executable, "-c", _ZOMBIE, broker.bootstrap_servers, "s-zombie", "g-zombie"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert zombie.stdout.readline().strip() == "assigned"  # type: ignore[union-attr]
    finally:
        zombie.kill()  # dead, but the group holds its partitions until its session expires
        zombie.wait(10)
    batches, watermarks = _drain(_source(broker, "s-zombie", "g-zombie"))
    keys = {(k.partition, k.offset) for b in batches for k in map(FrameKeyCodec.decode, b.keys)}
    assert len(keys) == 24  # every frame, from every partition
    assert sum(watermarks.values()) == 24
