"""The RocksDB state store: frames, patches, lineage both ways, secondary indexes, offsets.

Column families (all raw bytes; never pickled):

==============  ================================================  ======================
family          key                                               value
==============  ================================================  ======================
frames          frame key                                         JSON frame meta
patches         patch id (8 bytes, big-endian)                    JSON patch meta
lineage_up      patch id                                          parent ref
lineage_down    parent ref + patch id                             empty
by_label        label 0 camera 0 ts_us(8) id                      empty
by_time         camera 0 ts_us(8) id                              empty
vectors         patch id                                          float32 bytes
offsets         topic 0 partition(4)                              next offset (8)
==============  ================================================  ======================

A *parent ref* is ``b"P" + id`` for a parent patch, or the encoded frame key (which
starts with ``F`` or ``K``) when the parent is the frame. Integers are big-endian so
that byte order equals numeric order and range scans are prefix scans.

Writes that belong together (a batch of patches and the offsets it completes) go in one
``WriteBatch``; the WAL stays on.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import rocksdict

from streamvision.errors import InputError
from streamvision.lineage import FrameKeyCodec, id_bytes, id_from_bytes
from streamvision.patches import PatchBatch

COLUMN_FAMILIES = (
    "frames", "patches", "lineage_up", "lineage_down", "by_label", "by_time",
    "vectors", "offsets", "segments", "models",
)
_SEP = b"\x00"
#: Memory all memtables of a store may hold before RocksDB flushes the largest (RocksDB's
#: default lets each of the ten column families buffer up to 128 MB).
MEMTABLE_BUDGET_BYTES = 32 << 20
_PATCH_REF = b"P"


def _ts_us(seconds: float) -> bytes:
    return struct.pack(">Q", max(0, int(round(seconds * 1e6))))


def _options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES)
    return opts


def _prefix_keys(cf: rocksdict.Rdict, prefix: bytes, stop: bytes | None = None) -> Iterator[bytes]:
    it = cf.iter()
    it.seek(prefix)
    while it.valid():
        key = it.key()
        if stop is not None:
            if key >= stop:
                return
        elif not key.startswith(prefix):
            return
        yield key
        it.next()


class LineageStore:
    """One RocksDB directory holding the lineage and metadata of every patch.

    Args:
        path: the directory (created if missing, unless ``read_only``).
        read_only: open without taking the write lock (queries beside a running pipeline).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only and not (self.path / "CURRENT").exists():
            raise InputError(f"no StreamVision store at {self.path} (run `streamvision ingest` first)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        families = {name: rocksdict.Options(raw_mode=True) for name in COLUMN_FAMILIES}
        access = rocksdict.AccessType.read_only() if read_only else rocksdict.AccessType.read_write()
        self._db = rocksdict.Rdict(str(self.path), _options(), column_families=families, access_type=access)
        self._cf = {name: self._db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self.read_only = read_only

    # ------------------------------------------------------------------ writes
    def write_patches(self, batch: PatchBatch, *, offsets: dict[tuple[str, int], int] | None = None) -> int:
        """Write a batch of patches, their frames and lineage, in one ``WriteBatch``.

        Args:
            batch: the patches; vector patches also store their vectors.
            offsets: ``(topic, partition) -> next offset`` completed by this batch, written
                in the same ``WriteBatch`` (the effectively-once protocol).

        Returns:
            The number of patches written. Rewriting the same ids changes nothing.
        """
        wb = rocksdict.WriteBatch(raw_mode=True)
        h = self._handles
        for i in range(len(batch)):
            pid = id_bytes(int(batch.ids[i]))
            meta = batch.meta_row(i)
            frame_key = batch.frame_keys[i]
            parent = int(batch.parent_ids[i])
            parent_ref = _PATCH_REF + id_bytes(parent) if parent else frame_key
            meta["parent"] = parent
            meta["frame_key"] = frame_key.hex()
            links = {k: meta.pop(k) for k in ("parent_model", "parent_parent") if k in meta}
            if parent and links:
                self._put_parent(wb, parent, links, meta, frame_key)
            wb.put(pid, json.dumps(meta).encode(), h["patches"])
            wb.put(pid, parent_ref, h["lineage_up"])
            wb.put(parent_ref + pid, b"", h["lineage_down"])
            camera = batch.cameras[i].encode()
            ts = _ts_us(float(batch.wall_time[i]) or float(batch.pts[i]))
            wb.put(camera + _SEP + ts + pid, b"", h["by_time"])
            if batch.labels[i]:
                wb.put(batch.labels[i].encode() + _SEP + camera + _SEP + ts + pid, b"", h["by_label"])
            frame_meta = {
                "camera": batch.cameras[i],
                "frame_no": int(batch.frame_no[i]),
                "ts": float(batch.pts[i]),
                "wall_time": float(batch.wall_time[i]),
            }
            wb.put(frame_key, json.dumps(frame_meta).encode(), h["frames"])
            if batch.vectors is not None:
                wb.put(pid, batch.vectors[i].astype(np.float32).tobytes(), h["vectors"])
        for (topic, partition), offset in (offsets or {}).items():
            wb.put(topic.encode() + _SEP + struct.pack(">I", partition), struct.pack(">Q", offset), h["offsets"])
        self._db.write(wb)
        return len(batch)

    def _put_parent(self, wb: rocksdict.WriteBatch, parent: int, links: dict[str, Any],
                    child_meta: dict[str, Any], frame_key: bytes) -> None:
        """Store the pixel patch a feature patch was made from (its bbox, label, model)."""
        h = self._handles
        grand = int(links.get("parent_parent", 0))
        ref = id_bytes(parent)
        meta = {k: v for k, v in child_meta.items() if k in ("camera", "frame_no", "ts", "wall_time", "bbox", "label", "score")}
        meta.update(model=links.get("parent_model", ""), parent=grand, frame_key=frame_key.hex())
        up = _PATCH_REF + id_bytes(grand) if grand else frame_key
        wb.put(ref, json.dumps(meta).encode(), h["patches"])
        wb.put(ref, up, h["lineage_up"])
        wb.put(up + ref, b"", h["lineage_down"])

    def put(self, family: str, key: bytes, value: bytes) -> None:
        """Write one raw value (used by the offsets protocol and model selection)."""
        self._cf[family][key] = value

    def delete(self, family: str, key: bytes) -> None:
        """Delete one raw key."""
        del self._cf[family][key]

    # ------------------------------------------------------------------ reads
    def get(self, family: str, key: bytes) -> bytes | None:
        """One raw value, or ``None``."""
        return self._cf[family].get(key)

    def scan(self, family: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` pairs whose key starts with ``prefix``, in key order."""
        cf = self._cf[family]
        for key in _prefix_keys(cf, prefix):
            yield key, cf[key]

    def count(self, family: str) -> int:
        """Number of keys in a family (a full scan; for tests and stats)."""
        return sum(1 for _ in self._cf[family].keys())

    def patch(self, pid: int) -> dict[str, Any] | None:
        """Metadata of patch ``pid`` (with ``parent`` and ``frame_key``), or ``None``."""
        raw = self._cf["patches"].get(id_bytes(pid))
        return None if raw is None else json.loads(raw)

    def frame(self, frame_key: bytes) -> dict[str, Any] | None:
        """Metadata of the frame with this encoded key, or ``None``."""
        raw = self._cf["frames"].get(frame_key)
        return None if raw is None else json.loads(raw)

    def lineage(self, pid: int) -> list[dict[str, Any]]:
        """The chain from patch ``pid`` up to its frame: patches first, the frame last.

        Raises:
            KeyError: no patch has this id.
        """
        chain: list[dict[str, Any]] = []
        current = pid
        while True:
            meta = self.patch(current)
            if meta is None:
                if not chain:
                    raise KeyError(f"no patch with id {pid}")
                break
            chain.append({"patch_id": current, **meta})
            if not meta["parent"]:
                break
            current = meta["parent"]
        frame_key = bytes.fromhex(chain[-1]["frame_key"])
        key = FrameKeyCodec.decode(frame_key)
        chain.append({"frame": key.as_dict(), **(self.frame(frame_key) or {})})
        return chain

    def children(self, pid: int) -> list[int]:
        """Ids of the patches made from patch ``pid``."""
        prefix = _PATCH_REF + id_bytes(pid)
        return [id_from_bytes(k[len(prefix):]) for k in _prefix_keys(self._cf["lineage_down"], prefix)]

    def frame_children(self, frame_key: bytes) -> list[int]:
        """Ids of the patches made directly from a frame."""
        return [id_from_bytes(k[len(frame_key):]) for k in _prefix_keys(self._cf["lineage_down"], frame_key)
                if len(k) == len(frame_key) + 8]

    def ids_by_label(self, label: str, camera: str | None = None) -> list[int]:
        """Patch ids carrying ``label`` (optionally on one camera)."""
        prefix = label.encode() + _SEP + (camera.encode() + _SEP if camera is not None else b"")
        return [id_from_bytes(k[-8:]) for k in _prefix_keys(self._cf["by_label"], prefix)]

    def ids_by_time(self, camera: str, start: float, end: float) -> list[int]:
        """Patch ids on ``camera`` with timestamps in ``[start, end)`` seconds."""
        base = camera.encode() + _SEP
        return [id_from_bytes(k[-8:]) for k in _prefix_keys(self._cf["by_time"], base + _ts_us(start), base + _ts_us(end))]

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """Stored vectors of ``ids`` as an ``(n, d)`` float32 array.

        Raises:
            KeyError: an id has no stored vector.
        """
        cf = self._cf["vectors"]
        rows = []
        for pid in ids:
            raw = cf.get(id_bytes(int(pid)))
            if raw is None:
                raise KeyError(f"no vector stored for patch {pid}")
            rows.append(np.frombuffer(raw, np.float32))
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    def iter_vectors(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every stored ``(patch id, vector)`` in id order (for rebuilding indexes)."""
        for key, raw in self.scan("vectors"):
            yield id_from_bytes(key), np.frombuffer(raw, np.float32)

    def offsets(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset to read`` as last written."""
        result = {}
        for key, raw in self.scan("offsets"):
            topic, partition = key[:-5], struct.unpack(">I", key[-4:])[0]
            result[(topic.decode(), partition)] = struct.unpack(">Q", raw)[0]
        return result

    def flush(self) -> None:
        """Flush memtables to disk (the WAL already makes writes durable)."""
        self._db.flush()

    def close(self) -> None:
        """Close the database; the object is unusable afterwards."""
        self._db.close()

    def __enter__(self) -> "LineageStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
