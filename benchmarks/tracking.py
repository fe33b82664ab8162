"""Benchmark: detection you can count on, tracking, distinct objects (DeepLens q4), cross-camera identity.

Everything is measured against the hand-checked labels of vtest.avi frames 0-239
(``tests/data/vtest_gt``: 11 people, a parked van and a parked car):

* detector precision / recall at IoU 0.5 for ``person`` and ``vehicle``: at NanoDet-m's default
  threshold and at per-group thresholds calibrated (best F1) on frames 0-119, both scored on the
  held-out frames 120-239;
* detector frames/s per core of the default runtime, measured here on the labelled frames, and of
  every runtime from ``benchmarks/inference.py`` (its JSON, when present);
* MOTA / IDF1 (``motmetrics``) of the tracker over the 240 frames, and its frames/s per core;
  the same and the distinct people for each tracking method, with and without re-linking;
* q4, distinct people, both plans of DeepLens Table 1: filter-then-match (keep the person boxes,
  then track) and match-then-filter (track every box whatever its label, then keep the tracks
  whose majority label is person), with recall and precision of the distinct objects;
* cross-camera identity: two overlapping crops of the video (columns 0-479 and 288-767) as two
  cameras, the join of their tracks by mean EfficientNet-Lite0 vector, precision and recall of
  the pairs against the labels;
* ``pipeline_fps``: the default pipeline (Kafka-free: the video file -> NanoDet-m -> tracker ->
  EfficientNet-Lite0 -> store) on this 2-core machine, best of ``--rounds``, against the 4.07
  frames/s recorded before this work.

    python benchmarks/tracking.py --out DIR [--rounds 2]

Writes ``DIR/tracking.json`` and ``DIR/tracking.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

GT_PATH = Path(__file__).resolve().parents[1] / "tests" / "data" / "vtest_gt" / "gt.txt"
FRAMES = 240
CALIBRATE = range(0, 120)
HELD_OUT = range(120, 240)
#: The default pipeline's frames/s before this work (README, benchmarks/models.py, 240 frames).
BEFORE_PIPELINE_FPS = 4.07
DEEPLENS_Q4 = {"filter_then_match": {"recall": 0.73, "precision": 0.97},
               "match_then_filter": {"recall": 0.82, "precision": 0.98}}
VIEWS = {"left": (0, 480), "right": (288, 768)}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _detect(video: str, end: float | None = None, camera: str = "vtest", threshold: float = 0.2) -> tuple[list, float]:
    """NanoDet-m detections (default runtime, one thread) of a video, and the seconds spent."""
    from operators.base import OperatorContext
    from operators.detectors.nanodet import NanoDetDetector
    from operators.sources.video_file import VideoFileSource

    detector = NanoDetDetector(score_threshold=threshold)
    detector.setup(OperatorContext(num_threads=1))
    source = VideoFileSource(path=video, end=end, camera=camera)
    source.open()
    batches, spent = [], 0.0
    for frames in source.read(8):
        t0 = time.perf_counter()
        batches.append(detector.process(frames))
        spent += time.perf_counter() - t0
    source.close()
    return batches, spent


def _boxes(batches: list, thresholds: dict[str, float] | None = None, ids: bool = False) -> list:
    from operators.tracking.evaluation import LABEL_GROUPS, Box

    out = []
    for b in batches:
        for i, label in enumerate(b.labels):
            group = LABEL_GROUPS.get(label)
            if group is None or (thresholds and b.scores[i] < thresholds[group]):
                continue
            ident = b.extra["track_id"][i] if ids else i
            if ids and ident is None:
                continue
            out.append(Box(int(b.frame_no[i]), int(ident), tuple(float(v) for v in b.bboxes[i]), group,
                           float(b.scores[i])))
    return out


def _calibrate(batches: list, truth: list) -> dict[str, float]:
    """Per-group score threshold with the best F1 on the calibration frames."""
    from operators.tracking.evaluation import precision_recall

    best = {}
    for group in ("person", "vehicle"):
        scored = []
        for t in np.round(np.arange(0.2, 0.81, 0.025), 3):
            p, r = precision_recall(_boxes(batches, {"person": t, "vehicle": t}), truth, group, CALIBRATE)
            scored.append((2 * p * r / (p + r) if p + r else 0.0, -t, float(t)))
        best[group] = max(scored)[2]
    return best


def _take(batches: list, keep) -> list:
    return [b.take(np.array([keep(b, i) for i in range(len(b))], bool)) for b in batches]


def _track(batches: list, **options: Any) -> tuple[list, float]:
    from operators.base import OperatorContext
    from operators.tracking.tracker import ObjectTracker

    tracker = ObjectTracker(**options)
    tracker.setup(OperatorContext())
    t0 = time.perf_counter()
    out = [tracker.process(b) for b in batches]
    return out, time.perf_counter() - t0


def _thresholded(batches: list, thresholds: dict[str, float]) -> list:
    from operators.tracking.evaluation import LABEL_GROUPS

    return _take(batches, lambda b, i: b.labels[i] in LABEL_GROUPS and b.scores[i] >= thresholds[LABEL_GROUPS[b.labels[i]]])


def _q4(batches: list, truth: list, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    from operators.models.coco import COCO80
    from operators.tracking.evaluation import Box, distinct_objects

    frames = range(FRAMES)
    people = _take(batches, lambda b, i: b.labels[i] == "person" and b.scores[i] >= thresholds["person"])
    filtered, _ = _track(people, labels=["person"])
    ftm = distinct_objects(_boxes(filtered, ids=True), truth, "person", frames)
    anything = _take(batches, lambda b, i: b.scores[i] >= thresholds["person"])
    matched, _ = _track(anything, labels=list(COCO80), by_class=False)
    votes: dict[int, Counter] = defaultdict(Counter)
    for b in matched:
        for label, tid in zip(b.labels, b.extra["track_id"]):
            if tid is not None:
                votes[tid][label] += 1
    person_tracks = {t for t, c in votes.items() if c.most_common(1)[0][0] == "person"}
    boxes = [Box(int(b.frame_no[i]), tid, tuple(float(v) for v in b.bboxes[i]), "person")
             for b in matched for i, tid in enumerate(b.extra["track_id"]) if tid in person_tracks]
    mtf = distinct_objects(boxes, truth, "person", frames)
    return {"filter_then_match": ftm, "match_then_filter": mtf}


def _methods(batches: list, truth: list, thresholds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each tracking method with and without re-linking: MOTA / IDF1 of every labelled box, and
    the distinct people of the filter-then-match plan."""
    from operators.tracking.evaluation import distinct_objects, mot_metrics
    from operators.tracking.tracker import METHODS

    kept = _thresholded(batches, thresholds)
    people = _take(batches, lambda b, i: b.labels[i] == "person" and b.scores[i] >= thresholds["person"])
    out = {}
    for method in METHODS:
        for relink in (True, False):
            options = {"method": method} if relink else {"method": method, "relink_seconds": 0}
            tracked, _ = _track(kept, **options)
            counted, _ = _track(people, labels=["person"], **options)
            out[f"{method}{'' if relink else ' (no re-linking)'}"] = {
                **mot_metrics(_boxes(tracked, ids=True), truth, range(FRAMES)),
                "people": distinct_objects(_boxes(counted, ids=True), truth, "person", range(FRAMES))}
    return out


def _cross_camera(video: str, truth: list, thresholds: dict[str, float], work: Path) -> dict[str, Any]:
    """Two overlapping views -> detect, track, EfficientNet-Lite0 -> one store -> track join."""
    import streamvision
    from operators.base import OperatorContext
    from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
    from operators.sinks.store_sink import StoreSink
    from operators.tracking.evaluation import Box, identity_of
    from operators.tracking.views import crop_views

    paths = crop_views(video, work / "views", VIEWS, FRAMES)
    featurizer = EfficientNetLite0Featurizer()
    featurizer.setup(OperatorContext(num_threads=2))
    sink = StoreSink(data=str(work / "views-data"), featurizer=featurizer.spec(), shards=1)
    sink.open()
    identity: dict[tuple[str, int], int] = {}
    for camera, path in paths.items():
        batches, _ = _detect(str(path), camera=camera)
        people = _take(batches, lambda b, i: b.labels[i] == "person" and b.scores[i] >= thresholds["person"])
        tracked, _ = _track(people, labels=["person"])
        x0 = VIEWS[camera][0]
        boxes = []
        for b in tracked:
            sink.write(featurizer.process(b))
            boxes += [Box(int(b.frame_no[i]), tid, (bb[0] + x0, bb[1], bb[2] + x0, bb[3]), "person")
                      for i, (tid, bb) in enumerate(zip(b.extra["track_id"], b.bboxes.tolist())) if tid is not None]
        votes: dict[int, Counter] = defaultdict(Counter)
        for (_, pid), tid in identity_of(boxes, truth, range(FRAMES)).items():
            votes[pid][tid] += 1
        identity.update({(camera, pid): c.most_common(1)[0][0] for pid, c in votes.items()})
    sink.close()
    in_both = ({t for (c, _), t in identity.items() if c == "left"}
               & {t for (c, _), t in identity.items() if c == "right"})
    sweep = []
    with streamvision.connect(work / "views-data") as sv:
        for t in (0.6, 0.7, 0.8, 0.9):
            pairs = sv.track_join("left", "right", t=t, window=2.0)
            right = [identity.get(("left", p["a"]["track_id"])) == identity.get(("right", p["b"]["track_id"])) is not None
                     for p in pairs]
            found = {identity[("left", p["a"]["track_id"])] for p, ok in zip(pairs, right) if ok} & in_both
            sweep.append({"t": t, "pairs": len(pairs), "precision": sum(right) / len(pairs) if pairs else 1.0,
                          "identity_recall": len(found) / len(in_both) if in_both else 1.0})
    return {"people_in_both_views": len(in_both), "window_s": 2.0, "sweep": sweep}


def _pipeline_fps(video: str, rounds: int, work: Path) -> list[float]:
    import streamvision
    from streamvision.plan.pipelines import video_ingest_flow

    fps = []
    for r in range(rounds):
        data = work / f"pipeline-{r}"
        report = streamvision.run(video_ingest_flow(video, data, end=FRAMES / 10.0))
        fps.append(report.fps)
        shutil.rmtree(data, ignore_errors=True)
    return fps


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    ax = axes[0]
    names = ["person P", "person R", "vehicle P", "vehicle R"]
    for offset, (key, label) in enumerate((("detector_default", "default 0.35"), ("detector_calibrated", "calibrated"))):
        values = [doc[key]["person"]["precision"], doc[key]["person"]["recall"],
                  doc[key]["vehicle"]["precision"], doc[key]["vehicle"]["recall"]]
        ax.bar(np.arange(4) + offset * 0.4, values, 0.4, label=label)
    ax.set_xticks(np.arange(4) + 0.2, names)
    ax.set_ylim(0, 1.05)
    ax.set_title("NanoDet-m vs labels, held-out frames 120-239")
    ax.legend()
    ax = axes[1]
    plans = ["filter_then_match", "match_then_filter"]
    for offset, (source, label) in enumerate(((doc["q4"], "StreamVision"), (DEEPLENS_Q4, "DeepLens"))):
        values = [source[p][m] for p in plans for m in ("recall", "precision")]
        ax.bar(np.arange(4) + offset * 0.4, values, 0.4, label=label)
    ax.set_xticks(np.arange(4) + 0.2, ["FtM recall", "FtM precision", "MtF recall", "MtF precision"])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"q4 distinct people; MOTA {doc['mota']:.2f}, IDF1 {doc['idf1']:.2f}")
    ax.legend()
    ax = axes[2]
    runtimes = doc["detector_fps_per_core"]
    ax.bar(list(runtimes), list(runtimes.values()))
    ax.set_ylabel("frames/s per core")
    ax.set_title(f"detector runtimes; pipeline {doc['pipeline_fps']:.2f} fps vs {BEFORE_PIPELINE_FPS} before")
    ax.tick_params(axis="x", rotation=20)
    ax = axes[3]
    methods = doc["tracker_methods"]
    ax.bar(list(methods), [m["people"]["predicted"] for m in methods.values()])
    truth = next(iter(methods.values()))["people"]["truth"]
    ax.axhline(truth, color="black", linestyle="--", label=f"labelled people ({truth})")
    ax.set_ylabel("distinct people counted")
    ax.set_title("tracking methods: distinct people (filter-then-match)")
    ax.tick_params(axis="x", rotation=20)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from operators.assets import vtest_video
    from operators.tracking.evaluation import load_mot, mot_metrics, precision_recall

    _one_thread()
    video = str(vtest_video())
    truth = [b for b in load_mot(GT_PATH) if b.frame < FRAMES]
    work = Path(tempfile.mkdtemp(prefix="sv-tracking-"))
    try:
        batches, spent = _detect(video, end=FRAMES / 10.0)
        thresholds = _calibrate(batches, truth)
        default = {"person": 0.35, "vehicle": 0.35}
        pr = {}
        for key, t in (("detector_default", default), ("detector_calibrated", thresholds)):
            pr[key] = {g: dict(zip(("precision", "recall"), precision_recall(_boxes(batches, t), truth, g, HELD_OUT)))
                       for g in ("person", "vehicle")}
        kept = _thresholded(batches, thresholds)
        tracked, tracker_s = _track(kept)
        mot = mot_metrics(_boxes(tracked, ids=True), truth, range(FRAMES))
        q4 = _q4(batches, truth, thresholds)
        methods = _methods(batches, truth, thresholds)
        inference = Path(__file__).resolve().parent / "results" / "inference.json"
        runtimes = json.loads(inference.read_text())["detector_fps_per_core"] if inference.exists() else {}
        from operators.detectors.nanodet import NanoDetDetector

        default_runtime = NanoDetDetector()
        from operators.base import OperatorContext

        default_runtime.setup(OperatorContext(num_threads=1))
        cross = _cross_camera(video, truth, thresholds, work)
        pipeline = _pipeline_fps(video, args.rounds, work)
        doc = {
            "frames": FRAMES,
            "thresholds_calibrated": thresholds,
            "detector_precision": {g: pr["detector_calibrated"][g]["precision"] for g in ("person", "vehicle")},
            "detector_recall": {g: pr["detector_calibrated"][g]["recall"] for g in ("person", "vehicle")},
            **pr,
            "detector_fps_per_core": {**runtimes, f"{default_runtime.active_runtime} (here, labelled frames)":
                                      FRAMES / spent},
            "detector_runtimes_from": str(inference.relative_to(inference.parents[2])) if runtimes else None,
            **mot,
            "tracker_fps_per_core": FRAMES / tracker_s,
            "distinct_count_error": q4["filter_then_match"]["count_error"],
            "tracker_methods": methods,
            "q4": q4,
            "q4_recall": {p: q4[p]["recall"] for p in q4},
            "q4_precision": {p: q4[p]["precision"] for p in q4},
            "q4_deeplens": DEEPLENS_Q4,
            "cross_camera": cross,
            "pipeline_fps": max(pipeline),
            "pipeline_fps_rounds": pipeline,
            "pipeline_fps_before": BEFORE_PIPELINE_FPS,
            "pipeline_speedup": max(pipeline) / BEFORE_PIPELINE_FPS,
            "loadavg_1min": os.getloadavg()[0],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking.json").write_text(json.dumps(doc, indent=2) + "\n")
    _plot(doc, args.out / "tracking.png")
    print(json.dumps({k: doc[k] for k in ("detector_precision", "detector_recall", "mota", "idf1",
                                          "distinct_count_error", "q4_recall", "q4_precision", "pipeline_fps")}, indent=2))


if __name__ == "__main__":
    main()
