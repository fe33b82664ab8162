"""The client of a running ``streamvision serve``: the same methods as the embedded one, over HTTP.

>>> sv = ServiceClient("http://127.0.0.1:8000")          # doctest: +SKIP
>>> sv.similar(np.ones(256, np.float32) / 16, k=3)      # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from operators.index.filters import Where
from operators.query.json_form import encode_query
from operators.query.sql import vector_params
from streamvision.api.query import Queries
from streamvision.core.errors import InputError, StreamVisionError

#: Seconds a request may take before the client gives up.
DEFAULT_TIMEOUT_S = 60.0


def _plain(value: Any) -> Any:
    """A JSON value for an SQL parameter (numpy scalars as Python numbers)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


class ServiceError(StreamVisionError):
    """The service could not be reached or failed (not a bad request)."""


def answer_document(response: Any, url: str) -> dict[str, Any]:
    """The JSON document of a service's answer (an ``httpx`` response).

    Raises:
        InputError: the service refused the request (HTTP 400), with its message.
        ServiceError: any other status but 200.
    """
    try:
        doc = response.json()
    except ValueError:
        doc = {"error": response.text[:500]}
    if response.status_code == 400:
        raise InputError(doc.get("error", "bad request"))
    if response.status_code != 200:
        raise ServiceError(f"{url} answered HTTP {response.status_code}: {doc.get('error', doc)}")
    return doc


class ServiceClient(Queries):
    """Queries a service over its HTTP JSON API.

    Args:
        url: ``http://HOST:PORT`` of the service.
        token: bearer token (default: ``STREAMVISION_TOKEN`` from the environment).
        collection: the collection to ask (needed only when several are served).
        timeout_s: seconds a request may take.
    """

    def __init__(self, url: str, *, token: str | None = None, collection: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        token = token or os.environ.get("STREAMVISION_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.collection = collection
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def _body(self, params: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, value in params.items():
            if value is None:
                continue
            if key == "query":
                value = encode_query(value)
            elif key in ("where", "left", "right"):
                value = Where.of(value).as_dict()
            elif key == "params":  # SQL parameters: the DOT_PRODUCT ones travel as query forms
                vector = vector_params(params["sql"])
                value = {k: encode_query(v) if k in vector else _plain(v) for k, v in value.items()}
            body[key] = value
        if self.collection is not None:
            body["collection"] = self.collection
        return body

    def answer(self, kind: str, **params: Any) -> dict[str, Any]:
        """POST ``/v1/<kind>`` and return its JSON document.

        Raises:
            InputError: the service refused the request (HTTP 400), with its message.
            ServiceError: the service is unreachable, refused the token, or failed.
        """
        try:
            response = self._http.post(f"/v1/{kind}", json=self._body(params))
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the service at {self.url}: {exc}") from exc
        return answer_document(response, self.url)

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``."""
        try:
            return self._http.get("/v1/health").raise_for_status().json()
        except httpx.HTTPError as exc:
            raise ServiceError(f"the service at {self.url} is not healthy: {exc}") from exc

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()
