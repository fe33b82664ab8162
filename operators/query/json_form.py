"""A query in JSON, as the HTTP API carries it; the client encodes, the service decodes.

One of ``{"vector": [d floats]}``, ``{"vectors": [[d floats], ...]}``, ``{"image": base64}``
(JPEG, PNG, ...), or ``{"patch_id": N}``.

>>> import numpy as np
>>> form = encode_query(np.array([0.6, 0.8], np.float32))
>>> form
{'vector': [0.6000000238418579, 0.800000011920929]}
>>> decode_query(form).tolist()
[0.6000000238418579, 0.800000011920929]
>>> decode_query({"patch_id": 7})
7
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from operators.sources.image_folder import MAX_IMAGE_BYTES
from streamvision.core.errors import InputError

#: Most query rows one request may carry.
MAX_QUERY_ROWS = 4096


def encode_query(query: Any) -> dict[str, Any]:
    """The JSON form of a query: a vector, an ``(n, d)`` batch, an image (path, RGB ``uint8``
    array or encoded bytes) or a patch id."""
    if isinstance(query, (bool, np.bool_)):
        raise InputError("a query is a vector, an image or a patch id, not a boolean")
    if isinstance(query, (int, np.integer)):
        return {"patch_id": int(query)}
    if isinstance(query, (str, Path)):
        path = Path(query)
        if not path.is_file():
            raise InputError(f"image not found: {path}")
        query = path.read_bytes()
    if isinstance(query, (bytes, bytearray)):
        return {"image": base64.b64encode(bytes(query)).decode("ascii")}
    array = np.asarray(query)
    if array.dtype == np.uint8 and array.ndim == 3:
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"cannot encode a query image of shape {array.shape}")
        return {"image": base64.b64encode(png.tobytes()).decode("ascii")}
    if array.ndim == 1:
        return {"vector": array.astype(np.float32).tolist()}
    if array.ndim == 2:
        return {"vectors": array.astype(np.float32).tolist()}
    raise InputError(f"a query vector must be (d,) or (n, d), got shape {array.shape}")


def _matrix(rows: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(rows)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must hold numbers only") from exc
    if array.dtype.kind not in "iuf":  # booleans, strings, null, ints too big for a float
        raise InputError(f"{what} must hold numbers only")
    return array.astype(np.float32)


def decode_query(form: Any) -> Any:
    """The query a JSON form describes (an array, image bytes, or a patch id).

    Raises:
        InputError: not exactly one known field, or a field of the wrong type or size.
    """
    if not isinstance(form, dict) or len(form) != 1:
        raise InputError('query must be an object with one of "vector", "vectors", "image", "patch_id"')
    (field, value), = form.items()
    if field == "patch_id":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"patch_id must be a non-negative integer, got {value!r}")
        return value
    if field == "image":
        if not isinstance(value, str) or len(value) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise InputError(f"image must be a base64 string of at most {MAX_IMAGE_BYTES} bytes")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"image is not valid base64: {exc}") from exc
    if field == "vector":
        if not isinstance(value, list):
            raise InputError("vector must be a list of numbers")
        vector = _matrix(value, "vector")
        if vector.ndim != 1:
            raise InputError(f"vector must be a flat list of numbers, got shape {vector.shape}")
        return vector
    if field == "vectors":
        if not isinstance(value, list) or not value or len(value) > MAX_QUERY_ROWS:
            raise InputError(f"vectors must be a list of 1 to {MAX_QUERY_ROWS} vectors")
        matrix = _matrix(value, "vectors")
        if matrix.ndim != 2:
            raise InputError(f"vectors must be a list of equal-length lists, got shape {matrix.shape}")
        return matrix
    raise InputError(f'unknown query field {field!r}; use "vector", "vectors", "image" or "patch_id"')
