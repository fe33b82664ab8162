"""Greedy non-maximum suppression, per class, in numpy (no torchvision here).

>>> import numpy as np
>>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
>>> nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int64), 0.5).tolist()
[0, 2]
"""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``x0, y0, x1, y1`` boxes, ``(len(a), len(b))``."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Indices of the boxes kept, best score first; boxes of different classes never suppress each other."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    # offset each class far apart so that one IoU matrix handles every class
    shifted = boxes[order] + (classes[order].astype(np.float32) * (float(boxes.max()) + 1.0))[:, None]
    overlap = iou_matrix(shifted, shifted)
    suppressed = np.zeros(len(order), bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        if max_keep is not None and len(keep) >= max_keep:
            break
        suppressed |= overlap[i] > iou_threshold
    return np.asarray(keep, np.int64)
