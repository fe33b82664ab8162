"""Every ``store_frames`` format on real frames through the real broker: what is kept, how it
loads by time, and how exact the pixels come back (no Ray: source and sink in this process)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

import streamvision
from operators.producers import FrameProducer
from operators.producers.frame_reader import FrameReader
from operators.sinks.collection_writer import CollectionWriter
from operators.sinks.store_sink import StoreSink
from operators.sources.kafka_source import KafkaSource
from operators.kafka import wire
from operators.stores import kept, pixels
from operators.stores.lineage_store import LineageStore
from operators.stores.segmenter import Segmenter
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.lineage import FrameKeyCodec, KafkaKey
from streamvision.core.patches import PatchBatch
from tests.operators.kafka_ingest import ingest_whole_frames

SEGMENT_SECONDS = 0.25


@pytest.fixture(scope="module")
def topic(broker, vtest_path) -> str:
    """Camera ``jpg``: 24 JPEG messages sent at 40 frames/s (0.6 s); camera ``seg``: two
    H.264 segments of 10 frames."""
    with FrameProducer(broker.bootstrap_servers, "formats", partitions=1) as producer:
        producer.produce(str(vtest_path), camera="jpg", kind="jpeg", fps=40, limit=24)
        producer.produce(str(vtest_path), camera="seg", kind="h264", segment_seconds=1.0, limit=20)
    return "formats"


def _ingest(broker, topic: str, data, store_frames: str) -> dict[bytes, tuple[float, np.ndarray]]:
    """Ingest the topic keeping frames as ``store_frames``; the frames the source decoded, by key."""
    source = KafkaSource(topic=topic, bootstrap_servers=broker.bootstrap_servers, group_id=f"g-{store_frames}",
                         until_end=True, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    decoded = ingest_whole_frames(source.with_frame_storage(store_frames, SEGMENT_SECONDS), data)
    assert len(decoded) == 44
    return decoded


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.PSNR(a, b))


#: What serves each camera's frames: format -> camera -> formats seen.
EXPECTED = {
    "segments": {"jpg": {"segments"}, "seg": {"segments"}},
    "source": {"jpg": {"frame-file"}, "seg": {"segments"}},
    "jpeg": {"jpg": {"frame-file"}, "seg": {"frame-file"}},
    "raw": {"jpg": {"frame-file"}, "seg": {"frame-file"}},
}
#: Where the pixels come back bit for bit: the message as it came, or a lossless re-encoding.
EXACT = {"segments": {"seg"}, "source": {"jpg", "seg"}, "jpeg": {"jpg"}, "raw": {"jpg", "seg"}}


@pytest.mark.parametrize("store_frames", ["segments", "source", "jpeg", "raw"])
def test_each_format_serves_every_frame_and_loads_by_time(broker, topic, tmp_path, store_frames):
    decoded = _ingest(broker, topic, tmp_path / store_frames, store_frames)
    seen: dict[str, set[str]] = {"jpg": set(), "seg": set()}
    with streamvision.connect(tmp_path / store_frames) as sv:
        for pid in sv.store.row_ids():
            patch = sv.store.patch(pid)
            key, camera = bytes.fromhex(patch["frame_key"]), patch["camera"]
            fmt = sv.lineage(pid)[-1]["pixels"]
            last_run = store_frames == "segments" and fmt == "frame-file"  # the last run, if under 0.25 s
            seen[camera].add("segments" if last_run else fmt)
            got, want = sv.pixels(pid), decoded[key][1]
            if camera in EXACT[store_frames]:
                assert np.array_equal(got, want)
            else:  # re-encoded: within the codec's error of what the pipeline decoded
                assert _psnr(got, want) > 30
        assert seen == EXPECTED[store_frames]
        jpg = sorted((w, k) for k, (w, _) in decoded.items() if FrameKeyCodec.decode(k).offset < 24)  # sent first
        assert [k for b in sv.load("jpg") for k in b.keys] == [k for _, k in jpg]
        start, end = jpg[5][0], jpg[17][0]
        part = [(k, w) for b in sv.load("jpg", time_range=(start, end)) for k, w in zip(b.keys, b.wall_time)]
        assert [k for k, _ in part] == [k for w, k in jpg if start <= w < end]
        assert all(abs(w - decoded[k][0]) < 1e-6 for k, w in part)  # capture times as they came


def test_segments_replace_the_messages_they_hold(broker, topic, tmp_path):
    _ingest(broker, topic, tmp_path / "d", "segments")
    with streamvision.connect(tmp_path / "d") as sv:
        entries = [key for key, _ in sv.store.scan("segments")]
        segments = [k for k in entries if k[:1] == kept.SEGMENT]
        messages = [k for k in entries if k[:1] == kept.MESSAGE]
        refs = [k for k in entries if k[:1] == kept.REF]
        assert len(segments) >= 2  # 0.6 s of one camera in segments of 0.25 s
        assert len(refs) == sum(len(kept.frames_of(k, sv.store.kept(k)[1], 1)[0]) for k in segments)
        assert 2 <= len(messages) < 2 + 24  # the H.264 messages, and the JPEG ones of the last, short run


def _jpeg_entries(images: list[np.ndarray], first: int, segment_seconds: float,
                  times: list[float] | None = None) -> list[kept.KeptEntry]:
    """Messages at offsets ``first...`` captured at ``times`` (default: 100 s + offset)."""
    entries = []
    for n, (i, image) in enumerate(enumerate(images, first)):
        ts = times[n] if times is not None else 100.0 + i
        message = wire.encode_image(image, camera="cam", ts=ts, frame_no=i, kind=wire.KIND_JPEG)
        headers = [[k, v.decode("latin-1")] for k, v in message.headers]
        row = ["t", 0, i, "cam", ts, ts, headers, message.value]
        entries.append(replace(kept.KeptEntry.of_message(row), segment_seconds=segment_seconds))
    return entries


def test_a_new_writer_goes_on_with_the_run_an_earlier_one_left(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(6))]
    with LineageStore(tmp_path / "db") as store:
        first = _jpeg_entries(images[:4], 0, segment_seconds=5.0)  # 3 s: too short for a segment
        store.write_patches(PatchBatch.empty(), kept=first)
        earlier = Segmenter(store)
        earlier.wrote(first)
        earlier.close()
        assert earlier.segments == 0 and len(store.kept_since_last_segment("cam")) == 4
        later = Segmenter(store)  # a restarted writer
        more = _jpeg_entries(images[4:], 4, segment_seconds=5.0)  # 5 s now
        store.write_patches(PatchBatch.empty(), kept=more)
        later.wrote(more)
        later.close()
        assert later.segments == 1
        (key, first_ts, last_ts), = store.kept_between("cam", 0, 1e9)
        assert key[:1] == kept.SEGMENT and (first_ts, last_ts) == (100.0, 105.0)
        assert store.kept_since_last_segment("cam") == []
        for i in range(len(images)):  # each frame through its ref
            assert store.kept_frame(KafkaKey("t", 0, i, 0).encode()) == (key, i)


def test_a_long_run_left_behind_is_cut_into_segment_long_runs(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(7))]
    with LineageStore(tmp_path / "db") as store:
        left = _jpeg_entries(images[:6], 0, segment_seconds=60.0)  # 5 s, kept as messages
        store.write_patches(PatchBatch.empty(), kept=left)
        Segmenter(store).close()
        later = Segmenter(store)  # a restarted writer whose camera now has 2 s segments
        more = _jpeg_entries(images[6:], 6, segment_seconds=2.0)
        store.write_patches(PatchBatch.empty(), kept=more)
        later.wrote(more)
        later.close()
        assert later.segments == 2  # 100..102 and 103..105, not one run of six decoded whole
        spans = [(first, last) for key, first, last in store.kept_between("cam", 0, 1e9)]
        assert spans == [(100.0, 102.0), (103.0, 105.0), (106.0, 106.0)]  # the last one still a message


def test_a_stop_that_does_not_finish_leaves_the_queued_runs_as_messages(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(10))]
    with LineageStore(tmp_path / "db") as store:
        entries = _jpeg_entries(images, 0, segment_seconds=1.0)  # a run of two each
        store.write_patches(PatchBatch.empty(), kept=entries)
        stopping = Segmenter(store)
        stopping.wrote(entries)
        assert stopping.queued == 5
        stopping.close(finish=False)  # the encoder process is still starting for the first run
        assert stopping.queued == 0 and stopping.segments <= 1
        keys = [key for key, _, _ in store.kept_between("cam", 0, 1e9)]
        assert len(keys) == 10 - stopping.segments  # every frame kept, as a message or in a segment
        later = Segmenter(store)
        more = _jpeg_entries(images[:1], 10, segment_seconds=1.0)
        store.write_patches(PatchBatch.empty(), kept=more)
        later.wrote(more)
        assert later.queued >= 4
        later.wait()
        assert later.queued == 0 and later.segments + stopping.segments == 5
        later.close()
        for i in range(10):
            assert store.kept_frame(KafkaKey("t", 0, i, 0).encode()) is not None


def test_a_batch_replayed_while_its_run_is_pending_adds_its_frames_once(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(4))]
    entries = _jpeg_entries(images, 0, segment_seconds=3.0)  # 100..103: one run
    with LineageStore(tmp_path / "db") as store:
        segmenter = Segmenter(store)
        for batch in (entries[:2], entries[:2], entries[2:]):  # the first batch twice: a replay
            store.write_patches(PatchBatch.empty(), kept=batch)
            segmenter.wrote(batch)
        segmenter.close()
        assert segmenter.segments == 1
        (key, _, _), = store.kept_between("cam", 0, 1e9)
        assert len(kept.frames_of(key, store.kept(key)[1], 0)[0]) == 4  # not 6
        for i in range(4):
            assert store.kept_frame(KafkaKey("t", 0, i, 0).encode()) == (key, i)


def test_a_batch_replayed_after_its_messages_were_compacted_does_not_bring_them_back(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(4))]
    entries = _jpeg_entries(images, 0, segment_seconds=2.0)  # 100..102 a segment, 103 left as its message
    writer = CollectionWriter(tmp_path / "data", None, dim=8)
    writer.write(PatchBatch.empty({"kept": entries}))
    writer.segmenter.wait()
    assert writer.segmenter.segments == 1
    assert writer.store.not_in_segments(entries) == entries[3:]
    writer.write(PatchBatch.empty({"kept": entries}))  # replayed: a writer restart retried it
    writer.close()
    assert writer.segmenter.segments == 1  # 100..102 not compacted again
    with LineageStore(tmp_path / "data" / "lineage", read_only=True) as store:
        spans = [(key[:1], first, last) for key, first, last in store.kept_between("cam", 0, 1e9)]
        assert spans == [(kept.SEGMENT, 100.0, 102.0), (kept.MESSAGE, 103.0, 103.0)]


def test_frames_that_came_out_of_order_are_compacted_in_time_order_and_found_by_time(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(5))]
    entries = _jpeg_entries(images[:4], 0, segment_seconds=3.0)  # 100..103
    late = _jpeg_entries(images[4:], 4, segment_seconds=3.0, times=[101.5])  # after its segment was made
    with LineageStore(tmp_path / "db") as store:
        segmenter = Segmenter(store)
        for batch in ([entries[0], entries[2]], [entries[1]], [entries[3]], late):  # replicas finishing out of order
            store.write_patches(PatchBatch.empty(), kept=batch)
            segmenter.wrote(batch)
        segmenter.close()
        assert segmenter.segments == 1
        spans = [(key[:1], first, last) for key, first, last in store.kept_between("cam", 0, 1e9)]
        assert spans == [(kept.MESSAGE, 101.5, 101.5), (kept.SEGMENT, 100.0, 103.0)]  # they overlap
        segment = next(key for key, _, _ in store.kept_between("cam", 0, 1e9) if key[:1] == kept.SEGMENT)
        for i in range(4):  # in capture-time order
            assert store.kept_frame(KafkaKey("t", 0, i, 0).encode()) == (segment, i)
        # the late message ends after 101.2 first; the segment, which ends later, holds 101.0
        assert [k for k, _, _ in store.kept_between("cam", 100.5, 101.2)] == [segment]
        got = [(k, w) for b in pixels.load(store, "cam", time_range=(100.5, 101.6)) for k, w in zip(b.keys, b.wall_time)]
        assert sorted(got, key=lambda kw: kw[1]) == [(KafkaKey("t", 0, 1, 0).encode(), 101.0),
                                                     (KafkaKey("t", 0, 4, 0).encode(), 101.5)]


def test_a_camera_kept_before_span_records_gets_one_from_its_entries(tmp_path, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(5))]
    entries = _jpeg_entries(images[:4], 0, segment_seconds=3.0)  # 100..103
    with LineageStore(tmp_path / "db") as store:
        segmenter = Segmenter(store)
        store.write_patches(PatchBatch.empty(), kept=entries)
        segmenter.wrote(entries)
        segmenter.close()
    with LineageStore(tmp_path / "db") as store:  # as written before there were span records
        del store._open_pixels()[kept.span_key("cam")]
    with LineageStore(tmp_path / "db") as store:  # a later writer: a late message of no span
        store.write_patches(PatchBatch.empty(), kept=_jpeg_entries(images[4:], 4, 3.0, times=[101.5]))
        segment, = [key for key, _, _ in store.kept_between("cam", 0, 1e9) if key[:1] == kept.SEGMENT]
        assert [k for k, _, _ in store.kept_between("cam", 100.5, 101.2)] == [segment]  # the 3 s one counted


def test_none_keeps_no_pixels_and_bad_formats_are_refused(broker, topic, tmp_path):
    decoded = _ingest(broker, topic, tmp_path / "none", "none")
    with streamvision.connect(tmp_path / "none") as sv:
        assert sv.store.count("segments") == 0
        pid = next(iter(sv.store.row_ids()))
        assert sv.lineage(pid)[-1]["pixels"] is None
        with pytest.raises(InputError, match="not kept"):
            sv.pixels(pid)
    assert decoded
    with pytest.raises(ConfigError, match="store_frames"):
        StoreSink(data=str(tmp_path / "x"), store_frames="gif")
    with pytest.raises(ConfigError, match="segment_seconds"):
        KafkaSource(topic="t", bootstrap_servers="127.0.0.1:1", segment_seconds=0)


def test_frames_that_cannot_be_h264_stay_as_their_messages(tmp_path):
    with LineageStore(tmp_path / "db") as store:
        entries = []
        for i in range(3):  # 5x7 frames: H.264 4:2:0 wants even sizes
            message = wire.encode_image(np.full((5, 7, 3), 40 * i, np.uint8), camera="odd", ts=100.0 + i,
                                        frame_no=i, kind=wire.KIND_RAW)
            headers = [[k, v.decode("latin-1")] for k, v in message.headers]
            entries.append(kept.KeptEntry.of_message(["t", 0, i, "odd", 100.0 + i, 100.0 + i, headers, message.value]))
        store.write_patches(PatchBatch.empty(), kept=entries)
        run = store.kept_since_last_segment("odd")
        assert [k for k, _, _ in run] == [e.key for e in entries]
        assert not Segmenter(store).compact("odd", run)
        assert [k for k, _, _ in store.kept_between("odd", 0, 1e9)] == [e.key for e in entries]  # unchanged
