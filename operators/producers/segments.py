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


def encode_h264_segment(images: Sequence[np.ndarray], rate: float, crf: int = 23, preset: str = "veryfast",
                        threads: int = 0) -> bytes:
    """Encode ``(h, w, 3)`` uint8 RGB frames (one size, even dimensions) as an MPEG-TS clip.

    ``preset`` and ``crf`` are libx264's; ``threads`` its encoder threads (0: libx264's choice,
    one per core and more).

    Raises:
        InputError: no frames, mixed sizes, or odd dimensions (H.264 4:2:0 needs even ones).
    """
    import av

    if not images:
        raise InputError("a segment needs at least one frame")
    h, w = images[0].shape[:2]
    if h % 2 or w % 2:
        raise InputError(f"H.264 segments need even frame dimensions, got {w}x{h}; use JPEG messages instead")
    if any(im.shape != images[0].shape for im in images):
        raise InputError("all frames of a segment must have one size")
    fps = Fraction(rate).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": preset, "tune": "zerolatency", "crf": str(crf), "g": str(len(images)),
                          "threads": str(threads)}
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()
