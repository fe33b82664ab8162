"""Appearance-ranked C-BIoU on the labelled people of vtest.avi (``tests/data/vtest_gt``).

What is checked could fail: clothing colours could rank the wrong box first and swap more
people than boxes alone do; with the appearance exponent at 0 the tracker could drift from the
library's own C-BIoU; a box across two walkers could be counted as a third person.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.sources.video_file import VideoFileSource
from operators.tracking.evaluation import Box, distinct_objects, load_mot, mot_metrics
from operators.tracking.tracker import ObjectTracker, _uncovered
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch

GT = Path(__file__).resolve().parents[1] / "data" / "vtest_gt" / "gt.txt"
FRAMES = 240
#: The person threshold calibrated on the labels (benchmarks/tracking.py).
PERSON = 0.45


@pytest.fixture(scope="module")
def people(vtest_path) -> list[PatchBatch]:
    """NanoDet-m person detections of the 240 labelled frames, in batches of 8 frames."""
    detector = NanoDetDetector(score_threshold=PERSON)
    detector.setup(OperatorContext(num_threads=2))
    source = VideoFileSource(path=str(vtest_path), end=FRAMES / 10.0, camera="cam")
    source.open()
    batches = [detector.process(frames) for frames in source.read(8)]
    source.close()
    return [b.take(np.array([label == "person" for label in b.labels], bool)) for b in batches]


@pytest.fixture(scope="module")
def truth() -> list[Box]:
    return [b for b in load_mot(GT) if b.frame < FRAMES and b.group == "person"]


def _tracked_boxes(batches: list[PatchBatch], **options) -> list[Box]:
    tracker = ObjectTracker(labels=["person"], **options)
    tracker.setup(OperatorContext())
    out = [tracker.process(b) for b in batches]
    return [Box(int(b.frame_no[i]), tid, tuple(b.bboxes[i].tolist()), "person")
            for b in out for i, tid in enumerate(b.extra["track_id"]) if tid is not None]


def test_clothing_colours_keep_crossing_people_apart(people, truth):
    """The 11 labelled people walk in groups of two and three: ranked by colours, C-BIoU swaps
    fewer of their identities and keeps each on fewer ids than by boxes alone."""
    frames = range(FRAMES)
    ranked = mot_metrics(_tracked_boxes(people), truth, frames)
    boxes_only = mot_metrics(_tracked_boxes(people, appearance=0.0), truth, frames)
    assert ranked["id_switches"] < boxes_only["id_switches"], (ranked, boxes_only)
    assert ranked["idf1"] > boxes_only["idf1"] + 0.03, (ranked, boxes_only)
    counted = distinct_objects(_tracked_boxes(people), truth, "person", frames)
    assert counted["recall"] == 1.0
    assert counted["predicted"] <= distinct_objects(_tracked_boxes(people, appearance=0.0), truth, "person",
                                                    frames)["predicted"]


def test_without_appearance_it_is_the_library_c_biou(people):
    """Exponent 0: every association is the library's own, so frame by frame the ids are those
    of ``trackers.CBIoUTracker`` run on the same boxes (the signatures are passed, and ignored)."""
    import supervision as sv
    from trackers import CBIoUTracker

    from operators.tracking.appearance import signature
    from operators.tracking.association import appearance_cbiou

    options = dict(lost_track_buffer=60, frame_rate=10.0, track_activation_threshold=0.4,
                   high_conf_det_threshold=0.5, buffer_ratio_first=0.5, buffer_ratio_second=0.7)
    library, ranked = CBIoUTracker(**options), appearance_cbiou()(power=0.0, **options)
    frames = 0
    for batch in people:
        for f in sorted(set(batch.frame_no.tolist())):
            rows = np.flatnonzero(batch.frame_no == f)
            boxes, scores = batch.bboxes[rows].astype(np.float64), batch.scores[rows].astype(np.float64)
            looks = np.stack([signature(batch.crops[r]) for r in rows])
            a = library.update(sv.Detections(xyxy=boxes, confidence=scores), timestamp=f / 10.0)
            b = ranked.update(sv.Detections(xyxy=boxes, confidence=scores, data={"look": looks}), timestamp=f / 10.0)
            assert a.tracker_id.tolist() == b.tracker_id.tolist() and np.array_equal(a.xyxy, b.xyxy), f
            frames += 1
    assert frames >= FRAMES - 1 and library.tracks


def test_a_box_inside_the_boxes_of_tracked_people_is_not_uncovered():
    walkers = np.array([[100, 100, 130, 180], [125, 100, 160, 180]], np.float64)
    assert _uncovered(np.array([110, 110, 150, 170.0]), walkers) == 0.0
    assert _uncovered(np.array([300, 100, 330, 180.0]), walkers) == 1.0
    assert _uncovered(np.array([300, 100, 330, 180.0]), np.zeros((0, 4))) == 1.0
    assert 0.4 <= _uncovered(np.array([145, 100, 175, 180.0]), walkers) <= 0.6


def test_mot_metrics_without_motmetrics_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "motmetrics", None)  # as in an install without the bench extra
    with pytest.raises(ConfigError, match=r"streamvision\[bench\]"):
        mot_metrics([], [], [0])
