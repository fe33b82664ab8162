"""The documents behind the web page that the query API has no route for.

* ``frame``: ``{"kind": "frame", "collection", "patch_id", "frame", "format", "shape", "boxes"}``:
  the whole frame a patch was cut from, and every patch made from that frame (a featurizer's
  patch in place of the detection it embeds) as a *match*
  (the shape of :meth:`operators.query.engine.CollectionQueries.describe`, score = the
  detector's score), so the page can draw and label each box;
* ``live``: ``{"kind": "live", "collection", "ntotal", "cameras", "partitions", "dead_letters"}``:
  per camera the patches stored and the latest one; per Kafka partition the offset done
  (from the store) and, when the service knows the brokers, the end offset and lag; the
  dead letters of each topic with their reasons. Rates are differences of two answers;
* ``models``: ``{"kind": "models", "collection", "runs": [...]}``: each ``streamvision train
  --store`` run recorded in the collection, with its model selection table and per-epoch
  results (the rows of its ``results.parquet``).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from operators.kafka import wire
from operators.kafka.settings import KafkaSettings
from operators.query.engine import CollectionQueries
from operators.sources.dead_letters import H_OFFSET, H_PARTITION, dlq_topic
from operators.stores.lineage_store import LineageStore
from operators.stores.pixels import frame_image
from streamvision.core.errors import InputError
from streamvision.core.lineage import FrameKeyCodec, id_from_bytes

#: Most dead letters listed per answer (the newest); ``count`` still counts them all.
MAX_LETTERS = 50
#: How long one answer may wait on the brokers.
KAFKA_WAIT_S = 2.0
_SEP = b"\x00"


def _frame_key(queries: CollectionQueries, patch_id: int) -> bytes:
    if isinstance(patch_id, bool) or not isinstance(patch_id, (int, np.integer)):
        raise InputError(f"a patch id is an integer, got {patch_id!r}")
    meta = queries.store.patch(int(patch_id))
    if meta is None:
        queries._refresh()
        meta = queries.store.patch(int(patch_id))
    if meta is None:
        raise InputError(f"no patch with id {patch_id} in collection {queries.name!r}")
    chain = queries.store.lineage(int(patch_id))
    if not chain[-1].get("frame") or not chain[0].get("frame_key"):
        raise InputError(f"patch {patch_id} is an imported vector: no frame behind it")
    return bytes.fromhex(chain[0]["frame_key"])


def frame_document(queries: CollectionQueries, patch_id: int) -> dict[str, Any]:
    """The ``frame`` document of a patch (see the module docstring), without the pixels."""
    key = _frame_key(queries, patch_id)
    image, fmt = frame_image(queries.store, key)
    ids = np.asarray([pid for child in queries.store.frame_children(key)  # the indexed patches: a
                      for pid in queries.store.children(child) or [child]], np.int64)  # featurizer's children
    scores = [float((m or {}).get("score") or 0.0) for m in queries.store.patches(ids.tolist())]
    return {"kind": "frame", "collection": queries.name, "patch_id": int(patch_id),
            "frame": FrameKeyCodec.decode(key).as_dict(), "format": fmt, "shape": list(image.shape),
            "boxes": queries.describe(ids, np.asarray(scores, np.float32))}


def frame_png(queries: CollectionQueries, patch_id: int) -> tuple[bytes, str]:
    """``(PNG bytes, format)`` of the whole frame a patch was cut from."""
    image, fmt = frame_image(queries.store, _frame_key(queries, patch_id))
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode the frame of patch {patch_id}")
    return png.tobytes(), fmt


def _cameras(queries: CollectionQueries) -> list[dict[str, Any]]:
    """Per camera: patches stored and the newest (a skip-scan of the camera|time index)."""
    store, out, at = queries.store, [], b""
    while (first := store.first_key("by_time", at)) is not None:
        camera = first[:first.index(_SEP)]
        count, last = 0, first
        for last in store.keys_between("by_time", camera + _SEP, camera + b"\x01"):
            count += 1
        latest = queries.describe(np.asarray([id_from_bytes(last[-8:])]), np.zeros(1, np.float32))[0]
        out.append({"camera": camera.decode("utf-8", "replace"), "patches": count, "latest": latest})
        at = camera + b"\x01"
    return out


def _partitions(store: LineageStore) -> list[dict[str, Any]]:
    """Per Kafka partition the store has completed offsets for: the next offset to do."""
    out = []
    for key, value in store.scan("offsets"):
        topic, rest = key.split(_SEP, 1)
        if len(rest) != 4:  # the "state" entries of out-of-order completions
            continue
        out.append({"topic": topic.decode(), "partition": struct.unpack(">I", rest)[0],
                    "done": struct.unpack(">Q", value)[0], "end": None, "lag": None})
    return out


def _letter(record: Any) -> dict[str, Any]:
    headers = {k: v for k, v in (record.headers or [])}
    error = headers.get(wire.H_ERROR, b"").decode("utf-8", "replace")
    return {"topic": record.topic.removesuffix(".dlq"), "camera": headers.get("sv-camera", b"").decode("utf-8", "replace"),
            "partition": int(headers.get(H_PARTITION, b"-1")), "offset": int(headers.get(H_OFFSET, b"-1")),
            "reason": wire.error_reason(error.encode()), "error": error, "time": record.timestamp / 1000}


def _kafka(settings: KafkaSettings, partitions: list[dict[str, Any]]) -> dict[str, Any]:
    """Fill in end offsets and lag, and read the dead-letter topics (bounded by :data:`KAFKA_WAIT_S`)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.client_config("consumer"), group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, request_timeout_ms=5000)
    try:
        data = {TopicPartition(p["topic"], p["partition"]): p for p in partitions}
        dlq = [TopicPartition(dlq_topic(t), n) for t in sorted({p["topic"] for p in partitions})
               for n in sorted(consumer.partitions_for_topic(dlq_topic(t)) or ())]
        consumer.assign(list(data) + dlq)
        for tp, p in data.items():
            consumer.seek(tp, max(p["done"] - 1, 0))  # one record read tells the partition's end
        for tp in dlq:
            consumer.seek_to_beginning(tp)
        letters: list[dict[str, Any]] = []
        deadline = time.monotonic() + KAFKA_WAIT_S
        while time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                if tp in data:
                    consumer.pause(tp)
                else:
                    letters.extend(_letter(r) for r in records)
            ends = {tp: consumer.highwater(tp) for tp in list(data) + dlq}
            if all(h is not None for h in ends.values()) and all(consumer.position(tp) >= ends[tp] for tp in dlq):
                break
        for tp, p in data.items():
            end = consumer.highwater(tp)
            p["end"], p["lag"] = end, None if end is None else max(end - p["done"], 0)
    finally:
        consumer.close()
    reasons: dict[str, int] = {}
    for letter in letters:
        reasons[letter["reason"]] = reasons.get(letter["reason"], 0) + 1
    return {"count": len(letters), "reasons": reasons, "recent": letters[-MAX_LETTERS:][::-1]}


def live_document(name: str, queries: CollectionQueries | None, kafka: KafkaSettings | None) -> dict[str, Any]:
    """The ``live`` document (see the module docstring); ``queries`` is ``None`` while the
    collection holds no vectors yet."""
    doc: dict[str, Any] = {"kind": "live", "collection": name, "time": time.time(), "ntotal": 0, "cameras": [],
                           "partitions": [], "dead_letters": None, "kafka": kafka is not None}
    if queries is None:
        return doc
    queries._refresh()
    doc["ntotal"] = queries.index.stats()["ntotal"]
    doc["cameras"] = _cameras(queries)
    doc["partitions"] = _partitions(queries.store)
    if kafka is not None and doc["partitions"]:
        doc["dead_letters"] = _kafka(kafka, doc["partitions"])
    return doc


def models_document(queries: CollectionQueries) -> dict[str, Any]:
    """The ``models`` document: the ``streamvision train --store`` runs recorded in the collection."""
    import pyarrow.parquet as pq

    from operators.training.mst import ModelSelectionTable  # imports torch: only when asked

    queries._refresh()
    runs = []
    for key, value in queries.store.scan("models", b"best" + _SEP):
        summary = json.loads(value)
        results_path = Path(summary.get("results", ""))
        results = pq.read_table(results_path).to_pylist() if results_path.is_file() else []
        runs.append({"run": key[len(b"best") + 1:].decode("utf-8", "replace"), **summary,
                     "results": results, "results_file": str(results_path)})
    mst = [row.to_json() for row in ModelSelectionTable.from_store(queries.store)] if runs else []
    return {"kind": "models", "collection": queries.name, "mst": mst, "runs": runs}
