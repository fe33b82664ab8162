"""Kafka -> Ray dataflow -> RocksDB + FAISS on the real embedded broker and the real vtest.avi.

Effectively-once: kill -9 a source actor, a featurizer actor and the driver process mid-stream,
restart, and the final store equals the one of an uninterrupted run, byte for byte.
"""

from __future__ import annotations

import streamvision

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner import murmur2

from operators.featurizers.color_histogram import ColorHistogram
from operators.index.sharded import ShardedIndex
from operators.kafka.settings import KafkaSettings, ensure_topic
from operators.patches.whole_frame import WholeFramePatches
from operators.producers import FrameProducer
from operators.producers.frame_reader import FrameReader
from operators.sinks.store_sink import StoreSink
from operators.sources.kafka_source import KafkaSource
from operators.stores.lineage_store import BATCHING_FAMILIES, LineageStore
from operators.kafka import wire
from streamvision.plan.dataflow import Dataflow
from streamvision.core.lineage import FrameKeyCodec

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
TOPIC, CAMERAS, PER_CAMERA = "vt", ("cam-a", "cam-b", "cam-c"), 40


@pytest.fixture(scope="module")
def images(vtest_path):
    return [image for _, (image, _) in zip(range(3 * PER_CAMERA), FrameReader(str(vtest_path)))]


@pytest.fixture(scope="module")
def topic(broker, images):
    """Three cameras on a two-partition topic, JPEG frames."""
    with FrameProducer(broker.bootstrap_servers, TOPIC, partitions=2) as producer:
        for c, camera in enumerate(CAMERAS):
            chunk = images[c * PER_CAMERA:(c + 1) * PER_CAMERA]
            producer.send_frames([(im, i / 10) for i, im in enumerate(chunk)], camera=camera, kind="jpeg",
                                 quality=85)
    return TOPIC


def _flow(broker, topic: str, data: Path, group: str, *, replicas: int = 1, max_batch: int = 8) -> Dataflow:
    flow = Dataflow(f"kafka:{topic}")
    source = KafkaSource(topic=topic, bootstrap_servers=broker.bootstrap_servers, group_id=group, until_end=True,
                         **GROUP_TIMING)
    (flow.source(source, replicas=replicas, num_cpus=0.25, max_batch=max_batch)
         .then(WholeFramePatches())
         .then(ColorHistogram())
         .sink(StoreSink(data=str(data))))
    return flow


def _digest(data: Path) -> dict[str, frozenset[bytes]]:
    """What the store holds, but the vector log (its write positions follow how the stream was
    batched, which a restart changes)."""
    with LineageStore(data / "lineage", read_only=True) as store:
        return store.contents(exclude=BATCHING_FAMILIES)


def _index_ids(data: Path) -> set[int]:
    """Ids the collection's shards hold once opened (snapshots + replay of newer writes)."""
    with ShardedIndex.open(data, 2048, "Flat", 2) as index:
        return {int(i) for i in index.items()[0]}


def _end_offsets(broker, topic: str) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    try:
        return {(topic, p): _highwater(consumer, topic, p) for p in sorted(consumer.partitions_for_topic(topic))}
    finally:
        consumer.close()


def _highwater(consumer: KafkaConsumer, topic: str, partition: int) -> int:
    from kafka import TopicPartition

    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    deadline = time.monotonic() + 30
    while consumer.highwater(tp) is None and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200)
    return int(consumer.highwater(tp))


def _my_actor_processes(kind: str) -> list[psutil.Process]:
    """Ray worker processes of this test session's cluster hosting ``kind`` actors."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline() and proc.cmdline()[0].startswith(f"ray::{kind}"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _kill_when(kind: str, written_at_least: int):
    """A progress callback that SIGKILLs one ``kind`` actor process once enough is written."""
    state = {"killed": 0}

    def progress(p) -> None:
        if not state["killed"] and p.written >= written_at_least:
            victims = _my_actor_processes(kind)
            assert victims, f"no {kind} process found"
            os.kill(victims[0].pid, signal.SIGKILL)
            state["killed"] = victims[0].pid

    return progress, state


@pytest.fixture(scope="module")
def reference(ray_cluster, broker, topic, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    data = tmp_path_factory.mktemp("reference") / "data"
    report = streamvision.run(_flow(broker, topic, data, "g-ref"))
    assert report.frames == 3 * PER_CAMERA and not report.stopped_early
    return data


def test_every_frame_becomes_exactly_one_patch_set(reference, broker, topic):
    total = 3 * PER_CAMERA
    with LineageStore(reference / "lineage", read_only=True) as store:
        assert store.count("frames") == total
        vectors = dict(store.iter_vectors())
        assert len(vectors) == total
        keys = [FrameKeyCodec.decode(bytes.fromhex(store.patch(pid)["frame_key"])) for pid in vectors]
        assert len(set(keys)) == total and all(k.topic == topic for k in keys)
        assert store.offsets() == _end_offsets(broker, topic)
        # per-camera order: a camera's frame numbers rise with its Kafka offsets
        by_camera: dict[str, list[tuple[int, int]]] = {}
        for key, raw in store.scan("frames"):
            frame = FrameKeyCodec.decode(key)
            meta = store.frame(key)
            by_camera.setdefault(meta["camera"], []).append((frame.offset, meta["frame_no"]))
        assert set(by_camera) == set(CAMERAS)
        for rows in by_camera.values():
            assert [n for _, n in sorted(rows)] == list(range(PER_CAMERA))
    assert len(_index_ids(reference)) == total


def test_kill_source_actor_mid_stream(reference, broker, topic, tmp_path):
    data = tmp_path / "data"
    progress, state = _kill_when("SourceActor", 24)
    report = streamvision.run(_flow(broker, topic, data, "g-kill-source"), progress=progress)
    assert state["killed"] and not report.stopped_early
    assert _digest(data) == _digest(reference)
    assert _index_ids(data) == _index_ids(reference)


def test_kill_featurizer_actor_mid_stream(reference, broker, topic, tmp_path):
    data = tmp_path / "data"
    progress, state = _kill_when("OperatorActor", 24)
    report = streamvision.run(_flow(broker, topic, data, "g-kill-op"), progress=progress)
    assert state["killed"] and not report.stopped_early
    assert _digest(data) == _digest(reference)
    assert _index_ids(data) == _index_ids(reference)


_DRIVER = textwrap.dedent("""
    import sys
    import streamvision
    from tests.integration.test_kafka_pipeline import _flow

    class Broker:
        bootstrap_servers = sys.argv[1]

    def progress(p):
        print("written", p.written, flush=True)

    streamvision.run(_flow(Broker, sys.argv[2], sys.argv[3], "g-kill-driver"), address=sys.argv[4], progress=progress)
    print("finished", flush=True)
""")


def test_kill_driver_process_then_restart(reference, broker, topic, tmp_path, ray_cluster):
    data = tmp_path / "data"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), broker.bootstrap_servers, topic, str(data), address],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    killed = False
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("written") and int(line.split()[1]) >= 24:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            assert time.monotonic() < deadline, "the driver made no progress"
    finally:
        if not killed:
            proc.kill()
        proc.wait(30)
    assert killed, "the driver finished before it could be killed"
    with LineageStore(data / "lineage", read_only=True) as store:
        partial = store.count("frames")
    # some frames were written before the kill; the dead driver's actors may write the rest before Ray
    # tears them down (all 120 on a fast machine), and the restart must then resume with nothing to redo
    assert partial > 0
    # Ray tears down the dead driver's actors; the sink must let go of RocksDB before the restart
    deadline = time.monotonic() + 120
    while any(_my_actor_processes(k) for k in ("SinkActor", "SourceActor", "OperatorActor")):
        assert time.monotonic() < deadline, "the dead driver's actors did not go away"
        time.sleep(0.5)
    report = streamvision.run(_flow(broker, topic, data, "g-kill-driver"))
    assert report.frames < 3 * PER_CAMERA  # resumed from the stored offsets, not from the start
    assert _digest(data) == _digest(reference)
    assert _index_ids(data) == _index_ids(reference)


def _cameras_on_every_partition(partitions: int) -> list[str]:
    names, hit = [], set()
    for i in range(1000):
        name = f"camera-{i}"
        p = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if p not in hit:
            hit.add(p)
            names.append(name)
        if len(hit) == partitions:
            return names
    raise AssertionError("no spread of camera names")


def test_two_source_actors_split_the_partitions(ray_cluster, broker, images, tmp_path):
    cameras = _cameras_on_every_partition(4)
    with FrameProducer(broker.bootstrap_servers, "vt-split", partitions=4) as producer:
        for camera in cameras:
            producer.send_frames([(im, i / 10) for i, im in enumerate(images[:10])], camera=camera, kind="jpeg",
                                 quality=60)
    data = tmp_path / "data"
    report = streamvision.run(_flow(broker, "vt-split", data, "g-split", replicas=2))
    assert report.sources["kafka"]["replicas_with_input"] == 2
    with LineageStore(data / "lineage", read_only=True) as store:
        assert store.count("frames") == 10 * len(cameras)
        assert store.count("vectors") == 10 * len(cameras)
        assert store.offsets() == {("vt-split", p): 10 for p in range(4)}


def test_h264_segments_split_over_batches(ray_cluster, broker, vtest_path, tmp_path):
    with FrameProducer(broker.bootstrap_servers, "vt-h264", partitions=1) as producer:
        report = producer.produce(str(vtest_path), camera="cam", kind="h264", segment_seconds=2.0, limit=50)
    assert report.messages == 3
    data = tmp_path / "data"
    run = streamvision.run(_flow(broker, "vt-h264", data, "g-h264", max_batch=8))  # 20-frame segments span 3 batches
    assert run.frames == 50
    with LineageStore(data / "lineage", read_only=True) as store:
        frames = [(FrameKeyCodec.decode(k), store.frame(k)["frame_no"]) for k, _ in store.scan("frames")]
        assert sorted(n for _, n in frames) == list(range(50))
        assert sorted((k.offset, k.index_in_message) for k, _ in frames) == (
            [(0, i) for i in range(20)] + [(1, i) for i in range(20)] + [(2, i) for i in range(10)])
        assert store.offsets() == {("vt-h264", 0): 3}
    assert len(_index_ids(data)) == 50
    # the segments are kept: every frame's pixels come back, within H.264's error of the video
    originals = [image for _, (image, _) in zip(range(50), FrameReader(str(vtest_path)))]
    with streamvision.connect(data) as sv:
        for match in sv.similar(sv.index.items()[1][0], k=50):
            assert sv.lineage(match.patch_id)[-1]["pixels"] == "segments"
            crop = sv.pixels(match.patch_id).astype(np.float64)
            mse = np.mean((crop - originals[match.lineage["frame_no"]]) ** 2)
            assert 10 * np.log10(255 ** 2 / mse) > 30.0  # PSNR in dB


def test_bad_messages_land_in_the_dlq_while_good_ones_are_processed(ray_cluster, broker, images, tmp_path):
    from operators.producers.segments import encode_h264_segment

    ensure_topic(KafkaSettings(broker.bootstrap_servers), "vt-bad", partitions=1)
    good = [wire.encode_image(im, camera="cam", ts=1000.0 + i, frame_no=i) for i, im in enumerate(images[:6])]
    clip = encode_h264_segment(images[6:16], rate=10.0)
    segment = wire.encode_segment_message(clip, camera="cam", ts=2000.0, frame0=6, pts=0.6, count=10,
                                          shape=(576, 768))
    cut = clip[: len(clip) // 2 // 188 * 188]
    future_version = [(k, b"7" if k == "sv-version" else v) for k, v in good[3].headers]
    sends = [good[0], (good[1].value[:5000], good[1].headers), good[2], (cut, segment.headers), segment,
             (good[3].value, future_version), good[4], good[5]]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=16 * 1024 * 1024)
    for item in sends:
        value, headers = (item.value, item.headers) if isinstance(item, wire.WireMessage) else item
        producer.send("vt-bad", key=b"cam", value=value, headers=headers)
    producer.flush()
    producer.close()
    data = tmp_path / "data"
    report = streamvision.run(_flow(broker, "vt-bad", data, "g-bad"))
    stats = report.sources["kafka"]
    assert stats["dead_letters"] == 3 and stats["messages"] == 8
    assert (stats["dead_letters.corrupt-image"], stats["dead_letters.truncated-segment"],
            stats["dead_letters.unknown-version"]) == (1, 1, 1)
    with LineageStore(data / "lineage", read_only=True) as store:
        numbers = sorted(store.frame(k)["frame_no"] for k, _ in store.scan("frames"))
        assert numbers == [0, 2, 4, 5, *range(6, 16)]
        assert store.offsets() == {("vt-bad", 0): 8}
    dlq = KafkaConsumer("vt-bad.dlq", bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000)
    letters = [r for _, r in zip(range(3), dlq)]
    dlq.close()
    reasons = [wire.error_reason(dict(r.headers)["sv-error"]) for r in letters]
    assert reasons == ["corrupt-image", "truncated-segment", "unknown-version"]
    assert [int(dict(r.headers)["sv-dlq-offset"]) for r in letters] == [1, 3, 5]
    assert all(r.key == b"cam" for r in letters)
