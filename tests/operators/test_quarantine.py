"""Isolating the messages an operator or a sink fails on (Ray-free), on real vtest.avi frames."""

from __future__ import annotations

import numpy as np
import pytest

from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.producers.frame_reader import FrameReader
from operators.quarantine import Isolator, message_rows, split_ranges
from operators.sinks.offsets import OffsetTracker
from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey, KafkaKey


@pytest.fixture(scope="module")
def frames(vtest_path):
    """Six real frames as a Kafka batch: messages 10..14 of partition 0, message 12 holding two."""
    images = np.stack([im for _, (im, _) in zip(range(6), FrameReader(str(vtest_path)))])
    keys = [KafkaKey("t", 0, o, i).encode() for o, i in [(10, 0), (11, 0), (12, 0), (12, 1), (13, 0), (14, 0)]]
    return FrameBatch(keys=keys, cameras=["cam"] * 6, frame_no=np.arange(6), pts=np.arange(6) / 10,
                      wall_time=np.zeros(6), images=images,
                      meta={"offset_ranges": [["t", 0, 8, 14, 0]], "dead_letters": [["t", 0, 9, "empty"]]})


def _fails_on(frame_numbers: set[int], error: type[Exception] = ValueError):
    patches = WholeFramePatches()

    def process(batch: FrameBatch):
        bad = set(batch.frame_no.tolist()) & frame_numbers
        if bad:
            raise error(f"cannot handle frame {sorted(bad)}")
        return patches.process(batch)

    return process


def test_split_ranges_cuts_around_taken_offsets_and_moves_parts_whole():
    kept, taken = split_ranges([["t", 0, 3, 9, 3], ["t", 1, 4, 4, 0, 1, 3], ["t", 1, 5, 5, 0]],
                               {("t", 0, 3), ("t", 0, 6), ("t", 1, 4)})
    assert kept == [["t", 0, 4, 5, 3], ["t", 0, 7, 9, 3], ["t", 1, 5, 5, 0]]
    assert taken == {("t", 0, 3): [["t", 0, 3, 3, 3]], ("t", 0, 6): [["t", 0, 6, 6, 3]],
                     ("t", 1, 4): [["t", 1, 4, 4, 0, 1, 3]]}
    # together they complete exactly what the original ranges did
    whole, parts = OffsetTracker({}), OffsetTracker({})
    whole.complete([["t", 0, 3, 9, 3]])
    parts.complete(kept[:2])
    parts.complete(taken[("t", 0, 3)] + taken[("t", 0, 6)])
    assert whole.watermarks == parts.watermarks == {("t", 0): 10}


def test_message_rows_groups_frames_by_message_and_refuses_file_frames(frames):
    assert message_rows(frames) == {("t", 0, 10): [0], ("t", 0, 11): [1], ("t", 0, 12): [2, 3],
                                    ("t", 0, 13): [4], ("t", 0, 14): [5]}
    files = FrameBatch(keys=[FileKey("v.avi", 0).encode()], cameras=["v"], frame_no=np.zeros(1, np.int64),
                       pts=np.zeros(1), wall_time=np.zeros(1), images=frames.images[:1])
    assert message_rows(files) is None


def test_a_failing_message_is_set_aside_and_the_rest_of_the_batch_goes_on(frames):
    process = _fails_on({3})  # the second frame of message 12
    with pytest.raises(ValueError) as failure:
        process(frames)
    isolator = Isolator("picky")
    outputs = isolator.retry(frames, process, failure.value)
    out = outputs[0].concat(outputs) if len(outputs) > 1 else outputs[0]
    assert out.frame_no.tolist() == [0, 1, 4, 5]  # message 12 (frames 2 and 3) set aside whole
    assert out.meta["offset_ranges"] == [["t", 0, 8, 11, 0], ["t", 0, 13, 14, 0]]
    assert out.meta["dead_letters"] == [["t", 0, 9, "empty"]]  # other meta goes along
    [rejected] = out.meta["rejected"]
    assert rejected[:3] == ["t", 0, 12] and rejected[4] == [["t", 0, 12, 12, 0]]
    assert rejected[3].startswith("picky: ValueError: cannot handle frame [3]")
    assert isolator.rejected == 1
    # a later stage (a sink failing on frame 5, message 14) keeps what an earlier one set aside
    vectors = ColorHistogram(bins=4, grid=1).process(out)

    def write(batch):
        if 5 in batch.frame_no.tolist():
            raise ValueError("row 5 does not encode")
        return len(batch), batch.meta

    acks = Isolator("sink").retry(vectors, write, ValueError("row 5 does not encode"))
    assert [n for n, _ in acks] == [1, 1, 1, 0]  # messages 10, 11, 13, then the meta alone
    assert [r[2] for r in acks[-1][1]["rejected"]] == [12, 14]
    assert acks[-1][1]["offset_ranges"] == [["t", 0, 8, 11, 0], ["t", 0, 13, 13, 0]]


def test_errors_that_are_not_about_a_message_are_raised(frames, vtest_path):
    with pytest.raises(ConfigError):
        Isolator("x").retry(frames, _fails_on({0}, ConfigError), ConfigError("bad option"))
    files = FrameBatch(keys=[FileKey("v.avi", i).encode() for i in range(2)], cameras=["v"] * 2,
                       frame_no=np.arange(2), pts=np.zeros(2), wall_time=np.zeros(2), images=frames.images[:2])
    with pytest.raises(ValueError, match="no dead-letter topic here"):
        Isolator("x").retry(files, _fails_on({0}), ValueError("no dead-letter topic here"))
    # an operator failing on every message is broken, not fed bad input
    isolator = Isolator("broken", give_up_after=3)
    with pytest.raises(ValueError, match="cannot handle"):
        isolator.retry(frames, _fails_on(set(range(6))), ValueError("first"))
