"""Where each patch id sits in a FAISS ``IndexIDMap``: id -> position, at a cost that does
not grow with the index.

Position ``i`` of an ``IndexIDMap`` holds the vector of ``index.id_map[i]``. FAISS's
``IndexIDMap2`` keeps the reverse map (``rev_map``), but it is an opaque SWIG object that
Python cannot query, rebuilt at every read of the file (0.3 s and 275 MB for 5 M ids here), and
a Python dict of a million ids costs ~110 MB. :class:`IdPositions` keeps a sorted int64 id
array with a parallel position array (16 bytes per id, looked up by binary search) and a
dict of the ids added since the last merge (a dict lookup or insert is O(1), where inserting
into a sorted array is O(n)). The dict is merged into the sorted arrays when it grows beyond
``max(MERGE_MIN, len / MERGE_FRACTION)`` entries: one O(n) pass per n / 8 additions, so an
addition costs amortized O(1) whatever the size. The dict costs ~110 bytes per entry, so
between merges the map costs up to ~30 bytes per id (16 right after one).

>>> import numpy as np
>>> where = IdPositions(np.array([40, 10, 30]))  # an id_map: position i holds id_map[i]
>>> where.add(np.array([20]), np.array([3]))
>>> where.lookup(np.array([10, 20, 30, 99])).tolist()
[1, 3, 2, -1]
>>> len(where)
4
>>> where.rebuild(np.array([30, 20]))  # after a remove_ids, which compacts positions
>>> where.lookup(np.array([10, 20, 30])).tolist()
[-1, 1, 0]
"""

from __future__ import annotations

import numpy as np

#: The dict of recent additions is merged into the sorted arrays when it holds more than
#: ``max(MERGE_MIN, len(self) // MERGE_FRACTION)`` ids.
MERGE_MIN = 4096
MERGE_FRACTION = 8


class IdPositions:
    """A map from 63-bit patch ids to positions (int64), built for batch lookups.

    Args:
        id_map: the ids by position (``index.id_map``); empty when omitted.
    """

    def __init__(self, id_map: np.ndarray | None = None) -> None:
        self.rebuild(np.zeros(0, np.int64) if id_map is None else id_map)

    def __len__(self) -> int:
        return len(self._ids) + len(self._recent)

    def rebuild(self, id_map: np.ndarray) -> None:
        """Forget everything and map ``id_map[i] -> i`` (one O(n log n) sort)."""
        id_map = np.asarray(id_map, np.int64)
        order = np.argsort(id_map, kind="stable")
        self._ids: np.ndarray = id_map[order]
        self._pos: np.ndarray = order.astype(np.int64)
        self._recent: dict[int, int] = {}

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The position of each id (int64), ``-1`` where an id is not held: O(b log n)."""
        ids = np.asarray(ids, np.int64)
        at, held = self._find(ids)
        found = np.where(held, self._pos[at] if len(self._ids) else -1, -1)
        if self._recent:
            recent = np.fromiter((self._recent.get(i, -1) for i in ids.tolist()), np.int64, len(ids))
            found = np.where(recent >= 0, recent, found)
        return found

    def add(self, ids: np.ndarray, positions: np.ndarray) -> None:
        """Map ``ids`` to ``positions``; an id already held moves, an id given twice takes the
        last position given. Amortized O(b)."""
        ids = np.asarray(ids, np.int64)
        positions = np.asarray(positions, np.int64)
        at, held = self._find(ids)
        if held.any():
            self._move(at[held], positions[held])
        self._recent.update(zip(ids[~held].tolist(), positions[~held].tolist()))
        if len(self._recent) > max(MERGE_MIN, len(self._ids) // MERGE_FRACTION):
            self._merge()

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each id is (or would go) in the sorted arrays, and whether it is there."""
        at = np.searchsorted(self._ids, ids)
        if not len(self._ids):
            return at, np.zeros(len(ids), bool)
        at = np.minimum(at, len(self._ids) - 1)
        return at, self._ids[at] == ids

    def _move(self, at: np.ndarray, positions: np.ndarray) -> None:
        """Set new positions for sorted-array entries ``at`` (the last wins for a repeated entry:
        numpy leaves repeated fancy assignments in no defined order)."""
        at, last = np.unique(at[::-1], return_index=True)
        self._pos[at] = positions[::-1][last]

    def _merge(self) -> None:
        """Move the recent additions into the sorted arrays: O(n + p log p)."""
        ids = np.fromiter(self._recent.keys(), np.int64, len(self._recent))
        positions = np.fromiter(self._recent.values(), np.int64, len(self._recent))
        order = np.argsort(ids)
        at = np.searchsorted(self._ids, ids[order])
        self._ids = np.insert(self._ids, at, ids[order])
        self._pos = np.insert(self._pos, at, positions[order])
        self._recent = {}
