"""The CLI on a damaged or unusable data directory: one ``error:`` line and exit code 2, or the
documented recovery (a corrupt index snapshot is rebuilt from the store, with a warning).

The CLI runs as a subprocess (``python -m streamvision.cli``), on a real data directory (RocksDB
and FAISS snapshots) written by :class:`CollectionWriter` from imported unit vectors, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import streamvision
from operators.sinks.collection_writer import MANIFEST, CollectionWriter
from operators.sinks.store_sink import local_shards
from operators.stores import lineage_store
from operators.stores.lineage_store import LineageStore

DIM = 8
N = 200
REPO = Path(__file__).resolve().parents[2]


def _vectors(n: int = N, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """A closed data directory: manifest, RocksDB store and one snapshot per shard."""
    data = tmp_path_factory.mktemp("collection") / "data"
    writer = CollectionWriter(data, local_shards, dim=DIM, shards=2)
    metas = [{"label": "car" if i % 2 else "person", "camera": f"cam{i % 3}", "ts": float(i)} for i in range(N)]
    writer.import_vectors(np.arange(1, N + 1), _vectors(), metas)
    writer.close()
    for shard in ("shard-0-of-2", "shard-1-of-2"):
        assert (data / "index" / shard / "index.faiss").stat().st_size > 0
    return data


@pytest.fixture
def data(collection, tmp_path) -> Path:
    """A fresh copy of :func:`collection` for one test to damage."""
    return Path(shutil.copytree(collection, tmp_path / "data"))


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "q.npy"
    np.save(path, _vectors(3, seed=1))
    return path


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamvision.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _similar(data: Path, queries: Path) -> subprocess.CompletedProcess:
    return cli("query", "similar", "--vectors", queries, "-k", "5", "--data", data, "--json")


def _results(done: subprocess.CompletedProcess) -> list:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["results"]


def _error_line(done: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed command (exit 2, no traceback)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def _fingerprint(path: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def expected(collection, queries) -> list:
    """What ``query similar`` answers on the intact collection."""
    return _results(_similar(collection, queries))


# ----------------------------------------------------------------------- corrupt index snapshots
@pytest.mark.parametrize("damage", ["truncated-index-and-garbage-meta", "empty-files-and-half-written-meta"])
def test_corrupt_snapshots_are_rebuilt_from_the_store_with_a_warning(data, queries, expected, damage, caplog):
    shard0, shard1 = data / "index" / "shard-0-of-2", data / "index" / "shard-1-of-2"
    if damage == "truncated-index-and-garbage-meta":
        os.truncate(shard0 / "index.faiss", (shard0 / "index.faiss").stat().st_size // 2)
        (shard1 / "snapshot.json").write_bytes(b"\x00\xffnot json at all")
    else:
        (shard0 / "index.faiss").write_bytes(b"")
        (shard0 / "snapshot.json").write_bytes(b"")
        meta = (shard1 / "snapshot.json").read_text()
        (shard1 / "snapshot.json").write_text(meta[: len(meta) // 2])
    damaged = _fingerprint(data)
    done = _similar(data, queries)
    assert _results(done) == expected  # exit 0, the same answer
    assert done.stderr.count("is unreadable") == 2 and "rebuilding it from the store" in done.stderr
    stats = json.loads(cli("query", "stats", "--data", data, "--json").stdout)
    assert stats["ntotal"] == N and [s["replayed"] for s in stats["shards"]] == [s["ntotal"] for s in stats["shards"]]
    # the embedded client: the same answer, the same warning
    with caplog.at_level(logging.WARNING), streamvision.connect(data) as sv:
        matches = sv.similar(np.load(queries), k=5)
    assert [[m.as_dict() for m in row] for row in matches] == expected
    assert "rebuilding it from the store" in caplog.text
    assert _fingerprint(data) == damaged  # readers repair nothing in place: they write nothing


# ------------------------------------------------------------------------------- bad manifests
@pytest.mark.parametrize("text, problem", [
    ("{garbage", "is not a readable JSON manifest"),
    ('{"version": 2, "dim": "x", "factory": "Flat", "shards": 2}', '"dim" must be a positive integer or null'),
    ("[8, 2]", "must hold a JSON object, got list"),
    ('{"version": 7, "dim": 8, "factory": "Flat", "shards": 2}', "has manifest version 7, newer than"),
])
def test_a_bad_manifest_is_one_error_line_and_exit_2(data, queries, text, problem):
    (data / MANIFEST).write_text(text)
    line = _error_line(_similar(data, queries))
    assert f"{data / MANIFEST}" in line and problem in line
    assert problem in _error_line(cli("query", "stats", "--data", data))
    np.save(data.parent / "more.npy", _vectors(4, seed=2))
    assert problem in _error_line(cli("import", data.parent / "more.npy", "--data", data))
    assert (data / MANIFEST).read_text() == text  # the writer did not "fix" it


# ----------------------------------------------------------------------------- a locked store
def test_a_directory_another_writer_holds_refuses_writers_and_answers_queries(data, queries, expected):
    np.save(data.parent / "more.npy", _vectors(4, seed=2))
    with LineageStore(data / "lineage"):  # this test's process is the other writer
        line = _error_line(cli("import", data.parent / "more.npy", "--data", data, "--first-id", "1000"))
        assert line.startswith(f"error: {data} is in use by another process (")
        assert f"{data / 'lineage' / 'LOCK'}" in line
        assert _results(_similar(data, queries)) == expected  # readers are not blocked
    done = cli("import", data.parent / "more.npy", "--data", data, "--first-id", "1000")
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------- read-only stores
@pytest.fixture
def read_only_data(collection, tmp_path):
    """A read-only bind mount of a copy of the collection (read-only even for root)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    shutil.copytree(collection, rw)
    ro.mkdir()
    bind = subprocess.run(["mount", "--bind", str(rw), str(ro)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remount.stderr.strip()}")
        yield rw, ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_read_only_directory_refuses_writers_and_answers_queries(read_only_data, queries, expected, tmp_path):
    rw, ro = read_only_data
    before = _fingerprint(rw)
    np.save(tmp_path / "more.npy", _vectors(4, seed=2))
    line = _error_line(cli("import", tmp_path / "more.npy", "--data", ro, "--first-id", "1000"))
    assert line.startswith(f"error: {ro} is read-only for this process (")
    assert _results(_similar(ro, queries)) == expected
    with streamvision.connect(ro) as sv:
        assert [[m.as_dict() for m in row] for row in sv.similar(np.load(queries), k=5)] == expected
    assert _fingerprint(rw) == before


def test_the_cli_reports_a_directory_it_cannot_write_where_mounts_are_not_possible(
        data, queries, expected, tmp_path, monkeypatch, capsys):
    """The same check in-process, with ``os.access`` answering what it answers on a read-only
    directory (works as root and without mount rights)."""
    from streamvision.cli.app import main

    real_access = os.access
    monkeypatch.setattr(lineage_store.os, "access", lambda p, mode, *a, **kw: (
        False if mode & os.W_OK and str(p).startswith(str(data)) else real_access(p, mode, *a, **kw)))
    np.save(tmp_path / "more.npy", _vectors(4, seed=2))
    before = _fingerprint(data)

    def run(*args: str | Path) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["streamvision", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
            raise SystemExit(0)
        out, err = capsys.readouterr()
        return info.value.code or 0, out, err

    code, _, err = run("import", tmp_path / "more.npy", "--data", data, "--first-id", "1000")
    assert code == 2 and err.strip().startswith(f"error: {data} is read-only for this process (no write permission")
    code, out, _ = run("query", "similar", "--vectors", queries, "-k", "5", "--data", data, "--json")
    assert code == 0 and json.loads(out)["results"] == expected
    assert _fingerprint(data) == before
