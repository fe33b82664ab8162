"""GOP-aligned H.264 segments: N seconds of frames encoded as one MPEG-TS clip.

Each segment is encoded by a fresh libx264 encoder, so it starts with an IDR keyframe and
decodes on its own (ARCHITECTURE section 4, ``video/h264-segment``). ``tune=zerolatency``
keeps B-frames out, so frames come out in the order they went in.

>>> import numpy as np
>>> clip = encode_h264_segment([np.zeros((64, 96, 3), np.uint8)] * 5, rate=10.0)
>>> clip[:1] == b"\\x47" and len(clip) % 188 == 0
True
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Sequence

import numpy as np

from streamvision.core.errors import InputError


class H264SegmentEncoder:
    """One segment, encoded a frame at a time: only the frame being encoded is held, however
    long the segment (:func:`encode_h264_segment` over a list).

    Args:
        shape: ``(h, w)`` of every frame, both even (H.264 4:2:0).
        rate: frames per second written into the clip.
        frames: how many frames the segment will hold (its one GOP's length).
        crf, preset: libx264's.
        threads: libx264's encoder threads (0: its choice, one per core and more).

    >>> encoder = H264SegmentEncoder((64, 96), rate=10.0, frames=5)
    >>> for _ in range(5):
    ...     encoder.add(np.zeros((64, 96, 3), np.uint8))
    >>> encoder.finish()[:1]
    b'G'

    Raises:
        InputError: odd dimensions, a frame of another size, or no frame at all.
    """

    def __init__(self, shape: tuple[int, int], *, rate: float, frames: int, crf: int = 23,
                 preset: str = "veryfast", threads: int = 0) -> None:
        import av

        h, w = shape
        if h % 2 or w % 2:
            raise InputError(f"H.264 segments need even frame dimensions, got {w}x{h}; use JPEG messages instead")
        self.shape = (h, w, 3)
        self._fps = Fraction(rate).limit_denominator(1001)
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, mode="w", format="mpegts")
        self._stream = self._out.add_stream("libx264", rate=self._fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        self._stream.options = {"preset": preset, "tune": "zerolatency", "crf": str(crf), "g": str(max(frames, 1)),
                                "threads": str(threads)}
        self.frames = 0
        self._closed = False

    def add(self, image: np.ndarray) -> None:
        """Encode the next ``(h, w, 3)`` uint8 RGB frame."""
        import av

        if image.shape != self.shape:
            raise InputError("all frames of a segment must have one size")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self._fps
        self._out.mux(self._stream.encode(frame))
        self.frames += 1

    def finish(self) -> bytes:
        """Flush the encoder; the clip."""
        if not self.frames:
            self.close()
            raise InputError("a segment needs at least one frame")
        self._out.mux(self._stream.encode(None))
        self.close()
        return self._buf.getvalue()

    def close(self) -> None:
        """Release the encoder (a clip not finished is dropped); again does nothing."""
        if not self._closed:
            self._closed = True
            self._out.close()


def encode_h264_segment(images: Sequence[np.ndarray], rate: float, crf: int = 23, preset: str = "veryfast",
                        threads: int = 0) -> bytes:
    """Encode ``(h, w, 3)`` uint8 RGB frames (one size, even dimensions) as an MPEG-TS clip
    (:class:`H264SegmentEncoder`'s options).

    Raises:
        InputError: no frames, mixed sizes, or odd dimensions (H.264 4:2:0 needs even ones).
    """
    if not images:
        raise InputError("a segment needs at least one frame")
    encoder = H264SegmentEncoder(images[0].shape[:2], rate=rate, frames=len(images), crf=crf, preset=preset,
                                 threads=threads)
    try:
        for image in images:
            encoder.add(image)
        return encoder.finish()
    except BaseException:
        encoder.close()
        raise
