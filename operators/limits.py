"""What one untrusted input may cost: the decoding limits, in one place.

Kafka messages, query images and user files are hostile until proven otherwise. Every
decoder checks these limits *while* it decodes (from the container's or the image's own
header before it allocates, and frame by frame for video), so a message that would exceed
them fails with :class:`~operators.kafka.wire.OversizeMessage` at the limit, not after.

The defaults fit a source actor of 2 GiB: one message decodes to at most
``message_pixels`` RGB pixels (450 MB), and a source holds at most one batch of
``batch_pixels`` (450 MB) beside the message it is decoding.

OpenCV's own header check (``OPENCV_IO_MAX_IMAGE_PIXELS``, read by OpenCV when it first
decodes) is set from :data:`DEFAULT_LIMITS` unless the environment sets it.

>>> DEFAULT_LIMITS.frames
300
>>> DecodeLimits(frames=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
streamvision.core.errors.ConfigError: decode limit frames must be a positive integer, got 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from streamvision.core.errors import ConfigError


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one message (or one batch) may decode to.

    Attributes:
        message_bytes: largest encoded payload.
        picture_pixels: largest single picture (height x width).
        frames: most frames in one message (a video segment; raw messages too).
        message_pixels: most decoded pixels in one message, all frames together.
        batch_pixels: most decoded pixels a source holds in one batch.
    """

    message_bytes: int = 15 * 1024 * 1024
    picture_pixels: int = 8192 * 8192
    frames: int = 300
    message_pixels: int = 150_000_000
    batch_pixels: int = 150_000_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"decode limit {f.name} must be a positive integer, got {value!r}")
        if self.picture_pixels > self.message_pixels:
            raise ConfigError("decode limit picture_pixels must not exceed message_pixels")
        if self.message_pixels > self.batch_pixels:
            raise ConfigError("decode limit message_pixels must not exceed batch_pixels")


DEFAULT_LIMITS = DecodeLimits()

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_LIMITS.picture_pixels))
