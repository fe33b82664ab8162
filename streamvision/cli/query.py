"""``streamvision query ...`` and ``streamvision lineage``: one query contract, embedded or served.

    streamvision query similar IMAGE --data DIR -k 5 [--label car --camera cam3 --start S --end E --model M] [--json]
    streamvision query similar --patch ID --service http://127.0.0.1:8000
    streamvision query threshold IMAGE --data DIR --t 0.9 [filters] [--json]
    streamvision query near-duplicates --data DIR --t 0.97 [filters] [--json]
    streamvision query join --data DIR --camera-a cam1 --camera-b cam2 --t 0.9 [--json]
    streamvision query stats --data DIR [--json]
    streamvision lineage PATCH_ID --data DIR [--json]
    streamvision sql "SELECT ..." --data DIR|--service URL [--param q=IMAGE] [--json]
    streamvision crop PATCH_ID --data DIR -o OUT.png

A query is an IMAGE, ``--patch ID`` (that patch's stored vector) or ``--vectors FILE.npy``
(one result list per row). ``--service URL`` asks a running service; ``--data DIR`` asks
the service serving DIR if one runs (found from ``DIR/service.json``), else opens DIR in
this process. ``--json`` prints the same JSON document the HTTP API answers.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cluster.service import names
from streamvision.core.errors import InputError

if TYPE_CHECKING:
    from streamvision.api.query import Queries

app = typer.Typer(help="Ask a collection: similar, threshold, near-duplicates, join, stats.", no_args_is_help=True)

_DATA = typer.Option(None, "--data", help="Data directory (asks its service if one serves it).")
_SERVICE = typer.Option(None, "--service", help="URL of a running `streamvision serve`.")
_COLLECTION = typer.Option(None, "--collection", help="Collection to ask, when a service serves several.")
_TOKEN = typer.Option(None, "--token", envvar="STREAMVISION_TOKEN", help="Bearer token of the service.")
_JSON = typer.Option(False, "--json", help="Print one JSON document (the HTTP API's).")
_PATCH = typer.Option(None, "--patch", help="Query with the stored vector of this patch.")
_VECTORS = typer.Option(None, "--vectors", help="Query with the rows of an (n, d) or (d,) float .npy file.")
_LABEL = typer.Option(None, "--label", help="Only patches with this label.")
_CAMERA = typer.Option(None, "--camera", help="Only patches from this camera / source.")
_START = typer.Option(None, "--start", help="Only patches at or after this time (seconds).")
_END = typer.Option(None, "--end", help="Only patches before this time (seconds).")
_MODEL = typer.Option(None, "--model", help="Only patches made by this model / operator.")
_LIMIT = typer.Option(100, "--limit", help="Print at most this many results (counts stay exact).")


def open_target(data: Optional[Path], service: Optional[str], token: Optional[str] = None,
                collection: Optional[str] = None) -> Queries:
    """The client for ``--service URL`` or ``--data DIR`` (its service if one runs).

    Raises:
        InputError: neither or both given.
    """
    from streamvision.api.client import ServiceClient  # the clients import their engines: only when asked
    from streamvision.api.query import Collection

    if (data is None) == (service is None):
        raise InputError("give either --data DIR or --service URL")
    if service is not None:
        return ServiceClient(service, token=token, collection=collection)
    assert data is not None
    record = names.read_record(data)
    if record is not None:
        return ServiceClient(record["url"], token=token, collection=Path(data).resolve().name)
    return Collection(data)


def _query(image: Optional[Path], patch: Optional[int], vectors: Optional[Path]) -> Any:
    given = [q for q in (image, patch, vectors) if q is not None]
    if len(given) != 1:
        raise InputError("give one query: an IMAGE, --patch ID or --vectors FILE.npy")
    if vectors is not None:
        try:
            return np.load(vectors, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {vectors} as a .npy array: {exc}") from exc
    return patch if patch is not None else image


def _where(label: Optional[str], camera: Optional[str], start: Optional[float], end: Optional[float],
           model: Optional[str]) -> dict[str, Any]:
    return {"label": label, "camera": camera, "start": start, "end": end, "model": model}


def _source(lineage: dict[str, Any]) -> str:
    src = lineage.get("source")
    if not isinstance(src, dict):
        return str(src)
    return str(src.get("file") or f"{src.get('topic')}/{src.get('partition')}@{src.get('offset')}")


def emit(doc: dict[str, Any], as_json: bool) -> None:
    """Print a query's document: JSON, or a table per query row."""
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    console = Console()
    if doc["kind"] in ("similar", "threshold"):
        for row, matches in enumerate(doc["results"]):
            counted = f" of {doc['counts'][row]}" if "counts" in doc else ""
            table = Table("rank", "patch id", "score", "source", "frame_no", "ts", "label",
                          title=f"query {row}: {len(matches)}{counted} result(s)")
            for rank, m in enumerate(matches, 1):
                lin = m["lineage"]
                table.add_row(str(rank), str(m["patch_id"]), f"{m['score']:.4f}", _source(lin),
                              str(lin.get("frame_no")), f"{lin.get('ts') or 0:.2f}", lin.get("label") or "")
            console.print(table)
        return
    if doc["kind"] in ("near_duplicates", "join"):
        table = Table("score", "a", "a source", "b", "b source", title=f"{doc['count']} pair(s)")
        for pair in doc["results"]:
            table.add_row(f"{pair['score']:.4f}", str(pair["a"]["patch_id"]), _source(pair["a"]["lineage"]),
                          str(pair["b"]["patch_id"]), _source(pair["b"]["lineage"]))
        console.print(table)
        return
    if doc["kind"] == "sql":
        table = Table(*doc["columns"], title=f"{doc['count']} row(s)")
        for row in doc["rows"]:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)
        return
    console.print_json(json.dumps(doc))


def _param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--param``: an existing file is an image, then an integer (a patch id
    where the parameter is a DOT_PRODUCT query), a number, a JSON list (a vector), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise InputError(f"--param takes NAME=VALUE, got {text!r}")
    if Path(value).is_file():
        return name, value
    for parse in (int, float):
        try:
            return name, parse(value)
        except ValueError:
            pass
    if value.startswith("["):
        try:
            return name, np.asarray(json.loads(value), np.float32)
        except (ValueError, TypeError) as exc:
            raise InputError(f"--param {name}: {value[:40]!r} is not a JSON list of numbers") from exc
    return name, value


def crop(
    patch_id: int = typer.Argument(..., help="Patch id."),
    out: Path = typer.Option(..., "-o", "--out", help="PNG file to write the crop to."),
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """Write the exact pixels of a patch (backtraced to its frame's original) as a PNG."""
    with open_target(data, service, token, collection) as sv:
        doc = sv.answer("pixels", patch_id=patch_id)
    out.write_bytes(base64.b64decode(doc["png"]))
    summary = {k: v for k, v in doc.items() if k != "png"} | {"out": str(out)}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        Console().print(f"{out}: {doc['shape'][1]}x{doc['shape'][0]} crop of {_source({'source': doc['frame']})} "
                        f"frame {doc['frame'].get('frame_no', '')}, from the {doc['format']} format")


def sql(
    statement: str = typer.Argument(..., help="One SELECT over the `patches` table (or EXPLAIN SELECT ...)."),
    param: list[str] = typer.Option([], "--param", help="NAME=VALUE for :NAME (an image file, a patch id, "
                                    "a number, a JSON vector or text); repeatable."),
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """SQL over patches: DuckDB, with DOT_PRODUCT(vector, :q) predicates answered by the index."""
    params = dict(_param(p) for p in param)
    with open_target(data, service, token, collection) as sv:
        emit(sv.answer("sql", sql=statement, params=params), as_json)


@app.command("similar")
def similar(
    image: Optional[Path] = typer.Argument(None, help="Query image (or --patch / --vectors)."),
    k: int = typer.Option(10, "-k", "--k", help="Results per query."),
    patch: Optional[int] = _PATCH, vectors: Optional[Path] = _VECTORS,
    label: Optional[str] = _LABEL, camera: Optional[str] = _CAMERA, start: Optional[float] = _START,
    end: Optional[float] = _END, model: Optional[str] = _MODEL,
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """The K patches that look most like the query."""
    with open_target(data, service, token, collection) as sv:
        emit(sv.answer("similar", query=_query(image, patch, vectors), k=k,
                       where=_where(label, camera, start, end, model)), as_json)


@app.command("threshold")
def threshold(
    image: Optional[Path] = typer.Argument(None, help="Query image (or --patch / --vectors)."),
    t: float = typer.Option(0.9, "--t", help="Inner-product threshold: results have score > t."),
    patch: Optional[int] = _PATCH, vectors: Optional[Path] = _VECTORS,
    label: Optional[str] = _LABEL, camera: Optional[str] = _CAMERA, start: Optional[float] = _START,
    end: Optional[float] = _END, model: Optional[str] = _MODEL, limit: int = _LIMIT,
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """Every patch whose inner product with the query is greater than T (the MemSQL query)."""
    with open_target(data, service, token, collection) as sv:
        emit(sv.answer("threshold", query=_query(image, patch, vectors), t=t,
                       where=_where(label, camera, start, end, model), limit=limit), as_json)


@app.command("near-duplicates")
def near_duplicates(
    t: float = typer.Option(0.97, "--t", help="Pairs with inner product > t are near-duplicates."),
    label: Optional[str] = _LABEL, camera: Optional[str] = _CAMERA, start: Optional[float] = _START,
    end: Optional[float] = _END, model: Optional[str] = _MODEL, limit: int = _LIMIT,
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """Similarity self-join: every pair of patches with inner product > T, best first."""
    with open_target(data, service, token, collection) as sv:
        emit(sv.answer("near_duplicates", t=t, where=_where(label, camera, start, end, model), limit=limit), as_json)


@app.command("join")
def join(
    camera_a: str = typer.Option(..., "--camera-a", help="Left side: this camera."),
    camera_b: str = typer.Option(..., "--camera-b", help="Right side: this camera."),
    t: float = typer.Option(0.9, "--t", help="Pairs with inner product > t."),
    label: Optional[str] = _LABEL, start: Optional[float] = _START, end: Optional[float] = _END,
    model: Optional[str] = _MODEL, limit: int = _LIMIT,
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """Join two cameras: every (a, b) with inner product > T (e.g. objects seen by both)."""
    with open_target(data, service, token, collection) as sv:
        emit(sv.answer("join", t=t, left=_where(label, camera_a, start, end, model),
                       right=_where(label, camera_b, start, end, model), limit=limit), as_json)


@app.command("stats")
def stats(
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """Vectors held, dimension, factory, store position and per-shard facts."""
    with open_target(data, service, token, collection) as sv:
        emit(sv.answer("stats"), as_json)


def lineage(
    patch_id: int = typer.Argument(..., help="Patch id."),
    data: Optional[Path] = _DATA, service: Optional[str] = _SERVICE, collection: Optional[str] = _COLLECTION,
    token: Optional[str] = _TOKEN, as_json: bool = _JSON,
) -> None:
    """Where a patch came from: its chain of patches down to the frame and offset."""
    with open_target(data, service, token, collection) as sv:
        doc = sv.answer("lineage", patch_id=patch_id)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    for depth, link in enumerate(doc["chain"]):
        Console().print("  " * depth + ("└ " if depth else "") + json.dumps(link))
