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
by_model        model 0 camera 0 ts_us(8) id                      empty
by_text         trigram 0 id                                      empty
by_text         "" (the empty key)                                empty: the index is complete
vectors         patch id                                          float32 bytes
vector_log      position(8) patch id                              empty
offsets         topic 0 partition(4)                              next offset (8)
offsets         topic 0 partition(4) 0 "state"                    JSON: done ranges past it
segments        kept pixels (:mod:`operators.stores.kept`), in    a wire message, a ref,
                the pixel database ``pixels/``                    or a time-index entry
tracks,         tracks and their boxes                            see :mod:`operators.stores.tracks`
track_boxes
labels          user labels, who set them and when                see :mod:`operators.stores.labels`
==============  ================================================  ======================

Kept pixels live in a RocksDB of their own inside the store's directory (``pixels/``, one
``segments`` family; older stores keep an unused ``segments`` family in the main one). They
are most of the bytes written (50-100 KB a frame against a few hundred for its results), and
a reader following the writer (the query front end) replays the writer's log of what it
opened: apart, a follower that answers queries replays only the record, and opens the pixels
when first asked for them. A batch's pixels are written just before its record, so a crash
between the two leaves pixels that the replay of its messages writes again.

The store is the record; vector indexes are derived state. Every write that stores vectors
takes the next *position* (a counter kept as the keys of ``vector_log``, in the same
``WriteBatch``), so an index snapshot can say which position it covers and a restarted
shard replays only :meth:`LineageStore.vectors_since` that position: opening never scans
all vectors.

``by_text`` is a trigram index of the ``text`` of the row patches (OCR lines): a key per
distinct trigram of the text folded to lower case character by character (each character's
simple lowercase mapping, the folding of DuckDB's ``ILIKE``), so :meth:`LineageStore.ids_by_text`
finds by seeks the patches whose text may contain a string: a superset the caller re-checks.
A writer opening a store written before the index existed builds it once from the stored rows,
then writes the empty key that says it is complete; until then readers are told the index
cannot answer.

A *parent ref* is ``b"P" + id`` for a parent patch, or the encoded frame key (which
starts with ``F`` or ``K``) when the parent is the frame. Integers are big-endian so
that byte order equals numeric order and range scans are prefix scans.

Writes that belong together (a batch of patches and the offsets it completes) go in one
``WriteBatch``; the WAL stays on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import rocksdict

from operators.kafka.wire import H_KIND, KIND_H264
from operators.stores import kept as kept_entries
from operators.stores import tracks as track_rows
from operators.stores.kept import KeptEntry, decode_entry, message_key
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.lineage import FrameKeyCodec, KafkaKey, id_bytes, id_from_bytes
from streamvision.core.patches import PatchBatch

COLUMN_FAMILIES = (
    "frames", "patches", "lineage_up", "lineage_down", "by_label", "by_time", "by_model",
    "vectors", "vector_log", "offsets", "segments", "models", "by_text", "tracks", "track_boxes",
    "labels",
)
#: Families whose keys follow how a stream was batched (the vector log's write positions),
#: which a restart changes: comparisons of what two runs stored leave them out.
BATCHING_FAMILIES = ("vector_log",)
#: Vectors read per chunk when replaying the vector log.
REPLAY_CHUNK = 16384
_SEP = b"\x00"
_OFFSET_STATE = _SEP + b"state"
#: Memory all memtables of a store may hold before RocksDB flushes the largest (RocksDB's
#: default lets each of the ten column families buffer up to 128 MB).
MEMTABLE_BUDGET_BYTES = 32 << 20
#: Memtable of the ``segments`` family (kept frames, ~50-100 KB a message): flushed early, so
#: that the writer and every following reader (which replays the writer's log into memtables of
#: its own) buffer only a few MB of pixels nobody is querying.
SEGMENTS_MEMTABLE_BYTES = 4 << 20
#: Threads RocksDB may start to open table files when it installs a new version, for a reader
#: (read-only or following the writer). RocksDB's default (16) starts and joins that many threads
#: per column family on *every* catch-up of a following reader: 22 ms of CPU a catch-up with this
#: store's 16 families, 0.7 ms with one thread (`benchmarks/live.py`'s front end caught up ~20
#: times a second, a third of a core).
READER_FILE_OPENING_THREADS = 1
#: The pixel database inside a store's directory (see the module docstring).
PIXELS_DIRNAME = "pixels"
_PATCH_REF = b"P"
#: The ``by_text`` key written once every row's text is in the index.
_TEXT_INDEXED = b""
#: Rows read per chunk when building the text index of an older store.
TEXT_INDEX_CHUNK = 4096
_ts_us = kept_entries.ts_us


def _fold(text: str) -> str:
    """``text`` lowercased character by character, one character for one (the simple lowercase
    mapping DuckDB's ``ILIKE`` applies), so that folding a substring gives a substring."""
    return text.lower() if text.isascii() else "".join(c.lower()[:1] for c in text)


def _trigrams(text: str) -> set[bytes]:
    """The distinct trigrams of ``text`` folded (see :func:`_fold`), UTF-8 encoded."""
    folded = _fold(text)
    return {folded[i:i + 3].encode("utf-8", "surrogatepass") for i in range(len(folded) - 2)}


def _put_text(wb: rocksdict.WriteBatch, handle: Any, pid: bytes, text: Any) -> None:
    """Index a row patch's ``text`` (if it is a string) in ``by_text``."""
    if isinstance(text, str):
        for gram in _trigrams(text):
            wb.put(gram + _SEP + pid, b"", handle)


def _families(where: Path, read_only: bool, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The column families to open: every one for a writer (RocksDB creates those a store
    written by an older version lacks, such as ``by_text``), those the store has for a reader."""
    if not read_only:
        return wanted
    present = set(rocksdict.Rdict.list_cf(str(where)))
    return tuple(name for name in wanted if name in present)


def _options(reader: bool = False) -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    if reader:
        opts.set_max_file_opening_threads(READER_FILE_OPENING_THREADS)
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


def _access(read_only: bool, follow: str | Path | None) -> rocksdict.AccessType:
    if follow is not None:
        return rocksdict.AccessType.secondary(str(follow))
    return rocksdict.AccessType.read_only() if read_only else rocksdict.AccessType.read_write()


log = logging.getLogger(__name__)
#: errno values and RocksDB status texts that mean "this process may not write there".
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
_READ_ONLY_TEXTS = ("Read-only file system", "Permission denied", "Operation not permitted")
#: What RocksDB says when another process (or this one) holds the directory's LOCK file.
_LOCK_TEXTS = ("While lock file", "lock hold by current process")
#: rocksdict's own file in a store, rewritten on every open (read-only ones too).
_ROCKSDICT_CONFIG = "rocksdict-config.json"


def _named(path: Path) -> Path:
    """The directory errors name: the data directory holding a ``lineage`` store, else the store."""
    return path.parent if path.name == "lineage" else path


def _read_only_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _READ_ONLY_ERRNOS:
        return True
    return any(text in str(exc) for text in _READ_ONLY_TEXTS)


def _read_only_error(path: Path, detail: object) -> ConfigError:
    where = _named(path)
    return ConfigError(f"{where} is read-only for this process ({detail}): write to a directory you can "
                       f"write, or only query it (`streamvision query ... --data {where}` reads it read-only)")


def _prepare_writable(path: Path) -> None:
    """Create a writer's parent directories; refuse at once a store this process cannot write.

    Raises:
        ConfigError: the store (or the nearest directory that exists above it) is not writable.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise _read_only_error(path, f"no write permission on {existing}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _READ_ONLY_ERRNOS:
            raise _read_only_error(path, exc.strerror) from exc
        raise


def _open_error(path: Path, exc: BaseException) -> ConfigError | None:
    """A clear error for a RocksDB open that failed on permissions or on the lock; ``None`` for others."""
    detail = str(exc)
    if _read_only_failure(exc):
        return _read_only_error(path, detail)
    if "lock hold by current process" in detail:
        return ConfigError(f"{_named(path)} is already open for writing in this process ({detail}); "
                           "close the other LineageStore / writer first")
    if any(text in detail for text in _LOCK_TEXTS):
        return ConfigError(f"{_named(path)} is in use by another process ({detail}): one writer at a time "
                           "(a pipeline, `streamvision serve` or an import); stop it, write through its "
                           "service, or only query the directory (queries do not take the lock)")
    return None


def _link_copy(path: Path) -> tempfile.TemporaryDirectory:  # type: ignore[type-arg]
    """A scratch directory of links to a store's files, to open read-only a store this process
    cannot write into (rocksdict writes its config file into the directory it opens, even read-only).

    Removed when the store object is collected (or at exit)."""
    scratch = tempfile.TemporaryDirectory(prefix="streamvision-ro-")
    for entry in os.scandir(path):
        if entry.name == "LOCK" or entry.name.startswith("LOG") or not entry.is_file():
            continue
        target = Path(scratch.name) / entry.name
        if entry.name == _ROCKSDICT_CONFIG:
            shutil.copyfile(entry.path, target)
        else:
            os.symlink(os.path.abspath(entry.path), target)
    return scratch


def _open_db(path: Path, read_only: bool, follow: str | Path | None, wanted: tuple[str, ...] = COLUMN_FAMILIES
             ) -> tuple[
        rocksdict.Rdict, tempfile.TemporaryDirectory | None, str | Path | None,  # type: ignore[type-arg]
        tuple[str, ...]]:
    """Open the store's RocksDB: ``(db, scratch directory or None, follow, column families opened)``.

    rocksdict rewrites its config file in the directory it opens, even read-only, so a
    ``read_only`` reader opens a scratch directory of links to the store's files instead and
    writes nothing into the store (on a read-only directory too). Should a writer replace
    files between the linking and the open, a reader of a writable directory opens it in
    place. A ``follow`` reader opens in place (a secondary instance sees the writer's later
    files); on a directory this process cannot write it gets the linked read-only view, the
    store as it was when opened (``follow`` comes back ``None``).

    Raises:
        ConfigError: a writer on a read-only directory, or on one another writer holds (its LOCK).
    """
    families = {name: rocksdict.Options(raw_mode=True) for name in wanted}
    if "segments" in families:
        families["segments"].set_write_buffer_size(SEGMENTS_MEMTABLE_BYTES)

    def open_at(where: Path, access: rocksdict.AccessType) -> tuple[rocksdict.Rdict, tuple[str, ...]]:
        names = _families(where, read_only, wanted)
        opened = {name: families[name] for name in names}
        return rocksdict.Rdict(str(where), _options(reader=read_only), column_families=opened,
                               access_type=access), names

    def open_linked() -> tuple[rocksdict.Rdict, tempfile.TemporaryDirectory, None, tuple[str, ...]]:  # type: ignore[type-arg]
        scratch = _link_copy(path)
        try:
            db, names = open_at(Path(scratch.name), rocksdict.AccessType.read_only())
            return db, scratch, None, names
        except BaseException:
            scratch.cleanup()
            raise

    writable = os.access(path, os.W_OK)
    if read_only and (follow is None or not writable):
        if follow is not None:
            log.warning("%s is read-only for this process: serving it as it is now (later writes are not seen)",
                        path)
        try:
            return open_linked()
        except Exception as exc:  # noqa: BLE001 - rocksdict raises a bare Exception with RocksDB's status
            if not writable:
                raise
            log.debug("opening %s through links failed (%s): opening it in place", path, exc)
    try:
        db, names = open_at(path, _access(read_only, follow))
        return db, None, follow, names
    except Exception as exc:  # noqa: BLE001
        if read_only and _read_only_failure(exc):
            return open_linked()  # access(2) said writable, the file system disagrees
        error = _open_error(path, exc)
        if error is None:
            raise
        raise error from exc


class LineageStore:
    """One RocksDB directory holding the lineage and metadata of every patch.

    Args:
        path: the directory (created if missing, unless ``read_only``).
        read_only: open without taking the write lock (queries beside a running pipeline);
            the view is the store as it was when opened.
        follow: open as a RocksDB *secondary* instance keeping its own files in this
            directory (read-only, no lock): :meth:`catch_up` then sees the writer's newer
            writes (the query front end of a live service).

    A ``read_only`` reader writes nothing into the directory (it opens a scratch directory of
    links to the store's files), so it also opens a directory this process cannot write.

    Raises:
        InputError: ``read_only`` or ``follow`` and there is no store at ``path``.
        ConfigError: a writer on a directory it cannot write, or one another writer holds.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, follow: str | Path | None = None) -> None:
        self.path = Path(path)
        read_only = read_only or follow is not None
        if read_only and not (self.path / "CURRENT").exists():
            raise InputError(f"no StreamVision store at {self.path} (run `streamvision ingest` first)")
        if not read_only:
            _prepare_writable(self.path)
        # a directory this process cannot write is read through a scratch copy of links (see _open_db)
        self._db, self._scratch, follow, families = _open_db(self.path, read_only, follow)
        self._cf = {name: self._db.get_column_family(name) for name in families}
        self._handles = {name: self._db.get_column_family_handle(name) for name in families}
        self.read_only = read_only
        self._following = follow is not None
        self._follow_pixels = Path(follow) / PIXELS_DIRNAME if follow is not None else None
        self._pixel_db: tuple[rocksdict.Rdict, Any, Any] | None = None  # db, segments family, its handle
        self._pixel_scratch: tempfile.TemporaryDirectory | None = None  # type: ignore[type-arg]
        self._catching_up = threading.Lock()  # readers on several threads may ask at once
        self._spans: dict[str, int] = {}  # camera -> its widest kept entry (us), as recorded
        self._recording_span = threading.Lock()  # the writer's thread and its segmenter's record them
        if not read_only:
            self._open_pixels()
        self._position = self._last_position()
        if not read_only and not self.text_indexed:
            self._index_texts()

    def _last_position(self) -> int:
        it = self._cf["vector_log"].iter()
        it.seek_to_last()
        return struct.unpack(">Q", it.key()[:8])[0] if it.valid() else 0

    @property
    def position(self) -> int:
        """The position of the last write that stored vectors (0 for none): what a snapshot covers."""
        return self._position

    @property
    def text_indexed(self) -> bool:
        """Whether ``by_text`` holds the text of every row (see :meth:`ids_by_text`); not in a
        reader of a store written before the index, until a writer has built it."""
        cf = self._cf.get("by_text")
        return cf is not None and cf.get(_TEXT_INDEXED) is not None

    def _index_texts(self) -> None:
        """Build ``by_text`` from the stored rows (a store written before the index; a few reads
        on a new one), chunk by chunk, then mark it complete: a writer that stops half-way
        starts again at its next open, and rewriting a posting changes nothing."""
        h, rows, built = self._handles["by_text"], self.row_ids(), 0
        while chunk := [pid for _, pid in zip(range(TEXT_INDEX_CHUNK), rows)]:
            wb = rocksdict.WriteBatch(raw_mode=True)
            for pid, meta in zip(chunk, self.patches(chunk)):
                _put_text(wb, h, id_bytes(pid), (meta or {}).get("text"))
            self._db.write(wb)
            built += len(chunk)
        self._cf["by_text"][_TEXT_INDEXED] = b""
        if built:
            log.info("%s: indexed the text of %d rows written before the text index", self.path, built)

    def catch_up(self) -> None:
        """See the writer's newer writes (a ``follow`` store only; others see their own at once)."""
        if self._following:
            with self._catching_up:
                self._db.try_catch_up_with_primary()
                self._position = self._last_position()
                if self._pixel_db is not None:
                    self._pixel_db[0].try_catch_up_with_primary()

    # ------------------------------------------------------------------ writes
    def write_patches(self, batch: PatchBatch, *, offsets: dict[tuple[str, int], int] | None = None,
                      offset_state: dict[tuple[str, int], bytes | None] | None = None,
                      kept: Iterable[KeptEntry] | None = None) -> int:
        """Write a batch of patches, their frames and lineage, in one ``WriteBatch``.

        Args:
            batch: the patches; vector patches also store their vectors.
            offsets: ``(topic, partition) -> next offset`` completed by this batch, written
                in the same ``WriteBatch`` (the effectively-once protocol).
            offset_state: ``(topic, partition) -> state`` of the ranges done past that
                offset (:class:`~operators.sinks.offsets.OffsetTracker`); ``None`` deletes it.
            kept: entries of kept pixels (:mod:`operators.stores.kept`: Kafka messages as
                received, re-encoded frames), in the ``segments`` family with their time index.

        Returns:
            The number of patches written. Rewriting the same ids changes nothing.
        """
        wb = rocksdict.WriteBatch(raw_mode=True)
        h = self._handles
        position = struct.pack(">Q", self._position + 1)
        tracked = []
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
            if meta.get("track_id") is not None:  # the box is the detection: this row or its parent
                vector = batch.vectors[i] if batch.vectors is not None else None
                tracked.append((batch.cameras[i], int(meta["track_id"]), float(batch.wall_time[i]) or float(batch.pts[i]),
                                batch.labels[i], parent if links else int(batch.ids[i]), vector))
            wb.put(pid, json.dumps(meta).encode(), h["patches"])
            wb.put(pid, parent_ref, h["lineage_up"])
            wb.put(parent_ref + pid, b"", h["lineage_down"])
            camera = batch.cameras[i].encode()
            ts = _ts_us(float(batch.wall_time[i]) or float(batch.pts[i]))
            wb.put(camera + _SEP + ts + pid, b"", h["by_time"])
            if batch.labels[i]:
                wb.put(batch.labels[i].encode() + _SEP + camera + _SEP + ts + pid, b"", h["by_label"])
            if batch.models[i]:
                wb.put(batch.models[i].encode() + _SEP + camera + _SEP + ts + pid, b"", h["by_model"])
            _put_text(wb, h["by_text"], pid, meta.get("text"))
            frame_meta = {
                "camera": batch.cameras[i],
                "frame_no": int(batch.frame_no[i]),
                "ts": float(batch.pts[i]),
                "wall_time": float(batch.wall_time[i]),
            }
            wb.put(frame_key, json.dumps(frame_meta).encode(), h["frames"])
            if batch.vectors is not None:
                wb.put(pid, batch.vectors[i].astype(np.float32).tobytes(), h["vectors"])
                wb.put(position + pid, b"", h["vector_log"])
        if tracked:
            track_rows.put_tracks(wb, h, self.get, tracked)
        pixels = rocksdict.WriteBatch(raw_mode=True)
        for entry in kept or ():
            self._put_kept(pixels, entry)
        if len(pixels):  # first: a crash between the two leaves pixels that the replay rewrites
            self._pixel_db[0].write(pixels)  # type: ignore[index]
        for (topic, partition), offset in (offsets or {}).items():
            wb.put(topic.encode() + _SEP + struct.pack(">I", partition), struct.pack(">Q", offset), h["offsets"])
        for (topic, partition), state in (offset_state or {}).items():
            key = topic.encode() + _SEP + struct.pack(">I", partition) + _OFFSET_STATE
            if state is None:
                wb.delete(key, h["offsets"])
            else:
                wb.put(key, state, h["offsets"])
        self._db.write(wb)
        if batch.vectors is not None and len(batch):
            self._position += 1
        return len(batch)

    def write_vectors(self, ids: np.ndarray, vectors: np.ndarray, metas: list[dict[str, Any]] | None = None) -> int:
        """Store imported embeddings (no frame behind them) at the next position, in one ``WriteBatch``.

        Args:
            ids: ``(n,)`` patch ids.
            vectors: ``(n, d)`` float32.
            metas: optional per-row metadata (label, camera, ts, ...), indexed by label and time.

        Returns:
            The new position.
        """
        if not len(ids):
            return self._position  # nothing stored: no position (it would not survive a reopen)
        wb = rocksdict.WriteBatch(raw_mode=True)
        h = self._handles
        position = struct.pack(">Q", self._position + 1)
        for i, pid_int in enumerate(ids.tolist()):
            pid = id_bytes(int(pid_int))
            meta = dict(metas[i]) if metas is not None else {}
            meta.setdefault("parent", 0)
            meta.setdefault("source", "import")
            wb.put(pid, json.dumps(meta).encode(), h["patches"])
            wb.put(pid, vectors[i].tobytes(), h["vectors"])
            wb.put(position + pid, b"", h["vector_log"])
            camera = str(meta.get("camera") or "import").encode()
            ts = _ts_us(float(meta.get("ts") or 0.0))
            wb.put(camera + _SEP + ts + pid, b"", h["by_time"])
            for field in ("label", "model"):
                if meta.get(field):
                    wb.put(str(meta[field]).encode() + _SEP + camera + _SEP + ts + pid, b"", h[f"by_{field}"])
            _put_text(wb, h["by_text"], pid, meta.get("text"))
        self._db.write(wb)
        self._position += 1
        return self._position

    def vectors_since(self, position: int, chunk: int = REPLAY_CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(position, ids, vectors)`` chunks of every vector written after ``position``, oldest first.

        A vector rewritten later appears again at its newer position; each chunk carries its
        current value, so replaying chunks in order (upserts) ends in the current state.
        Costs what was written since ``position``, not the store's size.
        """
        it = self._cf["vector_log"].iter()
        it.seek(struct.pack(">Q", position + 1))
        vectors = self._cf["vectors"]
        ids: list[bytes] = []
        last = position
        while it.valid():
            key = it.key()
            last = struct.unpack(">Q", key[:8])[0]
            ids.append(key[8:])
            it.next()
            if len(ids) >= chunk:
                yield last, *self._chunk(vectors, ids)
                ids = []
        if ids:
            yield last, *self._chunk(vectors, ids)

    @staticmethod
    def _chunk(vectors: rocksdict.Rdict, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        raws = vectors.get(keys)
        ids = np.array([id_from_bytes(k) for k, raw in zip(keys, raws) if raw is not None], np.int64)
        rows = [raw for raw in raws if raw is not None]
        if not rows:
            return ids, np.zeros((0, 0), np.float32)
        dim = len(rows[0]) // 4
        return ids, np.frombuffer(b"".join(rows), np.float32).reshape(-1, dim)

    def _put_parent(self, wb: rocksdict.WriteBatch, parent: int, links: dict[str, Any],
                    child_meta: dict[str, Any], frame_key: bytes) -> None:
        """Store the pixel patch a feature patch was made from (its bbox, label, model, OCR text)."""
        h = self._handles
        grand = int(links.get("parent_parent", 0))
        ref = id_bytes(parent)
        meta = {k: v for k, v in child_meta.items()
                if k in ("camera", "frame_no", "ts", "wall_time", "bbox", "label", "score", "text", "track_id")}
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

    def write_raw(self, family: str, puts: dict[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        """Put and delete raw keys of one family in one ``WriteBatch`` (deletes first)."""
        wb = rocksdict.WriteBatch(raw_mode=True)
        handle = self._handles[family]
        for key in deletes:
            wb.delete(key, handle)
        for key, value in puts.items():
            wb.put(key, value, handle)
        self._db.write(wb)

    # ------------------------------------------------------------------ reads
    def get(self, family: str, key: bytes) -> bytes | None:
        """One raw value, or ``None`` (also for a family an older store lacks)."""
        cf = self._family(family)
        return None if cf is None else cf.get(key)

    def scan(self, family: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` pairs whose key starts with ``prefix``, in key order."""
        cf = self._family(family)
        for key in _prefix_keys(cf, prefix) if cf is not None else ():
            yield key, cf[key]

    def contents(self, *, exclude: Iterable[str] = ()) -> dict[str, frozenset[bytes]]:
        """Every ``key + b"\\x00" + value`` of each column family but ``exclude``: what two stores
        are compared by (a replay, a restart or a fault must leave the store of an uninterrupted
        run; such comparisons exclude :data:`BATCHING_FAMILIES`)."""
        return {f: frozenset(k + b"\x00" + v for k, v in self.scan(f)) for f in COLUMN_FAMILIES if f not in exclude}

    def keys_between(self, family: str, lo: bytes, hi: bytes) -> Iterator[bytes]:
        """Keys ``lo <= key < hi`` of a family, in order (a range seek: costs the keys it returns)."""
        cf = self._family(family)
        return _prefix_keys(cf, lo, hi) if cf is not None else iter(())

    def first_key(self, family: str, at: bytes) -> bytes | None:
        """The first key ``>= at``, or ``None`` (for skip-scans over key prefixes)."""
        it = self._cf[family].iter()
        it.seek(at)
        return it.key() if it.valid() else None

    def last_key(self, family: str, prefix: bytes) -> bytes | None:
        """The last key starting with ``prefix``, or ``None`` (one backward seek)."""
        cf = self._family(family)
        if cf is None:
            return None
        it = cf.iter()
        it.seek_for_prev(prefix + b"\xff" * 32)
        return it.key() if it.valid() and it.key().startswith(prefix) else None

    def last_time(self, camera: str) -> float | None:
        """The latest capture time (seconds) of any patch of ``camera``, or ``None``."""
        key = self.last_key("by_time", camera.encode() + _SEP)
        return None if key is None else struct.unpack(">Q", key[-16:-8])[0] / 1e6

    def count(self, family: str) -> int:
        """Number of keys in a family (a full scan; for tests and stats)."""
        cf = self._family(family)
        return 0 if cf is None else sum(1 for _ in cf.keys())

    def _family(self, name: str) -> Any | None:
        return self._open_pixels() if name == "segments" else self._cf.get(name)

    def patch(self, pid: int) -> dict[str, Any] | None:
        """Metadata of patch ``pid`` (with ``parent`` and ``frame_key``), or ``None``."""
        raw = self._cf["patches"].get(id_bytes(pid))
        return None if raw is None else json.loads(raw)

    def patches(self, ids: list[int]) -> list[dict[str, Any] | None]:
        """Metadata of many patches at once (one multi-get), ``None`` where unknown."""
        raws = self._cf["patches"].get([id_bytes(pid) for pid in ids]) if ids else []
        return [None if raw is None else json.loads(raw) for raw in raws]

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
        if not chain[-1].get("frame_key"):
            return chain  # an imported embedding: no frame behind it
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

    def ids_by_text(self, pattern: str) -> list[int] | None:
        """Sorted ids of the rows whose text holds every trigram of ``pattern`` (folded to lower
        case): a superset of those whose text contains ``pattern``, under ``LIKE`` or ``ILIKE``.
        One range seek per trigram; ``None`` where the index cannot answer: ``pattern`` shorter
        than 3 characters, or a reader of a store written before the index (see
        :attr:`text_indexed`)."""
        grams = _trigrams(pattern)
        if not grams or not self.text_indexed:
            return None
        found: set[int] | None = None
        for gram in grams:
            prefix = gram + _SEP
            ids = {id_from_bytes(k[-8:]) for k in _prefix_keys(self._cf["by_text"], prefix)}
            found = ids if found is None else found & ids
            if not found:
                break
        return sorted(found or ())

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

    # ------------------------------------------------------------------ kept pixels
    def _open_pixels(self) -> Any | None:
        """The ``segments`` family of the pixel database, opened on first use (a reader of a
        store with no kept pixels gets ``None``)."""
        if self._pixel_db is None:
            path = self.path / PIXELS_DIRNAME
            if self.read_only and not (path / "CURRENT").exists():
                return None
            db, self._pixel_scratch, _, _ = _open_db(path, self.read_only, self._follow_pixels, ("segments",))
            self._pixel_db = (db, db.get_column_family("segments"), db.get_column_family_handle("segments"))
        return self._pixel_db[1]

    def _pixel_handle(self) -> Any:
        self._open_pixels()
        assert self._pixel_db is not None, "only a writer writes pixels"
        return self._pixel_db[2]

    def message(self, topic: str, partition: int, offset: int) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        """``(value, headers)`` of a Kafka message kept as received, or ``None``."""
        return self.kept(message_key(topic, partition, offset))

    def kept(self, key: bytes) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        """``(value, headers)`` of a kept-pixels entry (:mod:`operators.stores.kept`), or ``None``."""
        cf = self._open_pixels()
        raw = None if cf is None else cf.get(key)
        return None if raw is None else decode_entry(raw)

    def kept_frame(self, frame_key: bytes) -> tuple[bytes, int] | None:
        """``(entry key, index of the frame in it)`` of the entry holding a frame's pixels, or
        ``None``: the message it came in, a frame entry, or (through its ref) a segment."""
        cf = self._open_pixels()
        if cf is None:
            return None
        key = FrameKeyCodec.decode(frame_key)
        if isinstance(key, KafkaKey):
            entry = message_key(key.topic, key.partition, key.offset)
            if cf.get(entry) is not None:
                return entry, key.index_in_message
        if cf.get(kept_entries.FRAME + frame_key) is not None:
            return kept_entries.FRAME + frame_key, 0
        ref = cf.get(kept_entries.REF + frame_key)
        if ref is None:
            return None
        return ref[4:], struct.unpack(">I", ref[:4])[0]

    def not_in_segments(self, entries: list[KeptEntry]) -> list[KeptEntry]:
        """``entries`` but the messages whose frames a segment holds already (a batch replayed
        after its messages were compacted: stored again, they would sit beside their segment and
        be compacted a second time). One multi-get of their first frames' refs."""
        messages = [e for e in entries if e.key[:1] == kept_entries.MESSAGE]
        cf = self._open_pixels()
        if not messages or cf is None:
            return entries
        refs = cf.get([kept_entries.REF + kept_entries.frames_of(e.key, [], 1)[0][0] for e in messages])
        held = {e.key for e, ref in zip(messages, refs) if ref is not None}
        return [e for e in entries if e.key not in held] if held else entries

    def kept_between(self, camera: str, start: float, end: float) -> Iterator[tuple[bytes, float, float]]:
        """``(entry key, first, last capture time)`` of ``camera``'s kept entries holding a frame
        in ``[start, end)`` seconds, in the order of their last frames: a seek to the first entry
        whose last frame is at or after ``start``, stopping where the last frame is ``end`` plus
        the camera's widest entry (:data:`~operators.stores.kept.SPAN`) or more: no entry from
        there on begins before ``end``. Entries overlap where frames came late (operator replicas
        finishing out of order) or a camera's clock went back; the scan reads those that might.
        A camera with no span record (written before there were any) stops at the first entry
        beginning at or after ``end``, as its entries were written in time order."""
        cf = self._open_pixels()
        if cf is None:
            return
        head = kept_entries.time_prefix(camera)
        hi = struct.unpack(">Q", _ts_us(end))[0]
        span = cf.get(kept_entries.span_key(camera))
        stop = None if span is None else hi + struct.unpack(">Q", span)[0]
        it = cf.iter()
        it.seek(head + _ts_us(start))
        while it.valid() and it.key().startswith(head):
            key, first = it.key(), struct.unpack(">Q", it.value())[0]
            last = struct.unpack(">Q", key[len(head):len(head) + 8])[0]
            if (first >= hi) if stop is None else (last >= stop):
                return
            if first < hi:
                yield key[len(head) + 8:], first / 1e6, last / 1e6
            it.next()

    def kept_since_last_segment(self, camera: str, limit: int = 1024) -> list[tuple[bytes, float, float]]:
        """``camera``'s newest run of kept JPEG, PNG or raw messages (at most ``limit``), oldest
        first: what a segmenter has not compacted yet. A walk back from the camera's newest
        entry, stopping at a segment, a frame entry or an H.264 message."""
        cf = self._open_pixels()
        if cf is None:
            return []
        head = kept_entries.time_prefix(camera)
        it = cf.iter()
        it.seek_for_prev(head + b"\xff" * 9)
        found: list[tuple[bytes, float, float]] = []
        while it.valid() and it.key().startswith(head) and len(found) < limit:
            key = it.key()
            entry = key[len(head) + 8:]
            kept = self.kept(entry) if entry[:1] == kept_entries.MESSAGE else None
            if kept is None or dict(kept[1]).get(H_KIND) == KIND_H264.encode():
                break
            last = struct.unpack(">Q", key[len(head):len(head) + 8])[0]
            found.append((entry, struct.unpack(">Q", it.value())[0] / 1e6, last / 1e6))
            it.prev()
        return found[::-1]

    def replace_kept(self, old: list[tuple[bytes, float, float]], camera: str, new: KeptEntry,
                     frame_keys: list[bytes]) -> None:
        """Replace entries of ``camera`` (``(key, first, last)``, from :meth:`kept_between`) by one
        segment holding their frames, in one ``WriteBatch``: each frame's ref names the segment."""
        wb = rocksdict.WriteBatch(raw_mode=True)
        h = self._pixel_handle()
        self._put_kept(wb, new)
        for i, frame_key in enumerate(frame_keys):
            wb.put(kept_entries.REF + frame_key, struct.pack(">I", i) + new.key, h)
        for key, _, last in old:
            wb.delete(key, h)
            wb.delete(kept_entries.time_prefix(camera) + _ts_us(last) + key, h)
        self._pixel_db[0].write(wb)  # type: ignore[index]

    def _put_kept(self, wb: rocksdict.WriteBatch, entry: KeptEntry) -> None:
        h = self._pixel_handle()
        wb.put(entry.key, entry.encode(), h)
        wb.put(entry.time_key, _ts_us(entry.first_ts), h)
        span = struct.unpack(">Q", _ts_us(entry.last_ts))[0] - struct.unpack(">Q", _ts_us(entry.first_ts))[0]
        with self._recording_span:
            known = self._spans.get(entry.camera)
            if known is None or span > known:
                self._spans[entry.camera] = max(span, known if known is not None else self._widest(entry.camera))
                wb.put(kept_entries.span_key(entry.camera), struct.pack(">Q", self._spans[entry.camera]), h)

    def _widest(self, camera: str) -> int:
        """The widest kept entry of ``camera`` (us): its record, or for a camera kept before there
        were records, one pass over its time index (the record written next spares the next one)."""
        cf = self._open_pixels()
        raw = cf.get(kept_entries.span_key(camera))
        if raw is not None:
            return int(struct.unpack(">Q", raw)[0])
        head = kept_entries.time_prefix(camera)
        widest, it = 0, cf.iter()
        it.seek(head)
        while it.valid() and it.key().startswith(head):
            last = struct.unpack(">Q", it.key()[len(head):len(head) + 8])[0]
            widest = max(widest, last - struct.unpack(">Q", it.value())[0])
            it.next()
        return widest

    def row_ids(self) -> Iterator[int]:
        """The id of every patch written as a row (by the sink or an import), camera by camera in
        time order; not the pixel patches recorded only as the parents of feature patches."""
        for key in self._cf["by_time"].keys():
            yield id_from_bytes(key[-8:])

    def find_vectors(self, ids: list[int]) -> list[np.ndarray | None]:
        """Stored vectors of many patches at once (one multi-get), ``None`` where a patch has none."""
        raws = self._cf["vectors"].get([id_bytes(int(pid)) for pid in ids]) if ids else []
        return [None if raw is None else np.frombuffer(raw, np.float32) for raw in raws]

    def iter_vectors(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every stored ``(patch id, vector)`` in id order (for rebuilding indexes)."""
        for key, raw in self.scan("vectors"):
            yield id_from_bytes(key), np.frombuffer(raw, np.float32)

    def offsets(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset to read`` as last written."""
        return {key: struct.unpack(">Q", raw)[0] for key, raw, state in self._offset_rows() if not state}

    def offset_state(self) -> dict[tuple[str, int], bytes]:
        """``(topic, partition) -> state`` of the ranges done past the stored offset."""
        return {key: raw for key, raw, state in self._offset_rows() if state}

    def _offset_rows(self) -> Iterator[tuple[tuple[str, int], bytes, bool]]:
        for key, raw in self.scan("offsets"):
            topic, rest = key.split(_SEP, 1)  # Kafka topic names hold no NUL
            yield (topic.decode(), struct.unpack(">I", rest[:4])[0]), raw, rest[4:] == _OFFSET_STATE

    def flush(self) -> None:
        """Flush memtables to disk (the WAL already makes writes durable)."""
        self._db.flush()

    def close(self) -> None:
        """Close the database; the object is unusable afterwards (closing twice is a no-op)."""
        if self._db is None:
            return
        if self._pixel_db is not None:
            self._pixel_db[0].close()
            self._pixel_db = None
        self._db.close()
        # rocksdict releases the directory's lock only once every handle is dropped.
        self._cf, self._handles = {}, {}
        self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "LineageStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
