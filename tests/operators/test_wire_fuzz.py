"""Property-based fuzz of the Kafka wire codec (:func:`operators.kafka.wire.decode`).

The property: on any input, ``decode`` either returns a :class:`~operators.kafka.wire.Decoded`
within the :class:`~operators.limits.DecodeLimits` it was given (uint8 ``(n, h, w, 3)``
images, ``n <= frames``, ``h * w <= picture_pixels``, ``n * h * w <= message_pixels``, one
finite ``pts``/``wall_time``/``frame_no`` per frame), or raises a
:class:`~operators.kafka.wire.WireError` -- never another exception, never a crash, and never
more memory than those limits allow.

Inputs start from real messages: frames of the sample video ``vtest.avi`` encoded as JPEG
(baseline, progressive, with restart markers), PNG, raw RGB and H.264 segments (MPEG-TS from
:func:`~operators.producers.segments.encode_h264_segment`, and fragmented MP4). A case is a
plain tuple ``(seed name, payload edits, header edits)`` that :func:`materialize` turns into
``(value, headers)``, so a failing case reads and replays as it is printed.

* :func:`header_cases`: valid payloads under random headers (random names, sv-* ones among
  them, non-UTF-8 bytes, huge numbers, NaN/inf/1e20, negative values, control characters and
  NUL in sv-camera, repeated headers).
* :func:`payload_cases`: mutated payloads (byte flips, truncation, splices, repeats, JPEG
  markers and fake frame headers, MPEG-TS packet edits, PNG chunk edits) under headers whose
  sv-shape / sv-count may not match.

``benchmarks/fuzz.py`` runs the same strategies (through :func:`fuzz_run`) for minutes.
"""

from __future__ import annotations

import gc
import io
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from operators.kafka import wire
from operators.limits import DecodeLimits

#: Small limits, so that a message that escapes them shows in the memory of a short run.
LIMITS = DecodeLimits(message_bytes=2_000_000, picture_pixels=1_000_000, frames=20,
                      message_pixels=5_000_000, batch_pixels=5_000_000)
REPO = Path(__file__).resolve().parents[2]
MiB = 2**20


def memory_bound_mb(limits: DecodeLimits) -> float:
    """Most peak-RSS growth (MiB) a run of decodes under ``limits`` may show.

    One message at a time: its payload and the copies of it that decoding makes (4x
    ``message_bytes``), the decoded frames twice (list and stacked array, or BGR and RGB),
    one picture's conversion buffers, the H.264 decoder's reference pictures (16, 4:4:4 at
    most, each at most twice ``picture_pixels``), and 48 MiB for what the libraries allocate
    the first time a code path runs.
    """
    return (4 * limits.message_bytes + 2 * 3 * limits.message_pixels + 2 * 3 * limits.picture_pixels
            + 16 * 3 * 2 * limits.picture_pixels) / MiB + 48


def refused_bound_mb(limits: DecodeLimits) -> float:
    """Most peak-RSS growth (MiB) that refusing a message may cost: the payload twice and
    one picture at the limit (as 4:2:0 at twice ``picture_pixels``, or as RGB), and 4 MiB."""
    return (2 * limits.message_bytes + 2 * 3 * limits.picture_pixels) / MiB + 4


# ---------------------------------------------------------------------------- seeds
@dataclass(frozen=True)
class Seed:
    """One real, valid message to mutate."""

    kind: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


#: name -> kind of every seed :func:`build_seeds` makes (static, so strategies need no video).
SEED_KINDS = {
    "jpeg-full": wire.KIND_JPEG, "jpeg-crop": wire.KIND_JPEG, "jpeg-progressive": wire.KIND_JPEG,
    "jpeg-restart": wire.KIND_JPEG, "png-crop": wire.KIND_PNG, "png-full": wire.KIND_PNG,
    "raw-crop": wire.KIND_RAW, "raw-full": wire.KIND_RAW,
    "h264-ts-crop": wire.KIND_H264, "h264-ts-full": wire.KIND_H264, "h264-mp4-crop": wire.KIND_H264,
}
SEED_NAMES = tuple(SEED_KINDS)


def encode_h264_mp4(images: list[np.ndarray], rate: float = 10.0) -> bytes:
    """Frames as a fragmented MP4 H.264 segment (the wire's other container)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4",
                 options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": str(len(images))}
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


_SEEDS: dict[str, dict[str, Seed]] = {}


def build_seeds(video_path: str | os.PathLike) -> dict[str, Seed]:
    """The real messages every case starts from: frames of ``video_path`` (cached per path)."""
    key = str(video_path)
    if key in _SEEDS:
        return _SEEDS[key]
    import cv2

    from operators.producers.frame_reader import FrameReader
    from operators.producers.segments import encode_h264_segment

    frames = []
    for image, _pts in FrameReader(key):
        frames.append(image)
        if len(frames) == 6:
            break
    full = frames[0]
    crops = [np.ascontiguousarray(f[240:336, 320:448]) for f in frames]  # 96x128, people walking

    def image(name: str, picture: np.ndarray, kind: str, **kw: Any) -> tuple[str, Seed]:
        msg = wire.encode_image(picture, camera="cam-1", ts=1_700_000_000.5, frame_no=7, pts=0.7, kind=kind, **kw)
        return name, Seed(kind, msg.value, tuple(msg.headers))

    def jpeg(name: str, picture: np.ndarray, params: list[int]) -> tuple[str, Seed]:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), params)
        assert ok
        header = wire.Header(kind=wire.KIND_JPEG, camera="cam-1", ts=5.0, frame0=1,
                             shape=picture.shape[:2], count=1)
        return name, Seed(wire.KIND_JPEG, buf.tobytes(), tuple(header.to_kafka()))

    def segment(name: str, payload: bytes, images: list[np.ndarray]) -> tuple[str, Seed]:
        msg = wire.encode_segment_message(payload, camera="cam-2", ts=1_700_000_000.0, frame0=40, pts=4.0,
                                          count=len(images), shape=images[0].shape[:2])
        return name, Seed(wire.KIND_H264, msg.value, tuple(msg.headers))

    seeds = dict([
        image("jpeg-full", full, wire.KIND_JPEG, quality=90),
        image("jpeg-crop", crops[0], wire.KIND_JPEG, quality=75),
        jpeg("jpeg-progressive", crops[1], [cv2.IMWRITE_JPEG_QUALITY, 80, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        jpeg("jpeg-restart", crops[2], [cv2.IMWRITE_JPEG_QUALITY, 80, cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
        image("png-crop", crops[0], wire.KIND_PNG),
        image("png-full", full, wire.KIND_PNG),
        image("raw-crop", crops[0], wire.KIND_RAW),
        image("raw-full", full, wire.KIND_RAW),
        segment("h264-ts-crop", encode_h264_segment(crops, rate=10.0), crops),
        segment("h264-ts-full", encode_h264_segment(frames[:3], rate=10.0), frames[:3]),
        segment("h264-mp4-crop", encode_h264_mp4(crops), crops),
    ])
    assert {name: s.kind for name, s in seeds.items()} == SEED_KINDS
    for name, s in seeds.items():  # every seed is a valid message within LIMITS
        assert outcome(s.value, list(s.headers), LIMITS) == "ok", name
    _SEEDS[key] = seeds
    return seeds


# ---------------------------------------------------------------------------- the property
def outcome(value: bytes | None, headers: list[tuple[Any, Any]], limits: DecodeLimits = LIMITS) -> str:
    """``"ok"`` for a message that decodes within ``limits``, the ``reason`` of the
    :class:`~operators.kafka.wire.WireError` it raises otherwise.

    Raises:
        AssertionError: ``decode`` returned something outside the limits or malformed.
        Exception: whatever else ``decode`` raised (a bug).
    """
    try:
        out = wire.decode(value, headers, limits=limits)
    except wire.WireError as exc:
        return exc.reason
    assert isinstance(out, wire.Decoded), type(out)
    images = out.images
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8, (type(images), images.dtype)
    assert images.ndim == 4 and images.shape[3] == 3, images.shape
    n, h, w, _ = images.shape
    assert 1 <= n <= limits.frames, n
    assert 0 < h * w <= limits.picture_pixels, (h, w)
    assert n * h * w <= limits.message_pixels, (n, h, w)
    for name in ("pts", "wall_time", "frame_no"):
        column = np.asarray(getattr(out, name))
        assert column.shape == (n,), (name, column.shape)
        assert np.isfinite(column.astype(np.float64)).all(), (name, column)
    if out.header.shape is not None:
        assert (h, w) == out.header.shape, ((h, w), out.header.shape)
    if out.header.count is not None:
        assert n == out.header.count, (n, out.header.count)
    return "ok"


# ---------------------------------------------------------------------------- strategies
SV_NAMES = (wire.H_VERSION, wire.H_KIND, wire.H_CAMERA, wire.H_TS, wire.H_FRAME0, wire.H_SHAPE,
            wire.H_PTS, wire.H_COUNT, wire.H_ERROR)
NASTY_VALUES = (
    b"", b"1", b"0", b"-0", b"-1", b"-1e-300", b"+7", b" 7 ", b"7\x00", b"1_000", b"0x10", b"1e20", b"-1e20",
    b"1e308", b"1e309", b"nan", b"NaN", b"-nan", b"inf", b"-inf", b"Infinity", b"9" * 25, b"9" * 400,
    b"9" * 1024, b"9" * 1025, b"9" * 5000, b"32503680000", b"32503680000.0001", b"9007199254740992",
    b"9007199254740993", "\u0661\u0662".encode(), "\uff17".encode(), b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80",
    b"\x80", b"cam\x00", b"\x00", b"cam\n1", b"\x1b[2J", b"\t", b"\x7f", "\u202e".encode(), "\u00a0".encode(),
    "\u200b".encode(), "cam\U0001F4F7".encode(), b"c" * 256, b"c" * 257, b"image/jpeg", b"image/png",
    b"video/h264-segment", b"raw/rgb24", b"image/gif", b"IMAGE/JPEG", b"image/jpeg\x00", b"1", b"2", b"1.0",
    b"576,768,3", b"96,128,3", b"0,0,3", b"-1,128,3", b"96,128", b"96,128,3,1", b"96,128,4", b" 96, 128, 3",
    b"1e2,128,3", b"99999999,99999999,3", b"1000,1000,3", b"1000,1001,3", b"65535,65535,3", b",,", b"20", b"21",
)
header_values = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda i: str(i).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    st.tuples(st.integers(-5, 70000), st.integers(-5, 70000), st.integers(-1, 5))
      .map(lambda t: f"{t[0]},{t[1]},{t[2]}".encode()),
    st.none(),
)
header_names = st.one_of(
    st.sampled_from(SV_NAMES),
    st.sampled_from(("SV-KIND", "sv-kind ", " sv-kind", "sv-", "sv-camera\x00", "sv_camera", "", "key")),
    st.text(max_size=12).map(lambda s: "sv-" + s),
    st.text(max_size=12),
)
#: ("hset", name, value): every ``name`` header replaced by one; ("hadd", ...): one more
#: (a repeat when ``name`` is there); ("hdel", name): all removed.
header_ops = st.one_of(
    st.tuples(st.just("hset"), header_names, header_values),
    st.tuples(st.just("hadd"), header_names, header_values),
    st.tuples(st.just("hdel"), header_names),
)
#: Headers that contradict the payload: sv-shape and sv-count.
inconsistent_header_ops = st.one_of(
    st.tuples(st.just("hset"), st.just(wire.H_SHAPE),
              st.tuples(st.sampled_from([0, 1, 2, 95, 96, 97, 576, 1000, 4096, 65535]),
                        st.sampled_from([0, 1, 2, 127, 128, 129, 768, 1000, 4096, 65535]),
                        st.sampled_from([3, 3, 1, 4]))
                .map(lambda t: f"{t[0]},{t[1]},{t[2]}".encode())),
    st.tuples(st.just("hset"), st.just(wire.H_COUNT), st.integers(-1, 45).map(lambda i: str(i).encode())),
    st.tuples(st.just("hdel"), st.sampled_from([wire.H_SHAPE, wire.H_COUNT])),
    st.tuples(st.just("hset"), st.just(wire.H_KIND), st.sampled_from([k.encode() for k in wire.KINDS])),
)


def sof_segment(height: int, width: int, marker: int = 0xC0, components: int = 3) -> bytes:
    """A JPEG frame header (SOFn) declaring ``height`` x ``width``."""
    body = bytes([8]) + struct.pack(">HH", height, width) + bytes([components])
    body += b"".join(bytes([i + 1, 0x22 if i == 0 else 0x11, 0 if i == 0 else 1]) for i in range(components))
    return bytes([0xFF, marker]) + struct.pack(">H", 2 + len(body)) + body


dims = st.one_of(st.sampled_from([0, 1, 8, 576, 768, 1000, 4096, 8000, 8192, 16384, 65535]),
                 st.integers(0, 65535))
sof_markers = st.sampled_from([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCA, 0xCF])
JPEG_MARKERS = tuple(bytes([0xFF, m]) for m in (*range(0xD0, 0xD8), 0x01, 0x00, 0xFF, 0xD8, 0xD9, 0xDA, 0xC4,
                                               0xDB, 0xDD, 0xDC, 0xC8, 0xF0, 0x02, 0xBF))
jpeg_inserts = st.one_of(
    st.sampled_from(JPEG_MARKERS),
    st.builds(sof_segment, dims, dims, sof_markers, st.sampled_from([1, 3, 3, 4])),
    st.tuples(st.sampled_from([0xFE, 0xE0, 0xE1, 0xEE, 0xDD, 0xDC]), st.binary(max_size=12))
      .map(lambda t: bytes([0xFF, t[0]]) + struct.pack(">H", 2 + len(t[1])) + t[1]),
    st.tuples(st.sampled_from([0xFE, 0xE1, 0xC4, 0xDB]), st.integers(0, 65535))  # a length that lies
      .map(lambda t: bytes([0xFF, t[0]]) + struct.pack(">H", t[1])),
)
fraction = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
byte = st.integers(0, 255)
xor = st.integers(1, 255)
insert_bytes = st.one_of(jpeg_inserts, st.binary(min_size=1, max_size=32),
                         st.sampled_from([b"\x47", b"\x00\x00\x00\x01", b"\x00\x00\x01\x67", b"ftyp", b"moov",
                                          b"\x89PNG\r\n\x1a\n", b"IHDR", b"IEND"]))
generic_ops = st.one_of(
    st.tuples(st.just("flip"), fraction, xor),
    st.tuples(st.just("set"), fraction, byte),
    st.tuples(st.just("truncate"), fraction),
    st.tuples(st.just("behead"), fraction),
    st.tuples(st.just("delete"), fraction, st.integers(1, 4096)),
    st.tuples(st.just("insert"), fraction, insert_bytes),
    st.tuples(st.just("repeat"), fraction, st.integers(1, 4096), st.integers(1, 4)),
    st.tuples(st.just("splice"), fraction, st.sampled_from(SEED_NAMES), fraction, st.integers(1, 4096)),
    st.tuples(st.just("concat"), st.sampled_from(SEED_NAMES)),
)
jpeg_ops = st.one_of(
    st.tuples(st.just("jpeg_insert"), fraction, jpeg_inserts),  # between the header segments
    st.tuples(st.just("scan_insert"), fraction, jpeg_inserts),  # inside the entropy-coded data
    st.tuples(st.just("jpeg_sof"), dims, dims),                 # the real frame header lies
    st.tuples(st.just("jpeg_shadow"), dims, dims),              # a second frame header hidden in FF00
    st.tuples(st.just("jpeg_drop"), fraction),                  # a header segment removed
)
png_ops = st.one_of(
    st.tuples(st.just("png_ihdr"), st.integers(0, 2**32 - 1) | dims, st.integers(0, 2**32 - 1) | dims,
              st.booleans()),
    st.tuples(st.just("png_chunk"), fraction, st.sampled_from([b"IHDR", b"IDAT", b"IEND", b"acTL", b"fcTL",
                                                               b"tEXt", b"zTXt", b"iCCP", b"PLTE", b"xxxx"]),
              st.binary(max_size=40), st.booleans()),
    st.tuples(st.just("png_bomb"), st.integers(1, 8)),          # an IDAT that inflates far past the picture
)
ts_ops = st.one_of(
    st.tuples(st.just("ts_flip"), fraction, st.integers(0, 187), xor),
    st.tuples(st.just("ts_drop"), fraction, st.integers(1, 8)),
    st.tuples(st.just("ts_dup"), fraction, st.integers(1, 8), st.integers(1, 3)),
    st.tuples(st.just("ts_swap"), fraction, fraction),
    st.tuples(st.just("ts_cut"), fraction),
    st.tuples(st.just("ts_concat"), st.sampled_from(["h264-ts-crop", "h264-ts-full"])),
)
mp4_ops = st.one_of(
    st.tuples(st.just("text_flip"), st.sampled_from([b"VideoHandler", b"Lavf", b"avc1", b"isom", b"x264"]),
              st.integers(0, 3), st.sampled_from([0xFF, 0x80, 0xC0, 0x00])),
    st.tuples(st.just("box_size"), fraction, st.sampled_from([0, 1, 7, 8, 2**31, 2**32 - 1])),
)
KIND_OPS = {wire.KIND_JPEG: jpeg_ops, wire.KIND_PNG: png_ops, wire.KIND_RAW: generic_ops,
            wire.KIND_H264: st.one_of(ts_ops, mp4_ops)}


def header_cases() -> st.SearchStrategy[tuple]:
    """(a) A valid payload under 1..6 random header edits."""
    return st.tuples(st.sampled_from(SEED_NAMES), st.just(()), st.lists(header_ops, min_size=1, max_size=6)
                     .map(tuple))


def _payload_case(name: str) -> st.SearchStrategy[tuple]:
    ops = st.one_of(generic_ops, KIND_OPS[SEED_KINDS[name]], KIND_OPS[SEED_KINDS[name]])
    return st.tuples(st.just(name), st.lists(ops, min_size=1, max_size=4).map(tuple),
                     st.lists(inconsistent_header_ops, max_size=2).map(tuple))


def payload_cases() -> st.SearchStrategy[tuple]:
    """(b) A mutated real payload, its sv-shape / sv-count perhaps contradicting it."""
    return st.sampled_from(SEED_NAMES).flatmap(_payload_case)


def fuzz_cases() -> st.SearchStrategy[tuple]:
    """Both kinds of case, one in four with random headers."""
    return st.one_of(payload_cases(), payload_cases(), payload_cases(), header_cases())


# ---------------------------------------------------------------------------- cases -> messages
def _at(frac: float, n: int) -> int:
    return min(int(frac * n), max(n - 1, 0))


def _jpeg_segments(b: bytes) -> tuple[list[bytes], bytes] | None:
    """``(segments from after SOI up to and including the SOS header, the rest)``."""
    pos, segments = 2, []
    while pos + 4 <= len(b) and b[pos] == 0xFF:
        marker, length = b[pos + 1], struct.unpack(">H", b[pos + 2:pos + 4])[0]
        segments.append(b[pos:pos + 2 + length])
        pos += 2 + length
        if marker == 0xDA:
            return segments, b[pos:]
    return None


def _png_chunk(kind: bytes, data: bytes, fix_crc: bool) -> bytes:
    crc = zlib.crc32(kind + data) if fix_crc else zlib.crc32(kind + data) ^ 1
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_chunk_starts(b: bytes) -> list[int]:
    starts, pos = [], 8
    while pos + 12 <= len(b):
        starts.append(pos)
        pos += 12 + struct.unpack(">I", b[pos:pos + 4])[0]
    return starts


def _edit_payload(b: bytes, op: tuple, seeds: dict[str, Seed]) -> bytes:
    name, *args = op
    n = len(b)
    if name == "flip" and n:
        i = _at(args[0], n)
        return b[:i] + bytes([b[i] ^ args[1]]) + b[i + 1:]
    if name == "set" and n:
        i = _at(args[0], n)
        return b[:i] + bytes([args[1]]) + b[i + 1:]
    if name == "truncate":
        return b[:_at(args[0], n)]
    if name == "behead":
        return b[_at(args[0], n):]
    if name == "delete":
        i = _at(args[0], n)
        return b[:i] + b[i + args[1]:]
    if name == "insert":
        i = _at(args[0], n + 1)
        return b[:i] + args[1] + b[i:]
    if name == "repeat":
        i = _at(args[0], n)
        return b[:i] + b[i:i + args[1]] * (args[2] + 1) + b[i + args[1]:]
    if name == "splice":
        other = seeds[args[1]].value
        j = _at(args[2], len(other))
        chunk = other[j:j + args[3]]
        i = _at(args[0], n)
        return b[:i] + chunk + b[i + len(chunk):]
    if name == "concat":
        return b + seeds[args[0]].value
    if name == "ts_concat":  # a second segment (perhaps of another size) after this one
        return b + seeds[args[0]].value
    if name.startswith("ts_"):
        packets = [b[i:i + 188] for i in range(0, n - n % 188, 188)]
        if not packets:
            return b
        p = _at(args[0], len(packets))
        if name == "ts_flip":
            packet = bytearray(packets[p])
            packet[args[1]] ^= args[2]
            packets[p] = bytes(packet)
        elif name == "ts_drop":
            del packets[p:p + args[1]]
        elif name == "ts_dup":
            packets[p:p] = packets[p:p + args[1]] * args[2]
        elif name == "ts_swap":
            q = _at(args[1], len(packets))
            packets[p], packets[q] = packets[q], packets[p]
        elif name == "ts_cut":
            del packets[max(p, 1):]
        return b"".join(packets) + b[n - n % 188:]
    if name == "text_flip":
        i = b.find(args[0])
        if i < 0:
            return b
        i += min(args[1], len(args[0]) - 1)
        return b[:i] + bytes([args[2]]) + b[i + 1:]
    if name == "box_size":
        i = _at(args[0], max(n - 4, 1))
        return b[:i] + struct.pack(">I", args[1] % 2**32) + b[i + 4:]
    if name.startswith("png_"):
        if b[:8] != b"\x89PNG\r\n\x1a\n":
            return b
        if name == "png_ihdr" and n >= 33:
            data = struct.pack(">II", args[1] % 2**32, args[0] % 2**32) + b[24:29]
            return b[:8] + _png_chunk(b"IHDR", data, args[2]) + b[33:]
        starts = _png_chunk_starts(b)
        if name == "png_chunk" and starts:
            i = starts[_at(args[0], len(starts))]
            return b[:i] + _png_chunk(args[1], args[2], args[3]) + b[i:]
        if name == "png_bomb" and starts:  # deflate of zeros: 1 KiB of input per MiB of output
            bomb = zlib.compress(b"\x00" * (args[0] * MiB), 9)
            i = next((s for s in starts if b[s + 4:s + 8] == b"IDAT"), starts[-1])
            return b[:i] + _png_chunk(b"IDAT", bomb, True) + b[i:]
        return b
    if name in ("jpeg_insert", "scan_insert", "jpeg_sof", "jpeg_shadow", "jpeg_drop"):
        parsed = _jpeg_segments(b)
        if parsed is None:
            return b
        segments, rest = parsed
        if name == "jpeg_insert":
            i = _at(args[0], len(segments) + 1)
            segments[i:i] = [args[1]]
        elif name == "scan_insert":
            i = _at(args[0], len(rest) + 1)
            rest = rest[:i] + args[1] + rest[i:]
        elif name == "jpeg_drop":
            del segments[_at(args[0], len(segments))]
        else:
            k = next((i for i, s in enumerate(segments) if s[1] in (0xC0, 0xC1, 0xC2)), None)
            if k is None:
                return b
            sof = segments[k]
            fake = sof[:5] + struct.pack(">HH", args[0], args[1]) + sof[9:]
            if name == "jpeg_sof":
                segments[k] = fake
            else:  # seen by a parser that skips FF00 by a length, hiding the real one from libjpeg
                hidden = fake + b"\xff\xfe" + struct.pack(">H", 2 + len(sof))
                segments[k:k] = [b"\xff\x00" + struct.pack(">H", 2 + len(hidden)) + hidden]
        return b[:2] + b"".join(segments) + rest
    return b


def _edit_headers(headers: list[tuple[Any, Any]], op: tuple) -> list[tuple[Any, Any]]:
    if op[0] == "hdel":
        return [h for h in headers if h[0] != op[1]]
    if op[0] == "hadd":
        return headers + [(op[1], op[2])]
    at = next((i for i, h in enumerate(headers) if h[0] == op[1]), len(headers))
    kept = [h for h in headers if h[0] != op[1]]
    return kept[:at] + [(op[1], op[2])] + kept[at:]


def materialize(case: tuple, seeds: dict[str, Seed]) -> tuple[bytes, list[tuple[Any, Any]]]:
    """``(seed name, payload edits, header edits)`` -> ``(value, headers)``."""
    name, payload_ops, header_edits = case
    value, headers = seeds[name].value, list(seeds[name].headers)
    for op in payload_ops:
        value = _edit_payload(value, op, seeds)
    for op in header_edits:
        headers = _edit_headers(headers, op)
    return value, headers


def shadow_sof_jpeg(seeds: dict[str, Seed], height: int = 8000, width: int = 8000) -> bytes:
    """The full-size JPEG seed with a huge frame header that libjpeg reads and the wire's
    marker walk skipped (behind a 0xFF00 with a length)."""
    return materialize(("jpeg-full", (("jpeg_shadow", height, width),), ()), seeds)[0]


_BIG_H264: dict[int, bytes] = {}


def big_h264_segment(side: int = 4096) -> bytes:
    """A one-frame ``side`` x ``side`` MPEG-TS segment of a real frame on black: 130 KB that
    decode to ``side**2`` pixels. Encoded in a child process (cached), so that the encoder's
    memory never counts in this one's peak RSS."""
    if side not in _BIG_H264:
        code = ("import sys; from tests.operators.test_wire_fuzz import _encode_big_h264; "
                "sys.stdout.buffer.write(_encode_big_h264(int(sys.argv[1])))")
        done = subprocess.run([sys.executable, "-c", code, str(side)], cwd=REPO, capture_output=True,
                              check=True, timeout=120)
        _BIG_H264[side] = done.stdout
    return _BIG_H264[side]


def _encode_big_h264(side: int) -> bytes:
    import av

    from operators.assets import vtest_video

    with av.open(str(vtest_video())) as container:
        real = next(container.decode(video=0)).to_ndarray(format="yuv420p")  # (h * 3/2, w) planes
    h, w = real.shape[0] * 2 // 3, real.shape[1]
    planes = np.zeros((side * 3 // 2, side), np.uint8)
    planes[side:] = 128
    planes[:h, :w] = real[:h]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "1"}
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def bomb_cases(seeds: dict[str, Seed]) -> dict[str, tuple[bytes, list[tuple[str, bytes]]]]:
    """Small messages that decode to far more than :data:`LIMITS` allow, if let through."""
    big = big_h264_segment()
    ts = seeds["h264-ts-crop"]
    no_shape = [h for h in ts.headers if h[0] not in (wire.H_SHAPE, wire.H_COUNT)]
    jpeg_headers = [h for h in seeds["jpeg-full"].headers if h[0] != wire.H_SHAPE]
    return {
        "jpeg-shadow-sof": (shadow_sof_jpeg(seeds), jpeg_headers),
        "h264-4096": (big, no_shape),
        "h264-small-then-4096": (ts.value + big, no_shape),  # the size changes mid-segment
    }


# ---------------------------------------------------------------------------- runs
def max_rss_mb() -> float:
    """This process's peak resident set so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fuzz_run(video_path: str | os.PathLike, *, examples: int | None = None, seconds: float | None = None,
             batch: int = 50, first_seed: int = 0, limits: DecodeLimits = LIMITS, bombs: bool = False,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Decode hypothesis-drawn :func:`fuzz_cases` until ``examples`` inputs (the bombs
    among them) or ``seconds``.

    Runs in batches of ``batch`` examples, batch ``i`` with hypothesis seed ``first_seed + i``
    (so a run of a given length is reproducible), generation only (a failure is recorded,
    not shrunk). With ``bombs``, the :func:`bomb_cases` are decoded first.

    Returns:
        ``fuzz_inputs``, ``fuzz_crashes`` (inputs that raised anything but a WireError or broke
        the property), ``crashes`` (the first 5: the case, the exception, the input's length and
        first 64 bytes in hex), ``outcomes`` (count per WireError reason, ``ok``, ``crash``),
        ``seconds``, ``rss_before_mb`` (peak RSS after the seeds were decoded once),
        ``max_rss_mb``, ``rss_growth_mb`` (and ``bombs_rss_growth_mb``, after the bombs alone),
        ``timeline`` (``[seconds, inputs]`` after each batch).
    """
    if examples is None and seconds is None:
        raise ValueError("fuzz_run needs examples or seconds")
    seeds = build_seeds(video_path)
    bomb_inputs = bomb_cases(seeds) if bombs else {}
    for s in seeds.values():  # load every decoder once before the baseline
        outcome(s.value, list(s.headers), limits)
    gc.collect()
    rss_before = max_rss_mb()
    outcomes: Counter[str] = Counter()
    crashes: list[dict[str, Any]] = []
    timeline: list[list[float]] = []

    def record(case: Any, value: bytes, headers: list) -> None:
        try:
            outcomes[outcome(value, headers, limits)] += 1
        except Exception as exc:  # noqa: BLE001 - anything but a WireError is what the fuzz looks for
            outcomes["crash"] += 1
            if len(crashes) < 5:
                crashes.append({"case": repr(case)[:2000], "error": f"{type(exc).__name__}: {exc}"[:500],
                                "value_len": len(value), "value_head_hex": value[:64].hex(),
                                "headers": repr(headers)[:1000]})

    started = time.perf_counter()
    for name, (value, headers) in bomb_inputs.items():
        record(name, value, headers)
    bombs_growth = max_rss_mb() - rss_before

    def one(case: tuple) -> None:
        value, headers = materialize(case, seeds)
        record(case, value, headers)

    i = 0
    while True:
        done = sum(outcomes.values())
        elapsed = time.perf_counter() - started
        if (examples is not None and done >= examples) or (seconds is not None and elapsed >= seconds):
            break
        size = batch if examples is None else min(batch, examples - done)
        run = settings(max_examples=size, deadline=None, database=None, derandomize=False,
                       phases=[Phase.generate], suppress_health_check=list(HealthCheck))(
            given(case=fuzz_cases())(one))
        hypothesis_seed(first_seed + i)(run)()
        i += 1
        timeline.append([round(time.perf_counter() - started, 2), sum(outcomes.values())])
        if progress is not None:
            progress({"seconds": timeline[-1][0], "inputs": timeline[-1][1], "crashes": outcomes["crash"]})
    return {
        "fuzz_inputs": sum(outcomes.values()), "fuzz_crashes": outcomes["crash"], "crashes": crashes,
        "outcomes": dict(outcomes.most_common()), "seconds": round(time.perf_counter() - started, 2),
        "rss_before_mb": round(rss_before, 1), "max_rss_mb": round(max_rss_mb(), 1),
        "rss_growth_mb": round(max_rss_mb() - rss_before, 1), "bombs_rss_growth_mb": round(bombs_growth, 1),
        "timeline": timeline,
    }


# ---------------------------------------------------------------------------- tests
FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def seeds(vtest_path):
    return build_seeds(vtest_path)


@settings(max_examples=400, **FUZZ_SETTINGS)
@given(case=header_cases())
def test_random_headers_decode_within_limits_or_raise_a_wire_error(seeds, case):
    value, headers = materialize(case, seeds)
    outcome(value, headers)


@settings(max_examples=800, **FUZZ_SETTINGS)
@given(case=payload_cases())
def test_mutated_payloads_decode_within_limits_or_raise_a_wire_error(seeds, case):
    value, headers = materialize(case, seeds)
    outcome(value, headers)


def test_small_messages_that_would_decode_to_huge_pictures_are_refused(seeds):
    for name, (value, headers) in bomb_cases(seeds).items():
        assert outcome(value, headers) in ("oversize", "corrupt-image", "corrupt-segment"), name


def test_fuzz_run_neither_crashes_nor_outgrows_the_limits(vtest_path):
    """A thousand cases and the bombs in a child process: no crash, no escaped exception,
    peak RSS growth within :func:`memory_bound_mb` of :data:`LIMITS`, and refusing the bombs
    within :func:`refused_bound_mb`."""
    code = ("import json, sys; from tests.operators.test_wire_fuzz import fuzz_run; "
            "print(json.dumps(fuzz_run(sys.argv[1], examples=1000, bombs=True)))")
    done = subprocess.run([sys.executable, "-c", code, str(vtest_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])  # a signal is a crash
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fuzz_crashes"] == 0, result["crashes"]
    assert result["fuzz_inputs"] == 1000
    assert result["bombs_rss_growth_mb"] < refused_bound_mb(LIMITS), result
    assert result["rss_growth_mb"] < memory_bound_mb(LIMITS), result


def test_an_ffconcat_list_is_refused_without_opening_the_files_it_names(tmp_path, vtest_path):
    """A 200-byte ffconcat script naming a local video, sent as a segment, is not a container
    the wire reads: refused, and the file it names is never opened (opening a FIFO for reading
    would block until a writer came)."""
    fifo = tmp_path / "video.ts"
    os.mkfifo(fifo)
    for target in (vtest_path, fifo):
        text = f"ffconcat version 1.0\nfile '{target}'\n"
        value = (text + "#" * (199 - len(text)) + "\n").encode()
        assert len(value) == 200
        header = wire.Header(kind=wire.KIND_H264, camera="c", ts=0.0, frame0=0)
        result: list[BaseException | wire.Decoded] = []

        def run() -> None:
            try:
                result.append(wire.decode(value, header.to_kafka(), limits=LIMITS))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                result.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout=30)
        if worker.is_alive():  # blocked opening the FIFO: let it go, then fail
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(timeout=10)
            pytest.fail(f"decode opened {fifo}, named in an ffconcat list")
        assert len(result) == 1 and isinstance(result[0], wire.CorruptSegment), result
