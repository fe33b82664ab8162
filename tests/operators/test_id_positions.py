"""IdPositions against a dict: random adds (new, moved and repeated ids), merges, rebuilds."""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.index import id_positions
from operators.index.id_positions import IdPositions

MAX_ID = 2**63 - 1
#: Small ids collide often (moves, repeats within a batch); large ones test the 63-bit range.
patch_ids = st.one_of(st.integers(0, 40), st.integers(MAX_ID - 40, MAX_ID), st.integers(0, MAX_ID))
batches = st.lists(st.tuples(patch_ids, st.integers(0, 10**9)), max_size=12)
steps = st.lists(st.one_of(st.tuples(st.just("add"), batches),
                           st.tuples(st.just("rebuild"), st.lists(patch_ids, unique=True, max_size=30))),
                 max_size=25)


def check_same(where: IdPositions, reference: dict[int, int], probes: list[int]) -> None:
    keys = list(reference) + probes
    expect = [reference.get(k, -1) for k in keys]
    assert where.lookup(np.array(keys, np.int64)).tolist() == expect
    assert len(where) == len(reference)


@settings(max_examples=50, deadline=None)
@given(steps=steps, probes=st.lists(patch_ids, max_size=10), merge_min=st.integers(1, 6))
def test_lookup_equals_a_dict_through_adds_merges_and_rebuilds(steps, probes, merge_min):
    with mock.patch.object(id_positions, "MERGE_MIN", merge_min):  # merge after a few adds
        where, reference = IdPositions(), {}
        for kind, arg in steps:
            if kind == "add":
                ids, positions = zip(*arg) if arg else ((), ())
                where.add(np.array(ids, np.int64), np.array(positions, np.int64))
                reference.update(zip(ids, positions))  # the last position given wins
            else:
                where.rebuild(np.array(arg, np.int64))
                reference = {k: i for i, k in enumerate(arg)}
            check_same(where, reference, probes)


@settings(max_examples=50, deadline=None)
@given(id_map=st.lists(patch_ids, unique=True, max_size=60))
def test_built_from_an_id_map_position_i_holds_id_map_i(id_map):
    where = IdPositions(np.array(id_map, np.int64))
    check_same(where, {k: i for i, k in enumerate(id_map)}, [MAX_ID - 41])


def test_merges_keep_the_sorted_arrays_sorted_and_the_recent_dict_small():
    rng = np.random.default_rng(4)
    where, reference = IdPositions(), {}
    for start in range(0, 20_000, 16):
        ids = rng.integers(0, MAX_ID, 16)
        where.add(ids, np.arange(start, start + 16))
        reference.update(zip(ids.tolist(), range(start, start + 16)))
        limit = max(id_positions.MERGE_MIN, len(where._ids) // id_positions.MERGE_FRACTION)
        assert len(where._recent) <= limit
    assert (np.diff(where._ids) > 0).all() and len(where._ids) >= 20_000 - id_positions.MERGE_MIN
    check_same(where, reference, [1, 2, 3])


def test_empty_lookups_and_adds():
    where = IdPositions()
    assert where.lookup(np.array([5])).tolist() == [-1] and len(where) == 0
    assert where.lookup(np.zeros(0, np.int64)).tolist() == []
    where.add(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(where) == 0
