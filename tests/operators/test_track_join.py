"""Cross-camera identity on two real, overlapping views: crops of vtest.avi sharing a strip.

Left view: columns 0-479; right view: columns 288-767. The labelled ground truth
(tests/data/vtest_gt), shifted by each view's offset, says which tracks of the two views are
one person; the join of tracks by mean appearance (colour histograms here) is checked
against it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

import streamvision
from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.color_histogram import ColorHistogram
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from operators.tracking.evaluation import Box, identity_of, load_mot
from operators.tracking.tracker import ObjectTracker
from operators.tracking.views import crop_views
from streamvision.core.errors import InputError

GT = Path(__file__).resolve().parents[1] / "data" / "vtest_gt" / "gt.txt"
FRAMES = 120
VIEWS = {"left": (0, 480), "right": (288, 768)}


@pytest.fixture(scope="module")
def two_views(tmp_path_factory, vtest_path):
    """The two views ingested into one collection; ``(data, truth id of each (camera, track))``."""
    root = tmp_path_factory.mktemp("views")
    paths = crop_views(vtest_path, root / "views", VIEWS, FRAMES)
    detector = NanoDetDetector(score_threshold=0.3)
    featurizer = ColorHistogram(bins=8, grid=2)
    for op in (detector, featurizer):
        op.setup(OperatorContext())
    sink = StoreSink(data=str(root / "d"), featurizer=featurizer.spec(), shards=1)
    sink.open()
    truth = [b for b in load_mot(GT) if b.frame < FRAMES]
    identity: dict[tuple[str, int], int] = {}
    for camera, path in paths.items():
        tracker = ObjectTracker(labels=["person"])
        tracker.setup(OperatorContext())
        source = VideoFileSource(path=str(path), camera=camera)
        source.open()
        boxes = []
        for frames in source.read(8):
            tracked = tracker.process(detector.process(frames))
            sink.write(featurizer.process(tracked))
            x0 = VIEWS[camera][0]
            boxes += [Box(int(tracked.frame_no[i]), tid, (b[0] + x0, b[1], b[2] + x0, b[3]), "person")
                      for i, (tid, b) in enumerate(zip(tracked.extra["track_id"], tracked.bboxes)) if tid is not None]
        source.close()
        votes: dict[int, Counter] = defaultdict(Counter)
        for (_, pid), tid in identity_of(boxes, truth, range(FRAMES)).items():
            votes[pid][tid] += 1
        identity.update({(camera, pid): c.most_common(1)[0][0] for pid, c in votes.items()})
    sink.close()
    return root / "d", identity


def test_the_join_pairs_tracks_that_are_one_person(two_views):
    data, identity = two_views
    in_both = {t for (c, _), t in identity.items() if c == "left"} & {t for (c, _), t in identity.items() if c == "right"}
    assert len(in_both) >= 3  # people walk through the shared strip
    with streamvision.connect(data) as sv:
        pairs = sv.track_join("left", "right", t=0.9, window=2.0)
        assert pairs and all(p["a"]["camera"] == "left" and p["b"]["camera"] == "right" for p in pairs)
        assert [p["score"] for p in pairs] == sorted((p["score"] for p in pairs), reverse=True)
        assert len({p["a"]["track_id"] for p in pairs}) == len(pairs) == len({p["b"]["track_id"] for p in pairs})
        same = [identity.get(("left", p["a"]["track_id"])) == identity.get(("right", p["b"]["track_id"])) is not None
                for p in pairs]
        assert sum(same) / len(pairs) >= 0.7, same  # colour histograms: the weak, model-free featurizer
        found = {identity[("left", p["a"]["track_id"])] for p, ok in zip(pairs, same) if ok}
        assert len(found & in_both) / len(in_both) >= 0.75
        loose = sv.track_join("left", "right", t=0.0, window=2.0)
        assert len(loose) > len(pairs)  # the threshold is what keeps strangers apart


def test_tracks_and_one_track_with_its_boxes(two_views):
    data, _ = two_views
    with streamvision.connect(data) as sv:
        left = sv.tracks(where={"camera": "left"})
        assert left and all(t["camera"] == "left" and t["label"] == "person" for t in left)
        longest = max(left, key=lambda t: t["boxes"])
        doc = sv.track("left", longest["track_id"])
        assert doc["track"] == longest and len(doc["boxes"]) == longest["boxes"]
        assert all(b["label"] == "person" for b in doc["boxes"])
        assert sv.lineage(doc["boxes"][0]["patch_id"])[-1]["camera"] == "left"
        late = sv.tracks(where={"camera": "left", "start": longest["last_ts"] + 0.01})
        assert longest["track_id"] not in {t["track_id"] for t in late}
        with pytest.raises(InputError, match="no track"):
            sv.track("left", 10_000)
        with pytest.raises(InputError, match="two different cameras"):
            sv.track_join("left", "left")
