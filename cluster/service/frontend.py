"""The query front end: an HTTP JSON API on Ray Serve over every served collection.

Routes (bodies and answers are JSON; answers are the documents of :mod:`operators.query.engine`):

====================================  ============================================================
``GET  /v1/health``                   ``{"status": "ok", "collections": [...]}`` once serving
``GET  /v1/collections``              every collection's stats
``POST /v1/similar``                  ``{"query": Q, "k": 10, "where": W, "collection": C}``
``POST /v1/threshold``                ``{"query": Q, "t": 0.9, "where": W, "limit": N}``
``POST /v1/near_duplicates``          ``{"t": 0.97, "where": W, "limit": N}``
``POST /v1/join``                     ``{"left": W, "right": W, "t": 0.9, "limit": N}``
``POST /v1/lineage``                  ``{"patch_id": ID}`` (also ``GET /v1/lineage/{ID}``)
``POST /v1/pixels``                   ``{"patch_id": ID}``: the crop as base64 PNG in JSON
``GET  /v1/patches/{ID}/pixels``      the crop as ``image/png`` (``X-SV-Format``: the format)
``POST /v1/stats``                    ``{}`` (also ``GET /v1/stats``)
``POST /v1/sql``                      ``{"sql": "SELECT ...", "params": {"q": Q, "label": "car"}}``
``POST /v1/patches/label``            ``{"patch_ids": [ID, ...], "label": NAME, "by": WHO}``: a user label
``GET  /v1/patches/{ID}/label``       that patch's user label and its history (who, when)
====================================  ============================================================

The web page (:mod:`cluster.service.web`) on the same port: ``GET /`` and ``GET /web/{file}``
(its static files, no token needed: they hold no data), and the documents its pages need:

====================================  ============================================================
``GET  /v1/patches/{ID}/frame``       the ``frame`` document: the patch's whole frame and its boxes
``GET  /v1/patches/{ID}/frame.png``   that frame as ``image/png``
``GET  /v1/live``                     the ``live`` document: per camera, per partition, dead letters
``GET  /v1/models``                   the ``models`` document: ``streamvision train --store`` runs
====================================  ============================================================

``Q`` is a query in JSON (:mod:`operators.query.json_form`), ``W`` a filter
``{"label", "camera", "start", "end", "model"}``; ``collection`` may be left out when one
collection is served. Bad requests get HTTP 400 ``{"error": "..."}`` and change nothing;
when a token is set, every route but ``/v1/health`` wants ``Authorization: Bearer TOKEN``.

Each replica reads the stores as RocksDB *secondary* instances that catch up with the
writer before every query, and searches the collection's shard actors, so a write the
writer acknowledged is answered by the next query.
"""


import base64
import hmac
import json
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.concurrency import run_in_threadpool

from cluster.service import labels
from cluster.service.ingress import LOOPBACK, internal_grpc_on, reuse_address_on_restart
from cluster.service.shards import ActorShards
from cluster.service.web import STATIC
from cluster.service.web import documents as web_documents
from operators.kafka.settings import KafkaSettings
from operators.index.sharded import STORE_DIRNAME
from operators.query.engine import KINDS, CollectionQueries
from operators.query.json_form import decode_query
from operators.sinks.collection_writer import read_manifest
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import StreamVisionError

#: Largest request body accepted (a base64 image of the largest size, with room).
MAX_BODY_BYTES = 24 * 1024 * 1024
#: CPUs it reserves: none by default, so that pipelines sized for a 2-core machine fit beside the
#: service (it is mostly idle between queries); raise it on a cluster to keep cores for it.
FRONTEND_CPUS = 0.0

app = FastAPI(title="StreamVision", version="1")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Collections:
    """The served collections' query engines, opened when first asked (a new collection gets
    its dimension, and so its shards, with its first vectors)."""

    def __init__(self, collections: dict[str, str]) -> None:
        self.paths = {name: Path(path) for name, path in collections.items()}
        self._open: dict[str, CollectionQueries] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix="sv-frontend-"))
        self._opening = threading.Lock()  # requests run on a thread pool

    def get(self, name: str | None) -> CollectionQueries:
        if name is None:
            if len(self.paths) != 1:
                raise StreamVisionError(f"name the collection: one of {sorted(self.paths)}")
            name = next(iter(self.paths))
        if not isinstance(name, str) or name not in self.paths:
            raise StreamVisionError(f"unknown collection {name!r}; served: {sorted(self.paths)}")
        with self._opening:
            return self._get(name)

    def _get(self, name: str) -> CollectionQueries:
        if name not in self._open:
            data = self.paths[name]
            manifest = read_manifest(data)
            if not manifest.get("dim"):
                raise StreamVisionError(f"collection {name!r} holds no vectors yet")
            store = LineageStore(data / STORE_DIRNAME, follow=self._scratch / name)
            shards = ActorShards.attach(data, int(manifest["dim"]), int(manifest.get("shards", 2)))
            self._open[name] = CollectionQueries(name, store, shards, manifest, refresh=store.catch_up)
        queries = self._open[name]
        if not queries.manifest.get("featurizer"):  # a pipeline may have recorded it since
            queries.manifest = read_manifest(self.paths[name])
        return queries


def _params(body: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in body.items() if k != "collection"}
    if "query" in params:
        params["query"] = decode_query(params["query"])
    return params


@serve.deployment(ray_actor_options={"num_cpus": FRONTEND_CPUS}, max_ongoing_requests=64,
                  logging_config={"enable_access_log": False})
@serve.ingress(app)
class QueryFrontend:
    """The Serve deployment behind the HTTP API.

    Args:
        collections: ``name -> data directory`` of every served collection.
        token: bearer token every route but ``/v1/health`` requires, or ``None``.
        kafka: bootstrap servers of the brokers the pipelines read, for the live page's lag and
            dead letters (``None``: the page shows the offsets done only).
        host: the interface the service binds; on loopback, Serve's internal gRPC server of this
            replica binds loopback too (:func:`~cluster.service.ingress.internal_grpc_on`).
    """

    def __init__(self, collections: dict[str, str], token: str | None, kafka: str | None = None,
                 host: str | None = None) -> None:
        if host == LOOPBACK:
            internal_grpc_on(host)
        reuse_address_on_restart()
        self.collections = _Collections(collections)
        self.token = token
        self.kafka = KafkaSettings(kafka) if kafka else None

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def _answer(self, kind: str, body: Any, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            queries = self.collections.get(body.get("collection"))
            return JSONResponse(queries.answer(kind, _params(body)))
        except StreamVisionError as exc:
            return _error(400, str(exc))

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise StreamVisionError(f"the request body has {len(raw)} bytes, more than {MAX_BODY_BYTES}")
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StreamVisionError(f"the request body is not JSON: {exc}") from exc

    @app.get("/v1/health")
    def health(self) -> dict[str, Any]:
        """Up: the front end answers (queries wait for shards still loading; pipelines find the
        service through ``service.json``, written once the writers are ready too)."""
        return {"status": "ok", "collections": sorted(self.collections.paths)}

    @app.get("/v1/collections")
    def collections_stats(self, request: Request) -> JSONResponse:
        """Stats of every served collection (those holding vectors)."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        out = []
        for name in sorted(self.collections.paths):
            try:
                out.append(self.collections.get(name).stats())
            except StreamVisionError as exc:
                out.append({"kind": "stats", "collection": name, "error": str(exc)})
        return JSONResponse({"collections": out})

    @app.get("/v1/stats")
    def stats_get(self, request: Request, collection: Optional[str] = None) -> JSONResponse:
        """Stats of one collection."""
        return self._answer("stats", {"collection": collection} if collection else {}, request)

    @app.get("/v1/lineage/{patch_id}")
    def lineage_get(self, patch_id: int, request: Request, collection: Optional[str] = None) -> JSONResponse:
        """The lineage chain of one patch."""
        body: dict[str, Any] = {"patch_id": patch_id}
        if collection:
            body["collection"] = collection
        return self._answer("lineage", body, request)

    @app.get("/v1/patches/{patch_id}/pixels")
    def pixels_get(self, patch_id: int, request: Request, collection: Optional[str] = None) -> Response:
        """The exact crop of one patch as a PNG; ``X-SV-Format`` names the format that served it."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        try:
            doc = self.collections.get(collection).answer("pixels", {"patch_id": patch_id})
        except StreamVisionError as exc:
            return _error(400, str(exc))
        return Response(base64.b64decode(doc["png"]), media_type="image/png", headers={"X-SV-Format": doc["format"]})

    @app.post("/v1/{kind}")
    async def query(self, kind: str, request: Request) -> JSONResponse:
        """Any query of :data:`operators.query.engine.KINDS`, parameters in the JSON body."""
        if kind not in KINDS:
            return _error(404, f"no route /v1/{kind}; queries: {', '.join(KINDS)}")
        try:
            body = await self._body(request)
        except StreamVisionError as exc:
            return _error(400, str(exc))
        # off the event loop: a query waits on shard actors, and requests must not queue behind it
        return await run_in_threadpool(self._answer, kind, body, request)

    # ------------------------------------------------------------------ the web page (cluster.service.web)
    @app.get("/")
    def page(self) -> Response:
        """The web page (one HTML file; its pages are client-side routes)."""
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/web/{name}")
    def page_file(self, name: str) -> Response:
        """One of the page's static files (only the files of the folder, by name)."""
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            return _error(404, f"no file /web/{name}")
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
        return Response(files[name].read_bytes(), media_type=types.get(files[name].suffix, "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"})

    def _web(self, request: Request, make: Any, collection: Optional[str]) -> Any:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        try:
            return make(self.collections.get(collection))
        except StreamVisionError as exc:
            return _error(400, str(exc))

    @app.get("/v1/patches/{patch_id}/frame")
    def frame_get(self, patch_id: int, request: Request, collection: Optional[str] = None) -> Any:
        """The whole frame of a patch and every box cut from it (the ``frame`` document)."""
        return self._web(request, lambda q: JSONResponse(web_documents.frame_document(q, patch_id)), collection)

    @app.get("/v1/patches/{patch_id}/frame.png")
    def frame_png_get(self, patch_id: int, request: Request, collection: Optional[str] = None) -> Any:
        """The whole frame of a patch as a PNG; ``X-SV-Format`` names the format that served it."""
        def png(q: CollectionQueries) -> Response:
            data, fmt = web_documents.frame_png(q, patch_id)
            return Response(data, media_type="image/png", headers={"X-SV-Format": fmt})
        return self._web(request, png, collection)

    @app.get("/v1/live")
    def live_get(self, request: Request, collection: Optional[str] = None) -> Any:
        """Per camera and Kafka partition, what was ingested, how far behind, what was refused."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        try:
            name = collection or (next(iter(self.collections.paths)) if len(self.collections.paths) == 1 else None)
            if name in self.collections.paths and not read_manifest(self.collections.paths[name]).get("dim"):
                return JSONResponse(web_documents.live_document(name, None, self.kafka))  # nothing ingested yet
            queries = self.collections.get(name)
            return JSONResponse(web_documents.live_document(queries.name, queries, self.kafka))
        except StreamVisionError as exc:
            return _error(400, str(exc))

    @app.get("/v1/models")
    def models_get(self, request: Request, collection: Optional[str] = None) -> Any:
        """The model selection runs recorded in the collection (``streamvision train --store``)."""
        return self._web(request, lambda q: JSONResponse(web_documents.models_document(q)), collection)

    # ------------------------------------------------------------------ user labels (operators.stores.labels)
    @app.post("/v1/patches/label")
    async def label_post(self, request: Request) -> JSONResponse:
        """Set a user label: ``{"patch_ids": [ID, ...], "label": NAME, "by": WHO}``; the
        collection's writer stores it with who set it and when."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        try:
            body = await self._body(request)
            if not isinstance(body, dict) or not isinstance(body.get("patch_ids"), list):
                raise StreamVisionError('the body must be {"patch_ids": [ID, ...], "label": NAME}')
            name = body.get("collection") or (next(iter(self.collections.paths))
                                              if len(self.collections.paths) == 1 else None)
            queries = self.collections.get(name)
            return JSONResponse(await run_in_threadpool(
                labels.set_through_writer, self.collections.paths[queries.name], body["patch_ids"],
                body.get("label"), body.get("by")))
        except StreamVisionError as exc:
            return _error(400, str(exc))

    @app.get("/v1/patches/{patch_id}/label")
    def label_get(self, patch_id: int, request: Request, collection: Optional[str] = None) -> Any:
        """The patch's user label and every earlier one (who set each, when)."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        try:
            return JSONResponse(labels.label_document(self.collections.get(collection), patch_id))
        except StreamVisionError as exc:
            return _error(400, str(exc))

