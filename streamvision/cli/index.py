"""``streamvision query`` subcommands served by the sharded vector index service.

Registered by the main CLI as part of ``streamvision query``::

    streamvision query threshold IMAGE --data DIR --t 0.9 [--label car --camera cam3 --start S --end E] [--json]
    streamvision query threshold --patch ID --data DIR --t 0.9
    streamvision query near-duplicates --data DIR --t 0.97 [--label/--camera/--start/--end] [--json]
    streamvision query join --data DIR --camera-a cam1 --camera-b cam2 --t 0.9 [--json]
    streamvision query index-stats --data DIR [--json]

Each ``--json`` run prints one JSON document: ``{"query": {...}, "results": [...]}``; a
result carries the patch id, score and lineage (source file or Kafka coordinates, frame,
time, camera, bbox, label). The shards are opened in this process (one thread each) from
``DIR/index-service``, filled from ``DIR/lineage`` on first use and snapshotted so that the
next query starts fast; ``--ray`` runs them as Ray actors instead.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Vector index queries: threshold, near-duplicates, joins.", no_args_is_help=True)

_DATA = typer.Option(..., "--data", help="Data directory (written by `streamvision ingest`).")
_JSON = typer.Option(False, "--json", help="Print one JSON document.")
_SHARDS = typer.Option(2, "--shards", help="Index shards (one core each).")
_RAY = typer.Option(False, "--ray", help="Run the shards as Ray actors (local Ray unless RAY_ADDRESS).")
_LABEL = typer.Option(None, "--label", help="Only patches with this label.")
_CAMERA = typer.Option(None, "--camera", help="Only patches from this camera / source.")
_START = typer.Option(None, "--start", help="Only patches at or after this time (seconds).")
_END = typer.Option(None, "--end", help="Only patches before this time (seconds).")
_LIMIT = typer.Option(100, "--limit", help="Print at most this many results (the count is always exact).")


@contextmanager
def _open(data: Path, shards: int, use_ray: bool) -> Iterator[tuple[Any, Any]]:
    """``(collection, index)`` for a data directory; the index is snapshotted after a fill."""
    from operators.index.sharded import ShardedIndex
    from streamvision.api.query import connect

    with connect(data) as collection:
        kind: Any = ShardedIndex
        if use_ray:
            from cluster.index_service import VectorIndexService

            kind = VectorIndexService
        index = kind.open(data, collection.dim, "Flat", shards)
        try:
            stats = index.stats()
            if any(s["replayed"]["store"] or s["replayed"]["log"] for s in stats["shards"]):
                index.snapshot(collection.store.offsets())
            yield collection, index
        finally:
            index.close()


def _where_ids(collection: Any, label: Optional[str], camera: Optional[str],
               start: Optional[float], end: Optional[float]) -> Optional[np.ndarray]:
    from operators.index.filters import Where, where_ids

    return where_ids(collection.store, Where(label=label, camera=camera, start=start, end=end))


def _emit(as_json: bool, query: dict[str, Any], results: list[dict[str, Any]], total: int) -> None:
    if as_json:
        print(json.dumps({"query": query, "count": total, "results": results}, indent=2))
        return
    console = Console()
    console.print(f"{total} result(s) for {query}")
    if not results:
        return
    columns = list(results[0])
    table = Table(*columns)
    for row in results:
        table.add_row(*(json.dumps(row[c]) if isinstance(row[c], (dict, list)) else str(row[c]) for c in columns))
    console.print(table)


def _pairs(collection: Any, a: np.ndarray, b: np.ndarray, s: np.ndarray, limit: int) -> list[dict[str, Any]]:
    order = np.argsort(-s, kind="stable")[:limit]
    return [{"score": round(float(s[i]), 6),
             "a": collection.describe(int(a[i]), float(s[i])).as_dict(),
             "b": collection.describe(int(b[i]), float(s[i])).as_dict()} for i in order]


def _stored_vector(collection: Any, patch: int) -> np.ndarray:
    from streamvision.core.errors import InputError

    try:
        return collection.store.vectors([patch])
    except KeyError as exc:
        raise InputError(f"no vector stored for patch {patch} in {collection.data}") from exc


@app.command("threshold")
def threshold(
    image: Optional[Path] = typer.Argument(None, help="Query image (or use --patch)."),
    data: Path = _DATA,
    t: float = typer.Option(0.9, "--t", help="Inner-product threshold: results have score > t."),
    patch: Optional[int] = typer.Option(None, "--patch", help="Query with the stored vector of this patch."),
    label: Optional[str] = _LABEL, camera: Optional[str] = _CAMERA,
    start: Optional[float] = _START, end: Optional[float] = _END,
    limit: int = _LIMIT, shards: int = _SHARDS, use_ray: bool = _RAY, as_json: bool = _JSON,
) -> None:
    """Every patch whose inner product with the query is greater than T (the MemSQL query)."""
    if (image is None) == (patch is None):
        raise typer.BadParameter("give either an IMAGE or --patch ID")
    with _open(data, shards, use_ray) as (collection, index):
        q = collection.featurize(image) if image is not None else _stored_vector(collection, patch)
        lims, D, I = index.threshold(q[:1], t, where_ids=_where_ids(collection, label, camera, start, end))
        results = [collection.describe(int(i), float(d)).as_dict() for d, i in zip(D[:limit], I[:limit])]
    query = {"image": None if image is None else str(image), "patch": patch, "t": t,
             "where": {"label": label, "camera": camera, "start": start, "end": end}}
    _emit(as_json, query, results, int(lims[1]))


@app.command("near-duplicates")
def near_duplicates(
    data: Path = _DATA,
    t: float = typer.Option(0.97, "--t", help="Pairs with inner product > t are near-duplicates."),
    label: Optional[str] = _LABEL, camera: Optional[str] = _CAMERA,
    start: Optional[float] = _START, end: Optional[float] = _END,
    limit: int = _LIMIT, shards: int = _SHARDS, use_ray: bool = _RAY, as_json: bool = _JSON,
) -> None:
    """Similarity self-join: every pair of patches with inner product > T, best first."""
    with _open(data, shards, use_ray) as (collection, index):
        a, b, s = index.near_duplicates(t, where_ids=_where_ids(collection, label, camera, start, end))
        results = _pairs(collection, a, b, s, limit)
    query = {"t": t, "where": {"label": label, "camera": camera, "start": start, "end": end}}
    _emit(as_json, query, results, len(a))


@app.command("join")
def join(
    data: Path = _DATA,
    camera_a: str = typer.Option(..., "--camera-a", help="Left collection: this camera."),
    camera_b: str = typer.Option(..., "--camera-b", help="Right collection: this camera."),
    t: float = typer.Option(0.9, "--t", help="Pairs with inner product > t."),
    label: Optional[str] = _LABEL, start: Optional[float] = _START, end: Optional[float] = _END,
    limit: int = _LIMIT, shards: int = _SHARDS, use_ray: bool = _RAY, as_json: bool = _JSON,
) -> None:
    """Join two cameras: every (a, b) with inner product > T (e.g. objects seen by both)."""
    with _open(data, shards, use_ray) as (collection, index):
        left = _where_ids(collection, label, camera_a, start, end)
        right = _where_ids(collection, label, camera_b, start, end)
        a, b, s = index.join(left, right, t)
        results = _pairs(collection, a, b, s, limit)
    query = {"t": t, "camera_a": camera_a, "camera_b": camera_b,
             "where": {"label": label, "start": start, "end": end}}
    _emit(as_json, query, results, len(a))


@app.command("index-stats")
def index_stats(data: Path = _DATA, shards: int = _SHARDS, use_ray: bool = _RAY, as_json: bool = _JSON) -> None:
    """Per-shard facts: vectors held, factory, device, replay counts, snapshot offsets."""
    with _open(data, shards, use_ray) as (_, index):
        stats = index.stats()
    if as_json:
        print(json.dumps(stats, indent=2))
    else:
        _emit(False, {"data": str(data)}, stats["shards"], stats["ntotal"])
