"""Integrity of the hand-checked vtest.avi ground truth (tests/data/vtest_gt/gt.txt, MOT format)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

GT = Path(__file__).resolve().parents[1] / "data" / "vtest_gt" / "gt.txt"
WIDTH, HEIGHT, N_FRAMES = 768, 576, 240
PERSON = 1
VEHICLES = {2, 3, 4, 5, 6, 7}  # bicycle, car, motorcycle, van, truck, bus (README.md there)
MAX_GAP = 10  # most missing frames inside one identity's run


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    """gt.txt as a float array with the nine MOT columns."""
    rows = np.loadtxt(GT, delimiter=",", ndmin=2)
    assert rows.shape[1] == 9, "frame, id, x, y, w, h, conf, class, visibility"
    return rows


def test_no_duplicate_frame_id(gt: np.ndarray) -> None:
    """Each identity has at most one box per frame."""
    keys = {(int(f), int(i)) for f, i in gt[:, :2]}
    assert len(keys) == len(gt)


def test_frames_and_boxes_inside_the_image(gt: np.ndarray) -> None:
    """Frames are 1..240 (1-based) and every box has positive size and lies inside 768x576."""
    frame, x, y, w, h = gt[:, 0], gt[:, 2], gt[:, 3], gt[:, 4], gt[:, 5]
    assert frame.min() >= 1 and frame.max() <= N_FRAMES
    assert (w >= 2).all() and (h >= 2).all()
    assert (x >= 0).all() and (y >= 0).all()
    assert (x + w <= WIDTH + 0.05).all() and (y + h <= HEIGHT + 0.05).all()


def test_conf_and_visibility(gt: np.ndarray) -> None:
    """MOT ground truth: conf is 1 (box counts); visibility in (0, 1], at least 0.3 as labelled."""
    assert (gt[:, 6] == 1).all()
    assert (gt[:, 8] >= 0.3).all() and (gt[:, 8] <= 1).all()


def test_identities_persist(gt: np.ndarray) -> None:
    """Each id keeps one class and its frames form one run with at most short gaps."""
    frames: dict[int, list[int]] = defaultdict(list)
    classes: dict[int, set[int]] = defaultdict(set)
    for f, i, c in gt[:, [0, 1, 7]].astype(int):
        frames[i].append(f)
        classes[i].add(c)
    for i, fs in frames.items():
        assert len(classes[i]) == 1, f"id {i} changes class: {classes[i]}"
        gaps = np.diff(sorted(fs)) - 1
        assert gaps.max(initial=0) <= MAX_GAP, f"id {i} has a gap of {gaps.max()} frames"
        assert len(fs) >= 5, f"id {i} lives {len(fs)} frames: a fragment, not an identity"


def test_coverage_and_classes(gt: np.ndarray) -> None:
    """At least 200 frames carry boxes; people and at least one vehicle class are both present."""
    assert len(np.unique(gt[:, 0])) >= 200
    present = set(np.unique(gt[:, 7]).astype(int))
    assert PERSON in present
    assert present & VEHICLES
    assert present <= {PERSON} | VEHICLES
    people = np.unique(gt[gt[:, 7] == PERSON, 1])
    assert len(people) >= 5


def test_gt_is_what_the_tool_builds(gt: np.ndarray) -> None:
    """gt.txt is exactly ``label_tool.py build`` of the committed proposals and corrections."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("vtest_label_tool", GT.parent / "label_tool.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows = tool.apply_corrections(tool.read_mot(GT.parent / "proposals.txt"),
                                  json.loads((GT.parent / "corrections.json").read_text()))
    built = np.array(sorted((r["frame"], r["id"], *r["box"], r["cls"], r["vis"]) for r in rows))
    np.testing.assert_allclose(built, gt[:, [0, 1, 2, 3, 4, 5, 7, 8]], atol=0.06)  # gt.txt keeps 0.1 px
