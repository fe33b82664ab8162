"""Existing embeddings from a file, in chunks, for bulk import (as MemSQL loads its ``features`` table).

* ``.npy``: an ``(n, d)`` float array (never unpickled); ids are ``first_id .. first_id + n - 1``.
* ``.parquet``: an ``id`` integer column, a ``vector`` list-of-float column, and optional
  metadata columns (``label``, ``camera``, ``ts``, ``model`` are indexed for ``where=``
  filters; any other scalar column is kept in the patch's metadata).

Each row's metadata records where it came from: ``{"source": {"file": PATH, "row": i}}``.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
>>> np.save(path, np.eye(3, dtype=np.float32))
>>> [(ids.tolist(), x.shape) for ids, x, _ in read_embeddings(path, chunk=2)]
[([1, 2], (2, 3)), ([3], (1, 3))]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamvision.core.errors import InputError

#: Rows per chunk handed to the writer.
IMPORT_CHUNK = 65536
_INDEXED = ("label", "camera", "ts", "model")

Chunk = tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]


def _metas(path: Path, first_row: int, n: int, columns: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    metas = [{"source": {"file": str(path), "row": first_row + i}} for i in range(n)]
    for name, values in (columns or {}).items():
        for meta, value in zip(metas, values):
            if value is not None:
                meta[name] = value
    return metas


def _npy_chunks(path: Path, chunk: int, first_id: int) -> Iterator[Chunk]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as a .npy array: {exc}") from exc
    if array.ndim != 2 or array.dtype.kind != "f":
        raise InputError(f"{path} must hold an (n, d) float array, got {array.dtype} {array.shape}")
    for start in range(0, len(array), chunk):
        x = np.array(array[start:start + chunk], dtype=np.float32)  # a copy: the file stays mapped read-only
        yield np.arange(first_id + start, first_id + start + len(x), dtype=np.int64), x, _metas(path, start, len(x))


def _parquet_chunks(path: Path, chunk: int) -> Iterator[Chunk]:
    try:
        reader = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path} as Parquet: {exc}") from exc
    names = reader.schema_arrow.names
    if "id" not in names or "vector" not in names:
        raise InputError(f"{path} needs an 'id' and a 'vector' column, has {names}")
    extra = [n for n in names if n not in ("id", "vector")]
    row = 0
    for batch in reader.iter_batches(batch_size=chunk):
        ids = batch.column("id").to_numpy(zero_copy_only=False)
        if ids.dtype.kind not in "iu":
            raise InputError(f"{path}: 'id' must be an integer column, got {batch.column('id').type}")
        try:
            x = np.stack(batch.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: 'vector' must hold equal-length lists of numbers: {exc}") from exc
        columns = {name: batch.column(name).to_pylist() for name in extra
                   if not pa.types.is_nested(batch.column(name).type)}
        yield ids.astype(np.int64), x, _metas(path, row, len(ids), columns)
        row += len(ids)


def read_embeddings(path: str | Path, *, chunk: int = IMPORT_CHUNK, first_id: int = 1) -> Iterator[Chunk]:
    """``(ids, vectors (n, d) float32, metadata per row)`` chunks of an embeddings file.

    Raises:
        InputError: a missing file, an unknown suffix, or columns of the wrong kind.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"embeddings file not found: {path}")
    if path.suffix == ".npy":
        return _npy_chunks(path, chunk, first_id)
    if path.suffix == ".parquet":
        return _parquet_chunks(path, chunk)
    raise InputError(f"{path}: import reads .npy or .parquet files")
