"""Video files (and anything PyAV opens) as a stream of frame batches.

>>> from operators.assets import vtest_video
>>> source = VideoFileSource(path=str(vtest_video()), every=100)  # doctest: +SKIP
>>> source.open(); [len(b) for b in source.read(max_batch=4)]     # doctest: +SKIP
[4, 4]

Sampling is opt-in: ``every`` (every N-th frame), ``fps`` (a target rate), ``keyframes_only``
and a time range ``start`` / ``end`` in seconds. ``open()`` checks the input before a single
frame flows: a missing file, a file that is not a video, an empty file, or a truncated
one (fewer packets than its header declares) raise :class:`InputError`, so a bad input
never leaves half its frames in a store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import av
import numpy as np

from operators.base import Source
from streamvision.core.errors import InputError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey
from streamvision.core.types import FrameType


class VideoFileSource(Source):
    """Decode a video file with PyAV into RGB frame batches.

    Args:
        path: a local video file, or a URL PyAV opens (RTSP/HTTP) when ``verify=False``.
        every: keep every N-th frame (1 = all).
        fps: keep frames at about this rate (``None`` = the file's rate).
        keyframes_only: decode only keyframes (fast scrubbing).
        start: first second to read.
        end: stop before this second (``None`` = to the end).
        camera: camera id for the frames (defaults to the file path).
        verify: demux the whole file in ``open()`` to refuse truncated input up front.
    """

    name = "video_file"

    def __init__(
        self,
        *,
        path: str,
        every: int = 1,
        fps: float | None = None,
        keyframes_only: bool = False,
        start: float = 0.0,
        end: float | None = None,
        camera: str | None = None,
        verify: bool = True,
    ) -> None:
        if every < 1:
            raise InputError(f"every must be >= 1, got {every}")
        if fps is not None and fps <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        if start < 0 or (end is not None and end <= start):
            raise InputError(f"bad time range: start={start}, end={end}")
        self.path = str(path)
        self.every = every
        self.fps = fps
        self.keyframes_only = keyframes_only
        self.start = start
        self.end = end
        self.camera = camera or self.path
        self.verify = verify
        self._size: tuple[int, int] | None = None
        self._container: av.container.InputContainer | None = None

    def output_type(self) -> FrameType:
        """Frames of the file's size once opened (any size before)."""
        h, w = self._size or (None, None)
        return FrameType(height=h, width=w)

    def _local(self) -> bool:
        return "://" not in self.path

    def open(self) -> None:
        """Open and check the input; raise :class:`InputError` if it is not a readable video."""
        if self._local():
            path = Path(self.path)
            if not path.is_file():
                raise InputError(f"video file not found: {self.path}")
            if path.stat().st_size == 0:
                raise InputError(f"video file is empty: {self.path}")
        try:
            container = av.open(self.path)
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"{self.path} is not a readable video: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.path} has no video stream")
        stream = container.streams.video[0]
        self._size = (stream.codec_context.height, stream.codec_context.width)
        if self._size[0] <= 0 or self._size[1] <= 0:
            container.close()
            raise InputError(f"{self.path}: video stream has no frame size")
        if self.verify and self._local():
            self._check_complete(container)
            container.close()
            container = av.open(self.path)
        self._container = container

    def _check_complete(self, container: av.container.InputContainer) -> None:
        stream = container.streams.video[0]
        declared = stream.frames
        try:
            packets = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.path} is corrupt: {exc}") from exc
        if packets == 0:
            raise InputError(f"{self.path} contains no video frames")
        if declared and packets < declared:
            raise InputError(
                f"{self.path} is truncated: its header declares {declared} frames, only {packets} are present"
            )

    def read(self, max_batch: int) -> Iterator[FrameBatch]:
        """Yield batches of at most ``max_batch`` RGB frames, in presentation order."""
        if self._container is None:
            self.open()
        container = self._container
        assert container is not None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if self.keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        time_base = float(stream.time_base)
        if self.start > 0:
            container.seek(int(self.start / time_base), stream=stream, backward=True)
        h, w = self._size  # type: ignore[misc]
        images = np.empty((max_batch, h, w, 3), np.uint8)
        keys: list[bytes] = []
        frame_no: list[int] = []
        pts: list[float] = []
        next_t = self.start
        seen = 0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * time_base) if frame.pts is not None else seen / rate
                if t < self.start - 1e-9:
                    continue
                if self.end is not None and t >= self.end:
                    break
                number = int(round(t * rate))
                seen += 1
                if number % self.every:
                    continue
                if self.fps is not None:
                    if t + 1e-6 < next_t:
                        continue
                    next_t = max(next_t + 1.0 / self.fps, t)
                i = len(keys)
                images[i] = frame.to_ndarray(format="rgb24")
                keys.append(FileKey(self.path, number).encode())
                frame_no.append(number)
                pts.append(t)
                if len(keys) == max_batch:
                    yield self._batch(images, keys, frame_no, pts)
                    images = np.empty_like(images)
                    keys, frame_no, pts = [], [], []
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.path}: decoding failed after {seen} frames: {exc}") from exc
        if keys:
            yield self._batch(images[: len(keys)], keys, frame_no, pts)

    def frame(self, number: int) -> np.ndarray:
        """Frame ``number`` (numbered as :meth:`read` numbers them) as ``(h, w, 3)`` RGB: a seek to
        the keyframe before it (the container's index), then decoding forward to it, so the
        pixels are those a sequential read decodes (DeepLens' encoded format).

        Raises:
            InputError: the file has no such frame, or decoding fails.
        """
        if self._container is None:
            self.open()
        container = self._container
        assert container is not None
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        time_base = float(stream.time_base)
        container.seek(max(0, int((number - 0.5) / rate / time_base)), stream=stream, backward=True)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise InputError(f"{self.path}: frames without timestamps cannot be found by number")
                found = int(round(float(frame.pts * time_base) * rate))
                if found == number:
                    return frame.to_ndarray(format="rgb24")
                if found > number:
                    break
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.path}: decoding frame {number} failed: {exc}") from exc
        raise InputError(f"{self.path} has no frame {number}")

    def _batch(self, images: np.ndarray, keys: list[bytes], frame_no: list[int], pts: list[float]) -> FrameBatch:
        n = len(keys)
        return FrameBatch(
            keys=keys,
            cameras=[self.camera] * n,
            frame_no=np.asarray(frame_no, np.int64),
            pts=np.asarray(pts, np.float64),
            wall_time=np.zeros(n, np.float64),
            images=images,
        )

    def close(self) -> None:
        """Close the container."""
        if self._container is not None:
            self._container.close()
            self._container = None
