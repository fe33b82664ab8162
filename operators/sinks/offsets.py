"""Done-offset tracking for the effectively-once protocol (ARCHITECTURE section 5).

Batches reach the sink out of order (replicas, retries). A message's offset is *done*
once every patch derived from it is durably written; per partition the sink persists the
highest *contiguous* done offset, in the same ``WriteBatch`` as the results.

Sources describe what a batch completes in ``batch.meta["offset_ranges"]``: a list of
``[topic, partition, first, last, base]`` with ``first..last`` inclusive and ``base`` the
offset the source resumed that partition from (the contiguous run starts there when the
store has no watermark yet).

>>> tracker = OffsetTracker({})
>>> tracker.complete([["t", 0, 5, 9, 0]])   # 0..4 not done yet: no progress
{}
>>> tracker.complete([["t", 0, 0, 4, 0]])
{('t', 0): 10}
"""

from __future__ import annotations

from typing import Sequence

PartitionKey = tuple[str, int]


class OffsetTracker:
    """Per-partition contiguous watermark over completed offset ranges.

    Args:
        stored: ``(topic, partition) -> next offset`` already durable (from the store).
    """

    def __init__(self, stored: dict[PartitionKey, int]) -> None:
        self._next: dict[PartitionKey, int] = dict(stored)
        self._pending: dict[PartitionKey, list[tuple[int, int]]] = {}

    @property
    def watermarks(self) -> dict[PartitionKey, int]:
        """Current ``(topic, partition) -> next offset`` for every partition seen."""
        return dict(self._next)

    def complete(self, ranges: Sequence[Sequence[object]]) -> dict[PartitionKey, int]:
        """Mark ranges done; return the partitions whose watermark advanced, with the new value."""
        touched: set[PartitionKey] = set()
        for topic, partition, first, last, base in ranges:
            key = (str(topic), int(partition))  # type: ignore[call-overload]
            self._next.setdefault(key, int(base))  # type: ignore[call-overload]
            self._pending.setdefault(key, []).append((int(first), int(last)))  # type: ignore[call-overload]
            touched.add(key)
        advanced: dict[PartitionKey, int] = {}
        for key in touched:
            start = self._next[key]
            spans = sorted(self._pending[key])
            remaining = []
            for first, last in spans:
                if first <= self._next[key]:
                    self._next[key] = max(self._next[key], last + 1)
                else:
                    remaining.append((first, last))
            self._pending[key] = [(f, l) for f, l in remaining if l >= self._next[key]]
            if self._next[key] != start:
                advanced[key] = self._next[key]
        return advanced
