"""Kept pixels: the entries of the ``segments`` family, in which a collection keeps its frames.

DeepLens' storage formats (ARCHITECTURE section 8) for Kafka input, the broker forgetting what
it held. Every entry is a valid wire message (``headers``, ``value``: what
:func:`operators.kafka.wire.decode` reads) of one camera, with the capture times of its first
and last frame:

==========  ===============================================  ==========================================
entry       key                                              holds
==========  ===============================================  ==========================================
message     ``m`` topic 0 partition(4) offset(8)             a Kafka message as received (``source``)
frame       ``f`` frame key                                  one frame as JPEG or raw (*frame file*)
segment     ``s`` camera 0 start_us(8) first frame key       an H.264 clip of N s, GOP-aligned (it
                                                             starts with its own keyframe)
ref         ``r`` frame key                                  which segment holds a frame, and where
time        ``t`` camera 0 last_us(8) entry key              first_us(8): the time index of entries
span        ``w`` camera                                     span_us(8): the widest entry of the camera
                                                             (last - first), which bounds a time-range
                                                             scan where entries overlap
==========  ===============================================  ==========================================

The frames of a message entry are those of the message (frame keys
``KafkaKey(topic, partition, offset, i)``); a frame or segment entry names its frames' keys
and capture times in the non-wire headers :data:`H_FRAME_KEYS` and :data:`H_FRAME_TIMES`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from streamvision.core.lineage import KafkaKey

MESSAGE, FRAME, SEGMENT, REF, TIME, SPAN = b"m", b"f", b"s", b"r", b"t", b"w"
_SEP = b"\x00"
#: Header of a frame or segment entry: the hex frame keys of its frames, in order (JSON list).
H_FRAME_KEYS = "frame-keys"
#: Header of a frame or segment entry: the capture times of its frames (JSON list of seconds).
H_FRAME_TIMES = "frame-times"


def ts_us(seconds: float) -> bytes:
    """Seconds as big-endian microseconds (8 bytes): byte order is time order."""
    return struct.pack(">Q", max(0, int(round(seconds * 1e6))))


def message_key(topic: str, partition: int, offset: int) -> bytes:
    """The entry key of a kept Kafka message."""
    return MESSAGE + topic.encode() + _SEP + struct.pack(">IQ", partition, offset)


def time_prefix(camera: str) -> bytes:
    """The prefix of a camera's time-index keys."""
    return TIME + camera.encode() + _SEP


def span_key(camera: str) -> bytes:
    """The key of a camera's widest-entry record."""
    return SPAN + camera.encode()


@dataclass(frozen=True)
class KeptEntry:
    """One entry: its key, camera, first and last capture time, and the wire message it holds.

    ``headers`` are ``[name, latin-1 text]`` pairs (JSON-able), as a Kafka record's headers.
    ``segment_seconds`` (not stored) asks the writer to compact this message entry, with the
    camera's next ones, into segments of that length (0: keep it as it is).
    """

    key: bytes
    camera: str
    first_ts: float
    last_ts: float
    headers: list[list[str]] = field(repr=False)
    value: bytes = field(repr=False)
    segment_seconds: float = 0.0

    @classmethod
    def of_message(cls, row: list) -> "KeptEntry":
        """The entry of one ``meta["messages"]`` row ``[topic, partition, offset, camera,
        first_ts, last_ts, headers, value]`` (what a Kafka source hands on)."""
        topic, partition, offset, camera, first_ts, last_ts, headers, value = row
        return cls(message_key(str(topic), int(partition), int(offset)), str(camera), float(first_ts),
                   float(last_ts), [[str(k), str(v)] for k, v in headers], bytes(value))

    @classmethod
    def of_frames(cls, kind: bytes, camera: str, frame_keys: list[bytes], times: list[float],
                  headers: list[list[str]], value: bytes) -> "KeptEntry":
        """A frame (``kind`` :data:`FRAME`, one frame) or segment (:data:`SEGMENT`) entry."""
        if kind == FRAME:
            key = FRAME + frame_keys[0]
        else:
            key = SEGMENT + camera.encode() + _SEP + ts_us(times[0]) + frame_keys[0]
        named = [*headers, [H_FRAME_KEYS, json.dumps([k.hex() for k in frame_keys])],
                 [H_FRAME_TIMES, json.dumps([float(t) for t in times])]]
        return cls(key, camera, float(min(times)), float(max(times)), named, value)

    @property
    def time_key(self) -> bytes:
        """This entry's key in the time index."""
        return time_prefix(self.camera) + ts_us(self.last_ts) + self.key

    def encode(self) -> bytes:
        """The stored value: the headers' JSON length (4 bytes), the JSON, the payload."""
        head = json.dumps(self.headers).encode()
        return struct.pack(">I", len(head)) + head + self.value


def decode_entry(raw: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``(value, headers)`` of a stored entry (headers as a Kafka record's)."""
    n = struct.unpack(">I", raw[:4])[0]
    return raw[4 + n:], [(k, v.encode("latin-1")) for k, v in json.loads(raw[4:4 + n])]


def frames_of(key: bytes, headers: list[tuple[str, bytes]], count: int) -> tuple[list[bytes], list[float] | None]:
    """The frame keys of an entry's ``count`` frames, and their capture times if it names them
    (a message's come from its wire headers)."""
    named = dict(headers)
    if key[:1] == MESSAGE:
        topic, rest = key[1:].split(_SEP, 1)
        partition, offset = struct.unpack(">IQ", rest)
        return [KafkaKey(topic.decode(), partition, offset, i).encode() for i in range(count)], None
    keys = [bytes.fromhex(k) for k in json.loads(named[H_FRAME_KEYS])]
    return keys, [float(t) for t in json.loads(named[H_FRAME_TIMES])]


__all__ = ["FRAME", "H_FRAME_KEYS", "H_FRAME_TIMES", "KeptEntry", "MESSAGE", "REF", "SEGMENT", "SPAN", "TIME",
           "decode_entry", "frames_of", "message_key", "span_key", "time_prefix", "ts_us"]
