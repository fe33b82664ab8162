"""Top-k of score rows without sorting them: the selection every shard scan ends with."""

from __future__ import annotations

import numpy as np


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and values of the ``k`` largest of each row, best first (``k <= columns``).

    The ``k``-th largest value of a sample of the columns bounds each row's ``k``-th largest
    from below, so only the columns at or above it are sorted (a few ``k`` per row, not all).
    """
    n = scores.shape[1]
    if n <= 64 * k:
        top = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    else:
        sample = scores[:, :: 16]
        bound = np.partition(sample, sample.shape[1] - k, axis=1)[:, sample.shape[1] - k]
        top = np.empty((len(scores), k), np.int64)
        for row, (values, least) in enumerate(zip(scores, bound)):
            cand = np.flatnonzero(values >= least)
            top[row] = cand[np.argpartition(values[cand], len(cand) - k)[len(cand) - k:]]
    values = np.take_along_axis(scores, top, 1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(top, order, 1), np.take_along_axis(values, order, 1)
