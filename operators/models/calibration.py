"""Real calibration inputs for int8 quantization: evenly spaced frames of the sample vtest.avi.

>>> vtest_frames(2).shape
(2, 576, 768, 3)
"""

from __future__ import annotations

import av
import numpy as np

from operators.assets import vtest_video

#: Calibration frames are ``OFFSET, OFFSET + STEP, ...`` of vtest.avi (795 frames): past the first
#: 240, which are hand-labelled (tests/data/vtest_gt) and so kept for measuring accuracy.
OFFSET = 250
STEP = 19


def calibration_tag(count: int) -> str:
    """Names a calibration set in cached file names, so another set quantizes anew."""
    return f"vtest{OFFSET}+{STEP}x{count}"


def vtest_frames(count: int, *, step: int = STEP, offset: int = OFFSET) -> np.ndarray:
    """``count`` RGB frames ``(count, 576, 768, 3)`` uint8 of vtest.avi: numbers ``offset, offset + step, ...``."""
    wanted = {offset + i * step for i in range(count)}
    frames = []
    with av.open(str(vtest_video())) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)
