"""Resize variable-size crops to one square input, stacked for a batched model."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def stack_resized(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``(n, size, size, 3)`` uint8: each crop stretched to ``size`` (area filter when shrinking)."""
    out = np.empty((len(crops), size, size, 3), np.uint8)
    for i, crop in enumerate(crops):
        shrink = crop.shape[0] > size or crop.shape[1] > size
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out
