"""How a collection keeps the pixels of Kafka input: the ``store_frames`` formats.

======================  ==========================================================================
``store_frames``        what the store keeps of each good message (:mod:`operators.stores.kept`)
======================  ==========================================================================
``segments`` (default)  the message; the writer then compacts a camera's JPEG, PNG and raw messages
                        into GOP-aligned H.264 segments of ``segment_seconds``
                        (:class:`~operators.stores.segmenter.Segmenter`); H.264 messages are
                        segments already and stay as they came
``source``              the message as received (a JPEG/PNG/raw message is a frame file)
``jpeg``, ``raw``       a frame file: each frame as a JPEG (quality :data:`JPEG_QUALITY`) or as raw
                        RGB, re-encoded from the decoded frames unless the message is one already
``none``                nothing (lineage still names the Kafka offset)
======================  ==========================================================================

The entries travel with the batch (``meta["kept"]``) and are written in the same ``WriteBatch``
as the batch's results and offsets, so a frame's pixels are kept exactly when its results are.

>>> keeper = FrameKeeper("raw")
>>> keeper.format, keeper.segment_seconds
('raw', 0.0)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from operators.kafka import wire
from operators.stores.kept import FRAME, KeptEntry
from streamvision.core.errors import ConfigError
from streamvision.core.lineage import KafkaKey

FORMATS = ("segments", "source", "jpeg", "raw", "none")
#: JPEG quality of re-encoded frame files.
JPEG_QUALITY = 90
_KINDS = {"jpeg": wire.KIND_JPEG, "raw": wire.KIND_RAW}


class FrameKeeper:
    """Turns one decoded Kafka message into the entries its ``store_frames`` format keeps.

    Args:
        store_frames: one of :data:`FORMATS`.
        segment_seconds: length of the segments the writer compacts messages into
            (``segments`` only).

    Raises:
        ConfigError: an unknown format, or a segment length that is not positive.
    """

    def __init__(self, store_frames: str = "segments", *, segment_seconds: float = 2.0) -> None:
        if store_frames not in FORMATS:
            raise ConfigError(f"store_frames is one of {', '.join(FORMATS)}; got {store_frames!r}")
        if store_frames == "segments" and not segment_seconds > 0:
            raise ConfigError(f"segment_seconds must be > 0, got {segment_seconds}")
        self.format = store_frames
        self.segment_seconds = float(segment_seconds) if store_frames == "segments" else 0.0

    def entries(self, record: Any, decoded: wire.Decoded) -> list[KeptEntry]:
        """What to keep of ``record`` (a Kafka record: topic, partition, offset, headers, value),
        whose frames are ``decoded``."""
        if self.format == "none":
            return []
        kind = _KINDS.get(self.format)
        if kind is None or (decoded.header.kind == kind and (kind == wire.KIND_RAW or len(decoded) == 1)):
            row = [record.topic, record.partition, record.offset, decoded.header.camera,
                   float(decoded.wall_time[0]), float(decoded.wall_time[-1]),
                   [[k, v.decode("latin-1")] for k, v in record.headers or []], record.value]
            entry = KeptEntry.of_message(row)
            compact = self.segment_seconds and decoded.header.kind != wire.KIND_H264
            return [replace(entry, segment_seconds=self.segment_seconds) if compact else entry]
        return [self._frame(record, decoded, i, kind) for i in range(len(decoded))]

    @staticmethod
    def _frame(record: Any, decoded: wire.Decoded, i: int, kind: str) -> KeptEntry:
        image = decoded.images[i]
        header = wire.Header(kind=kind, camera=decoded.header.camera, ts=float(decoded.wall_time[i]),
                             frame0=int(decoded.frame_no[i]), pts=float(decoded.pts[i]),
                             shape=(int(image.shape[0]), int(image.shape[1])), count=1)
        key = KafkaKey(record.topic, record.partition, record.offset, i).encode()
        return KeptEntry.of_frames(FRAME, header.camera, [key], [header.ts],
                                   [[k, v.decode("latin-1")] for k, v in header.to_kafka()],
                                   wire.encode_pixels(image, kind, JPEG_QUALITY))


__all__ = ["FORMATS", "FrameKeeper", "JPEG_QUALITY"]
