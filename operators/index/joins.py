"""Similarity joins: every pair with inner product > ``t``, by index and by nested loop.

* :func:`index_join` / :func:`self_join` are exact and fast: the right side is split into
  k-means cells (FAISS ``Kmeans``), each with a centroid ``c`` and radius ``R`` (the largest
  distance of a member from ``c``). By Cauchy-Schwarz ``a.b <= a.c + |a| R`` for every
  member ``b`` of the cell, so a cell whose bound is ``<= t`` cannot hold a match and is
  skipped (one level of DeepLens' ball tree, an "on-the-fly index"); a self-join scores
  each pair of cells once. The remaining blocks are scanned with matrix products (BLAS,
  every core); pairs whose float32 score is within a small slack of ``t`` are decided by
  their float64 score.
* :func:`nested_loop_join` / :func:`nested_loop_self_join` are the tuple-at-a-time
  baseline kept to check results: they score pairs in float64 with the same arithmetic
  used for the close calls, so the two agree pair for pair; reported scores agree to
  float32 precision.

Results are ``(ids_a, ids_b, scores)`` sorted by ``(ids_a, ids_b)``; a self-join reports each
unordered pair once with ``ids_a < ids_b``.

>>> import numpy as np
>>> x = np.array([[1, 0], [0.99, 0.141], [0, 1]], np.float32)
>>> a, b, s = self_join(np.array([5, 6, 7]), x, 0.9)
>>> list(zip(a.tolist(), b.tolist()))
[(5, 6)]
>>> [r.tolist() for r in nested_loop_self_join(np.array([5, 6, 7]), x, 0.9)[:2]]
[[5], [6]]
"""

from __future__ import annotations

import faiss
import numpy as np

from operators.index.shard import as_ids, as_matrix
from streamvision.core.errors import InputError

JoinResult = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Slack on float32 candidate scores; candidates are re-scored exactly in float64.
_SLACK = 1e-4
#: Rows of the left side per matrix-product block (bounds temporary memory).
_BLOCK = 4096
#: Target rows per k-means cell; small cells have small radii, which prune well.
_ROWS_PER_CELL = 64
#: Lloyd iterations, and training rows per cell, of the k-means that makes the cells.
_KMEANS_ITERATIONS = 4
_KMEANS_POINTS_PER_CELL = 8
#: Elements of the ``cells x rows`` bound matrix computed at once (64M floats = 256 MB).
_BOUND_ELEMENTS = 1 << 26


def pair_scores(A: np.ndarray, B: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """float64 inner products of the row pairs ``(A[ia[n]], B[ib[n]])``."""
    out = np.empty(len(ia), np.float64)
    for start in range(0, len(ia), _BLOCK):
        sl = slice(start, start + _BLOCK)
        out[sl] = (A[ia[sl]].astype(np.float64) * B[ib[sl]].astype(np.float64)).sum(axis=1)
    return out


def _check(ids: np.ndarray, X: np.ndarray, dim: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    X = as_matrix(X, X.shape[-1] if dim is None and X.ndim == 2 else (dim or 0), what)
    ids = as_ids(ids, f"{what} ids")
    if len(ids) != len(X):
        raise InputError(f"{len(ids)} {what} ids for {len(X)} vectors")
    return ids, X


def _finish(ids_a: np.ndarray, ids_b: np.ndarray, ia: np.ndarray, ib: np.ndarray, s: np.ndarray) -> JoinResult:
    a, b = ids_a[ia], ids_b[ib]
    order = np.lexsort((b, a))
    return a[order], b[order], s[order]


def nested_loop_join(ids_a: np.ndarray, A: np.ndarray, ids_b: np.ndarray, B: np.ndarray, t: float) -> JoinResult:
    """Every ``(a, b)`` with ``a.b > t``, one pair at a time (the baseline)."""
    ids_a, A = _check(ids_a, A, None, "left")
    ids_b, B = _check(ids_b, B, A.shape[1], "right")
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    ia, ib, s = [], [], []
    for i in range(len(A64)):
        a = A64[i]
        for j in range(len(B64)):
            score = (a * B64[j]).sum()
            if score > t:
                ia.append(i), ib.append(j), s.append(score)
    return _finish(ids_a, ids_b, np.array(ia, np.int64), np.array(ib, np.int64), np.array(s, np.float64))


def nested_loop_self_join(ids: np.ndarray, X: np.ndarray, t: float, rows: int | None = None) -> JoinResult:
    """Every unordered pair of ``X`` with inner product > ``t``, one pair at a time.

    Args:
        rows: only pairs whose first row is among the first ``rows`` rows (for timing a
            sample of a join too large to run whole); ``None`` for all.
    """
    ids, X = _check(ids, X, None, "self-join")
    X64 = X.astype(np.float64)
    ia, ib, s = [], [], []
    for i in range(len(X64) if rows is None else min(rows, len(X64))):
        a = X64[i]
        for j in range(i + 1, len(X64)):
            score = (a * X64[j]).sum()
            if score > t:
                ia.append(i), ib.append(j), s.append(score)
    ia_, ib_ = np.array(ia, np.int64), np.array(ib, np.int64)
    swap = ids[ia_] > ids[ib_]
    ia_[swap], ib_[swap] = ib_[swap], ia_[swap]
    return _finish(ids, ids, ia_, ib_, np.array(s, np.float64))


def _cells(B: np.ndarray, nlist: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means cells of ``B``: centroids, each row's cell, and cell radii.

    The radii bound the float32 distances from above with a margin (``sqrt(d2 + 1e-4)``)
    that covers their rounding, so pruning by them never drops a match.
    """
    if nlist <= 1:
        C = B.mean(axis=0, keepdims=True)
    else:
        km = faiss.Kmeans(B.shape[1], nlist, niter=_KMEANS_ITERATIONS, seed=seed,
                          max_points_per_centroid=_KMEANS_POINTS_PER_CELL, min_points_per_centroid=1, verbose=False)
        km.train(B)
        C = km.centroids
    c2 = (C * C).sum(axis=1)
    cell = np.empty(len(B), np.int64)
    d2 = np.empty(len(B), np.float32)
    for start in range(0, len(B), _BLOCK):
        Bs = B[start:start + _BLOCK]
        score = 2 * (Bs @ C.T) - c2[None, :]  # nearest centroid (L2) = largest 2 b.c - |c|^2
        nearest = np.argmax(score, axis=1)
        cell[start:start + len(Bs)] = nearest
        d2[start:start + len(Bs)] = (Bs * Bs).sum(axis=1) - score[np.arange(len(Bs)), nearest]
    R = np.zeros(len(C), np.float64)
    np.maximum.at(R, cell, np.maximum(d2, 0).astype(np.float64))
    return C, cell, np.sqrt(R + 1e-4)


def index_join(
    ids_a: np.ndarray, A: np.ndarray, ids_b: np.ndarray, B: np.ndarray, t: float, *,
    nlist: int | None = None, seed: int = 0, _upper_only: bool = False,
) -> JoinResult:
    """Every ``(a, b)`` with ``a.b > t``, exactly, pruning k-means cells of ``B`` by their radius.

    Args:
        nlist: number of cells (default ``len(B) / 64``; 1 = plain blocked scan).
        seed: k-means seed (the result does not depend on it, only the speed).
    """
    ids_a, A = _check(ids_a, A, None, "left")
    ids_b, B = _check(ids_b, B, A.shape[1], "right")
    if not np.isfinite(t):
        raise InputError(f"threshold must be finite, got {t}")
    empty = np.zeros(0, np.int64)
    if len(A) == 0 or len(B) == 0:
        return empty, empty.copy(), np.zeros(0, np.float64)
    nlist = max(1, len(B) // _ROWS_PER_CELL) if nlist is None else max(1, min(nlist, len(B)))
    C, cell, R = _cells(B, nlist, seed)
    symmetric = _upper_only and A is B
    norm_a = np.linalg.norm(A, axis=1)
    slack = _SLACK * max(1.0, float(norm_a.max()) * float(np.linalg.norm(B, axis=1).max()))
    members = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=len(C)))])
    group = max(1, _BOUND_ELEMENTS // len(A))  # cells whose bounds are computed together
    ia_parts, ib_parts, s_parts = [], [], []
    for first in range(0, len(C), group):
        CA = C[first:first + group] @ A.T  # a.c for every row a and cell c of the group
        for j in range(first, min(first + group, len(C))):
            rows_b = members[bounds[j]:bounds[j + 1]]
            if len(rows_b) == 0:
                continue
            possible = CA[j - first] + norm_a * R[j] > t - slack
            if symmetric:  # a self-join scores each pair of cells once: cell(a) >= j
                possible &= cell >= j
            cand = np.flatnonzero(possible)
            Bj = B[rows_b]
            for start in range(0, len(cand), _BLOCK):
                rows_a = cand[start:start + _BLOCK]
                S = A[rows_a] @ Bj.T
                ra, rb = np.nonzero(S > t - slack)
                ia_parts.append(rows_a[ra])
                ib_parts.append(rows_b[rb])
                s_parts.append(S[ra, rb])
    ia = np.concatenate(ia_parts) if ia_parts else empty
    ib = np.concatenate(ib_parts) if ib_parts else empty
    s = np.concatenate(s_parts).astype(np.float64) if s_parts else np.zeros(0, np.float64)
    if symmetric:  # pairs across cells were scored once, pairs inside a cell in both orders
        keep = (cell[ia] != cell[ib]) | (ids_a[ia] < ids_b[ib])
        ia, ib, s = ia[keep], ib[keep], s[keep]
        swap = ids_a[ia] > ids_b[ib]
        ia, ib = np.where(swap, ib, ia), np.where(swap, ia, ib)
    elif _upper_only:
        keep = ids_a[ia] < ids_b[ib]
        ia, ib, s = ia[keep], ib[keep], s[keep]
    unsure = np.flatnonzero(s <= t + slack)  # near the threshold: decide with the exact float64 score
    s[unsure] = pair_scores(A, B, ia[unsure], ib[unsure])
    keep = s > t
    return _finish(ids_a, ids_b, ia[keep], ib[keep], s[keep])


def self_join(ids: np.ndarray, X: np.ndarray, t: float, *, nlist: int | None = None, seed: int = 0) -> JoinResult:
    """Near-duplicates: every unordered pair (``id_a < id_b``) with inner product > ``t``.

    Raises:
        InputError: duplicate ids (a self-join needs one row per id).
    """
    ids, X = _check(ids, X, None, "self-join")
    if len(np.unique(ids)) != len(ids):
        raise InputError("self-join ids must be unique")
    return index_join(ids, X, ids, X, t, nlist=nlist, seed=seed, _upper_only=True)
