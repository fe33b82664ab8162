"""Frames to produce: from a video file, a live URL PyAV opens (RTSP/HTTP), or an image folder.

>>> from operators.assets import vtest_video
>>> reader = FrameReader(str(vtest_video()))          # doctest: +SKIP
>>> reader.rate, reader.total                        # doctest: +SKIP
(10.0, 795)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from streamvision.core.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class FrameReader:
    """Iterate ``(image, pts)`` pairs, RGB uint8, from one input.

    Args:
        source: a video file, a URL (``rtsp://``, ``http://``...), or a directory of images.
        folder_rate: frames per second assigned to an image folder's pictures (for pts).
    """

    def __init__(self, source: str, folder_rate: float = 10.0) -> None:
        self.source = str(source)
        self._folder = Path(self.source).is_dir()
        self._files: list[Path] = []
        self.rate = folder_rate
        self.total: int | None = None
        if self._folder:
            self._files = sorted(p for p in Path(self.source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise InputError(f"{self.source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self.total = len(self._files)
        else:
            self._probe()

    def _is_url(self) -> bool:
        return "://" in self.source

    def _probe(self) -> None:
        import av

        if not self._is_url():
            path = Path(self.source)
            if not path.is_file():
                raise InputError(f"no such video file or image folder: {self.source}")
            if path.stat().st_size == 0:
                raise InputError(f"video file is empty: {self.source}")
        try:
            with av.open(self.source, timeout=10.0) as container:
                if not container.streams.video:
                    raise InputError(f"{self.source} has no video stream")
                stream = container.streams.video[0]
                self.rate = float(stream.average_rate or stream.guessed_rate or 25)
                self.total = int(stream.frames) or None
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"{self.source} is not a readable video: {exc}") from exc

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        return self._images() if self._folder else self._video()

    def _images(self) -> Iterator[tuple[np.ndarray, float]]:
        import cv2

        for i, path in enumerate(self._files):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{path} is not a readable image")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i / self.rate

    def _video(self) -> Iterator[tuple[np.ndarray, float]]:
        import av

        seen = 0
        try:
            with av.open(self.source, timeout=10.0) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    t = float(frame.time) if frame.time is not None else seen / self.rate
                    seen += 1
                    yield frame.to_ndarray(format="rgb24"), t
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.source}: decoding failed after {seen} frames: {exc}") from exc
