"""C-BIoU association that tells crossing people apart by their clothing colours.

When people walk side by side or cross, several tracks' buffered boxes overlap the same
detections about equally, and boxes alone swap their identities. This tracker is Roboflow's
``CBIoUTracker`` (its stages, gates and track lifecycle unchanged) with one difference in each
association stage: among the pairs that pass the stage's overlap gate, the one-to-one
assignment maximizes ``overlap * appearance ** power``, where ``appearance`` is the similarity
(:mod:`operators.tracking.appearance`) of the detection's signature to the track's running
signature. Appearance only ranks the pairs that pass the gate: it never lets through a pair
that boxes alone would refuse, so it trades which track takes a box, not whether it is taken.

A track's signature starts from its first box and is smoothed over the boxes it is matched
with, except boxes that overlap another detection (the crop shows two people).

Detections carry their signatures in ``detections.data["look"]`` (an ``(n, s)`` float32
array); without it the tracker ranks by overlap alone, as ``CBIoUTracker`` does.

>>> tracker = appearance_cbiou()(power=0.0)
>>> tracker.power
0.0
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from operators.models.nms import iou_matrix
from operators.tracking.appearance import similarities

#: Weight of the newest box in a track's running signature.
LOOK_SMOOTHING = 0.3
#: A box overlapping another detection of its frame by more than this does not update a look.
CROWDED_IOU = 0.3
#: Least overlap of a track's updated state with a detection to take that detection's look.
SAME_BOX_IOU = 0.5


@cache
def appearance_cbiou() -> type:
    """The appearance-ranked C-BIoU tracker class (``trackers`` is imported on first use)."""
    from trackers import CBIoUTracker

    class AppearanceCBIoU(CBIoUTracker):
        """``CBIoUTracker`` whose assignments are ranked by ``overlap * appearance ** power``."""

        tracker_id = None  # not registered in the library's tracker list
        search_space: dict = {}

        def __init__(self, *, power: float = 20.0, **options: Any) -> None:
            super().__init__(**options)
            self.power = float(power)
            self._looks: dict[int, np.ndarray] = {}  # id(tracklet) -> running signature
            self._frame_looks: dict[bytes, np.ndarray] = {}  # detection box bytes -> its signature
            self._ranking: np.ndarray | None = None  # appearance factors of the last stage's matrix

        def update(self, detections: Any, frame: np.ndarray | None = None,
                   timestamp: float | None = None) -> Any:
            """``CBIoUTracker.update``, ranking by appearance and then updating the tracks' looks."""
            looks = (detections.data or {}).get("look") if self.power > 0 else None
            boxes = np.asarray(detections.xyxy, np.float64)
            self._frame_looks = {} if looks is None else {_key(b): look for b, look in zip(boxes, looks)}
            before = {id(t) for t in self.tracks}
            result = super().update(detections, frame=frame, timestamp=timestamp)
            self._ranking = None
            alive = {id(t) for t in self.tracks}
            self._looks = {k: v for k, v in self._looks.items() if k in alive}
            if looks is not None and len(boxes):
                self._remember(boxes, looks, before)
            return result

        def _remember(self, boxes: np.ndarray, looks: np.ndarray, before: set[int]) -> None:
            """Blend each just-updated track's look with its detection's (new tracks: take it)."""
            updated = [t for t in self.tracks if t.time_since_update == 0]
            if not updated:
                return
            overlap = iou_matrix(np.stack([t.get_state_bbox() for t in updated]).astype(np.float64), boxes)
            others = iou_matrix(boxes, boxes)
            np.fill_diagonal(others, 0.0)
            crowded = others.max(axis=1) > CROWDED_IOU
            for i, j in zip(*linear_sum_assignment(-overlap)):
                if overlap[i, j] < SAME_BOX_IOU:
                    continue
                key = id(updated[i])
                old = self._looks.get(key)
                if old is None or key not in before:
                    self._looks[key] = looks[j]
                elif not crowded[j]:
                    self._looks[key] = (1 - LOOK_SMOOTHING) * old + LOOK_SMOOTHING * looks[j]

        def _biou_matrix(self, tracklets: list, boxes: np.ndarray, iou: Any,
                         tracklet_boxes_by_id: dict[int, np.ndarray]) -> np.ndarray:
            overlap = super()._biou_matrix(tracklets, boxes, iou, tracklet_boxes_by_id)
            ranking = np.ones_like(overlap)
            if overlap.size and self._frame_looks:
                cols = [(j, self._frame_looks.get(_key(box))) for j, box in enumerate(np.asarray(boxes, np.float64))]
                cols = [(j, look) for j, look in cols if look is not None]
                rows = [(i, self._looks[id(t)]) for i, t in enumerate(tracklets) if id(t) in self._looks]
                if cols and rows:
                    alike = similarities(np.stack([look for _, look in rows]), np.stack([look for _, look in cols]))
                    ranking[np.ix_([i for i, _ in rows], [j for j, _ in cols])] = alike ** self.power
            self._ranking = ranking
            return overlap

        def _get_associated_indices(self, similarity_matrix: np.ndarray, min_similarity_thresh: float
                                    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
            ranking, self._ranking = self._ranking, None
            if ranking is None or ranking.shape != similarity_matrix.shape or not similarity_matrix.size:
                return super()._get_associated_indices(similarity_matrix, min_similarity_thresh)
            rows, cols = linear_sum_assignment(similarity_matrix * ranking, maximize=True)
            matched = [(int(r), int(c)) for r, c in zip(rows, cols) if similarity_matrix[r, c] >= min_similarity_thresh]
            n_tracks, n_boxes = similarity_matrix.shape
            return (matched, sorted(set(range(n_tracks)) - {r for r, _ in matched}),
                    sorted(set(range(n_boxes)) - {c for _, c in matched}))

    return AppearanceCBIoU


def _key(box: np.ndarray) -> bytes:
    """A detection's identity within its frame: its box's float64 bytes."""
    return np.asarray(box, np.float64).tobytes()
