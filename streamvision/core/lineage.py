"""Lineage keys and deterministic patch ids.

Every frame carries a *lineage key* that names where its pixels came from:

* :class:`FileKey` ``(file, frame_no)`` for video files and image folders,
* :class:`KafkaKey` ``(topic, partition, offset, index_in_message)`` for Kafka input.

Keys encode to bytes in big-endian order, so that byte order equals numeric order
inside RocksDB. Patch ids are 63-bit integers derived from the parent key and the
operator that made the patch: reprocessing the same input with the same operator
yields the same id, which is what makes the sinks idempotent.

>>> key = FileKey("vtest.avi", 7)
>>> FrameKeyCodec.decode(key.encode()) == key
True
>>> patch_id(key.encode(), "whole_frame", 0) == patch_id(key.encode(), "whole_frame", 0)
True
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Union

_FILE_TAG = b"F"
_KAFKA_TAG = b"K"
_SEP = b"\x00"

#: Largest patch id; ids live in ``[1, MAX_PATCH_ID]`` so that FAISS's ``-1`` (no result) never collides.
MAX_PATCH_ID = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class FileKey:
    """A frame of a video file or image folder: ``(file, frame_no)``."""

    file: str
    frame_no: int

    def encode(self) -> bytes:
        """Big-endian bytes: tag, the file path, a separator, the frame number."""
        return _FILE_TAG + self.file.encode() + _SEP + struct.pack(">Q", self.frame_no)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, used in query results."""
        return {"kind": "file", "file": self.file, "frame_no": self.frame_no}


@dataclass(frozen=True, slots=True)
class KafkaKey:
    """A frame of a Kafka message: ``(topic, partition, offset, index_in_message)``."""

    topic: str
    partition: int
    offset: int
    index_in_message: int

    def encode(self) -> bytes:
        """Big-endian bytes: tag, topic, a separator, partition, offset, index."""
        return (
            _KAFKA_TAG
            + self.topic.encode()
            + _SEP
            + struct.pack(">IQI", self.partition, self.offset, self.index_in_message)
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, used in query results."""
        return {
            "kind": "kafka",
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "index_in_message": self.index_in_message,
        }


FrameKey = Union[FileKey, KafkaKey]


class FrameKeyCodec:
    """Turns encoded frame keys back into :class:`FileKey` / :class:`KafkaKey`."""

    @staticmethod
    def decode(raw: bytes) -> FrameKey:
        """Decode bytes made by ``FileKey.encode`` or ``KafkaKey.encode``.

        Raises:
            ValueError: the bytes are not a frame key.
        """
        tag, body = raw[:1], raw[1:]
        if tag == _FILE_TAG and len(body) >= 9 and body[-9:-8] == _SEP:
            return FileKey(body[:-9].decode(), struct.unpack(">Q", body[-8:])[0])
        if tag == _KAFKA_TAG and len(body) >= 17 and body[-17:-16] == _SEP:
            partition, offset, index = struct.unpack(">IQI", body[-16:])
            return KafkaKey(body[:-17].decode(), partition, offset, index)
        raise ValueError(f"not an encoded frame key: {raw!r}")


def patch_id(parent: bytes, operator: str, index: int) -> int:
    """Deterministic id of the ``index``-th patch that ``operator`` made from ``parent``.

    Args:
        parent: the encoded frame key, or the 8-byte big-endian id of a parent patch.
        operator: the operator's stable name (include a model version where it matters).
        index: the patch's position among the patches the operator made from ``parent``.

    Returns:
        An integer in ``[1, MAX_PATCH_ID]``, usable as a FAISS id.
    """
    digest = hashlib.blake2b(
        parent + _SEP + operator.encode() + _SEP + struct.pack(">I", index), digest_size=8
    ).digest()
    return (int.from_bytes(digest, "big") & MAX_PATCH_ID) or 1


def id_bytes(pid: int) -> bytes:
    """The 8-byte big-endian key of a patch id."""
    return struct.pack(">Q", pid)


def id_from_bytes(raw: bytes) -> int:
    """Inverse of :func:`id_bytes`."""
    return struct.unpack(">Q", raw)[0]
