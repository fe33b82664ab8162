"""The clip encoder process: real vtest.avi JPEG messages in, one H.264 clip out, off the caller's process."""

from __future__ import annotations

import os
import signal

import numpy as np
import psutil
import pytest

from operators.kafka import wire
from operators.producers.frame_reader import FrameReader
from operators.stores import kept
from operators.stores.clip_encoder import ClipEncoder, EncoderError
from streamvision.core.lineage import KafkaKey


def _messages(images: list[np.ndarray], camera: str = "cam", kind: int = wire.KIND_JPEG) -> list:
    out = []
    for i, image in enumerate(images):
        message = wire.encode_image(image, camera=camera, ts=100.0 + i / 10, frame_no=i, kind=kind)
        headers = [[k, v.decode("latin-1")] for k, v in message.headers]
        entry = kept.KeptEntry.of_message(["t", 0, i, camera, 100.0 + i / 10, 100.0 + i / 10, headers, message.value])
        out.append((entry.key, message.value, list(message.headers)))
    return out


@pytest.fixture()
def encoder():
    enc = ClipEncoder()
    yield enc
    enc.close()


def test_a_run_becomes_one_clip_in_an_idle_priority_process(encoder, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(6))]
    clip = encoder.encode(_messages(images))
    assert clip is not None and clip.shape == images[0].shape[:2]
    assert clip.frame_keys == [KafkaKey("t", 0, i, 0).encode() for i in range(6)]
    assert clip.times == [100.0 + i / 10 for i in range(6)] and (clip.frame0, clip.pts0) == (0, 0.0)
    decoded = wire.decode(clip.data, [(k, v) for k, v in wire.Header(
        kind=wire.KIND_H264, camera="cam", ts=100.0, frame0=0, pts=0.0, shape=clip.shape, count=6).to_kafka()])
    assert len(decoded) == 6 and float(np.abs(decoded.images.astype(int) - np.stack(images)).mean()) < 8
    pid = encoder.pid
    assert pid is not None and pid != os.getpid()
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE  # its own GIL, and only the CPU left over


def test_frames_that_cannot_be_one_clip_give_none(encoder):
    odd = [np.full((5, 7, 3), 40 * i, np.uint8) for i in range(3)]
    assert encoder.encode(_messages(odd, kind=wire.KIND_RAW)) is None


def test_a_failed_run_says_why_and_the_process_goes_on(encoder, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(2))]
    good = _messages(images)
    key, value, headers = good[0]
    with pytest.raises(EncoderError, match="CorruptImage: .*cut short"):
        encoder.encode([(key, value[: len(value) // 3], headers)])  # a truncated JPEG
    pid = encoder.pid
    assert encoder.encode(good) is not None and encoder.pid == pid


def test_a_killed_encoder_is_replaced_by_a_fresh_one(encoder, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(2))]
    assert encoder.encode(_messages(images)) is not None
    first = encoder.pid
    os.kill(first, signal.SIGKILL)
    psutil.Process(first).wait(10)
    assert encoder.pid is None
    assert encoder.encode(_messages(images)) is not None and encoder.pid not in (None, first)


def test_the_encoder_ends_with_its_stdin(vtest_path):
    enc = ClipEncoder()
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(2))]
    assert enc.encode(_messages(images)) is not None
    process = psutil.Process(enc.pid)
    enc.close()
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert enc.pid is None


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def test_a_long_run_is_encoded_a_message_at_a_time(encoder, vtest_path):
    images = [image for (image, _), _ in zip(FrameReader(str(vtest_path)), range(150))]
    assert encoder.encode(_messages(images[:2])) is not None  # the process and its libraries, warm
    before = _peak_rss_mb(encoder.pid)
    clip = encoder.encode(_messages(images))
    assert clip is not None and len(clip.frame_keys) == 150
    grown = _peak_rss_mb(encoder.pid) - before
    assert grown < 60, grown  # 150 decoded 768x576 frames would be 199 MB
