"""Clear errors on a data directory: a store another writer holds (RocksDB's LOCK), a directory
this process cannot write, and a bad manifest. Real RocksDB (rocksdict), no mocks of it.

Tests run as root, and root ignores permission bits: a directory is made read-only for real
with a read-only bind mount (skipped where this process may not mount), and the permission
check itself is also tested by making ``os.access`` answer "not writable".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from operators.sinks.collection_writer import MANIFEST, CollectionWriter, read_manifest
from operators.stores import lineage_store
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError

DIM = 8
REPO = Path(__file__).resolve().parents[2]


def _unit_rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _store(path: Path, n: int = 20) -> Path:
    with LineageStore(path) as store:
        store.write_vectors(np.arange(1, n + 1), _unit_rows(n))
    return path


def _fingerprint(path: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``path`` with its mtime and content hash: what "wrote nothing" compares."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*")) if p.is_file()}


def _hold_in_another_process(path: Path) -> subprocess.Popen:
    """A second process that opens the store for writing and keeps it open until killed."""
    code = ("import sys; from operators.stores.lineage_store import LineageStore; "
            f"s = LineageStore({str(path)!r}); print('open', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    return proc


@pytest.fixture
def read_only_mount(tmp_path):
    """``tmp_path/ro``: a read-only bind mount of ``tmp_path/rw`` (read-only even for root)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    bind = subprocess.run(["mount", "--bind", str(rw), str(ro)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remount.stderr.decode().strip()}")
        yield rw, ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# ---------------------------------------------------------------------------------------- locked
def test_a_writer_held_by_another_process_is_a_clear_error_and_readers_still_open(tmp_path, caplog):
    data = tmp_path / "data"
    path = _store(data / "lineage")
    holder = _hold_in_another_process(path)
    try:
        with pytest.raises(ConfigError, match=r"is in use by another process \(.*LOCK") as info:
            LineageStore(path)
        assert str(info.value).startswith(f"{data} is in use by another process")
        # readers take no lock: read-only and secondary (follow=) open beside the writer
        with LineageStore(path, read_only=True) as reader:
            assert reader.position == 1 and reader.vectors([1, 20]).shape == (2, DIM)
        with LineageStore(path, follow=tmp_path / "secondary") as follower:
            follower.catch_up()
            assert follower.position == 1
    finally:
        holder.kill()
        holder.wait()
    with LineageStore(path) as store:  # the lock goes with the process
        assert store.position == 1


def test_opening_a_store_twice_for_writing_in_one_process_says_so(tmp_path):
    path = _store(tmp_path / "lineage")
    with LineageStore(path):
        with pytest.raises(ConfigError, match="already open for writing in this process"):
            LineageStore(path)


def test_a_collection_writer_on_a_held_directory_writes_nothing(tmp_path):
    writer = CollectionWriter(tmp_path / "data", None, dim=DIM)
    writer.import_vectors(np.arange(1, 6), _unit_rows(5))
    manifest = (tmp_path / "data" / MANIFEST).read_text()
    with pytest.raises(ConfigError, match="already open for writing in this process"):
        CollectionWriter(tmp_path / "data", None, dim=DIM, index_factory="SQ8", shards=3)
    writer.close()
    assert (tmp_path / "data" / MANIFEST).read_text() == manifest
    holder = _hold_in_another_process(tmp_path / "data" / "lineage")
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            CollectionWriter(tmp_path / "data", None, dim=DIM, index_factory="SQ8", shards=3)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "data" / MANIFEST).read_text() == manifest


# ------------------------------------------------------------------------------------ read-only
def test_a_store_this_process_cannot_write_refuses_writers_and_is_read_without_writing(tmp_path, monkeypatch):
    path = _store(tmp_path / "data" / "lineage")
    before = _fingerprint(tmp_path / "data")
    real_access = os.access

    def no_write_under_data(p, mode, *a, **kw):  # what access(2) answers on a read-only directory
        if mode & os.W_OK and str(p).startswith(str(tmp_path / "data")):
            return False
        return real_access(p, mode, *a, **kw)

    monkeypatch.setattr(lineage_store.os, "access", no_write_under_data)
    with pytest.raises(ConfigError, match=r"is read-only for this process \(no write permission") as info:
        LineageStore(path)
    assert str(info.value).startswith(f"{tmp_path / 'data'} is read-only")
    with pytest.raises(ConfigError, match="is read-only"):
        LineageStore(tmp_path / "data" / "other" / "lineage")  # a new store below it, too
    with LineageStore(path, read_only=True) as store:
        assert store.position == 1
        assert np.allclose(store.vectors([1, 2, 20]), _unit_rows(20)[[0, 1, 19]])
        assert list(store.vectors_since(0))[0][1].tolist() == list(range(1, 21))
    assert _fingerprint(tmp_path / "data") == before  # not even rocksdict's config file was rewritten


def test_a_read_only_mount_refuses_writers_and_serves_readers(read_only_mount, tmp_path, caplog):
    rw, ro = read_only_mount
    _store(rw / "lineage")
    before = _fingerprint(rw)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(ro))} is read-only for this process"):
        LineageStore(ro / "lineage")
    with pytest.raises(ConfigError, match="is read-only"):
        CollectionWriter(ro, None, dim=DIM)
    with pytest.raises(ConfigError, match="is read-only"):
        LineageStore(ro / "new" / "lineage")
    with LineageStore(ro / "lineage", read_only=True) as store:
        assert store.position == 1 and store.vectors([7]).shape == (1, DIM)
    with caplog.at_level(logging.WARNING, logger=lineage_store.__name__):
        with LineageStore(ro / "lineage", follow=tmp_path / "secondary") as follower:
            follower.catch_up()  # a fixed view: nothing to catch up with, and no error
            assert follower.position == 1
    assert "later writes are not seen" in caplog.text
    assert _fingerprint(rw) == before


def test_a_reader_of_a_missing_store_is_still_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no StreamVision store"):
        LineageStore(tmp_path / "nothing", read_only=True)


# ------------------------------------------------------------------------------------- manifest
@pytest.mark.parametrize("text, problem", [
    ("{not json", "is not a readable JSON manifest"),
    (b"\xff\xfe\x00garbage", "is not a readable JSON manifest"),
    ("[1, 2]", "must hold a JSON object, got list"),
    ('"a string"', "must hold a JSON object, got str"),
    ('{"version": 2, "dim": "x"}', '"dim" must be a positive integer or null, got \'x\''),
    ('{"version": 2, "dim": -3}', '"dim" must be a positive integer'),
    ('{"version": 2, "dim": true}', '"dim" must be a positive integer'),
    ('{"version": 2, "dim": 8, "shards": "2"}', '"shards" must be a positive integer, got \'2\''),
    ('{"version": 2, "dim": 8, "factory": 5}', '"factory" must be a FAISS index_factory string'),
    ('{"version": 2, "dim": 8, "featurizer": [1]}', '"featurizer" must be an object or null'),
    ('{"version": 3, "dim": 8}', "has manifest version 3, newer than this StreamVision reads"),
    ('{"version": "2", "dim": 8}', '"version" must be a positive integer'),
])
def test_a_bad_manifest_is_a_config_error_naming_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / MANIFEST
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        read_manifest(tmp_path)
    assert str(info.value).startswith(str(path)) and problem in str(info.value)
    with pytest.raises(ConfigError):
        CollectionWriter(tmp_path, None)  # a writer refuses it before opening anything
    assert not (tmp_path / "lineage").exists()


def test_good_manifests_still_read(tmp_path):
    for manifest in ({"version": 2, "dim": 8, "factory": "SQ8", "shards": 4, "featurizer": {"op": "x"}},
                     {"version": 2, "dim": None, "factory": "Flat", "shards": 2, "featurizer": None},
                     {"dim": 8}):  # no version: the first manifests
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))
        assert read_manifest(tmp_path) == manifest
    assert read_manifest(tmp_path / "none") == {}


def test_a_data_directory_that_cannot_be_created_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the data directory"):
        CollectionWriter(tmp_path / "file" / "data", None)
