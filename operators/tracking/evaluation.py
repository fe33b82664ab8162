"""Detections and tracks against labelled ground truth (MOT Challenge ``gt.txt``).

Boxes are ``x0, y0, x1, y1`` in frame pixels, frames numbered from 0 (``gt.txt`` counts from
1). Class ids follow the MOT files of this project (``tests/data/vtest_gt/README.md``): 1
person, 2 bicycle, 3 car, 4 motorcycle, 5 van, 6 truck, 7 bus; :data:`GROUPS` folds them and
the detector's COCO labels into the two groups that are counted, ``person`` and ``vehicle``.

>>> load_mot  # doctest: +ELLIPSIS
<function load_mot at ...>
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy.optimize import linear_sum_assignment

from operators.models.nms import iou_matrix
from streamvision.core.errors import ConfigError

#: MOT class id -> counted group.
GT_GROUPS = {1: "person", 2: "vehicle", 3: "vehicle", 4: "vehicle", 5: "vehicle", 6: "vehicle", 7: "vehicle"}
#: Detector (COCO) label -> counted group.
LABEL_GROUPS = {"person": "person", **{x: "vehicle" for x in ("bicycle", "car", "motorcycle", "bus", "truck")}}


@dataclass(frozen=True)
class Box:
    """One labelled or predicted box of one frame."""

    frame: int
    ident: int
    xyxy: tuple[float, float, float, float]
    group: str
    score: float = 1.0


def load_mot(path: str | Path) -> list[Box]:
    """The boxes of a MOT ``gt.txt`` (``frame, id, x, y, w, h, conf, class, visibility``)."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    return [Box(int(r[0]) - 1, int(r[1]), (r[2], r[3], r[2] + r[4], r[3] + r[5]), GT_GROUPS.get(int(r[7]), "other"))
            for r in rows]


def by_frame(boxes: Iterable[Box]) -> dict[int, list[Box]]:
    """Boxes grouped by frame."""
    out: dict[int, list[Box]] = defaultdict(list)
    for box in boxes:
        out[box.frame].append(box)
    return out


def match_frame(pred: list[Box], truth: list[Box], threshold: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matches ``(pred index, truth index)`` of one frame and group at IoU >= threshold."""
    if not pred or not truth:
        return []
    overlap = iou_matrix(np.array([p.xyxy for p in pred]), np.array([t.xyxy for t in truth]))
    rows, cols = linear_sum_assignment(-overlap)
    return [(r, c) for r, c in zip(rows, cols) if overlap[r, c] >= threshold]


def precision_recall(pred: Iterable[Box], truth: Iterable[Box], group: str, frames: Iterable[int]
                     ) -> tuple[float, float]:
    """Box precision and recall of one group over ``frames`` at IoU 0.5."""
    p, t = by_frame(b for b in pred if b.group == group), by_frame(b for b in truth if b.group == group)
    hits = n_pred = n_truth = 0
    for f in frames:
        hits += len(match_frame(p.get(f, []), t.get(f, [])))
        n_pred += len(p.get(f, []))
        n_truth += len(t.get(f, []))
    return (hits / n_pred if n_pred else 1.0), (hits / n_truth if n_truth else 1.0)


def identity_of(pred: Iterable[Box], truth: Iterable[Box], frames: Iterable[int]) -> dict[tuple[int, int], int]:
    """``(frame, predicted id) -> truth id`` of every predicted box matched at IoU 0.5 (same group)."""
    p, t = by_frame(pred), by_frame(truth)
    out = {}
    for f in frames:
        for group in {b.group for b in p.get(f, [])}:
            mine = [b for b in p.get(f, []) if b.group == group]
            theirs = [b for b in t.get(f, []) if b.group == group]
            for r, c in match_frame(mine, theirs):
                out[(f, mine[r].ident)] = theirs[c].ident
    return out


def mot_metrics(pred: Iterable[Box], truth: Iterable[Box], frames: Iterable[int]) -> dict[str, float]:
    """MOTA, IDF1 and id switches (``motmetrics``), boxes matched at IoU 0.5 within each group.

    Raises:
        ConfigError: ``motmetrics`` is not installed (``pip install "streamvision[bench]"``).
    """
    try:
        import motmetrics as mm
    except ImportError as exc:
        raise ConfigError('MOTA / IDF1 need motmetrics: pip install "streamvision[bench]"') from exc

    acc = mm.MOTAccumulator(auto_id=True)
    p, t = by_frame(pred), by_frame(truth)
    for f in frames:
        mine, theirs = p.get(f, []), t.get(f, [])
        dist = np.full((len(theirs), len(mine)), np.nan)
        if mine and theirs:
            overlap = iou_matrix(np.array([b.xyxy for b in theirs]), np.array([b.xyxy for b in mine]))
            same = np.array([[a.group == b.group for b in mine] for a in theirs])
            dist = np.where((overlap >= 0.5) & same, 1.0 - overlap, np.nan)
        acc.update([b.ident for b in theirs], [b.ident for b in mine], dist)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="all")
    return {"mota": float(summary["mota"].iloc[0]), "idf1": float(summary["idf1"].iloc[0]),
            "id_switches": int(summary["num_switches"].iloc[0])}


def distinct_objects(pred: Iterable[Box], truth: Iterable[Box], group: str, frames: Iterable[int],
                     min_share: float = 0.5) -> dict[str, float]:
    """Distinct objects of a group (DeepLens q4): predicted ids against labelled identities.

    A predicted id is a true object when at least ``min_share`` of its boxes match one labelled
    identity at IoU 0.5, and that identity was not claimed by a predicted id with more matching
    boxes; a labelled identity is found when some predicted id is its true object.

    Returns:
        ``predicted`` and ``truth`` counts, ``recall``, ``precision`` and ``count_error``
        (``|predicted - truth| / truth``).
    """
    frames = list(frames)
    pred = [b for b in pred if b.group == group]
    truth = [b for b in truth if b.group == group]
    sizes = Counter(b.ident for b in pred)
    votes: dict[int, Counter] = defaultdict(Counter)
    for (_, pid), tid in identity_of(pred, truth, frames).items():
        votes[pid][tid] += 1
    claims = sorted(((c.most_common(1)[0][1], pid, c.most_common(1)[0][0]) for pid, c in votes.items()), reverse=True)
    found: set[int] = set()
    true_ids = 0
    for hits, pid, tid in claims:
        if hits >= min_share * sizes[pid] and tid not in found:
            found.add(tid)
            true_ids += 1
    n_truth = len({b.ident for b in truth})
    n_pred = len(sizes)
    return {"predicted": n_pred, "truth": n_truth, "recall": len(found) / n_truth if n_truth else 1.0,
            "precision": true_ids / n_pred if n_pred else 1.0,
            "count_error": abs(n_pred - n_truth) / n_truth if n_truth else 0.0}
