"""The Kafka wire format (ARCHITECTURE section 4): one image or one short video segment per message.

The value is the payload bytes; Kafka headers carry a versioned schema (values are UTF-8 text):

=============  ==========  ==========================================================
header         required    meaning
=============  ==========  ==========================================================
sv-version     yes         schema version; this module reads and writes ``"1"``
sv-kind        yes         ``image/jpeg``, ``image/png``, ``video/h264-segment``
                           (MPEG-TS or fragmented MP4 starting at a keyframe), ``raw/rgb24``
sv-camera      yes         camera id (also the message key, so a camera stays in one partition)
sv-ts          yes         capture time of the first frame, seconds since the epoch
sv-frame0      yes         frame number of the first frame in the camera's stream
sv-shape       raw only    ``H,W,3``; optional elsewhere, and checked when present
sv-pts         no          presentation time of the first frame, seconds from the stream start
sv-count       no          number of frames in the message (a segment with fewer is truncated)
sv-error       DLQ only    ``reason: message`` on dead letters (see :class:`WireError`)
=============  ==========  ==========================================================

Kafka input is untrusted: nothing is unpickled, every header is parsed strictly and bounded
(timestamps, frame numbers, camera ids of printable text), what a message may decode to is
bounded by :class:`~operators.limits.DecodeLimits` while it decodes, segments are read only
as MPEG-TS or MP4 holding H.264, and each kind of bad message raises its own
:class:`WireError` subclass whose ``reason`` goes into the ``sv-error`` header of the dead
letter.

>>> import numpy as np
>>> msg = encode_image(np.zeros((4, 6, 3), np.uint8), camera="cam1", ts=1.5, frame_no=7, kind=KIND_PNG)
>>> out = decode(msg.value, msg.headers)
>>> out.images.shape, out.header.camera, int(out.frame_no[0])
((1, 4, 6, 3), 'cam1', 7)
>>> decode(b"", msg.headers)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
operators.kafka.wire.EmptyMessage: empty: the message has no payload
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from operators.limits import DEFAULT_LIMITS, DecodeLimits
from streamvision.core.errors import InputError

WIRE_VERSION = "1"
H_VERSION, H_KIND, H_CAMERA, H_TS, H_FRAME0 = "sv-version", "sv-kind", "sv-camera", "sv-ts", "sv-frame0"
H_SHAPE, H_PTS, H_COUNT, H_ERROR = "sv-shape", "sv-pts", "sv-count", "sv-error"

KIND_JPEG = "image/jpeg"
KIND_PNG = "image/png"
KIND_H264 = "video/h264-segment"
KIND_RAW = "raw/rgb24"
KINDS = (KIND_JPEG, KIND_PNG, KIND_H264, KIND_RAW)

#: Largest payload sent or accepted by default (the embedded broker takes messages up to 16 MB).
DEFAULT_MAX_MESSAGE_BYTES = DEFAULT_LIMITS.message_bytes
_MAX_CAMERA_CHARS = 256
_MAX_HEADER_BYTES = 1024
#: Latest capture time accepted (the year 3000), and the largest frame number.
MAX_TS = 32_503_680_000.0
MAX_FRAME_NO = 2**53

KafkaHeaders = Sequence[tuple[str, bytes]]


class WireError(InputError):
    """A message that cannot be parsed or decoded; ``reason`` names the kind of fault."""

    reason: ClassVar[str] = "bad-message"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.reason}: {message}")
        self.detail = message


class EmptyMessage(WireError):
    """The payload is empty."""

    reason = "empty"


class OversizeMessage(WireError):
    """The payload is larger than the configured limit, or decodes to too many pixels."""

    reason = "oversize"


class UnknownVersion(WireError):
    """``sv-version`` is missing or not one this reader understands."""

    reason = "unknown-version"


class BadHeader(WireError):
    """A required header is missing, duplicated or malformed, or ``sv-kind`` is unknown."""

    reason = "bad-header"


class CorruptImage(WireError):
    """A JPEG or PNG payload does not decode."""

    reason = "corrupt-image"


class CorruptSegment(WireError):
    """A video segment does not decode."""

    reason = "corrupt-segment"


class TruncatedSegment(WireError):
    """A video segment is cut short (fewer frames than ``sv-count``, partial MPEG-TS packets)."""

    reason = "truncated-segment"


class WrongShape(WireError):
    """The pixels do not match ``sv-shape`` (or the size the consumer requires)."""

    reason = "wrong-shape"


class UnparsableRecord(WireError):
    """A record the Kafka client itself cannot parse (e.g. a header name that is not UTF-8)."""

    reason = "unparsable-record"


class ProcessingFailed(WireError):
    """An operator or the sink failed on the message's frames (``operators.quarantine``)."""

    reason = "processing-failed"


@dataclass(frozen=True)
class Header:
    """The parsed ``sv-*`` headers of one message."""

    kind: str
    camera: str
    ts: float
    frame0: int
    pts: float = 0.0
    shape: tuple[int, int] | None = None
    count: int | None = None
    version: str = WIRE_VERSION

    def to_kafka(self) -> list[tuple[str, bytes]]:
        """Headers as kafka-python wants them: ``[(name, bytes), ...]``."""
        items = [(H_VERSION, self.version), (H_KIND, self.kind), (H_CAMERA, self.camera),
                 (H_TS, repr(float(self.ts))), (H_FRAME0, str(int(self.frame0))), (H_PTS, repr(float(self.pts)))]
        if self.shape is not None:
            items.append((H_SHAPE, f"{self.shape[0]},{self.shape[1]},3"))
        if self.count is not None:
            items.append((H_COUNT, str(int(self.count))))
        return [(name, value.encode()) for name, value in items]


@dataclass(frozen=True)
class WireMessage:
    """A message ready for ``KafkaProducer.send(topic, key=..., value=..., headers=...)``."""

    key: bytes
    value: bytes
    header: Header

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers."""
        return self.header.to_kafka()


@dataclass(frozen=True)
class Decoded:
    """The frames of one message.

    Attributes:
        header: the parsed headers.
        images: ``(n, h, w, 3)`` uint8 RGB.
        pts: ``(n,)`` presentation times, seconds from the stream start.
        wall_time: ``(n,)`` capture times, seconds since the epoch.
        frame_no: ``(n,)`` frame numbers (``sv-frame0`` + index).
    """

    header: Header
    images: np.ndarray
    pts: np.ndarray
    wall_time: np.ndarray
    frame_no: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


# ---------------------------------------------------------------------------- headers
def _text(raw: dict[str, bytes], name: str, required: bool) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise BadHeader(f"header {name!r} is missing")
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeader(f"header {name!r} is not UTF-8") from None


def _number(raw: dict[str, bytes], name: str, cast: type, required: bool, most: float) -> float | int | None:
    text = _text(raw, name, required)
    if text is None:
        return None
    try:
        value = cast(text.strip())
    except ValueError:
        raise BadHeader(f"header {name!r} is not a number: {text[:40]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise BadHeader(f"header {name!r} is not finite: {text[:40]!r}")
    if value < 0:
        raise BadHeader(f"header {name!r} is negative: {value}")
    if value > most:
        raise BadHeader(f"header {name!r} is {value}, more than {most:g}")
    return value


def parse_shape(text: str) -> tuple[int, int]:
    """``"H,W,3"`` -> ``(H, W)``.

    Raises:
        WrongShape: not three positive integers ending in 3.
    """
    parts = text.split(",")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise WrongShape(f"sv-shape {text[:40]!r} is not H,W,3") from None
    if len(dims) != 3 or dims[2] != 3 or dims[0] <= 0 or dims[1] <= 0:
        raise WrongShape(f"sv-shape {text[:40]!r} is not H,W,3 with positive H and W")
    return dims[0], dims[1]


def parse_header(headers: KafkaHeaders | None, limits: DecodeLimits = DEFAULT_LIMITS) -> Header:
    """Parse and check the ``sv-*`` headers of a message.

    Raises:
        UnknownVersion: ``sv-version`` missing or unsupported.
        BadHeader: a required header missing, malformed, too long or out of range (``sv-ts``
            after the year 3000, ``sv-count`` above the frame limit, a camera id that is not
            printable text), a header repeated, unknown kind.
        WrongShape: a malformed ``sv-shape``.
        OversizeMessage: ``sv-shape`` declares a picture above the limit.
    """
    raw: dict[str, bytes] = {}
    for name, value in headers or ():
        if not isinstance(name, str) or not name.startswith("sv-"):
            continue
        if name in raw:
            raise BadHeader(f"header {name!r} appears more than once")
        raw[name] = bytes(value) if value is not None else b""
        if len(raw[name]) > _MAX_HEADER_BYTES:
            raise BadHeader(f"header {name!r} has {len(raw[name])} bytes, more than {_MAX_HEADER_BYTES}")
    version = raw.get(H_VERSION)
    if version is None:
        raise UnknownVersion("header 'sv-version' is missing")
    if version != WIRE_VERSION.encode():
        raise UnknownVersion(f"sv-version {version[:20]!r} is not supported (this reader knows {WIRE_VERSION!r})")
    kind = _text(raw, H_KIND, True)
    if kind not in KINDS:
        raise BadHeader(f"unknown sv-kind {kind[:40]!r}; known: {', '.join(KINDS)}")  # type: ignore[index]
    camera = _text(raw, H_CAMERA, True)
    assert camera is not None
    if not camera or len(camera) > _MAX_CAMERA_CHARS:
        raise BadHeader(f"sv-camera must have 1..{_MAX_CAMERA_CHARS} characters")
    if not camera.isprintable():
        raise BadHeader(f"sv-camera {camera[:40]!r} holds control or unprintable characters")
    shape_text = _text(raw, H_SHAPE, kind == KIND_RAW)
    count = _number(raw, H_COUNT, int, False, limits.frames)
    if count is not None and count < 1:
        raise BadHeader("sv-count must be at least 1")
    shape = parse_shape(shape_text) if shape_text is not None else None
    if shape is not None and shape[0] * shape[1] > limits.picture_pixels:
        raise OversizeMessage(f"sv-shape declares {shape[0]}x{shape[1]}, more than {limits.picture_pixels} pixels")
    return Header(
        kind=kind, camera=camera,
        ts=float(_number(raw, H_TS, float, True, MAX_TS)),  # type: ignore[arg-type]
        frame0=int(_number(raw, H_FRAME0, int, True, MAX_FRAME_NO)),  # type: ignore[arg-type]
        pts=float(_number(raw, H_PTS, float, False, MAX_TS) or 0.0),
        shape=shape,
        count=None if count is None else int(count),
    )


# ---------------------------------------------------------------------------- encoding
def check_size(value: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    """Raise :class:`OversizeMessage` if ``value`` exceeds ``max_bytes``, :class:`EmptyMessage` if empty."""
    if not value:
        raise EmptyMessage("the message has no payload")
    if len(value) > max_bytes:
        raise OversizeMessage(
            f"the payload has {len(value)} bytes, more than the limit of {max_bytes} "
            f"(lower the JPEG quality or the segment length, or raise the limit)")


def encode_pixels(image: np.ndarray, kind: str, quality: int = 90) -> bytes:
    """Encode one ``(h, w, 3)`` uint8 RGB image as JPEG, PNG or raw RGB bytes."""
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"an image must be (h, w, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if kind == KIND_RAW:
        return np.ascontiguousarray(image).tobytes()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if kind == KIND_JPEG:
        if not 1 <= quality <= 100:
            raise InputError(f"JPEG quality must be 1..100, got {quality}")
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif kind == KIND_PNG:
        ok, buf = cv2.imencode(".png", bgr)
    else:
        raise InputError(f"{kind!r} is not an image kind; use one of {KIND_JPEG}, {KIND_PNG}, {KIND_RAW}")
    if not ok:
        raise InputError(f"could not encode a {image.shape} image as {kind}")
    return buf.tobytes()


def encode_image(image: np.ndarray, *, camera: str, ts: float, frame_no: int, pts: float = 0.0,
                 kind: str = KIND_JPEG, quality: int = 90,
                 max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> WireMessage:
    """One frame as a message (key = camera id).

    Raises:
        OversizeMessage: the encoded payload exceeds ``max_bytes``.
    """
    value = encode_pixels(image, kind, quality)
    check_size(value, max_bytes)
    header = Header(kind=kind, camera=camera, ts=ts, frame0=frame_no, pts=pts,
                    shape=(int(image.shape[0]), int(image.shape[1])), count=1)
    return WireMessage(camera.encode(), value, header)


def encode_segment_message(payload: bytes, *, camera: str, ts: float, frame0: int, pts: float, count: int,
                           shape: tuple[int, int], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> WireMessage:
    """An already encoded H.264 segment (MPEG-TS / fMP4 starting at a keyframe) as a message.

    Raises:
        OversizeMessage: the payload exceeds ``max_bytes``.
    """
    check_size(payload, max_bytes)
    header = Header(kind=KIND_H264, camera=camera, ts=ts, frame0=frame0, pts=pts, shape=shape, count=count)
    return WireMessage(camera.encode(), payload, header)


# ---------------------------------------------------------------------------- decoding
def _png_size(value: bytes) -> tuple[int, int]:
    if value[:8] != b"\x89PNG\r\n\x1a\n" or value[12:16] != b"IHDR" or len(value) < 24:
        raise CorruptImage("not a PNG stream (bad signature or missing IHDR)")
    width, height = struct.unpack(">II", value[16:24])
    return height, width


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
#: Markers without a length field, as libjpeg reads them (TEM, RST0..RST7).
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg_size(value: bytes) -> tuple[int, int]:
    """The frame size in the first SOF header, walking the markers as libjpeg does."""
    if value[:2] != b"\xff\xd8":
        raise CorruptImage("not a JPEG stream (no SOI marker)")
    if value.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise CorruptImage("the JPEG stream is cut short (no EOI marker)")
    pos = 2
    while pos + 4 <= len(value):
        if value[pos] != 0xFF:
            raise CorruptImage(f"JPEG marker expected at byte {pos}")
        marker = value[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        # 0xFF00 has no length to libjpeg (stuffed data: it scans on for the next 0xFF), so a
        # length read here would skip what libjpeg reads, such as a second, larger SOF
        if marker in (0x00, 0xD8, 0xD9):
            raise CorruptImage(f"unexpected JPEG marker 0xFF{marker:02X} before the frame header")
        length = struct.unpack(">H", value[pos + 2:pos + 4])[0]
        if marker in _SOF:
            if pos + 9 > len(value):
                break
            height, width = struct.unpack(">HH", value[pos + 5:pos + 9])
            if height == 0 or width == 0:
                raise CorruptImage("the JPEG frame header declares a zero size")
            return height, width
        if marker == 0xDA or length < 2:
            break
        pos += 2 + length
    raise CorruptImage("the JPEG stream has no frame header (SOF)")


class _Budget:
    """Counts a message's frames and pixels against the limits as it decodes."""

    def __init__(self, header: Header, limits: DecodeLimits) -> None:
        self.header, self.limits = header, limits
        self.frames = self.pixels = 0

    def check_picture(self, hw: tuple[int, int]) -> None:
        """A picture of this size may be decoded (size, shape and message budget)."""
        pixels = hw[0] * hw[1]
        if pixels > self.limits.picture_pixels:
            raise OversizeMessage(f"a {hw[0]}x{hw[1]} picture exceeds the limit of {self.limits.picture_pixels} pixels")
        if self.header.shape is not None and tuple(hw) != self.header.shape:
            raise WrongShape(f"the picture is {hw[0]}x{hw[1]} but sv-shape says "
                             f"{self.header.shape[0]}x{self.header.shape[1]}")
        if self.frames + 1 > self.limits.frames:
            raise OversizeMessage(f"the message holds more than {self.limits.frames} frames")
        if self.pixels + pixels > self.limits.message_pixels:
            raise OversizeMessage(f"the message decodes to more than {self.limits.message_pixels} pixels "
                                  f"({self.frames} frames of {hw[0]}x{hw[1]} so far)")

    def take(self, hw: tuple[int, int]) -> None:
        """Check, then count, one picture."""
        self.check_picture(hw)
        self.frames += 1
        self.pixels += hw[0] * hw[1]


def _decode_image(value: bytes, header: Header, budget: _Budget) -> np.ndarray:
    import cv2

    hw = _jpeg_size(value) if header.kind == KIND_JPEG else _png_size(value)
    budget.take(hw)
    try:  # OpenCV checks its own reading of the header against OPENCV_IO_MAX_IMAGE_PIXELS first
        bgr = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise OversizeMessage(f"the {header.kind} payload declares more than the pixel limit") from None
        raise CorruptImage(f"the {header.kind} payload ({len(value)} bytes) does not decode") from None
    if bgr is None or bgr.shape[:2] != hw:
        raise CorruptImage(f"the {header.kind} payload ({len(value)} bytes) does not decode as the "
                           f"{hw[0]}x{hw[1]} picture its header declares")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[None]


def _decode_raw(value: bytes, header: Header, budget: _Budget) -> np.ndarray:
    assert header.shape is not None
    h, w = header.shape
    frame_bytes = h * w * 3
    if len(value) % frame_bytes:
        raise WrongShape(f"{len(value)} bytes is not a whole number of {h}x{w}x3 frames")
    for _ in range(len(value) // frame_bytes):
        budget.take((h, w))
    return np.frombuffer(value, np.uint8).reshape(-1, h, w, 3)


def _container(value: bytes) -> str:
    """The demuxer of a segment: MPEG-TS or MP4 only (never a format that opens other files)."""
    if value[:1] == b"\x47":
        if len(value) % 188:
            raise TruncatedSegment(f"{len(value)} bytes is not a whole number of 188-byte MPEG-TS packets")
        return "mpegts"
    if value[4:8] in (b"ftyp", b"styp", b"moof", b"moov"):
        return "mp4"
    raise CorruptSegment("a video/h264-segment must be MPEG-TS or (fragmented) MP4")


def _decode_segment(value: bytes, header: Header, budget: _Budget) -> tuple[np.ndarray, np.ndarray]:
    import av

    fmt = _container(value)
    images: list[np.ndarray] = []
    times: list[float] = []
    try:
        # max_pixels: FFmpeg refuses larger pictures before allocating them, while probing and
        # decoding (twice the limit: it counts aligned widths); container metadata need not be UTF-8
        max_pixels = {"max_pixels": str(2 * budget.limits.picture_pixels)}
        with av.open(io.BytesIO(value), mode="r", format=fmt, options={"enable_drefs": "0", **max_pixels},
                     metadata_errors="replace") as container:
            if not container.streams.video:
                raise CorruptSegment("the segment has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx is None or ctx.name != "h264":
                raise CorruptSegment(f"the segment's video is {ctx.name if ctx else 'undecodable'}, not H.264")
            if ctx.width and ctx.height:
                budget.check_picture((ctx.height, ctx.width))
            ctx.options = max_pixels
            for frame in container.decode(stream):
                if not images and not frame.key_frame:
                    raise TruncatedSegment("the segment does not start at a keyframe")
                if header.count is not None and len(images) >= header.count:
                    raise CorruptSegment(f"the segment holds more frames than sv-count={header.count}")
                budget.take((frame.height, frame.width))
                images.append(frame.to_ndarray(format="rgb24"))
                t = frame.time if frame.time is not None else len(times) / float(stream.average_rate or 25)
                times.append(float(t))
    except av.error.FFmpegError as exc:
        raise CorruptSegment(f"the segment does not decode: {exc}") from None
    if not images:
        raise CorruptSegment("the segment holds no decodable frame")
    if header.count is not None and len(images) < header.count:
        raise TruncatedSegment(f"the segment decodes to {len(images)} frames, sv-count says {header.count}")
    if len({im.shape for im in images}) != 1:
        raise WrongShape("the frames of the segment do not all have one size")
    rel = np.asarray(times, np.float64) - times[0]
    return np.stack(images), rel


def decode(value: bytes | None, headers: KafkaHeaders | None, *, limits: DecodeLimits = DEFAULT_LIMITS) -> Decoded:
    """Parse the headers and decode the payload of one message into RGB frames.

    Decoding stops at the first limit of ``limits`` that the message would exceed.

    Raises:
        WireError: one subclass per fault (empty, oversize, unknown version, bad header,
            corrupt image, corrupt or truncated segment, wrong shape).
    """
    header = parse_header(headers, limits)
    check_size(value or b"", limits.message_bytes)
    assert value is not None
    value = bytes(value)
    budget = _Budget(header, limits)
    rel: np.ndarray | None = None
    if header.kind in (KIND_JPEG, KIND_PNG):
        images = _decode_image(value, header, budget)
    elif header.kind == KIND_RAW:
        images = _decode_raw(value, header, budget)
    else:
        images, rel = _decode_segment(value, header, budget)
    n = len(images)
    if header.count is not None and n != header.count:
        raise WrongShape(f"the payload holds {n} frames, sv-count says {header.count}")
    if rel is None:  # still images carry no timing of their own
        rel = np.zeros(n, np.float64)
    return Decoded(
        header=header, images=images, pts=header.pts + rel, wall_time=header.ts + rel,
        frame_no=header.frame0 + np.arange(n, dtype=np.int64),
    )


def error_header(exc: BaseException) -> bytes:
    """The ``sv-error`` value for a dead letter: ``reason: message`` (UTF-8, at most 1000 bytes)."""
    if isinstance(exc, WireError):
        text = f"{exc.reason}: {exc.detail}"
    else:
        text = f"decode-failed: {type(exc).__name__}: {exc}"
    return text.encode("utf-8", errors="replace")[:1000]


def error_reason(value: bytes) -> str:
    """The reason code of an ``sv-error`` header value."""
    return value.decode("utf-8", errors="replace").split(":", 1)[0]
