"""Done-offset tracking for the effectively-once protocol (ARCHITECTURE section 5).

Batches reach the sink out of order (replicas, retries). A message's offset is *done*
once every patch derived from it is durably written; per partition the sink persists the
highest *contiguous* done offset, in the same ``WriteBatch`` as the results.

Sources describe what a batch completes in ``batch.meta["offset_ranges"]``: a list of
``[topic, partition, first, last, base]`` with ``first..last`` inclusive and ``base`` the
offset the source resumed that partition from (the contiguous run starts there when the
store has no watermark yet). A message whose frames are split over several batches is
named in each of them as ``[topic, partition, first, last, base, part, parts]``; it is done
once all ``parts`` parts have been completed.

What is done past a partition's watermark (ranges completed out of order, parts of split
messages) is state too: :meth:`OffsetTracker.state_changes` gives it per partition, for the
sink to write in the same ``WriteBatch`` as the watermark, and a restarted sink passes the
stored state back, so nothing completed before a restart is forgotten (a forgotten range
would stall the watermark for good: its batches are never sent again).

>>> tracker = OffsetTracker({})
>>> tracker.complete([["t", 0, 5, 9, 0]])   # 0..4 not done yet: no progress
{}
>>> tracker.complete([["t", 0, 0, 4, 0]])
{('t', 0): 10}
>>> tracker.complete([["t", 0, 10, 10, 0, 1, 2]])  # second half of message 10 only
{}
>>> tracker.complete([["t", 0, 10, 10, 0, 0, 2]])
{('t', 0): 11}
>>> tracker.complete([["t", 0, 15, 15, 0]])
{}
>>> state = tracker.state_changes()
>>> OffsetTracker({("t", 0): 11}, state).complete([["t", 0, 11, 14, 0]])  # after a restart
{('t', 0): 16}
"""

from __future__ import annotations

import json
from typing import Sequence

PartitionKey = tuple[str, int]


class OffsetTracker:
    """Per-partition contiguous watermark over completed offset ranges.

    Args:
        stored: ``(topic, partition) -> next offset`` already durable (from the store).
        state: ``(topic, partition) -> state`` stored beside it (:meth:`state_changes`).
    """

    def __init__(self, stored: dict[PartitionKey, int], state: dict[PartitionKey, bytes] | None = None) -> None:
        self._next: dict[PartitionKey, int] = dict(stored)
        self._pending: dict[PartitionKey, list[tuple[int, int]]] = {}
        self._parts: dict[tuple[PartitionKey, int, int, int], set[int]] = {}
        self._changed: set[PartitionKey] = set()
        for key, raw in (state or {}).items():
            doc = json.loads(raw)
            self._pending[key] = [(int(f), int(l)) for f, l in doc.get("ranges", [])]
            for first, last, parts, seen in doc.get("parts", []):
                self._parts[(key, int(first), int(last), int(parts))] = {int(p) for p in seen}

    def copy(self) -> "OffsetTracker":
        """An independent copy (to roll back to if a write fails after :meth:`complete`)."""
        twin = OffsetTracker(self._next)
        twin._pending = {k: list(v) for k, v in self._pending.items()}
        twin._parts = {k: set(v) for k, v in self._parts.items()}
        twin._changed = set(self._changed)
        return twin

    def state_changes(self) -> dict[PartitionKey, bytes | None]:
        """The state of every partition changed since the last call (``None``: nothing left)."""
        out: dict[PartitionKey, bytes | None] = {}
        for key in self._changed:
            ranges = self._pending.get(key, [])
            parts = [[f, l, n, sorted(seen)] for (k, f, l, n), seen in self._parts.items() if k == key]
            out[key] = json.dumps({"ranges": ranges, "parts": parts}).encode() if ranges or parts else None
        self._changed.clear()
        return out

    def durable(self, ranges: Sequence[Sequence[object]]) -> dict[PartitionKey, int]:
        """The watermark of each partition that ``ranges`` hold already-durable messages of (a
        retried write, whose first ack was lost, acks them again)."""
        out: dict[PartitionKey, int] = {}
        for entry in ranges:
            key = (str(entry[0]), int(entry[1]))  # type: ignore[call-overload]
            if key in self._next and int(entry[3]) < self._next[key]:  # type: ignore[call-overload]
                out[key] = self._next[key]
        return out

    @property
    def watermarks(self) -> dict[PartitionKey, int]:
        """Current ``(topic, partition) -> next offset`` for every partition seen."""
        return dict(self._next)

    def _whole(self, key: PartitionKey, first: int, last: int, part: int, parts: int) -> bool:
        """Record one part of a split message; ``True`` once every part has been seen."""
        if not 0 <= part < parts:
            raise ValueError(f"offset range part {part} is not in 0..{parts - 1}")
        slot = (key, first, last, parts)
        seen = self._parts.setdefault(slot, set())
        seen.add(part)
        if len(seen) < parts:
            return False
        del self._parts[slot]
        return True

    def complete(self, ranges: Sequence[Sequence[object]]) -> dict[PartitionKey, int]:
        """Mark ranges done; return the partitions whose watermark advanced, with the new value.

        Raises:
            ValueError: an entry has neither 5 nor 7 fields, or ``first > last``.
        """
        touched: set[PartitionKey] = set()
        parted: set[PartitionKey] = set()
        for entry in ranges:
            if len(entry) not in (5, 7):
                raise ValueError(f"an offset range has 5 or 7 fields, got {list(entry)!r}")
            topic, partition, first, last, base = entry[:5]
            key = (str(topic), int(partition))  # type: ignore[call-overload]
            first, last = int(first), int(last)  # type: ignore[call-overload]
            if first > last:
                raise ValueError(f"offset range {list(entry)!r} has first > last")
            self._next.setdefault(key, int(base))  # type: ignore[call-overload]
            if last < self._next[key]:
                continue  # already durable (a retried or re-read batch)
            if len(entry) == 7:
                parted.add(key)
                if not self._whole(key, first, last, int(entry[5]), int(entry[6])):  # type: ignore[call-overload]
                    continue
            self._pending.setdefault(key, []).append((first, last))
            touched.add(key)
        advanced: dict[PartitionKey, int] = {}
        for key in touched:
            start = self._next[key]
            remaining = []
            for first, last in sorted(self._pending[key]):
                if first <= self._next[key]:
                    self._next[key] = max(self._next[key], last + 1)
                else:
                    remaining.append((first, last))
            self._pending[key] = [(f, l) for f, l in remaining if l >= self._next[key]]
            if self._next[key] != start:
                advanced[key] = self._next[key]
        self._parts = {slot: seen for slot, seen in self._parts.items() if slot[2] >= self._next[slot[0]]}
        self._changed |= touched | parted
        return advanced
