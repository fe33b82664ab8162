"""Overlapping camera views cut from one real video, for cross-camera identity.

Two crops of one fixed camera that share a strip see the same people at the same times from
"two cameras": a labelled video gives the truth of which tracks are one person (the
labels, shifted by each crop's offset). :func:`crop_views` writes each view as an H.264 file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamvision.core.errors import InputError


def crop_views(video: str | Path, out_dir: str | Path, views: dict[str, tuple[int, int]], frames: int,
               crf: int = 18) -> dict[str, Path]:
    """Write the first ``frames`` frames of ``video`` cropped to columns ``[x0, x1)`` per view.

    Returns:
        ``camera -> path`` of each view (``out_dir/CAMERA.mp4``).

    Raises:
        InputError: a crop outside the frame or of odd width.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as src:
        stream = src.streams.video[0]
        rate = Fraction(stream.average_rate or 10).limit_denominator(1001)
        width, height = stream.codec_context.width, stream.codec_context.height
        for camera, (x0, x1) in views.items():
            if not 0 <= x0 < x1 <= width or (x1 - x0) % 2:
                raise InputError(f"view {camera!r}: columns [{x0}, {x1}) must lie in the {width}-px frame, even width")
        outputs = {camera: av.open(str(out_dir / f"{camera}.mp4"), mode="w") for camera in views}
        streams = {}
        for camera, out in outputs.items():
            x0, x1 = views[camera]
            s = out.add_stream("libx264", rate=rate)
            s.width, s.height, s.pix_fmt = x1 - x0, height - height % 2, "yuv420p"
            s.options = {"crf": str(crf), "preset": "veryfast"}
            streams[camera] = s
        try:
            for i, frame in enumerate(src.decode(video=0)):
                if i >= frames:
                    break
                image = frame.to_ndarray(format="rgb24")
                for camera, (x0, x1) in views.items():
                    crop = np.ascontiguousarray(image[: streams[camera].height, x0:x1])
                    outputs[camera].mux(streams[camera].encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
            for camera, out in outputs.items():
                out.mux(streams[camera].encode(None))
        finally:
            for out in outputs.values():
                out.close()
    return {camera: out_dir / f"{camera}.mp4" for camera in views}
