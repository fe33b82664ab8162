"""Columnar frame and patch batches: construction checks, derive, take, concat."""

from __future__ import annotations

import numpy as np
import pytest

from streamvision.core.frames import Frame, FrameBatch
from streamvision.core.lineage import FileKey
from streamvision.core.patches import PatchBatch, merge_meta


def _frames(n: int, meta=None) -> FrameBatch:
    return FrameBatch.from_frames(
        [Frame(FileKey("v.avi", i), i / 10, 0.0, np.full((4, 6, 3), i, np.uint8)) for i in range(n)], meta)


def _patches(batch: FrameBatch) -> PatchBatch:
    return PatchBatch.whole_frames(keys=batch.keys, cameras=batch.cameras, frame_no=batch.frame_no, pts=batch.pts,
                                   wall_time=batch.wall_time, size=batch.size, operator="whole_frame",
                                   crops=list(batch.images), meta=batch.meta)


def test_frame_rejects_wrong_image_shape():
    with pytest.raises(ValueError, match=r"\(h, w, 3\) uint8"):
        Frame(FileKey("v", 0), 0.0, 0.0, np.zeros((4, 6), np.uint8))


def test_frame_batch_round_trips_frames():
    batch = _frames(3)
    frames = list(batch.frames())
    assert [f.frame_no for f in frames] == [0, 1, 2]
    assert frames[2].image[0, 0, 0] == 2


def test_derive_links_to_parents_and_keeps_meta():
    patches = _patches(_frames(2, {"offset_ranges": [["t", 0, 0, 1, 0]]}))
    vectors = patches.derive(np.eye(2, 3, dtype=np.float32), operator="hist")
    assert vectors.parent_ids.tolist() == patches.ids.tolist()
    assert set(vectors.ids.tolist()).isdisjoint(patches.ids.tolist())
    assert vectors.crops is None and vectors.dim == 3
    assert vectors.meta == {"offset_ranges": [["t", 0, 0, 1, 0]]}
    assert vectors.extra["parent_model"] == ["whole_frame", "whole_frame"]


def test_take_and_concat():
    patches = _patches(_frames(4, {"offset_ranges": [["t", 0, 0, 3, 0]]}))
    picked = patches.take(np.array([True, False, True, False]))
    assert picked.frame_no.tolist() == [0, 2] and len(picked.crops) == 2
    both = PatchBatch.concat([picked, _patches(_frames(1, {"offset_ranges": [["t", 0, 4, 4, 0]]}))])
    assert len(both) == 3
    assert both.meta["offset_ranges"] == [["t", 0, 0, 3, 0], ["t", 0, 4, 4, 0]]


def test_mismatched_columns_are_refused():
    patches = _patches(_frames(2))
    with pytest.raises(ValueError, match="vectors must be"):
        patches.derive(np.zeros((3, 4), np.float32), operator="x")


def test_merge_meta_concatenates_lists():
    assert merge_meta([{"a": [1], "b": 1}, {"a": [2], "b": 2}]) == {"a": [1, 2], "b": 2}
