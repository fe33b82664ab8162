"""FrameProducer against the real embedded broker: keys, headers, kinds, pacing, oversize."""

from __future__ import annotations

import numpy as np
import pytest
from kafka import KafkaConsumer
from typer.testing import CliRunner

from operators.kafka.settings import KafkaSettings
from operators.producers import FrameProducer
from operators.kafka import wire
from streamvision.cli.kafka import produce
from streamvision.core.errors import ConfigError, InputError


def _consume(servers: str, topic: str, expected: int) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def test_jpeg_frames_keyed_by_camera_with_versioned_headers(broker, vtest_path):
    with FrameProducer(broker.bootstrap_servers, "p-jpeg", partitions=1) as producer:
        report = producer.produce(str(vtest_path), camera="cam7", kind="jpeg", quality=80, limit=25)
    assert (report.messages, report.frames) == (25, 25)
    records = _consume(broker.bootstrap_servers, "p-jpeg", 25)
    assert len(records) == 25
    assert {r.key for r in records} == {b"cam7"}
    numbers = []
    for record in records:
        out = wire.decode(record.value, record.headers)
        assert out.header.kind == wire.KIND_JPEG and out.header.camera == "cam7"
        assert out.images.shape == (1, 576, 768, 3)
        numbers.append(int(out.frame_no[0]))
    assert numbers == list(range(25))
    assert sum(len(r.value) for r in records) == report.bytes


def test_h264_segments_are_gop_aligned_and_hold_every_frame(broker, vtest_path):
    with FrameProducer(broker.bootstrap_servers, "p-h264", partitions=1) as producer:
        report = producer.produce(str(vtest_path), camera="cam1", kind="h264", segment_seconds=1.5, limit=40)
    assert report.frames == 40 and report.messages == 3  # 15 + 15 + 10 frames at 10 fps
    records = _consume(broker.bootstrap_servers, "p-h264", 3)
    decoded = [wire.decode(r.value, r.headers) for r in records]
    assert [len(d) for d in decoded] == [15, 15, 10]
    assert np.concatenate([d.frame_no for d in decoded]).tolist() == list(range(40))
    assert [d.header.pts for d in decoded] == pytest.approx([0.0, 1.5, 3.0])


def test_image_folder(broker, tmp_path, vtest_path):
    import cv2

    from operators.producers.frame_reader import FrameReader

    for i, (image, _) in zip(range(3), FrameReader(str(vtest_path))):
        small = cv2.resize(image, (160 + 2 * i, 120))
        cv2.imwrite(str(tmp_path / f"img{i}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    with FrameProducer(broker.bootstrap_servers, "p-folder", partitions=1) as producer:
        report = producer.produce(str(tmp_path), camera="folder", kind="png")
    assert report.frames == 3
    shapes = [wire.decode(r.value, r.headers).images.shape[1:3] for r in _consume(broker.bootstrap_servers, "p-folder", 3)]
    assert shapes == [(120, 160), (120, 162), (120, 164)]


def test_fps_paces_capture_times(broker, vtest_path):
    import time

    with FrameProducer(broker.bootstrap_servers, "p-paced", partitions=1) as producer:
        before = time.time()
        producer.produce(str(vtest_path), camera="c", kind="jpeg", quality=50, fps=20.0, limit=6)
    stamps = [wire.parse_header(r.headers).ts for r in _consume(broker.bootstrap_servers, "p-paced", 6)]
    assert len(stamps) == 6
    # frame i is never captured before its slot i / fps (late frames catch up, early ones wait)
    assert all(ts >= before + i / 20.0 - 1e-3 for i, ts in enumerate(stamps))


def test_oversize_message_is_refused(broker, vtest_path):
    with FrameProducer(broker.bootstrap_servers, "p-big", partitions=1, max_message_bytes=200_000) as producer:
        with pytest.raises(wire.OversizeMessage, match="more than the limit of 200000"):
            producer.produce(str(vtest_path), camera="c", kind="raw", limit=1)
    assert _consume(broker.bootstrap_servers, "p-big", 1) == []


def test_bad_options_and_inputs(broker, tmp_path):
    with pytest.raises(ConfigError, match="unknown message kind"):
        FrameProducer(broker.bootstrap_servers, "p-x").send_frames([], camera="c", kind="gif")
    with pytest.raises(InputError, match="no such video file"):
        FrameProducer(broker.bootstrap_servers, "p-x").produce(str(tmp_path / "nope.mp4"), camera="c")
    with pytest.raises(ConfigError, match="unknown Kafka client option"):
        FrameProducer(KafkaSettings(broker.bootstrap_servers, {"sasl_password": "x"}), "p-x")


def test_cli_produce(broker, vtest_path):
    from typer import Typer

    app = Typer()
    app.command()(produce)
    result = CliRunner().invoke(app, [str(vtest_path), "--topic", "p-cli", "--camera", "cli", "--limit", "5",
                                      "--partitions", "2", "--bootstrap-servers", broker.bootstrap_servers])
    assert result.exit_code == 0, result.output
    assert "sent 5 frames in 5 messages" in result.output
    assert len(_consume(broker.bootstrap_servers, "p-cli", 5)) == 5
    bad = CliRunner().invoke(app, [str(vtest_path), "--topic", "p-cli", "--camera", "cli", "--limit", "1",
                                   "--kind", "raw", "--max-message-bytes", "5000",
                                   "--bootstrap-servers", broker.bootstrap_servers])
    assert bad.exit_code == 1 and "oversize" in bad.output
