"""The Kafka wire format: round trips on real vtest.avi frames and every kind of bad message."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from operators.producers.frame_reader import FrameReader
from operators.producers.segments import encode_h264_segment
from operators.kafka import wire
from operators.limits import DecodeLimits
from streamvision.core.errors import InputError


@pytest.fixture(scope="module")
def frames(vtest_path):
    out = []
    for image, pts in FrameReader(str(vtest_path)):
        out.append((image, pts))
        if len(out) == 12:
            break
    return out


def _decode(msg: wire.WireMessage) -> wire.Decoded:
    return wire.decode(msg.value, msg.headers)


def test_jpeg_round_trip_keeps_pixels_and_headers(frames):
    image, pts = frames[3]
    msg = wire.encode_image(image, camera="cam-3", ts=1700000000.25, frame_no=3, pts=pts, quality=95)
    assert msg.key == b"cam-3"
    assert dict(msg.headers)["sv-version"] == b"1"
    out = _decode(msg)
    assert out.images.shape == (1, 576, 768, 3)
    assert out.header.camera == "cam-3" and int(out.frame_no[0]) == 3
    assert out.wall_time[0] == pytest.approx(1700000000.25)
    assert out.pts[0] == pytest.approx(pts)
    assert np.abs(out.images[0].astype(int) - image.astype(int)).mean() < 4.0


def test_lower_jpeg_quality_gives_smaller_messages(frames):
    image = frames[0][0]
    small = wire.encode_image(image, camera="c", ts=0, frame_no=0, quality=30)
    large = wire.encode_image(image, camera="c", ts=0, frame_no=0, quality=95)
    assert len(small.value) < len(large.value)


@pytest.mark.parametrize("kind", [wire.KIND_PNG, wire.KIND_RAW])
def test_lossless_kinds_are_exact(frames, kind):
    image = frames[1][0]
    out = _decode(wire.encode_image(image, camera="c", ts=5.0, frame_no=1, kind=kind))
    assert np.array_equal(out.images[0], image)


def test_h264_segment_round_trip(frames):
    images = [f[0] for f in frames]
    clip = encode_h264_segment(images, rate=10.0)
    msg = wire.encode_segment_message(clip, camera="cam", ts=100.0, frame0=40, pts=4.0, count=len(images),
                                      shape=(576, 768))
    out = _decode(msg)
    assert out.images.shape == (12, 576, 768, 3)
    assert out.frame_no.tolist() == list(range(40, 52))
    assert np.allclose(out.pts, 4.0 + np.arange(12) / 10.0)
    assert np.allclose(out.wall_time, 100.0 + np.arange(12) / 10.0)
    # frames keep their order: each decoded frame is closest to its own source frame
    for i in (0, 5, 11):
        errors = [np.abs(out.images[i].astype(int) - im.astype(int)).mean() for im in images]
        assert int(np.argmin(errors)) == i



def test_h264_segment_refuses_mixed_or_odd_sizes_and_no_frames(frames):
    image = frames[0][0]
    with pytest.raises(InputError, match="one size"):
        encode_h264_segment([image, image[:-2]], rate=10.0)
    with pytest.raises(InputError, match="even frame dimensions"):
        encode_h264_segment([image[:-1]], rate=10.0)
    with pytest.raises(InputError, match="at least one frame"):
        encode_h264_segment([], rate=10.0)

# ---------------------------------------------------------------------------- bad messages
def _jpeg(frames) -> wire.WireMessage:
    return wire.encode_image(frames[0][0], camera="c", ts=1.0, frame_no=0)


def _with(msg: wire.WireMessage, **changes: bytes | None) -> list[tuple[str, bytes]]:
    headers = dict(msg.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    return list(headers.items())


def test_empty_payload(frames):
    with pytest.raises(wire.EmptyMessage, match="empty"):
        wire.decode(b"", _jpeg(frames).headers)
    with pytest.raises(wire.EmptyMessage):
        wire.decode(None, _jpeg(frames).headers)


def test_oversize_payload_is_refused_on_both_ends(frames):
    msg = _jpeg(frames)
    with pytest.raises(wire.OversizeMessage, match="more than the limit of 1000"):
        wire.decode(msg.value, msg.headers, limits=DecodeLimits(message_bytes=1000))
    with pytest.raises(wire.OversizeMessage):
        wire.encode_image(frames[0][0], camera="c", ts=0, frame_no=0, kind=wire.KIND_RAW, max_bytes=100_000)


def test_too_many_pixels_is_oversize(frames):
    msg = _jpeg(frames)
    with pytest.raises(wire.OversizeMessage, match="pixels"):
        wire.decode(msg.value, msg.headers, limits=DecodeLimits(picture_pixels=100 * 100))


@pytest.mark.parametrize("version", [b"2", b"0", b"", b"1.0"])
def test_unknown_version(frames, version):
    msg = _jpeg(frames)
    with pytest.raises(wire.UnknownVersion, match="not supported"):
        wire.decode(msg.value, _with(msg, sv_version=version))


def test_missing_version(frames):
    msg = _jpeg(frames)
    with pytest.raises(wire.UnknownVersion, match="missing"):
        wire.decode(msg.value, _with(msg, sv_version=None))


@pytest.mark.parametrize("changes, match", [
    ({"sv_kind": b"image/gif"}, "unknown sv-kind"),
    ({"sv_kind": None}, "'sv-kind' is missing"),
    ({"sv_camera": None}, "'sv-camera' is missing"),
    ({"sv_camera": b""}, "sv-camera"),
    ({"sv_ts": b"yesterday"}, "not a number"),
    ({"sv_ts": b"nan"}, "not finite"),
    ({"sv_frame0": b"-4"}, "negative"),
    ({"sv_camera": b"\xff\xfe"}, "not UTF-8"),
])
def test_bad_headers(frames, changes, match):
    msg = _jpeg(frames)
    with pytest.raises(wire.BadHeader, match=match):
        wire.decode(msg.value, _with(msg, **changes))


def test_repeated_header(frames):
    msg = _jpeg(frames)
    with pytest.raises(wire.BadHeader, match="more than once"):
        wire.decode(msg.value, msg.headers + [("sv-camera", b"other")])


def test_truncated_jpeg(frames):
    msg = _jpeg(frames)
    with pytest.raises(wire.CorruptImage, match="cut short"):
        wire.decode(msg.value[: len(msg.value) // 2], msg.headers)


def test_jpeg_with_garbage_inside(frames):
    msg = _jpeg(frames)
    bad = bytearray(msg.value)
    bad[600:5000] = b"\x00" * 4400
    with pytest.raises(wire.CorruptImage):
        wire.decode(bytes(bad), msg.headers)


def test_a_pickle_is_never_unpickled(frames):
    payload = pickle.dumps({"not": "an image"})
    with pytest.raises(wire.CorruptImage, match="not a JPEG"):
        wire.decode(payload, _jpeg(frames).headers)


def test_truncated_segment(frames):
    images = [f[0] for f in frames]
    clip = encode_h264_segment(images, rate=10.0)
    msg = wire.encode_segment_message(clip, camera="c", ts=0, frame0=0, pts=0, count=12, shape=(576, 768))
    with pytest.raises(wire.TruncatedSegment, match="188-byte"):
        wire.decode(clip[:1000], msg.headers)
    cut = clip[: len(clip) // 2 // 188 * 188]
    with pytest.raises(wire.TruncatedSegment, match="sv-count says 12"):
        wire.decode(cut, msg.headers)


def test_segment_that_does_not_start_at_a_keyframe_or_decode(frames):
    clip = encode_h264_segment([f[0] for f in frames], rate=10.0)
    msg = wire.encode_segment_message(clip, camera="c", ts=0, frame0=0, pts=0, count=12, shape=(576, 768))
    with pytest.raises((wire.TruncatedSegment, wire.CorruptSegment)):
        wire.decode(clip[188 * 60:], msg.headers)
    with pytest.raises(wire.CorruptSegment):
        wire.decode(b"\x00" * 4096, msg.headers)


def test_wrong_shape(frames):
    image = frames[0][0]
    raw = wire.encode_image(image, camera="c", ts=0, frame_no=0, kind=wire.KIND_RAW)
    with pytest.raises(wire.WrongShape, match="whole number"):
        wire.decode(raw.value[:-7], raw.headers)
    with pytest.raises(wire.WrongShape, match="sv-shape"):
        wire.decode(raw.value, _with(raw, sv_shape=b"576,768"))
    with pytest.raises(wire.BadHeader, match="sv-shape"):
        wire.decode(raw.value, _with(raw, sv_shape=None))
    jpeg = _jpeg(frames)
    with pytest.raises(wire.WrongShape, match="sv-shape says 100x100"):
        wire.decode(jpeg.value, _with(jpeg, sv_shape=b"100,100,3"))


def test_error_header_names_the_reason(frames):
    try:
        wire.decode(b"", _jpeg(frames).headers)
    except wire.WireError as exc:
        value = wire.error_header(exc)
    assert value.startswith(b"empty: ")
    assert wire.error_reason(value) == "empty"


# ---------------------------------------------------------------------------- bounded decoding
def _headers(msg: wire.WireMessage, **changes: bytes | None) -> list[tuple[str, bytes]]:
    out = [(k, v) for k, v in msg.headers if k.removeprefix("sv-") not in changes]
    return out + [(f"sv-{k}", v) for k, v in changes.items() if v is not None]


def test_h264_segment_without_count_stops_at_the_frame_limit(frames):
    images = [f[0] for f in frames]  # 12 real frames
    clip = encode_h264_segment(images, rate=10.0)
    msg = wire.encode_segment_message(clip, camera="c", ts=1.0, frame0=0, pts=0.0, count=12, shape=(576, 768))
    no_count = _headers(msg, count=None)
    with pytest.raises(wire.OversizeMessage, match="more than 5 frames"):
        wire.decode(msg.value, no_count, limits=DecodeLimits(frames=5))
    with pytest.raises(wire.OversizeMessage, match="more than 2000000 pixels"):
        wire.decode(msg.value, no_count, limits=DecodeLimits(picture_pixels=1_000_000, message_pixels=2_000_000))
    assert len(wire.decode(msg.value, no_count)) == 12


def test_raw_message_of_tiny_frames_stops_at_the_frame_limit():
    value = bytes(3 * 100_000)  # 100k frames of 1x1 pixel
    msg = wire.WireMessage(b"c", value, wire.Header(kind=wire.KIND_RAW, camera="c", ts=1.0, frame0=0, shape=(1, 1)))
    with pytest.raises(wire.OversizeMessage, match="more than 300 frames"):
        wire.decode(msg.value, msg.headers)


def test_jpeg_whose_standalone_marker_hides_a_huge_frame_header_is_refused(frames):
    """A marker libjpeg reads as standalone (RST0) must not make the size check skip bytes: the
    check finds the real SOF, and OpenCV's own header check refuses it besides."""
    jpeg = bytearray(wire.encode_pixels(frames[0][0], wire.KIND_JPEG))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2  # 30000x30000: 2.7 GB decoded
    # RST0, then two bytes the old parser took for a length that jumped over the SOF
    crafted = bytes(jpeg[:2]) + b"\xff\xd0" + bytes(jpeg[2:])
    header = wire.Header(kind=wire.KIND_JPEG, camera="c", ts=1.0, frame0=0)
    with pytest.raises(wire.OversizeMessage):
        wire.decode(crafted, header.to_kafka())


@pytest.mark.parametrize("changes, match", [
    ({"ts": b"1e20"}, "more than"),
    ({"frame0": str(2**60).encode()}, "more than"),
    ({"camera": b"cam\x001"}, "unprintable"),
    ({"camera": b"cam\n1"}, "unprintable"),
    ({"count": b"100000"}, "more than"),
    ({"shape": b"100000,100000,3"}, "pixels"),
    ({"pts": b"x" * 2000}, "bytes"),
])
def test_out_of_range_headers_are_refused(frames, changes, match):
    msg = _jpeg(frames)
    with pytest.raises(wire.WireError, match=match):
        wire.decode(msg.value, _headers(msg, **changes))


def test_a_segment_that_is_not_mpegts_or_mp4_is_never_demuxed(tmp_path, vtest_path):
    """An ffconcat script would make FFmpeg open local files: only the declared containers are read."""
    script = f"ffconcat version 1.0\nfile '{vtest_path}'\n".encode()
    header = wire.Header(kind=wire.KIND_H264, camera="c", ts=1.0, frame0=0)
    with pytest.raises(wire.CorruptSegment, match="MPEG-TS or"):
        wire.decode(script, header.to_kafka())
