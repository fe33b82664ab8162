"""Queries over tracks: list them, one track with every box, and the cross-camera join.

A track is a patch whose parents are its detections (:mod:`operators.stores.tracks`). The
cross-camera join pairs tracks of two cameras that were in view at overlapping times (within
``window`` seconds) and look alike: the inner product of their unit-length mean appearance
vectors is above ``t``. Each track takes at most one partner (the assignment that maximizes the
summed similarity, as a person is in one place at a time), best pairs first.

Documents:

* ``tracks``: ``{"kind": "tracks", "collection", "query", "count", "results": [track, ...]}``;
* ``track``: ``{"kind": "track", "collection", "track": track, "boxes": [box, ...]}``, a box
  being ``{"patch_id", "ts", "frame_no", "bbox", "label", "score"}`` in time order;
* ``track_join``: ``{"kind": "track_join", "collection", "query", "count", "results":
  [{"score", "a": track, "b": track}]}``.

A track document is the stored one: ``patch_id``, ``camera``, ``track_id``, ``label``,
``labels``, ``first_ts``, ``last_ts``, ``boxes``, ``vectors``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from operators.index.filters import Where
from operators.stores import tracks as stored
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import InputError


def _overlaps(doc: dict[str, Any], where: Where) -> bool:
    if where.label is not None and doc["label"] != where.label:
        return False
    if where.start is not None and doc["last_ts"] < where.start:
        return False
    return not (where.end is not None and doc["first_ts"] >= where.end)


def list_tracks(store: LineageStore, where: Any = None, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
    """``(count, first limit tracks)`` matching ``where`` (camera, majority label, time overlap).

    A camera filter is one prefix scan of that camera's tracks; without one every track is read.
    """
    w = Where.of(where)
    if w.model is not None:
        raise InputError("tracks are filtered by label, camera, start and end (not model)")
    found = [doc for doc in stored.tracks(store, w.camera) if _overlaps(doc, w)]
    return len(found), found[:limit]


def track_boxes(store: LineageStore, camera: str, track_id: int) -> dict[str, Any]:
    """One track and every box of it, in time order.

    Raises:
        InputError: no such track.
    """
    doc = stored.track(store, camera, int(track_id))
    if doc is None:
        raise InputError(f"no track {track_id} on camera {camera!r}")
    members = stored.track_box_ids(store, camera, int(track_id))
    metas = store.patches([pid for _, pid in members])
    boxes = [{"patch_id": pid, "ts": ts, "frame_no": m.get("frame_no"), "bbox": m.get("bbox"),
              "label": m.get("label"), "score": m.get("score")}
             for (ts, pid), m in zip(members, metas) if m is not None]
    return {"track": doc, "boxes": boxes}


def join_tracks(store: LineageStore, left_camera: str, right_camera: str, t: float, window: float,
                label: str | None = None) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """``(score, a, b)`` pairs of tracks of two cameras (see the module docstring), best first."""
    if left_camera == right_camera:
        raise InputError("a track join pairs two different cameras")
    if not window >= 0:
        raise InputError(f"window must be >= 0 seconds, got {window}")
    sides = []
    for camera in (left_camera, right_camera):
        docs, vectors = [], []
        for doc in stored.tracks(store, camera):
            vector = stored.mean_vector(store, camera, doc["track_id"])
            if vector is not None and (label is None or doc["label"] == label):
                docs.append(doc)
                vectors.append(vector)
        sides.append((docs, np.array(vectors, np.float32).reshape(len(vectors), -1)))
    (docs_a, va), (docs_b, vb) = sides
    if not docs_a or not docs_b:
        return []
    if va.shape[1] != vb.shape[1]:
        raise InputError("the two cameras' tracks have vectors of different dimensions")
    scores = va @ vb.T
    first_a = np.array([d["first_ts"] for d in docs_a])[:, None]
    last_a = np.array([d["last_ts"] for d in docs_a])[:, None]
    first_b = np.array([d["first_ts"] for d in docs_b])[None, :]
    last_b = np.array([d["last_ts"] for d in docs_b])[None, :]
    together = (first_a <= last_b + window) & (first_b <= last_a + window)
    allowed = np.where(together & (scores > t), scores, -np.inf)
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: the query front end starts without it

    rows, cols = linear_sum_assignment(np.where(np.isfinite(allowed), -allowed, 1e6))
    pairs = [(float(scores[r, c]), docs_a[r], docs_b[c]) for r, c in zip(rows, cols) if np.isfinite(allowed[r, c])]
    return sorted(pairs, key=lambda p: -p[0])
