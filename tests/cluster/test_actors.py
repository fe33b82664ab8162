"""Dynamic batching in operator actors: batches of different frame sizes (cameras of different
resolutions) are processed in same-size runs, outputs merged in order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from cluster.actors import mergeable_runs, process_batches
from operators.base import OperatorContext
from operators.patches.whole_frame import WholeFramePatches
from operators.sources.video_file import VideoFileSource
from streamvision.core.errors import InputError
from streamvision.core.frames import FrameBatch


@pytest.fixture(scope="module")
def two_cameras(vtest_path: Path) -> list[FrameBatch]:
    """Real vtest.avi batches alternating between full size and a half-size 'second camera'."""
    source = VideoFileSource(path=str(vtest_path), end=1.2)
    source.open()
    batches = list(source.read(3))
    source.close()
    half = [dataclasses.replace(b, images=np.stack([cv2.resize(im, None, fx=0.5, fy=0.5) for im in b.images]))
            for b in batches[1::2]]
    return [batches[0], half[0], batches[2], batches[3], half[1]]


def test_frames_of_different_sizes_are_processed_in_runs_and_merged_in_order(two_cameras):
    runs = mergeable_runs(two_cameras)
    assert [len(run) for run in runs] == [1, 1, 2, 1]
    patches = WholeFramePatches()
    patches.setup(OperatorContext(num_threads=1))
    merged = process_batches(patches, two_cameras)
    one_by_one = [patches.process(b) for b in two_cameras]
    assert merged.frame_keys == [k for out in one_by_one for k in out.frame_keys]
    assert [c.shape for c in merged.crops] == [c.shape for out in one_by_one for c in out.crops]
    assert {c.shape for c in merged.crops} == {(576, 768, 3), (288, 384, 3)}


def test_concat_of_different_sizes_is_a_clear_error(two_cameras):
    with pytest.raises(InputError, match="different sizes"):
        FrameBatch.concat(two_cameras[:2])
    assert len(FrameBatch.concat(two_cameras[2:4])) == len(two_cameras[2]) + len(two_cameras[3])
