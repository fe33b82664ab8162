"""Whole-frame patches: one patch per frame, covering all of it (DeepLens' simplest generator)."""

from __future__ import annotations

from operators.base import Operator
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import FrameType, PatchType, StreamType


class WholeFramePatches(Operator[FrameBatch, PatchBatch]):
    """Turn each frame into one pixel patch whose crop is the whole frame.

    >>> import numpy as np
    >>> from streamvision.core.frames import Frame
    >>> from streamvision.core.lineage import FileKey
    >>> frames = FrameBatch.from_frames([Frame(FileKey("v", 0), 0.0, 0.0, np.zeros((2, 3, 3), np.uint8))])
    >>> WholeFramePatches().process(frames).bboxes.tolist()
    [[0.0, 0.0, 3.0, 2.0]]
    """

    name = "whole_frame"

    def input_type(self) -> StreamType:
        """Any frames."""
        return FrameType()

    def output_type(self, upstream: StreamType) -> StreamType:
        """Pixel patches with no labels."""
        return PatchType(kind="pixels", label_domain=frozenset())

    def process(self, batch: FrameBatch) -> PatchBatch:
        """One patch per frame; the crops are views of the frame images."""
        return PatchBatch.whole_frames(
            keys=batch.keys,
            cameras=batch.cameras,
            frame_no=batch.frame_no,
            pts=batch.pts,
            wall_time=batch.wall_time,
            size=batch.size,
            operator=self.name,
            crops=list(batch.images),
            meta=batch.meta,
        )

    def spec(self) -> dict[str, object]:
        """How to rebuild this operator from a pipeline file."""
        return {"op": self.name, "options": {}}
