"""A cheap appearance signature of a detection crop, for re-linking a track that broke.

An IoU tracker loses a person who is hidden for a second or two and starts a new track when
they come back; what tells the two tracks apart from two people is mostly clothing colour.
The signature is a hue x saturation histogram of the upper and lower halves of the box's
centre (the torso and the legs, without the background at the box's sides), each half
normalized to sum to 1. Two signatures are compared by the Bhattacharyya coefficient (1 for
the same colours, 0 for disjoint ones).

>>> import numpy as np
>>> red = np.zeros((40, 20, 3), np.uint8); red[..., 0] = 200
>>> blue = np.zeros((40, 20, 3), np.uint8); blue[..., 2] = 200
>>> round(similarity(signature(red), signature(red)), 3), round(similarity(signature(red), signature(blue)), 3)
(1.0, 0.0)
"""

from __future__ import annotations

import cv2
import numpy as np

#: Histogram bins: hue, saturation.
BINS = (12, 4)
#: Pixels of brightness below this carry no reliable hue; they fill a bin of their own.
DARK = 40


def signature(crop: np.ndarray) -> np.ndarray:
    """The float32 signature of an ``(h, w, 3)`` uint8 RGB crop (two halves, each sums to 1)."""
    h, w = crop.shape[:2]
    centre = crop[:, w // 6: w - w // 6] if w >= 6 else crop
    hsv = cv2.cvtColor(np.ascontiguousarray(centre), cv2.COLOR_RGB2HSV)
    halves = (hsv[: max(1, h // 2)], hsv[h // 2:] if h > 1 else hsv)
    out = []
    for half in halves:
        px = half.reshape(-1, 3)
        dark = px[:, 2] < DARK
        hist = np.zeros(BINS[0] * BINS[1] + 1, np.float32)
        if len(px):
            hue = px[~dark, 0].astype(np.int64) * BINS[0] // 180
            sat = px[~dark, 1].astype(np.int64) * BINS[1] // 256
            np.add.at(hist, hue * BINS[1] + sat, 1.0)
            hist[-1] = dark.sum()
        total = hist.sum()
        out.append(hist / total if total else hist)
    return np.concatenate(out)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya coefficient of two signatures, averaged over the two halves (0..1)."""
    return float(np.sqrt(a * b).sum() / 2.0)


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`similarity` of every row of ``a`` (``(m, s)``) with every row of ``b`` (``(n, s)``): ``(m, n)``."""
    return np.sqrt(np.maximum(a, 0.0)) @ np.sqrt(np.maximum(b, 0.0)).T / 2.0
