"""The tracker operator: a per-camera ``track_id`` for every detection (DeepLens q3/q4).

C-BIoU (Yang et al., WACV 2023: ByteTrack's two-stage matching on boxes widened by a buffer,
which keeps fast or briefly missed people matched) or ByteTrack itself, both from Roboflow's
``trackers`` package (Apache-2.0), links a camera's detections over time; on the labelled
vtest.avi frames C-BIoU fragments and swaps people less (``benchmarks/tracking.py``). This
operator runs one tracker per camera and class group (people apart from vehicles,
so a van's box never continues a walker's track), maps the library's ids to the camera's
own track ids, and writes them as the ``track_id`` column (``None`` for a detection no track
has confirmed). Whole-frame patches (label ``""``) pass untouched.

People walking together overlap each other's boxes about equally, and boxes alone swap their
identities; so among the pairs C-BIoU's gates let through, people's boxes are assigned by
overlap ranked by clothing colours (:mod:`operators.tracking.association`). A new track gets
an id only once at least :data:`NEW_MIN_UNCOVERED` of its box lies outside the boxes of the
tracks already in its frame: a detector's box across two walkers is not a third person.

Frames are fed to a camera's tracker in capture-time order. A frame older than the last one
the camera's tracker saw (a batch a replica finished late) does not move the tracker back:
its boxes take the id of the track whose recent box overlaps them most.

A person hidden for a moment (behind another, behind a sign) comes back as a new tracker
track. Before a new track takes a new id it is re-linked: a track of the same lane that
ended at most ``relink_seconds`` ago, whose box, moved on at its last speed, is near the new
box, of about its size, and whose clothing colours (:mod:`operators.tracking.appearance`)
match at least ``relink_similarity``, gives the new track its id. So a person keeps one id
through short occlusions, and ``count(DISTINCT track_id)`` counts people, not fragments. A
track that ended at the frame's edge left the view and is never re-linked.

State survives a restart: given the collection's store (``state``, filled in from the sink by
a plan rule), a new tracker replays the camera's stored detections of the last
``restore_seconds`` through a fresh tracker and maps the ids it gives back to the stored
ones, so objects still in view keep their ids; new objects get ids past the largest stored.

>>> tracker = ObjectTracker(labels=["person"])
>>> tracker.group("person"), tracker.group("car")
('person', None)
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from operators.base import Operator, OperatorContext
from operators.index.sharded import STORE_DIRNAME
from operators.models.nms import iou_matrix
from operators.tracking.appearance import signature, similarity
from operators.tracking.association import appearance_cbiou
from operators.stores.lineage_store import LineageStore
from operators.stores.tracks import StoredBox, recent_boxes
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType, StreamType

#: Labels tracked as one class: a detector calls the same van a car, a truck and a bus.
VEHICLES = frozenset({"car", "truck", "bus", "motorcycle", "bicycle", "train"})
#: Labels tracked by default: the objects video analytics counts.
DEFAULT_LABELS = ("person", *sorted(VEHICLES))
#: Class groups whose clothing colours rank C-BIoU's matches: a vehicle's colours (grey, dark,
#: cut at the frame's edge) tell one parked car from another less well than its box does.
DRESSED = frozenset({"person"})
#: Tracking methods: option value -> the ``trackers`` class.
METHODS = {"cbiou": "CBIoUTracker", "bytetrack": "ByteTrackTracker"}
#: Seconds of a late frame's camera history kept to match it against.
HISTORY_SECONDS = 5.0
#: Least overlap of a late box with a track's nearest box to take its id.
LATE_MIN_IOU = 0.3
#: Re-linking gates: the new box's centre within (RADIUS + SPEED * gap seconds) box heights of
#: where the ended track would be, and its height within a factor SIZE of the track's.
RELINK_RADIUS, RELINK_SPEED, RELINK_SIZE = 0.5, 0.5, 1.5
#: How much a candidate's distance from where the ended track would be (0..1 of the gate)
#: costs against its appearance similarity.
RELINK_OFF_WEIGHT = 0.4
#: A re-link is skipped when another ended track scores within this of the best: people who
#: walk together and look alike are not told apart by colour.
RELINK_MARGIN = 0.05
#: A track whose last box came within this fraction of the frame's size of its edge left the
#: view: it is not re-linked (someone else walks in there). The frame's size per camera is the
#: extent of every box seen (boxes are clipped to the frame; whole-frame patches give it exactly).
RELINK_EDGE = 0.01
#: Least share of a new track's box outside the boxes of the tracks already in its frame for it
#: to get an id: a detector's box across two people walking together is not a third person.
NEW_MIN_UNCOVERED = 0.3
#: Weight of the newest box in a track's running signature and velocity.
SMOOTHING = 0.3


@dataclass
class _Seen:
    """What a track looked like when last seen: for re-linking a new track to it."""

    ts: float
    box: np.ndarray
    velocity: np.ndarray  # centre pixels per second
    look: np.ndarray | None  # running appearance signature


@dataclass
class _Lane:
    """One camera and class group: the library's tracker and its ids mapped to ours."""

    camera: str
    tracker: Any
    ours: dict[int, int] = field(default_factory=dict)  # library id -> track id
    holder: dict[int, int] = field(default_factory=dict)  # track id -> library id that holds it now
    seen: dict[int, _Seen] = field(default_factory=dict)  # track id -> last sight
    last_ts: float = float("-inf")
    history: deque = field(default_factory=deque)  # (ts, track id, box) of confirmed boxes


class ObjectTracker(Operator[PatchBatch, PatchBatch]):
    """Give each detection of the tracked labels a per-camera ``track_id`` (C-BIoU or ByteTrack).

    Args:
        labels: detector labels to track; people and vehicles by default.
        method: ``"cbiou"`` (default) or ``"bytetrack"``.
        buffer: C-BIoU's box widening of its first matching stage (a fraction of the box's
            size; the second stage widens by ``buffer + 0.2``).
        appearance: how sharply clothing colours rank the people's boxes C-BIoU's gates let
            through (the exponent of their similarity, :mod:`operators.tracking.association`;
            ``0``: boxes alone, as ByteTrack and the other class groups always do).
        lost_seconds: how long a track missing from view is kept to be found again.
        activation_score: lowest score that starts a new track.
        high_score: scores at least this are matched first (the first stage); lower
            ones only continue tracks (the second stage).
        min_iou: least overlap of a box with a track's predicted box to continue it.
        min_frames: frames a new track needs before it is confirmed and gets an id.
        fps: the camera's frame rate (the motion model's step); capture times set the
            actual steps.
        restore_seconds: seconds of stored detections replayed on a restart.
        relink_seconds: a new track may take the id of a track that ended at most this long
            ago (``0``: never re-link).
        relink_similarity: least appearance similarity (0..1) of a new track to the ended
            one it re-links to.
        by_class: track each class group apart (people, vehicles, each other label); ``False``
            matches boxes whatever their labels (DeepLens' match-then-filter plan of q4).
        state: the collection's data directory to restore from (set by the plan from the
            store sink; ``None``: start empty).

    It runs as one replica (it holds the cameras' tracks); the plan refuses more.
    """

    name = "tracker"
    #: It holds the cameras' tracks: the plan runs it as one actor.
    stateful = True

    def __init__(self, *, labels: Sequence[str] = DEFAULT_LABELS, method: str = "cbiou", buffer: float = 0.5,
                 appearance: float = 20.0, lost_seconds: float = 2.0,
                 activation_score: float = 0.4, high_score: float = 0.5, min_iou: float = 0.1,
                 min_frames: int = 2, fps: float = 10.0, restore_seconds: float = 5.0,
                 relink_seconds: float = 4.0, relink_similarity: float = 0.85, by_class: bool = True,
                 state: str | None = None) -> None:
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise ConfigError(f"tracker: labels must be a non-empty list of names, got {labels!r}")
        for key, value in (("lost_seconds", lost_seconds), ("fps", fps)):
            if not value > 0:
                raise ConfigError(f"tracker: {key} must be > 0, got {value}")
        for key, value in (("activation_score", activation_score), ("high_score", high_score), ("min_iou", min_iou)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"tracker: {key} must be in [0, 1], got {value}")
        if method not in METHODS:
            raise ConfigError(f"tracker: method must be one of {sorted(METHODS)}, got {method!r}")
        if not 0.0 <= buffer <= 2.0:
            raise ConfigError(f"tracker: buffer must be in [0, 2], got {buffer}")
        if not 0.0 <= appearance <= 100.0:
            raise ConfigError(f"tracker: appearance must be in [0, 100], got {appearance}")
        if int(min_frames) < 1 or restore_seconds < 0 or relink_seconds < 0:
            raise ConfigError("tracker: min_frames must be >= 1, restore_seconds and relink_seconds >= 0")
        if not 0.0 <= relink_similarity <= 1.0:
            raise ConfigError(f"tracker: relink_similarity must be in [0, 1], got {relink_similarity}")
        self.labels = frozenset(labels)
        self.method = method
        self.buffer = float(buffer)
        self.appearance = float(appearance)
        self.lost_seconds = float(lost_seconds)
        self.activation_score = float(activation_score)
        self.high_score = float(high_score)
        self.min_iou = float(min_iou)
        self.min_frames = int(min_frames)
        self.fps = float(fps)
        self.restore_seconds = float(restore_seconds)
        self.relink_seconds = float(relink_seconds)
        self.relink_similarity = float(relink_similarity)
        self.by_class = bool(by_class)
        self.state = state
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._next_id: dict[str, int] = {}
        self._restored: set[str] = set()
        self._extent: dict[str, np.ndarray] = {}  # camera -> largest (x1, y1) seen: its frame's size

    def input_type(self) -> StreamType:
        """Detections: pixel patches with boxes, labels and scores."""
        return PatchType()

    def output_type(self, upstream: StreamType) -> StreamType:
        """The upstream type: the same rows, with ``track_id``."""
        return upstream

    def with_state(self, data: str) -> "ObjectTracker":
        """The same tracker, restoring from the store of collection ``data``."""
        opts = {k: getattr(self, k) for k in ("method", "buffer", "appearance", "lost_seconds", "activation_score", "high_score", "min_iou",
                                              "min_frames", "fps", "restore_seconds", "relink_seconds",
                                              "relink_similarity", "by_class")}
        return ObjectTracker(labels=sorted(self.labels), state=data, **opts)

    def group(self, label: str) -> str | None:
        """The class group a label is tracked in, or ``None`` when it is not tracked."""
        if label not in self.labels:
            return None
        if not self.by_class:
            return "any"
        return "vehicle" if label in VEHICLES else label

    def setup(self, context: OperatorContext) -> None:
        """Check the tracking library is installed (cameras are restored when first seen)."""
        _library(self.method)

    def _lane(self, camera: str, group: str) -> _Lane:
        key = (camera, group)
        if key not in self._lanes:
            common = dict(lost_track_buffer=max(1, round(self.lost_seconds * 30.0)), frame_rate=self.fps,
                          track_activation_threshold=self.activation_score,
                          minimum_consecutive_frames=self.min_frames, high_conf_det_threshold=self.high_score)
            if self.method == "cbiou":
                power = self.appearance if group in DRESSED else 0.0
                tracker = appearance_cbiou()(**common, power=power, minimum_iou_threshold_first_assoc=self.min_iou,
                                             buffer_ratio_first=self.buffer, buffer_ratio_second=self.buffer + 0.2)
            else:
                tracker = _library(self.method)(**common, minimum_iou_threshold=self.min_iou)
            self._lanes[key] = _Lane(camera, tracker)
        return self._lanes[key]

    def _new_id(self, camera: str) -> int:
        self._next_id[camera] = self._next_id.get(camera, 0) + 1
        return self._next_id[camera]

    def process(self, batch: PatchBatch) -> PatchBatch:
        """The batch with a ``track_id`` column (``None`` where no track holds the box)."""
        track_ids: list[int | None] = list(batch.extra.get("track_id", [None] * len(batch)))
        frames: dict[tuple[str, str, float], list[int]] = defaultdict(list)
        for camera, box in zip(batch.cameras, batch.bboxes):
            self._extent[camera] = np.maximum(self._extent.get(camera, box[2:]), box[2:])
        for i, label in enumerate(batch.labels):
            group = self.group(label)
            if group is not None:
                ts = float(batch.wall_time[i]) or float(batch.pts[i])
                frames[(batch.cameras[i], group, ts)].append(i)
        for camera in {c for c, _, _ in frames} - self._restored:
            self._restore(camera)
        for (camera, group, ts), rows in sorted(frames.items(), key=lambda kv: kv[0][2]):
            lane = self._lane(camera, group)
            boxes = batch.bboxes[rows].astype(np.float64)
            scores = batch.scores[rows].astype(np.float64)
            looks = None if batch.crops is None else [signature(batch.crops[r]) for r in rows]
            ids = (self._late(lane, ts, boxes) if ts <= lane.last_ts
                   else self._step(camera, lane, ts, boxes, scores, looks=looks))
            for row, tid in zip(rows, ids):
                track_ids[row] = tid
        return replace(batch, extra={**batch.extra, "track_id": track_ids})

    def _step(self, camera: str, lane: _Lane, ts: float, boxes: np.ndarray, scores: np.ndarray,
              known: Sequence[int | None] | None = None,
              looks: Sequence[np.ndarray] | None = None) -> list[int | None]:
        """Feed one frame's boxes to the lane's tracker; ``known`` maps replayed boxes to stored
        ids, ``looks`` are the boxes' appearance signatures (``None``: no pixels)."""
        import supervision as sv

        data = {"row": np.arange(len(boxes))}
        if looks is not None:
            data["look"] = np.stack(looks) if len(looks) else np.zeros((0, 0), np.float32)
        detections = sv.Detections(xyxy=boxes.reshape(-1, 4), confidence=scores, data=data)
        tracked = lane.tracker.update(detections, timestamp=ts)
        out: list[int | None] = [None] * len(boxes)
        fresh: list[tuple[int, int]] = []  # (row, library id) of tracks without an id yet
        for row, theirs in zip(tracked.data["row"].tolist(), tracked.tracker_id.tolist()):
            if theirs < 0:
                continue
            mine = lane.ours.get(theirs)
            if mine is not None and lane.holder.get(mine) == theirs:
                out[row] = mine
            elif known is not None and known[row] is not None:
                out[row] = self._bind(lane, theirs, known[row])
            else:
                fresh.append((row, theirs))
        held = [row for row, tid in enumerate(out) if tid is not None]
        fresh = [(row, theirs) for row, theirs in fresh
                 if _uncovered(boxes[row], boxes[held]) >= NEW_MIN_UNCOVERED]
        taken = {tid for tid in out if tid is not None}
        for row, tid in self._relink(lane, ts, boxes, looks, [r for r, _ in fresh], taken).items():
            out[row] = tid
        for row, theirs in fresh:
            out[row] = self._bind(lane, theirs, out[row] if out[row] is not None else self._new_id(camera))
        lane.last_ts = ts
        for row, tid in enumerate(out):
            if tid is not None:
                lane.history.append((ts, tid, boxes[row]))
                self._saw(lane, tid, ts, boxes[row], None if looks is None else looks[row])
        while lane.history and lane.history[0][0] < ts - HISTORY_SECONDS:
            lane.history.popleft()
        return out

    @staticmethod
    def _bind(lane: _Lane, theirs: int, tid: int) -> int:
        """Let library track ``theirs`` hold track id ``tid`` (a track that held it before no
        longer does: it gets an id of its own when it shows again)."""
        lane.ours[theirs] = tid
        lane.holder[tid] = theirs
        return tid

    @staticmethod
    def _saw(lane: _Lane, tid: int, ts: float, box: np.ndarray, look: np.ndarray | None) -> None:
        """Update track ``tid``'s last sight: its box, smoothed velocity and signature."""
        before = lane.seen.get(tid)
        if before is None:
            lane.seen[tid] = _Seen(ts, box, np.zeros(2), look)
            return
        dt = ts - before.ts
        if dt > 0:
            step = (_centre(box) - _centre(before.box)) / dt
            before.velocity = (1 - SMOOTHING) * before.velocity + SMOOTHING * step
        if look is not None:
            before.look = look if before.look is None else (1 - SMOOTHING) * before.look + SMOOTHING * look
        before.ts, before.box = ts, box

    def _relink(self, lane: _Lane, ts: float, boxes: np.ndarray, looks: Sequence[np.ndarray] | None,
                rows: list[int], taken: set[int]) -> dict[int, int]:
        """Ended tracks whose ids new tracks at ``rows`` take (see the module docstring), one to
        one by best appearance among those that pass the gates."""
        if not rows or looks is None or self.relink_seconds <= 0:
            return {}
        for tid in [t for t, seen in lane.seen.items() if ts - seen.ts > self.relink_seconds]:
            del lane.seen[tid]
        extent = self._extent.get(lane.camera)
        ended = [(tid, seen) for tid, seen in lane.seen.items()
                 if tid not in taken and seen.look is not None and seen.ts < ts
                 and not (extent is not None and _at_edge(seen.box, extent))]
        if not ended:
            return {}
        score = np.zeros((len(rows), len(ended)))
        for i, row in enumerate(rows):
            height = boxes[row][3] - boxes[row][1]
            for j, (tid, seen) in enumerate(ended):
                gap = ts - seen.ts
                their_height = seen.box[3] - seen.box[1]
                where = _centre(seen.box) + seen.velocity * gap
                off = np.linalg.norm(_centre(boxes[row]) - where) / (their_height * (RELINK_RADIUS + RELINK_SPEED * gap))
                sized = 1 / RELINK_SIZE <= height / max(their_height, 1e-6) <= RELINK_SIZE
                alike = similarity(looks[row], seen.look)
                if off <= 1.0 and sized and alike >= self.relink_similarity:
                    score[i, j] = alike - RELINK_OFF_WEIGHT * off + 1.0
        picked, cols = linear_sum_assignment(-score)
        out = {}
        for i, j in zip(picked, cols):
            rivals = np.delete(score[i], j)
            if score[i, j] > 0 and not (rivals > score[i, j] - RELINK_MARGIN).any():
                out[rows[i]] = ended[j][0]
        return out

    def _late(self, lane: _Lane, ts: float, boxes: np.ndarray) -> list[int | None]:
        """Ids for a frame older than the lane's last: each track's box at the frame's time
        (interpolated between its boxes before and after it), assigned one to one by overlap;
        the tracker itself does not go back."""
        before: dict[int, tuple[float, np.ndarray]] = {}
        after: dict[int, tuple[float, np.ndarray]] = {}
        for seen_ts, tid, seen in lane.history:
            if abs(seen_ts - ts) > self.lost_seconds:
                continue
            if seen_ts <= ts and (tid not in before or seen_ts > before[tid][0]):
                before[tid] = (seen_ts, seen)
            if seen_ts >= ts and (tid not in after or seen_ts < after[tid][0]):
                after[tid] = (seen_ts, seen)
        expected = {}
        for tid in {*before, *after}:
            if tid in before and tid in after and after[tid][0] > before[tid][0]:
                (t0, b0), (t1, b1) = before[tid], after[tid]
                expected[tid] = b0 + (b1 - b0) * (ts - t0) / (t1 - t0)
            else:
                expected[tid] = (before.get(tid) or after[tid])[1]
        out: list[int | None] = [None] * len(boxes)
        if not expected or not len(boxes):
            return out
        tids = list(expected)
        overlap = iou_matrix(np.asarray(boxes, np.float64), np.stack([expected[t] for t in tids]))
        rows, cols = linear_sum_assignment(-overlap)
        for row, col in zip(rows, cols):
            if overlap[row, col] >= LATE_MIN_IOU:
                out[row] = tids[col]
        return out

    def _restore(self, camera: str) -> None:
        """Rebuild a camera's lanes from its stored detections (see the module docstring)."""
        self._restored.add(camera)
        if self.state is None:
            return
        path = Path(self.state) / STORE_DIRNAME
        if not (path / "CURRENT").exists():
            return  # a new collection
        with LineageStore(path, read_only=True) as store:
            last_id, boxes = recent_boxes(store, camera, self.restore_seconds)
        self._next_id[camera] = max(self._next_id.get(camera, 0), last_id)
        self.replay(camera, boxes)

    def replay(self, camera: str, boxes: Iterable[StoredBox]) -> None:
        """Feed stored detections of ``camera`` through fresh lanes, keeping their stored ids."""
        frames: dict[tuple[str, float], list[StoredBox]] = defaultdict(list)
        for box in boxes:
            group = self.group(box.label)
            if group is not None:
                frames[(group, box.ts)].append(box)
        for (group, ts), rows in sorted(frames.items(), key=lambda kv: kv[0][1]):
            lane = self._lane(camera, group)
            if ts <= lane.last_ts:
                continue
            self._step(camera, lane, ts, np.array([b.bbox for b in rows], np.float64),
                       np.array([b.score for b in rows], np.float64), known=[b.track_id for b in rows])
            stored = [b.track_id for b in rows if b.track_id is not None]
            self._next_id[camera] = max(self._next_id.get(camera, 0), *stored, 0)


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def _uncovered(box: np.ndarray, others: np.ndarray, grid: int = 16) -> float:
    """The share of ``box`` outside every box of ``others`` (``(m, 4)``), on a ``grid`` x ``grid``
    sample of its area."""
    if not len(others):
        return 1.0
    xs = np.linspace(box[0], box[2], grid)
    ys = np.linspace(box[1], box[3], grid)
    px, py = (a.ravel() for a in np.meshgrid(xs, ys))
    inside = ((px[:, None] >= others[:, 0]) & (px[:, None] <= others[:, 2])
              & (py[:, None] >= others[:, 1]) & (py[:, None] <= others[:, 3]))
    return float(1.0 - inside.any(axis=1).mean())


def _at_edge(box: np.ndarray, extent: np.ndarray) -> bool:
    """Whether ``box`` reaches within :data:`RELINK_EDGE` of the edge of a frame of size ``extent``."""
    margin = RELINK_EDGE * extent
    return bool(box[0] <= margin[0] or box[1] <= margin[1] or box[2] >= extent[0] - margin[0]
                or box[3] >= extent[1] - margin[1])


def _library(method: str) -> Any:
    """The tracker class of ``method`` from Roboflow's ``trackers`` package."""
    try:
        import trackers
    except ImportError as exc:  # an install without scripts/setup.sh
        raise ConfigError("the tracker needs Roboflow's `trackers` package: run scripts/setup.sh "
                          "(it installs trackers==2.6.1 without its opencv-python pin)") from exc
    return getattr(trackers, METHODS[method])
