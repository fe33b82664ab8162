"""The tracker on real vtest.avi detections (NanoDet-m), and the tracks it leaves in the store.

What is checked could fail: ByteTrack fed boxes out of order, across class groups or without
its restored state mints new ids or merges objects; the store could double-count a replayed
batch or lose a track's boxes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

import streamvision
from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.color_histogram import ColorHistogram
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from operators.stores import tracks as stored_tracks
from operators.stores.lineage_store import LineageStore
from operators.tracking.evaluation import LABEL_GROUPS, Box, identity_of, load_mot
from operators.tracking.tracker import VEHICLES, ObjectTracker
from operators.tracking.views import crop_views
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch
from streamvision.plan.dataflow import Dataflow
from streamvision.plan.rules import optimize

GT = Path(__file__).resolve().parents[1] / "data" / "vtest_gt" / "gt.txt"
FRAMES = 80
BATCH = 8
#: The white van parked at the top right of vtest.avi (see test_detector_nanodet.py).
VAN = np.array([650, 40, 726, 100], np.float32)


@pytest.fixture(scope="module")
def detections(vtest_path) -> list[PatchBatch]:
    """NanoDet-m detections of frames 0-79, in batches of 8 frames."""
    detector = NanoDetDetector(score_threshold=0.3)
    detector.setup(OperatorContext())
    source = VideoFileSource(path=str(vtest_path), end=FRAMES / 10.0, camera="cam")
    source.open()
    batches = [detector.process(frames) for frames in source.read(BATCH)]
    source.close()
    assert sum(len(set(b.frame_no.tolist())) for b in batches) >= FRAMES - 1
    return batches


def _track(batches: list[PatchBatch], tracker: ObjectTracker | None = None) -> list[PatchBatch]:
    tracker = tracker or ObjectTracker()
    tracker.setup(OperatorContext())
    return [tracker.process(b) for b in batches]


def _ids(batches: list[PatchBatch]) -> dict[tuple[int, tuple[float, ...]], int | None]:
    """``(frame_no, box) -> track_id`` of every tracked-label box."""
    return {(int(b.frame_no[i]), tuple(b.bboxes[i].tolist())): b.extra["track_id"][i]
            for b in batches for i in range(len(b)) if b.labels[i] in ObjectTracker().labels}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_tracks_follow_the_walkers_and_the_van(detections):
    tracked = _track(detections)
    frames_of: dict[int, list[int]] = defaultdict(list)
    groups: dict[int, set[str]] = defaultdict(set)
    van_ids = set()
    for b, before in zip(tracked, detections):
        assert len(b) == len(before)  # every row passes, tracked or not
        for i, tid in enumerate(b.extra["track_id"]):
            if tid is None:
                continue
            frames_of[tid].append(int(b.frame_no[i]))
            groups[tid].add("vehicle" if b.labels[i] in VEHICLES else b.labels[i])
            if _iou(b.bboxes[i], VAN) > 0.5:
                van_ids.add(tid)
    assert all(len(g) == 1 for g in groups.values()), groups  # people and vehicles never share a track
    for tid, frames in frames_of.items():
        assert len(frames) == len(set(frames)), tid  # one box per track and frame
    long_walkers = [t for t, f in frames_of.items() if groups[t] == {"person"} and max(f) - min(f) >= 40]
    assert len(long_walkers) >= 3, {t: (min(f), max(f)) for t, f in frames_of.items()}
    assert len(van_ids) == 1 and len(frames_of[van_ids.pop()]) >= FRAMES * 0.9  # parked: one track throughout


def test_untracked_labels_and_whole_frames_get_no_track_id(detections):
    tracker = ObjectTracker(labels=["person"])
    out = _track(detections, tracker)
    for b in out:
        for label, tid in zip(b.labels, b.extra["track_id"]):
            assert label == "person" or tid is None


def _boxes(batches: list[PatchBatch]) -> list[Box]:
    return [Box(int(b.frame_no[i]), tid, tuple(b.bboxes[i].tolist()), LABEL_GROUPS[b.labels[i]])
            for b in batches for i, tid in enumerate(b.extra["track_id"]) if tid is not None]


def _hide(batches: list[PatchBatch], boxes: dict[int, np.ndarray]) -> list[PatchBatch]:
    """The batches without any box overlapping ``boxes[frame_no]``: an occluded object."""
    return [b.take(np.array([int(b.frame_no[i]) not in boxes or _iou(b.bboxes[i], boxes[int(b.frame_no[i])]) < 0.3
                             for i in range(len(b))], bool)) for b in batches]


@pytest.mark.parametrize("method", ["cbiou", "bytetrack"])
def test_a_walker_hidden_for_3_5_s_comes_back_with_the_same_id(detections, method):
    """A walker's boxes removed for 35 frames (longer than the tracker keeps a lost track):
    the tracker re-links the new track by place, speed and colours to the old id; with
    re-linking off the walker comes back under a new id."""
    first = _track(detections, ObjectTracker(method=method))
    tracked = _ids(first)
    frames_of: dict[int, list[int]] = defaultdict(list)
    for box in _boxes(first):
        if box.group == "person":
            frames_of[box.ident].append(box.frame)
    walker = max((t for t, fs in frames_of.items() if min(fs) <= 10 and max(fs) >= 70),
                 key=lambda t: len(frames_of[t]))
    gap = range(25, 60)
    hidden = _hide(detections, {k[0]: np.array(k[1]) for k, tid in tracked.items() if tid == walker and k[0] in gap})
    after = [k for k, tid in tracked.items() if tid == walker and k[0] >= 62]
    assert len(after) >= 10
    relinked = _ids(_track(hidden, ObjectTracker(method=method)))
    assert sum(relinked[k] == walker for k in after) >= 0.9 * len(after)
    unlinked = _ids(_track(hidden, ObjectTracker(method=method, relink_seconds=0)))
    assert walker not in {unlinked[k] for k in after}


def test_a_walker_who_left_the_view_is_not_re_linked_to_one_who_walks_in(vtest_path, tmp_path):
    """The left 480 columns of vtest.avi: labelled person 1 walks out at the right edge at
    17.3 s and person 34, in similar colours, walks in there 3.2 s later. A track that ended at
    the edge left the view, so person 34 gets an id of their own (without the edge rule they
    took person 1's)."""
    view = crop_views(vtest_path, tmp_path, {"left": (0, 480)}, 220)["left"]
    detector = NanoDetDetector(score_threshold=0.45)
    detector.setup(OperatorContext())
    source = VideoFileSource(path=str(view), start=15.0, camera="left")
    source.open()
    tracked = _track([detector.process(frames) for frames in source.read(BATCH)], ObjectTracker(labels=["person"]))
    source.close()
    who = identity_of(_boxes(tracked), [b for b in load_mot(GT) if b.frame >= 150], range(150, 220))
    ids_of: dict[int, set[int]] = defaultdict(set)
    for (_, tid), pid in who.items():
        ids_of[pid].add(tid)
    assert ids_of[1] and ids_of[34]
    assert not ids_of[1] & ids_of[34], dict(ids_of)


def test_a_late_batch_takes_the_ids_of_the_tracks_it_overlaps(detections):
    """Frames 32-39 arrive after frames 40-47: each late box should carry the id that the same
    labelled person has in the frames processed around it (31 and 40)."""
    late = 4
    order = [*detections[:late], detections[late + 1], detections[late], *detections[late + 2:]]
    shuffled = _boxes(_track(order))
    truth = load_mot(GT)
    who = identity_of(shuffled, truth, range(FRAMES))
    around: dict[int, set[int]] = defaultdict(set)  # truth id -> predicted ids in frames 31 and 40
    for (frame, pid), tid in who.items():
        if frame in (31, 40):
            around[tid].add(pid)
    late_frames = set(detections[late].frame_no.tolist())
    keys = [(f, pid, tid) for (f, pid), tid in who.items() if f in late_frames and around[tid]]
    assert len(keys) >= 30
    agree = sum(pid in around[tid] for _, pid, tid in keys)
    assert agree / len(keys) >= 0.8, (agree, len(keys))
    late_boxes = sum(1 for b in detections[late].labels if b == "person")
    assert len([k for k in keys]) >= 0.6 * late_boxes  # most late boxes got an id at all


def _ingest(data: Path, batches: list[PatchBatch], tracker: ObjectTracker) -> list[PatchBatch]:
    featurizer = ColorHistogram(bins=4, grid=1)
    featurizer.setup(OperatorContext())
    tracker.setup(OperatorContext())
    sink = StoreSink(data=str(data), featurizer=featurizer.spec(), shards=1)
    sink.open()
    out = []
    for b in batches:
        tracked = tracker.process(b)
        sink.write(featurizer.process(tracked))
        out.append(tracked)
    sink.close()
    return out


def test_a_restarted_tracker_keeps_the_ids_of_objects_still_in_view(detections, tmp_path):
    uninterrupted = _ids(_track(detections))
    half = len(detections) // 2
    first = _ingest(tmp_path / "d", detections[:half], ObjectTracker())
    restarted = _ids(_track(detections[half:], ObjectTracker().with_state(str(tmp_path / "d"))))
    fresh = _ids(_track(detections[half:]))
    keys = [k for k, tid in uninterrupted.items() if k in restarted and tid is not None]
    same = sum(restarted[k] == uninterrupted[k] for k in keys) / len(keys)
    assert same >= 0.85, same
    assert sum(fresh[k] == uninterrupted[k] for k in keys) / len(keys) < 0.5  # without the store: new ids
    stored_max = max(t for b in first for t in b.extra["track_id"] if t is not None)
    new = {t for t in restarted.values() if t is not None} - {t for b in first for t in b.extra["track_id"]}
    assert all(t > stored_max for t in new)


def test_the_store_keeps_each_track_with_its_boxes_and_mean_vector(detections, tmp_path):
    data = tmp_path / "d"
    tracked = _ingest(data, detections, ObjectTracker())
    boxes_of: dict[int, int] = defaultdict(int)
    for b in tracked:
        for tid in b.extra["track_id"]:
            if tid is not None:
                boxes_of[tid] += 1
    with LineageStore(data / "lineage", read_only=True) as store:
        docs = {d["track_id"]: d for d in stored_tracks.tracks(store, "cam")}
        assert {t: d["boxes"] for t, d in docs.items()} == dict(boxes_of)
        tid = max(boxes_of, key=boxes_of.__getitem__)
        members = stored_tracks.track_box_ids(store, "cam", tid)
        assert len(members) == boxes_of[tid] and [t for t, _ in members] == sorted(t for t, _ in members)
        for _, det in members[:5]:
            assert store.patch(det)["track_id"] == tid and store.patch(det)["model"].startswith("nanodet")
        mean = stored_tracks.mean_vector(store, "cam", tid)
        assert mean is not None and abs(float(np.linalg.norm(mean)) - 1.0) < 1e-5
        assert docs[tid]["patch_id"] == stored_tracks.track_patch_id("cam", tid)
        assert stored_tracks.last_track_id(store, "cam") == max(boxes_of)
        assert stored_tracks.last_track_id(store, "other") == 0
    with streamvision.connect(data) as sv:
        doc = sv.answer("sql", sql="SELECT count(DISTINCT track_id) AS n FROM patches WHERE label = 'person'")
        people = {t for b in tracked for label, t in zip(b.labels, b.extra["track_id"]) if label == "person" and t}
        assert doc["rows"] == [[len(people)]]


def test_a_replayed_batch_counts_its_boxes_once(detections, tmp_path):
    data = tmp_path / "d"
    tracker = ObjectTracker()
    tracked = _ingest(data, detections[:3], tracker)
    featurizer = ColorHistogram(bins=4, grid=1)
    featurizer.setup(OperatorContext())
    with LineageStore(data / "lineage") as store:
        before = {d["track_id"]: d["boxes"] for d in stored_tracks.tracks(store)}
        store.write_patches(featurizer.process(tracked[-1]))
        assert {d["track_id"]: d["boxes"] for d in stored_tracks.tracks(store)} == before


def test_the_plan_runs_one_tracker_and_gives_it_the_sink_store(tmp_path, vtest_path):
    flow = Dataflow("t")
    with pytest.raises(ConfigError, match="one actor"):
        flow.source(VideoFileSource(path=str(vtest_path))).then(ObjectTracker(), replicas=2)
    flow = Dataflow("t")
    (flow.source(VideoFileSource(path=str(vtest_path))).then(NanoDetDetector(), replicas=2)
         .then(ObjectTracker()).then(ColorHistogram()).sink(StoreSink(data=str(tmp_path / "d"))))
    planned = optimize(flow)
    trackers = [op for n in planned.nodes for op in getattr(n.component, "operators", [n.component])
                if isinstance(op, ObjectTracker)]
    assert [t.state for t in trackers] == [str(tmp_path / "d")]


@pytest.mark.parametrize("options, message", [
    ({"labels": []}, "labels"), ({"lost_seconds": 0}, "lost_seconds"), ({"high_score": 1.5}, "high_score"),
    ({"min_frames": 0}, "min_frames"), ({"method": "deepsort"}, "method"), ({"relink_seconds": -1}, "relink_seconds"),
    ({"relink_similarity": 2}, "relink_similarity"), ({"appearance": -1}, "appearance"),
])
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        ObjectTracker(**options)


def test_class_agnostic_tracking_follows_boxes_whatever_their_label(detections):
    """``by_class=False`` (match-then-filter): every label is matched in one lane, and the parked
    van still keeps one track, whatever label the detector gives it frame by frame."""
    tracked = _track(detections, ObjectTracker(labels=sorted({l for b in detections for l in b.labels}), by_class=False))
    van_labels: dict[int, set[str]] = defaultdict(set)
    for b in tracked:
        for i, tid in enumerate(b.extra["track_id"]):
            if tid is not None and _iou(b.bboxes[i], VAN) > 0.5:
                van_labels[tid].add(b.labels[i])
    assert len(van_labels) == 1
    by_class = _track(detections)
    split = {t for b in by_class for i, t in enumerate(b.extra["track_id"]) if t is not None and _iou(b.bboxes[i], VAN) > 0.5}
    assert len(split) == 1  # vehicles are one class group: the van is one track there too
