"""Tracks in the store: a track is a patch whose parents are its detections.

Two column families of the lineage store (raw bytes, never pickled):

=============  ==========================================  ===================================
family         key                                         value
=============  ==========================================  ===================================
tracks         camera 0 track_id(8)                        JSON: the track patch (see below)
tracks         camera 0 track_id(8) "v"                    float32 sum of its vectors
track_boxes    camera 0 track_id(8) ts_us(8) detection id  empty
=============  ==========================================  ===================================

The track document: ``patch_id`` (the track's own patch id), ``camera``, ``track_id``,
``label`` (its most frequent detector label) and ``labels`` (label -> boxes), ``first_ts`` /
``last_ts`` (capture times), ``boxes`` (detections) and ``vectors`` (how many vectors the
sum holds: the mean appearance vector is the sum over it). The writer updates a track in the
``WriteBatch`` of the detections that extend it, so the record never holds a box without its
track. ``track_boxes`` lists every detection of a track in time order: the track's lineage,
by one prefix seek.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from operators.stores.kept import ts_us
from streamvision.core.lineage import id_bytes, id_from_bytes, patch_id

_SEP = b"\x00"
_VECTOR = b"v"
#: The operator name in track patch ids.
TRACK_OPERATOR = "tracker"


@dataclass(frozen=True)
class StoredBox:
    """A stored detection, as a restarted tracker replays it."""

    ts: float
    bbox: tuple[float, float, float, float]
    score: float
    label: str
    track_id: int | None


def track_key(camera: str, track_id: int) -> bytes:
    """The ``tracks`` key of one track."""
    return camera.encode() + _SEP + struct.pack(">Q", int(track_id))


def track_patch_id(camera: str, track_id: int) -> int:
    """The patch id of a track: deterministic in its camera and track id."""
    return patch_id(track_key(camera, track_id), TRACK_OPERATOR, 0)


def put_tracks(wb: Any, handles: dict[str, Any], get: Callable[[str, bytes], bytes | None],
               rows: list[tuple[str, int, float, str, int, np.ndarray | None]]) -> None:
    """Add detections to their tracks in a ``WriteBatch``.

    Args:
        wb: the batch of the detections' own write.
        handles: the store's column family handles.
        get: reads a stored value (``family, key -> bytes | None``).
        rows: ``(camera, track_id, ts, label, detection id, vector or None)`` per detection.
    """
    grouped: dict[bytes, list[tuple[str, int, float, str, int, np.ndarray | None]]] = {}
    for row in rows:
        grouped.setdefault(track_key(row[0], row[1]), []).append(row)
    for key, members in grouped.items():
        camera, tid = members[0][0], members[0][1]
        raw = get("tracks", key)
        doc = json.loads(raw) if raw is not None else {
            "patch_id": track_patch_id(camera, tid), "camera": camera, "track_id": tid, "labels": {},
            "first_ts": members[0][2], "last_ts": members[0][2], "boxes": 0, "vectors": 0}
        labels = Counter(doc["labels"])
        vector_sum = None
        added: set[bytes] = set()
        for _, _, ts, label, det, vector in members:
            box_key = key + ts_us(ts) + id_bytes(det)
            if box_key in added or get("track_boxes", box_key) is not None:
                continue  # a second feature of the box, or a replayed batch: counted already
            added.add(box_key)
            wb.put(box_key, b"", handles["track_boxes"])
            labels[label] += 1
            doc["boxes"] += 1
            doc["first_ts"] = min(doc["first_ts"], ts)
            doc["last_ts"] = max(doc["last_ts"], ts)
            if vector is not None:
                if vector_sum is None:
                    stored = get("tracks", key + _VECTOR)
                    vector_sum = (np.frombuffer(stored, np.float32).astype(np.float64) if stored is not None
                                  else np.zeros(len(vector), np.float64))
                vector_sum += vector
                doc["vectors"] += 1
        doc["labels"] = dict(labels)
        doc["label"] = labels.most_common(1)[0][0] if labels else ""
        wb.put(key, json.dumps(doc).encode(), handles["tracks"])
        if vector_sum is not None:
            wb.put(key + _VECTOR, vector_sum.astype(np.float32).tobytes(), handles["tracks"])


def track(store: Any, camera: str, track_id: int) -> dict[str, Any] | None:
    """The document of one track, or ``None``."""
    raw = store.get("tracks", track_key(camera, track_id))
    return None if raw is None else json.loads(raw)


def tracks(store: Any, camera: str | None = None) -> Iterator[dict[str, Any]]:
    """Every track (of one camera), in camera then track id order."""
    prefix = b"" if camera is None else camera.encode() + _SEP
    for key, raw in store.scan("tracks", prefix):
        if len(key) - key.index(_SEP) - 1 == 8:  # not a vector sum (camera names hold no NUL)
            yield json.loads(raw)


def mean_vector(store: Any, camera: str, track_id: int) -> np.ndarray | None:
    """The unit-length mean appearance vector of a track, or ``None`` when it has no vectors."""
    raw = store.get("tracks", track_key(camera, track_id) + _VECTOR)
    if raw is None:
        return None
    mean = np.frombuffer(raw, np.float32).copy()
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean


def track_box_ids(store: Any, camera: str, track_id: int) -> list[tuple[float, int]]:
    """``(ts, detection id)`` of every box of a track, in time order."""
    key = track_key(camera, track_id)
    out = []
    for k in store.keys_between("track_boxes", key, key + b"\xff" * 17):
        out.append((struct.unpack(">Q", k[len(key):len(key) + 8])[0] / 1e6, id_from_bytes(k[-8:])))
    return out


def last_track_id(store: Any, camera: str) -> int:
    """The largest track id stored for a camera (0 for none)."""
    prefix = camera.encode() + _SEP
    key = store.last_key("tracks", prefix)
    return 0 if key is None else struct.unpack(">Q", key[len(prefix):len(prefix) + 8])[0]


def recent_boxes(store: Any, camera: str, seconds: float) -> tuple[int, list[StoredBox]]:
    """``(largest track id, detections of the last seconds)`` of a camera.

    One range seek on the time index from the camera's latest capture time back: the cost is
    the recent rows, not the collection.
    """
    last_id = last_track_id(store, camera)
    latest = store.last_time(camera)
    if latest is None:
        return last_id, []
    seen: set[tuple[float, tuple[float, ...]]] = set()
    out = []
    for meta in store.patches(store.ids_by_time(camera, latest - seconds, latest + 1e-3)):
        if meta is None or not meta.get("label") or "bbox" not in meta:
            continue
        ts = float(meta.get("wall_time") or meta.get("ts") or 0.0)
        box = tuple(float(v) for v in meta["bbox"])
        if (ts, box) in seen:  # several feature patches of one detection
            continue
        seen.add((ts, box))
        out.append(StoredBox(ts, box, float(meta.get("score", 0.0)), meta["label"], meta.get("track_id")))
    return last_id, out
