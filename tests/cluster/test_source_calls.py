"""How the driver shares a source's call slots among its replicas (Ray-free)."""

from __future__ import annotations

from collections import Counter

from cluster.runtime import call_order


def test_a_replica_that_answered_goes_before_one_whose_call_is_out():
    # replica 0 long-polls idle partitions; replica 1 just returned a batch and has frames left
    assert call_order(Counter({0: 1}), 2, turn=0) == [1, 0]
    assert call_order(Counter({0: 2, 1: 1}), 3, turn=0) == [2, 1, 0]


def test_ties_take_turns():
    assert [call_order(Counter(), 3, turn=t)[0] for t in range(3)] == [0, 1, 2]
    assert call_order(Counter({1: 1}), 3, turn=1) == [2, 0, 1]
