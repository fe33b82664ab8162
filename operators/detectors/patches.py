"""Turn per-frame detections into a :class:`PatchBatch` of crops with lineage to their frames."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import patch_id
from streamvision.core.patches import PatchBatch

#: Operator name of whole-frame patches (shared with ``WholeFramePatches`` so ids agree).
WHOLE_FRAME = "whole_frame"


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of ``box`` (x0 y0 x1 y1, frame pixels) as a contiguous copy, at least 1x1."""
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(box[0]), 0, w - 1))
    y0 = int(np.clip(np.floor(box[1]), 0, h - 1))
    x1 = int(np.clip(np.ceil(box[2]), x0 + 1, w))
    y1 = int(np.clip(np.ceil(box[3]), y0 + 1, h))
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def detections_to_patches(
    batch: FrameBatch,
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    *,
    operator: str,
    whole_frames: bool = False,
) -> PatchBatch:
    """One pixel patch per detection (crop, bbox, label, score, ``operator`` as model).

    Patch ids are ``patch_id(frame_key, operator, index_in_frame)``, parents the frames
    (``parent_ids == 0``). With ``whole_frames`` every frame also yields a whole-frame patch
    (label ``""``, score 1, model ``"whole_frame"``) first. ``batch.meta`` is kept.
    """
    frame_rows: list[int] = []
    ids: list[int] = []
    out_boxes: list[np.ndarray] = []
    out_scores: list[float] = []
    out_labels: list[str] = []
    models: list[str] = []
    crops: list[np.ndarray] = []
    h, w = batch.size
    for i, key in enumerate(batch.keys):
        if whole_frames:
            frame_rows.append(i)
            ids.append(patch_id(key, WHOLE_FRAME, 0))
            out_boxes.append(np.array([0, 0, w, h], np.float32))
            out_scores.append(1.0)
            out_labels.append("")
            models.append(WHOLE_FRAME)
            crops.append(batch.images[i])
        for j, (box, score, label) in enumerate(zip(boxes[i], scores[i], labels[i])):
            frame_rows.append(i)
            ids.append(patch_id(key, operator, j))
            out_boxes.append(np.asarray(box, np.float32))
            out_scores.append(float(score))
            out_labels.append(label)
            models.append(operator)
            crops.append(crop(batch.images[i], box))
    if not ids:
        return PatchBatch.empty(batch.meta)
    rows = np.asarray(frame_rows, np.int64)
    return PatchBatch(
        ids=np.asarray(ids, np.int64),
        parent_ids=np.zeros(len(ids), np.int64),
        frame_keys=[batch.keys[r] for r in frame_rows],
        cameras=[batch.cameras[r] for r in frame_rows],
        frame_no=batch.frame_no[rows],
        pts=batch.pts[rows],
        wall_time=batch.wall_time[rows],
        bboxes=np.stack(out_boxes).astype(np.float32),
        labels=out_labels,
        scores=np.asarray(out_scores, np.float32),
        models=models,
        crops=crops,
        meta=batch.meta,
    )
