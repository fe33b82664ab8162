"""Frames and columnar frame batches.

A :class:`Frame` is one decoded picture with its lineage key. Between actors frames
travel as a :class:`FrameBatch`: one stacked ``(n, h, w, 3)`` uint8 array plus numpy
columns, so that Ray's object store hands the pixels to the next actor without copies.

>>> import numpy as np
>>> from streamvision.core.errors import InputError
from streamvision.core.lineage import FileKey
>>> batch = FrameBatch.from_frames([
...     Frame(FileKey("a.mp4", i), pts=i / 10, wall_time=0.0,
...           image=np.zeros((4, 6, 3), np.uint8)) for i in range(3)])
>>> len(batch), batch.images.shape
(3, (3, 4, 6, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from streamvision.core.errors import InputError
from streamvision.core.lineage import FileKey, FrameKey, FrameKeyCodec, KafkaKey


def source_of(key: FrameKey) -> str:
    """The source id a frame key belongs to: the file path, or ``topic/partition``."""
    if isinstance(key, FileKey):
        return key.file
    return f"{key.topic}/{key.partition}"


@dataclass(frozen=True)
class Frame:
    """One decoded picture.

    Attributes:
        key: lineage key (file and frame number, or Kafka coordinates).
        pts: presentation time in seconds from the start of the source.
        wall_time: capture time, seconds since the epoch (0.0 when unknown).
        image: ``(h, w, 3)`` uint8 RGB pixels.
        camera: camera id; defaults to the source id.
        frame_no: frame number within the source (for Kafka input, ``sv-frame0`` plus the
            index in the message).
    """

    key: FrameKey
    pts: float
    wall_time: float
    image: np.ndarray
    camera: str = ""
    frame_no: int = -1

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"a frame image must be (h, w, 3) uint8 RGB, got {self.image.shape} {self.image.dtype}"
            )
        if not self.camera:
            object.__setattr__(self, "camera", source_of(self.key))
        if self.frame_no < 0:
            number = self.key.frame_no if isinstance(self.key, FileKey) else self.key.index_in_message
            object.__setattr__(self, "frame_no", number)


@dataclass
class FrameBatch:
    """Columnar batch of frames of one size.

    Attributes:
        keys: encoded lineage keys (``FrameKey.encode()``), one per frame.
        cameras: camera id per frame.
        frame_no: ``(n,)`` int64 frame numbers.
        pts: ``(n,)`` float64 presentation times in seconds.
        wall_time: ``(n,)`` float64 capture times.
        images: ``(n, h, w, 3)`` uint8 RGB.
        meta: per-batch facts, list-valued by convention (e.g. ``offset_ranges``), carried
            through every operator to the sink.
    """

    keys: list[bytes]
    cameras: list[str]
    frame_no: np.ndarray
    pts: np.ndarray
    wall_time: np.ndarray
    images: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.keys)
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (n, h, w, 3) uint8, got {self.images.shape} {self.images.dtype}")
        for name in ("cameras", "frame_no", "pts", "wall_time", "images"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name!r} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @classmethod
    def from_frames(cls, frames: Sequence[Frame], meta: dict[str, object] | None = None) -> "FrameBatch":
        """Stack frames of one size into a batch."""
        if not frames:
            raise ValueError("a frame batch needs at least one frame")
        return cls(
            keys=[f.key.encode() for f in frames],
            cameras=[f.camera for f in frames],
            frame_no=np.fromiter((f.frame_no for f in frames), np.int64, len(frames)),
            pts=np.fromiter((f.pts for f in frames), np.float64, len(frames)),
            wall_time=np.fromiter((f.wall_time for f in frames), np.float64, len(frames)),
            images=np.stack([f.image for f in frames]),
            meta=dict(meta or {}),
        )

    @classmethod
    def concat(cls, batches: Sequence["FrameBatch"]) -> "FrameBatch":
        """Frames of several same-size batches in order; list-valued ``meta`` is concatenated.

        Raises:
            InputError: the batches hold frames of different sizes (see
                ``cluster.actors.mergeable_runs`` for grouping them first).
        """
        from streamvision.core.patches import merge_meta

        if len(batches) == 1:
            return batches[0]
        sizes = sorted({b.images.shape[1:] for b in batches if len(b)})
        if len(sizes) > 1:
            raise InputError(f"frames of different sizes cannot share one batch: {sizes}")
        return cls(
            keys=[k for b in batches for k in b.keys],
            cameras=[c for b in batches for c in b.cameras],
            frame_no=np.concatenate([b.frame_no for b in batches]),
            pts=np.concatenate([b.pts for b in batches]),
            wall_time=np.concatenate([b.wall_time for b in batches]),
            # empty batches (a Kafka source's dead letters only) carry offsets, not pixels
            images=np.concatenate([b.images for b in batches if len(b)] or [batches[0].images]),
            meta=merge_meta([b.meta for b in batches]),
        )

    def take(self, index: np.ndarray | Sequence[int]) -> "FrameBatch":
        """The frames at ``index`` (an integer array or boolean mask), with the same ``meta``."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, np.int64)
        pick = idx.tolist()
        return FrameBatch(
            keys=[self.keys[i] for i in pick],
            cameras=[self.cameras[i] for i in pick],
            frame_no=self.frame_no[idx],
            pts=self.pts[idx],
            wall_time=self.wall_time[idx],
            images=self.images[idx],
            meta=dict(self.meta),
        )

    def frames(self) -> Iterator[Frame]:
        """The batch as :class:`Frame` objects (for tests and plain loops, not hot paths)."""
        for i, raw in enumerate(self.keys):
            yield Frame(
                key=FrameKeyCodec.decode(raw),
                pts=float(self.pts[i]),
                wall_time=float(self.wall_time[i]),
                image=self.images[i],
                camera=self.cameras[i],
                frame_no=int(self.frame_no[i]),
            )


__all__ = ["Frame", "FrameBatch", "FileKey", "KafkaKey", "source_of"]
