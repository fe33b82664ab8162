"""Push frames into a Kafka topic in StreamVision's wire format.

Every message is keyed by camera id (a camera's messages stay ordered in one partition),
carries the versioned ``sv-*`` headers of :mod:`operators.kafka.wire`, and is either one JPEG
(or PNG / raw) frame or a GOP-aligned H.264 segment of ``segment_seconds``. ``fps`` paces
sending in real time; ``None`` sends as fast as possible. A message over
``max_message_bytes`` is refused with :class:`~operators.kafka.wire.OversizeMessage`; the
producer's ``max_request_size`` is raised to fit the largest allowed message.

>>> with FrameProducer("127.0.0.1:9092", "frames") as producer:        # doctest: +SKIP
...     report = producer.produce("vtest.avi", camera="cam1", kind="h264", segment_seconds=2)
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from operators.kafka.settings import KafkaSettings, ensure_topic
from operators.producers.frame_reader import FrameReader
from operators.producers.segments import encode_h264_segment
from operators.kafka import wire
from streamvision.core.errors import ConfigError

#: Message kinds by their short CLI names.
KIND_NAMES = {"jpeg": wire.KIND_JPEG, "png": wire.KIND_PNG, "raw": wire.KIND_RAW, "h264": wire.KIND_H264}
_HEADROOM = 1024 * 1024  # record batch and header overhead on top of the payload
_MAX_IN_FLIGHT = 256


@dataclass
class ProduceReport:
    """What one :meth:`FrameProducer.produce` call sent."""

    messages: int = 0
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0


Progress = Callable[[ProduceReport], None]


class FrameProducer:
    """A Kafka producer of frames for one topic.

    Args:
        settings: a :class:`KafkaSettings` or bootstrap servers.
        topic: the topic to write.
        partitions: create the topic with this many partitions if it does not exist
            (``None``: leave topic creation to the broker).
        max_message_bytes: largest payload sent; larger ones raise ``OversizeMessage``.
        linger_ms: kafka-python's batching delay.
    """

    def __init__(self, settings: KafkaSettings | str, topic: str, *, partitions: int | None = None,
                 max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, linger_ms: int = 5) -> None:
        self.settings = settings if isinstance(settings, KafkaSettings) else KafkaSettings(settings)
        if not topic:
            raise ConfigError("the topic name is empty")
        if max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes must be at least 1024, got {max_message_bytes}")
        self.topic = topic
        self.partitions = partitions
        self.max_message_bytes = max_message_bytes
        self.linger_ms = linger_ms
        self._producer: Any = None
        self._futures: collections.deque[Any] = collections.deque()

    def open(self) -> "FrameProducer":
        """Connect (and create the topic when ``partitions`` was given)."""
        from kafka import KafkaProducer

        if self.partitions is not None:
            ensure_topic(self.settings, self.topic, self.partitions)
        request = self.max_message_bytes + _HEADROOM
        self._producer = KafkaProducer(
            **self.settings.client_config("producer"), acks="all", linger_ms=self.linger_ms,
            max_request_size=request,
        )
        return self

    def __enter__(self) -> "FrameProducer":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: wire.WireMessage) -> None:
        """Send one message; raise the error of any earlier send that failed."""
        if self._producer is None:
            self.open()
        wire.check_size(message.value, self.max_message_bytes)
        self._futures.append(self._producer.send(self.topic, key=message.key, value=message.value,
                                                 headers=message.headers))
        while self._futures and (len(self._futures) > _MAX_IN_FLIGHT or self._futures[0].is_done):
            self._futures.popleft().get(timeout=60)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every message sent is acknowledged; raise the first failure."""
        if self._producer is None:
            return
        self._producer.flush(timeout=timeout_s)
        while self._futures:
            self._futures.popleft().get(timeout=timeout_s)

    def close(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            try:
                self.flush()
            finally:
                self._producer.close()
                self._producer = None

    def produce(self, source: str, *, camera: str, kind: str = "jpeg", quality: int = 90,
                segment_seconds: float = 2.0, fps: float | None = None, limit: int | None = None,
                frame0: int = 0, progress: Progress | None = None) -> ProduceReport:
        """Read ``source`` (video file, URL or image folder) and send its frames.

        Args:
            camera: camera id (message key and ``sv-camera``).
            kind: ``jpeg``, ``png``, ``raw`` (one frame per message) or ``h264`` (segments).
            quality: JPEG quality 1..100.
            segment_seconds: length of an H.264 segment.
            fps: pace sending at this many frames per second (``None``: as fast as possible).
            limit: stop after this many frames.
            frame0: frame number of the first frame.
            progress: called with the running report after every message.
        """
        reader = FrameReader(source)
        frames: Iterable[tuple[np.ndarray, float]] = reader
        return self.send_frames(frames, camera=camera, kind=kind, quality=quality, rate=reader.rate,
                                segment_seconds=segment_seconds, fps=fps, limit=limit, frame0=frame0,
                                progress=progress)

    def send_frames(self, frames: Iterable[tuple[np.ndarray, float]], *, camera: str, kind: str = "jpeg",
                    quality: int = 90, rate: float = 10.0, segment_seconds: float = 2.0,
                    fps: float | None = None, limit: int | None = None, frame0: int = 0,
                    progress: Progress | None = None) -> ProduceReport:
        """Send ``(image, pts)`` pairs; see :meth:`produce` for the options."""
        if kind not in KIND_NAMES:
            raise ConfigError(f"unknown message kind {kind!r}; use one of {', '.join(KIND_NAMES)}")
        if fps is not None and fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        if segment_seconds <= 0:
            raise ConfigError(f"segment_seconds must be positive, got {segment_seconds}")
        if not camera:
            raise ConfigError("the camera id is empty")
        report = ProduceReport()
        start = time.monotonic()
        segment: list[tuple[np.ndarray, float, float]] = []  # image, pts, capture time

        def emit(message: wire.WireMessage, n: int) -> None:
            self.send(message)
            report.messages += 1
            report.frames += n
            report.bytes += len(message.value)
            report.seconds = time.monotonic() - start
            if progress is not None:
                progress(report)

        def emit_segment() -> None:
            images = [s[0] for s in segment]
            clip = encode_h264_segment(images, rate=rate)
            h, w = images[0].shape[:2]
            emit(wire.encode_segment_message(
                clip, camera=camera, ts=segment[0][2], frame0=frame0 + report.frames, pts=segment[0][1],
                count=len(images), shape=(h, w), max_bytes=self.max_message_bytes), len(images))
            segment.clear()

        for i, (image, pts) in enumerate(frames):
            if limit is not None and i >= limit:
                break
            if fps is not None:
                delay = start + i / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            captured = time.time()
            if kind == "h264":
                if segment and (pts - segment[0][1] >= segment_seconds - 1e-6 or image.shape != segment[0][0].shape):
                    emit_segment()
                segment.append((image, pts, captured))
            else:
                emit(wire.encode_image(image, camera=camera, ts=captured, frame_no=frame0 + i, pts=pts,
                                       kind=KIND_NAMES[kind], quality=quality,
                                       max_bytes=self.max_message_bytes), 1)
        if segment:
            emit_segment()
        self.flush()
        report.seconds = time.monotonic() - start
        return report
