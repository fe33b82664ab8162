"""Scan FAISS 8-bit scalar-quantizer codes with integer arithmetic, at memory bandwidth.

FAISS's ``SQ8`` stores each component as a byte ``c`` with per-dimension ranges,
``x_j = vmin_j + (c_j + 0.5) / 255 * vdiff_j``. The inner product with a query ``q`` is then

    q . x = sum_j q_j vmin_j + 0.5 sum_j w_j + sum_j w_j c_j,   w_j = q_j vdiff_j / 255

The first two terms are the same for every row, so rows rank by ``sum_j w_j c_j``. Rounding
``w`` to signed bytes (one scale per query) turns the scan into byte products summed in int32,
which the C kernel (``_sq8scan``: AVX-512 VNNI, AVX2 or a portable loop) runs at memory speed,
a quarter of float32's bytes. The rounding of ``w`` reorders near ties, so the scan only picks
candidates; they are re-scored exactly, from the decoded codes (``SQ8``: the same scores as
FAISS) or from the float32 vectors (``SQ8,RFlat``).

>>> import numpy as np
>>> import faiss
>>> x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
>>> sq = faiss.IndexScalarQuantizer(64, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
>>> sq.train(x); sq.add(x)
>>> codes = Sq8Codes.of(sq)
>>> rows = codes.candidates(x[:2], 8)
>>> rows.shape, bool((rows[:, 0] == [0, 1]).all())
((2, 8), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from operators.index.topk import top_k_rows

try:
    from operators.index import _sq8scan
except ImportError:  # built by `pip install -e .` when a C compiler is present
    _sq8scan = None

#: Largest magnitude of a quantized query component (signed bytes).
QUERY_LEVELS = 127
#: Integer scores held at once (queries x rows): 64 MB.
SCORE_BLOCK = 1 << 24
#: What to do when the kernel is missing.
KERNEL_MISSING = (
    "the SQ8 scan kernel (operators/index/_sq8scan.c) is not built, so SQ8 shards use FAISS's "
    "slower scan; install a C compiler and the Python headers (Debian: apt-get install gcc "
    "python3-dev), then run `pip install -e .` again"
)
_SQ8_TYPES = (faiss.ScalarQuantizer.QT_8bit, faiss.ScalarQuantizer.QT_8bit_uniform)


def kernels() -> list[str]:
    """Names of the scan kernels this CPU can run, best first (empty when not built)."""
    return [] if _sq8scan is None else list(_sq8scan.kernels())


def best_kernel() -> str | None:
    """The kernel scans use: the first of :func:`kernels`, or None when not built."""
    found = kernels()
    return found[0] if found else None


def integer_scores(codes: np.ndarray, queries: np.ndarray, kernel: str | None = None) -> np.ndarray:
    """Exact int32 inner products ``(nq, n)`` of uint8 ``codes (n, d)`` with int8 ``queries (nq, d)``.

    Raises:
        RuntimeError: the kernel is not built (:data:`KERNEL_MISSING`).
        ValueError: dtypes or shapes that do not match, or an unknown kernel.
    """
    if _sq8scan is None:
        raise RuntimeError(KERNEL_MISSING)
    if codes.dtype != np.uint8 or queries.dtype != np.int8:
        raise ValueError(f"need uint8 codes and int8 queries, got {codes.dtype} and {queries.dtype}")
    if codes.ndim != 2 or queries.ndim != 2 or codes.shape[1] != queries.shape[1]:
        raise ValueError(f"need codes (n, d) and queries (nq, d), got {codes.shape} and {queries.shape}")
    codes, queries = np.ascontiguousarray(codes), np.ascontiguousarray(queries)
    (n, d), nq = codes.shape, len(queries)
    out = np.empty((nq, n), np.int32)
    _sq8scan.scan(codes, n, d, queries, nq, out, kernel)
    return out


@dataclass(frozen=True)
class Sq8Codes:
    """A zero-copy view of an inner-product ``IndexScalarQuantizer``'s 8-bit codes and ranges.

    Attributes:
        codes: ``(ntotal, d)`` uint8, the index's own buffer (valid until the index changes).
        vmin: ``(d,)`` float32 lower end of each component's range.
        vdiff: ``(d,)`` float32 width of each component's range.
    """

    codes: np.ndarray
    vmin: np.ndarray
    vdiff: np.ndarray

    @classmethod
    def of(cls, index: faiss.Index) -> "Sq8Codes | None":
        """The codes of a trained ``SQ8`` / ``SQ8_uniform`` inner-product index, else None."""
        sq = faiss.downcast_index(index)
        if (
            not isinstance(sq, faiss.IndexScalarQuantizer)
            or sq.metric_type != faiss.METRIC_INNER_PRODUCT
            or sq.sq.qtype not in _SQ8_TYPES
            or not sq.is_trained
        ):
            return None
        d, n = sq.d, sq.ntotal
        codes = faiss.rev_swig_ptr(sq.codes.data(), n * d).reshape(n, d) if n else np.zeros((0, d), np.uint8)
        trained = faiss.vector_to_array(sq.sq.trained).astype(np.float32)
        vmin, vdiff = (np.full(d, trained[0]), np.full(d, trained[1])) if len(trained) == 2 else (
            trained[:d], trained[d:])
        return cls(codes, vmin, vdiff)

    def quantize(self, queries: np.ndarray) -> np.ndarray:
        """The int8 ``(nq, d)`` weights ``w = q * vdiff / 255`` scaled to +-QUERY_LEVELS per query."""
        w = queries * (self.vdiff / 255.0)
        peak = np.abs(w).max(axis=1, keepdims=True)
        scale = np.where(peak > 0, QUERY_LEVELS / np.maximum(peak, 1e-30), 0.0)
        return np.rint(w * scale).astype(np.int8)

    def candidates(self, queries: np.ndarray, m: int) -> np.ndarray:
        """Row positions ``(nq, min(m, ntotal))`` of the best ``m`` rows of each query by the
        integer scan, best first."""
        n = len(self.codes)
        m = min(m, n)
        out = np.empty((len(queries), m), np.int64)
        if m == 0:
            return out
        block = max(1, SCORE_BLOCK // n)
        for start in range(0, len(queries), block):
            q = self.quantize(queries[start:start + block])
            out[start:start + len(q)] = top_k_rows(integer_scores(self.codes, q), m)[0]
        return out

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """The float32 vectors FAISS decodes from the codes at ``rows``."""
        return self.vmin + (self.codes[rows].astype(np.float32) + 0.5) * (self.vdiff / 255.0)
