"""OffsetTracker: the per-partition contiguous done watermark of the effectively-once protocol."""

from __future__ import annotations

import random

import pytest

from operators.sinks.offsets import OffsetTracker


def test_out_of_order_batches_advance_only_when_contiguous():
    tracker = OffsetTracker({})
    assert tracker.complete([["t", 0, 10, 19, 0]]) == {}
    assert tracker.complete([["t", 1, 0, 4, 0]]) == {("t", 1): 5}
    assert tracker.complete([["t", 0, 0, 9, 0]]) == {("t", 0): 20}
    assert tracker.watermarks == {("t", 0): 20, ("t", 1): 5}


def test_stored_watermark_wins_over_base_and_replays_change_nothing():
    tracker = OffsetTracker({("t", 0): 50})
    assert tracker.complete([["t", 0, 0, 30, 0]]) == {}  # a replay of durable messages
    assert tracker.complete([["t", 0, 50, 50, 0]]) == {("t", 0): 51}


def test_base_starts_the_run_for_a_new_partition():
    tracker = OffsetTracker({})
    assert tracker.complete([["t", 0, 100, 104, 100]]) == {("t", 0): 105}


def test_a_split_message_is_done_only_when_every_part_is():
    tracker = OffsetTracker({})
    assert tracker.complete([["t", 0, 0, 0, 0, 2, 3]]) == {}
    assert tracker.complete([["t", 0, 0, 0, 0, 0, 3]]) == {}
    assert tracker.complete([["t", 0, 0, 0, 0, 2, 3]]) == {}  # a retried part counts once
    assert tracker.complete([["t", 0, 0, 0, 0, 1, 3]]) == {("t", 0): 1}


def test_random_order_with_duplicates_reaches_the_end():
    rng = random.Random(7)
    ranges = [["t", 0, i, i, 0] for i in range(0, 200, 2)]
    ranges += [["t", 0, i, i, 0, part, 2] for i in range(1, 200, 2) for part in range(2)]
    ranges += rng.sample(ranges, 40)
    rng.shuffle(ranges)
    tracker = OffsetTracker({})
    for entry in ranges:
        tracker.complete([entry])
    assert tracker.watermarks == {("t", 0): 200}


@pytest.mark.parametrize("entry", [["t", 0, 5, 4, 0], ["t", 0, 1, 2], ["t", 0, 1, 1, 0, 3, 3]])
def test_malformed_entries_are_refused(entry):
    with pytest.raises(ValueError):
        OffsetTracker({}).complete([entry])
