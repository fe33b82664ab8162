"""Routing patch ids to shards and merging per-shard results (FAISS's ``(D, I)`` contract).

>>> import numpy as np
>>> ids = np.arange(1, 1001)
>>> parts = route(ids, 4)
>>> sorted(set(parts.tolist())) == [0, 1, 2, 3]
True
>>> D, I = merge_topk([(np.array([[0.9, 0.1]]), np.array([[7, 8]])),
...                    (np.array([[0.5, -3.4e38]]), np.array([[9, -1]]))], k=3)
>>> I.tolist()
[[7, 9, 8]]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from operators.index.shard import NO_SCORE, as_ids

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def route(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard number of each id: a splitmix64 hash of the id modulo ``shards``.

    The same id always goes to the same shard, so an upsert replaces in place and a
    restarted shard knows which stored vectors are its own.
    """
    if shards <= 0:
        raise ValueError(f"shards must be positive, got {shards}")
    z = as_ids(ids).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(shards)).astype(np.int64)


def split(ids: np.ndarray, shards: int) -> list[np.ndarray]:
    """Row positions of ``ids`` that belong to each shard."""
    owner = route(ids, shards)
    return [np.flatnonzero(owner == s) for s in range(shards)]


def merge_topk(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k ``(D, I)`` into the global top-k (best score first, ``-1`` pads)."""
    D = np.concatenate([np.asarray(d, np.float32) for d, _ in results], axis=1)
    I = np.concatenate([np.asarray(i, np.int64) for _, i in results], axis=1)
    D = np.where(I < 0, -np.inf, D)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if D.shape[1] < k:  # fewer shards x k than k cannot happen, but keep the contract
        pad = k - D.shape[1]
        D = np.pad(D, ((0, 0), (0, pad)), constant_values=-np.inf)
        I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
    D = np.where(I < 0, NO_SCORE, D).astype(np.float32)
    return D, I


def merge_range(
    results: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], nq: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-shard range results ``(lims, D, I)``; each query's hits sorted best first."""
    qs, Ds, Is = [], [], []
    for lims, D, I in results:
        counts = np.diff(np.asarray(lims, np.int64))
        qs.append(np.repeat(np.arange(nq), counts))
        Ds.append(np.asarray(D, np.float32))
        Is.append(np.asarray(I, np.int64))
    q = np.concatenate(qs) if qs else np.zeros(0, np.int64)
    D = np.concatenate(Ds) if Ds else np.zeros(0, np.float32)
    I = np.concatenate(Is) if Is else np.zeros(0, np.int64)
    order = np.lexsort((I, -D, q))
    lims = np.concatenate([[0], np.cumsum(np.bincount(q, minlength=nq))]).astype(np.int64)
    return lims, D[order], I[order]
