"""User-set labels of patches, kept in a collection's RocksDB (the ``labels`` family).

A detector's ``label`` is what a model said; a *user label* is what a person (or a script)
said a patch is, the column model selection trains on. Setting one records who set it and
when, and keeps every earlier setting (the label's own lineage):

==========================================  ============================================
key (``labels`` family)                     value
==========================================  ============================================
``L`` id(8)                                 JSON ``{"label", "by", "at"}``: the current label
``N`` label 0 id(8)                         empty: patches by current label (range seeks)
``H`` id(8) at_us(8)                        JSON ``{"label", "by", "at"}``: every setting
==========================================  ============================================

All keys of one :meth:`UserLabels.set` call go in one ``WriteBatch``; the WAL keeps them
across restarts like the rest of the store.
"""

from __future__ import annotations

import getpass
import json
import struct
import time
from typing import Any, Iterable

from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import InputError
from streamvision.core.lineage import id_bytes, id_from_bytes

FAMILY = "labels"
_CURRENT, _BY_NAME, _HISTORY, _SEP = b"L", b"N", b"H", b"\x00"
#: Longest label name accepted (a column value, not a document).
MAX_LABEL_CHARS = 128


def default_user() -> str:
    """Who sets a label when no one is named: the login name of this process."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_label(name: Any) -> str:
    """A valid label name: a non-empty string without NUL, at most :data:`MAX_LABEL_CHARS`."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name or len(name) > MAX_LABEL_CHARS:
        raise InputError(f"a label must be a non-empty string of at most {MAX_LABEL_CHARS} characters "
                         f"without NUL, got {name!r}")
    return name.strip()


class UserLabels:
    """The user labels of one :class:`LineageStore` (read-only stores can read them).

    >>> # UserLabels(store).set([patch_id], "person", by="ana"); UserLabels(store).get(patch_id)
    """

    def __init__(self, store: LineageStore) -> None:
        self.store = store

    def set(self, ids: Iterable[int], label: str, *, by: str | None = None, at: float | None = None) -> int:
        """Label patches ``ids`` as ``label`` (replacing any earlier user label).

        Raises:
            InputError: a bad label, no ids, or an id the store holds no patch for.

        Returns:
            The number of patches labelled.
        """
        label = check_label(label)
        ids = [int(i) for i in ids]
        if not ids:
            raise InputError("name at least one patch id to label")
        unknown = [pid for pid, meta in zip(ids, self.store.patches(ids)) if meta is None]
        if unknown:
            raise InputError(f"no patch with id {unknown[0]}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        record = {"label": label, "by": by or default_user(), "at": float(time.time() if at is None else at)}
        value = json.dumps(record).encode()
        stamp = struct.pack(">Q", int(record["at"] * 1e6))
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        for pid, old in zip(ids, self.get_many(ids)):
            key = id_bytes(pid)
            if old is not None and old["label"] != label:
                deletes.append(_BY_NAME + old["label"].encode() + _SEP + key)
            puts[_CURRENT + key] = value
            puts[_BY_NAME + label.encode() + _SEP + key] = b""
            puts[_HISTORY + key + stamp] = value
        self.store.write_raw(FAMILY, puts, deletes)
        return len(set(ids))

    def get(self, pid: int) -> dict[str, Any] | None:
        """``{"label", "by", "at"}`` of patch ``pid``'s current user label, or ``None``."""
        return self.get_many([pid])[0]

    def get_many(self, ids: list[int]) -> list[dict[str, Any] | None]:
        """The current user labels of many patches, ``None`` where unlabelled."""
        raws = [self.store.get(FAMILY, _CURRENT + id_bytes(int(pid))) for pid in ids]
        return [None if raw is None else json.loads(raw) for raw in raws]

    def history(self, pid: int) -> list[dict[str, Any]]:
        """Every label ever set on patch ``pid``, oldest first."""
        return [json.loads(raw) for _, raw in self.store.scan(FAMILY, _HISTORY + id_bytes(int(pid)))]

    def ids(self, label: str) -> list[int]:
        """Patches whose current user label is ``label``, by id."""
        prefix = _BY_NAME + label.encode() + _SEP
        return [id_from_bytes(key[len(prefix):]) for key, _ in self.store.scan(FAMILY, prefix)]

    def labelled(self) -> dict[int, str]:
        """Every labelled patch: ``id -> current user label``."""
        return {id_from_bytes(key[1:]): json.loads(raw)["label"] for key, raw in self.store.scan(FAMILY, _CURRENT)}

    def names(self) -> dict[str, int]:
        """Label name -> number of patches that carry it now."""
        counts: dict[str, int] = {}
        for key, _ in self.store.scan(FAMILY, _BY_NAME):
            name = key[1:-9].decode()
            counts[name] = counts.get(name, 0) + 1
        return counts
