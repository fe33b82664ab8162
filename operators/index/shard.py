"""One FAISS index keyed by patch id: the unit the vector index service shards over.

Follows FAISS's array contract everywhere: inputs are ``(n, d)`` contiguous float32,
searches return ``(D, I)`` with ``-1`` ids where there is no result. Indexes are declared
by ``index_factory`` strings and use inner product (vectors are L2-normalized, so inner
product is cosine similarity, the MemSQL ``DOT_PRODUCT``).

Beyond add / upsert / remove / search / range search, a shard can

* be *trained* from a sample (``IVF...``, ``PQ...``) before vectors are added,
* scan 8-bit codes (``"SQ8"``) with integer products at memory speed (:mod:`operators.index.sq8_codes`),
* re-rank compressed codes with the exact vectors (``"SQ8,RFlat"``: scan 8-bit codes for
  the best ``k * REFINE_K_FACTOR``, re-score those in float32; FAISS ``IndexRefineFlat``),
* restrict a search to a set of ids (FAISS ``IDSelectorBatch``: the ``where=`` filters),
* require unit-norm vectors (``normalized=True``) so that a threshold means cosine,
* be *append-only* (``HNSW`` cannot remove; a GPU copy cannot filter or remove): an id
  already held is skipped instead of replaced, and removal is an error,
* upsert a batch at a cost that does not grow with the shard: an id -> position map
  (:class:`~operators.index.id_positions.IdPositions`) finds the ids already held, so new
  ids never cost a FAISS ``remove_ids`` scan; an inner-product ``Flat`` shard overwrites
  held vectors in place, other removable indexes remove just the held ids (one O(n) FAISS
  pass) and add them again,
* be *mapped* from its file (:meth:`IndexShard.load` with ``mapped=True``): opening costs no
  copy of the vectors (their pages are the OS's file cache, shared, read when first touched),
  and the first write reads the file into the shard's own memory,
* keep a GPU copy of an append-only index for unfiltered searches when CUDA and
  faiss-gpu exist and FAISS can hold its kind on a GPU (``Flat``, ``IVF...``; not ``HNSW``,
  ``RFlat`` or plain ``SQ8``: :func:`gpu_capable`, :func:`choose_device`); the CPU index
  stays the master copy.

Every check happens before the index is touched, so bad input leaves it unchanged.

>>> import numpy as np
>>> shard = IndexShard(dim=4, factory="Flat")
>>> x = np.eye(4, dtype=np.float32)
>>> shard.upsert(np.array([10, 11, 12, 13]), x)
>>> D, I = shard.search(x[:1], k=2)
>>> int(I[0, 0]), float(D[0, 0])
(10, 1.0)
>>> shard.search(x[:1], k=2, ids=np.array([12]))[1].tolist()
[[12, -1]]
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeVar

import faiss
import numpy as np

from operators.index.id_positions import IdPositions
from operators.index.sq8_codes import Sq8Codes, best_kernel
from operators.index.topk import top_k_rows
from streamvision.core.errors import InputError

#: Largest allowed deviation of a vector's L2 norm from 1 when ``normalized=True``.
NORM_TOLERANCE = 1e-3
#: FAISS reports this score for "no result" in inner-product searches.
NO_SCORE = -np.finfo(np.float32).max
#: A refining index (``...,RFlat``) re-scores this many candidates per result exactly.
REFINE_K_FACTOR = 4.0
#: ``IVF`` shards search ``nlist / IVF_NPROBE_DIVISOR`` inverted lists per query (16 of 1024; at least 8),
#: saved with the index.
IVF_NPROBE_DIVISOR = 64
#: Scores held at once by a ``Flat`` shard's matrix-product scan (queries x vectors, 128 MB).
SCAN_BLOCK_SCORES = 1 << 25


def as_matrix(x: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """Check and convert ``x`` to a contiguous ``(n, dim)`` float32 matrix of finite values.

    Raises:
        InputError: wrong shape or dimension, NaN or inf values.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise InputError(f"{what} must be (n, {dim}), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{what} contain NaN or inf values")
    return x


def as_ids(ids: np.ndarray | list[int], what: str = "ids") -> np.ndarray:
    """Check and convert patch ids to a contiguous 1-d int64 array of non-negative values.

    Raises:
        InputError: not 1-d, or a negative id (``-1`` means "no result" in FAISS).
    """
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} must be a 1-d integer array, got {arr.dtype} {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if (arr < 0).any():
        raise InputError(f"{what} must be non-negative patch ids, got {int(arr.min())}")
    return arr


def check_normalized(x: np.ndarray, what: str = "vectors") -> None:
    """Raise :class:`InputError` unless every row of ``x`` has L2 norm 1 (within tolerance)."""
    if len(x) == 0:
        return
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if len(bad):
        raise InputError(
            f"{what} must be L2-normalized (inner product = cosine similarity): row {int(bad[0])} "
            f"has norm {float(norms[bad[0]]):.6g} ({len(bad)} of {len(x)} rows are off); "
            f"divide by np.linalg.norm(x, axis=1, keepdims=True)"
        )


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


#: The index types FAISS's GPU cloner (``index_cpu_to_gpu``) can copy to a GPU. Graph indexes
#: (``HNSW``, ``NSG``), refining indexes (``...,RFlat``), plain ``SQ``/``PQ`` codes and fast-scan
#: layouts are not among them, so shards of those kinds stay on CPU.
GPU_INDEX_TYPES = frozenset({"IndexFlat", "IndexFlatIP", "IndexIVFFlat", "IndexIVFScalarQuantizer", "IndexIVFPQ"})


def gpu_capable(index: faiss.Index | str, dim: int = 64) -> bool:
    """Whether FAISS can hold ``index`` (an index, or an ``index_factory`` string) on a GPU.

    Pure CPU logic: it reads the index's type, so it answers the same with or without a GPU.
    An ``IndexIDMap`` or ``IndexPreTransform`` (``"PCA64,Flat"``) is as capable as what it wraps.

    >>> gpu_capable("Flat"), gpu_capable("IVF64,SQ8"), gpu_capable("HNSW32"), gpu_capable("SQ8,RFlat")
    (True, True, False, False)
    """
    if isinstance(index, str):
        index = faiss.index_factory(dim, index, faiss.METRIC_INNER_PRODUCT)
    return type(_core(index)).__name__ in GPU_INDEX_TYPES


def gpu_eligible(index: faiss.Index | str, append_only: bool, dim: int = 64) -> bool:
    """Whether a shard may keep a GPU copy: append-only (a GPU copy can neither filter by id
    nor delete) and of a kind FAISS can hold on a GPU (:func:`gpu_capable`). CPU logic only."""
    return append_only and gpu_capable(index, dim)


def choose_device(index: faiss.Index | str, append_only: bool) -> str:
    """``"gpu"`` for a :func:`gpu_eligible` shard where CUDA and faiss-gpu exist, else ``"cpu"``."""
    return "gpu" if gpu_eligible(index, append_only) and gpu_available() else "cpu"


def id_selector(ids: np.ndarray) -> faiss.SearchParameters:
    """Search parameters restricting a search to ``ids`` (FAISS ``IDSelectorBatch``)."""
    ids = as_ids(ids)
    sel = faiss.IDSelectorBatch(ids)
    params = faiss.SearchParameters(sel=sel)
    params.keep_alive = (sel, ids)  # the selector references these; keep them alive with params
    return params


def _build(dim: int, factory: str) -> faiss.Index:
    if dim <= 0:
        raise InputError(f"vector dimension must be positive, got {dim}")
    try:
        inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InputError(f"unknown or invalid index_factory string {factory!r}: {exc}") from exc
    if _is_refine(inner):
        faiss.downcast_index(inner).k_factor = REFINE_K_FACTOR
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.nprobe = max(min(ivf.nlist, 8), ivf.nlist // IVF_NPROBE_DIVISOR)  # FAISS's default of 1 list finds little
    return faiss.IndexIDMap(inner)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    """Serialize calls on one shard: scans read FAISS's buffers without the GIL, and an add
    from another thread may move them."""

    @functools.wraps(method)
    def run(self: "IndexShard", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


def _no_results(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` of ``nq`` queries with no results yet: ``NO_SCORE`` and ``-1`` everywhere."""
    return np.full((nq, k), NO_SCORE, np.float32), np.full((nq, k), -1, np.int64)


def _flat_view(index: faiss.Index) -> np.ndarray | None:
    """A zero-copy ``(ntotal, d)`` view of an inner-product ``Flat`` index's vectors, else None."""
    flat = faiss.downcast_index(index)
    if not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


def _core(index: faiss.Index) -> faiss.Index:
    """The index that holds the codes, under any ``IndexIDMap`` and ``IndexPreTransform`` wrappers."""
    inner = faiss.downcast_index(index)
    while isinstance(inner, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        inner = faiss.downcast_index(inner.index)
    return inner


def _through_descriptor(opened: BinaryIO) -> str:
    """A path that opens the very file ``opened`` is (whatever was renamed over its name since)."""
    return f"/dev/fd/{opened.fileno()}"


def _read_index(path: str | Path, mapped_from: BinaryIO | None) -> faiss.IndexIDMap:
    """Read a shard's file; mapped (``IO_FLAG_MMAP_IFC``) from the open file ``mapped_from`` if given.

    Raises:
        InputError: not a FAISS index, or not an id-mapped one.
    """
    try:
        if mapped_from is None:
            index = faiss.read_index(str(path))
        else:
            index = faiss.read_index(_through_descriptor(mapped_from), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as exc:
        raise InputError(f"cannot read FAISS index {path}: {exc}") from exc
    if not isinstance(index, faiss.IndexIDMap):  # an IndexIDMap2 too (snapshots written before 2026-12-08)
        raise InputError(f"{path} holds a {type(index).__name__}, not an id-mapped shard index")
    return index


def _is_refine(index: faiss.Index) -> bool:
    return "Refine" in type(faiss.downcast_index(index)).__name__


def _supports_remove(index: faiss.IndexIDMap) -> bool:
    """FAISS graph indexes (HNSW, NSG) and refining indexes cannot remove vectors; IVF indexes
    inside an ``IndexIDMap`` keep wrong labels after ``remove_ids`` (and a later removal
    aborts in FAISS 1.15), so they are append-only too."""
    name = type(_core(index)).__name__
    return not any(kind in name for kind in ("HNSW", "NSG", "Refine", "IVF"))


class IndexShard:
    """A FAISS index with add / upsert / remove by 63-bit patch id.

    Calls on one shard are serialized by a lock, so a shard can be shared between threads.

    Args:
        dim: vector dimension.
        factory: an ``index_factory`` string (``"Flat"``, ``"SQ8"``, ``"HNSW32"``, ...).
        normalized: require unit-norm vectors and queries.
        append_only: never replace or remove (forced for factories that cannot remove,
            such as ``HNSW``); with a kind FAISS holds on a GPU, makes the shard
            eligible for a GPU copy (:func:`gpu_eligible`).
        device: ``"cpu"``, ``"gpu"`` or ``None`` to pick with :func:`choose_device`.

    Raises:
        InputError: bad dimension or an unknown / invalid factory string.
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        normalized: bool = False,
        append_only: bool = False,
        device: str | None = None,
    ) -> None:
        self.index = _build(dim, factory)
        self.dim = dim
        self.factory = factory
        self._setup(normalized, append_only or not _supports_remove(self.index), device)

    def _setup(self, normalized: bool, append_only: bool, device: str | None) -> None:
        self._lock = threading.RLock()
        self.normalized = normalized
        self.append_only = append_only
        wanted = choose_device(self.index, append_only) if device is None else device
        if wanted not in ("cpu", "gpu"):
            raise InputError(f"device must be 'cpu' or 'gpu', got {wanted!r}")
        if wanted == "gpu" and not gpu_eligible(self.index, append_only):
            raise InputError(f"a GPU shard must be append-only and of a kind FAISS holds on a GPU "
                             f"({', '.join(sorted(GPU_INDEX_TYPES))}); {self.factory!r} is not")
        if wanted == "gpu" and not gpu_available():
            raise InputError("a GPU shard needs CUDA with faiss-gpu (pip install faiss-gpu-cu12)")
        self.device = wanted
        self._mapped_file: BinaryIO | None = None  # the file a mapped index was loaded from, held open
        self._gpu_res: Any = None
        self._gpu_index: Any = None
        self._positions = IdPositions(self._ids_by_position())

    # ------------------------------------------------------------------ properties
    @property
    def ntotal(self) -> int:
        """Number of vectors held."""
        return int(self.index.ntotal)

    @property
    def mapped(self) -> bool:
        """True while the index is mapped from its file (read-only) rather than held in memory."""
        return self._mapped_file is not None

    @property
    def is_trained(self) -> bool:
        """False for ``IVF`` / ``PQ`` indexes until :meth:`train` has run."""
        return bool(self.index.is_trained)

    def ids(self) -> np.ndarray:
        """The ids held, by position in the index: the order they were added in (an id that
        a non-``Flat`` shard replaced moves to the end)."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    @_locked
    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Whether each id is held, as a bool array: O(b log n).

        Raises:
            InputError: bad ids (see :func:`as_ids`).
        """
        return self._positions.lookup(as_ids(ids)) >= 0

    @_locked
    def stats(self) -> dict[str, Any]:
        """Facts about this shard: size, training, device, bytes per vector."""
        inner = faiss.downcast_index(self.index.index)
        try:
            code_size = int(inner.sa_code_size())
        except RuntimeError:
            code_size = 4 * self.dim
        return {
            "factory": self.factory,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "is_trained": self.is_trained,
            "normalized": self.normalized,
            "append_only": self.append_only,
            "device": self.device,
            "bytes_per_vector": code_size,
            "index_type": type(inner).__name__,
            "scan_kernel": self._scan_kernel(),
        }

    def _scan_kernel(self) -> str:
        """What runs an unfiltered search: ``"blas"``, an SQ8 kernel name, ``"faiss"`` or ``"faiss-gpu"``."""
        if self.device == "gpu":
            return "faiss-gpu"
        if _flat_view(self.index.index) is not None:
            return "blas"
        return f"sq8-{best_kernel()}" if self._sq8_parts() is not None else "faiss"

    # ------------------------------------------------------------------ writes
    def check_vectors(self, vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
        """Validate vectors (or queries) for this shard: shape, finiteness, unit norm if required."""
        x = as_matrix(vectors, self.dim, what)
        if self.normalized:
            check_normalized(x, what)
        return x

    @_locked
    def train(self, sample: np.ndarray) -> None:
        """Train an ``IVF`` / ``PQ`` index from a sample (a no-op for indexes that need none).

        Raises:
            InputError: bad vectors, or too few of them for the index (FAISS's message).
        """
        x = self.check_vectors(sample, "training vectors")
        if self.is_trained:
            return
        try:
            self.index.train(x)
        except RuntimeError as exc:
            raise InputError(f"cannot train {self.factory!r} on {len(x)} vectors: {exc}") from exc

    @_locked
    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under ``ids``, replacing any already held (same id twice = one entry).

        An append-only shard skips ids it already holds (ids are deterministic, so a
        re-sent id carries the same vector). New ids cost O(batch) whatever the shard size;
        so do held ids of an inner-product ``Flat`` shard (overwritten in place), while other
        shards remove the held ids first (one O(n) FAISS pass).

        Raises:
            InputError: bad vectors or ids, or an untrained index.
        """
        x = self.check_vectors(vectors)
        ids = as_ids(ids)
        if len(ids) != len(x):
            raise InputError(f"{len(ids)} ids for {len(x)} vectors")
        if not self.is_trained:
            raise InputError(f"index {self.factory!r} must be trained first: call train(sample)")
        if len(ids) == 0:
            return
        self._own()
        ids, last = np.unique(ids[::-1], return_index=True)  # keep the last vector given per id
        x = np.ascontiguousarray(x[::-1][last])
        at = self._positions.lookup(ids)
        held = at >= 0
        if held.any():
            ids, x = self._update_held(ids, x, at, held)
        self._add(ids, x)

    def _update_held(
        self, ids: np.ndarray, x: np.ndarray, at: np.ndarray, held: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Deal with the ids of a batch that the shard holds (``held``, at positions ``at``);
        returns the ids and vectors still to add.

        An append-only shard skips them; an inner-product ``Flat`` shard overwrites their
        vectors in place; any other shard removes them, to add them again.
        """
        stored = None if self.append_only else _flat_view(self.index.index)
        if stored is not None:
            stored[at[held]] = x[held]
        if self.append_only or stored is not None:
            return ids[~held], np.ascontiguousarray(x[~held])
        self.index.remove_ids(ids[held])
        self._positions.rebuild(self._ids_by_position())
        return ids, x

    def _own(self) -> None:
        """Before a write, read a mapped index into the shard's own memory (a mapped index is
        read-only: FAISS aborts on a resize, and an in-place write would fault). The file read
        is the one mapped, held open since. One O(n) read, on the first write after a mapped
        load only."""
        if self._mapped_file is None:
            return
        self.index = faiss.read_index(_through_descriptor(self._mapped_file))
        self._mapped_file.close()
        self._mapped_file = None

    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Append vectors under ids the shard does not hold (and to the GPU copy if any)."""
        if len(ids) == 0:
            return
        start = self.ntotal
        self.index.add_with_ids(x, ids)
        self._positions.add(ids, np.arange(start, start + len(ids)))
        if self._gpu_index is not None:
            self._gpu_index.add_with_ids(x, ids)

    @_locked
    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present.

        Raises:
            InputError: the shard is append-only.
        """
        ids = as_ids(ids)
        if self.append_only:
            raise InputError(f"shard {self.factory!r} is append-only: it cannot remove ids")
        self._own()
        removed = int(self.index.remove_ids(ids))
        if removed:
            self._positions.rebuild(self._ids_by_position())  # FAISS compacted the positions
        return removed

    # ------------------------------------------------------------------ reads
    def _searcher(self, ids: np.ndarray | None) -> tuple[faiss.Index, faiss.SearchParameters | None]:
        if ids is not None:
            return self.index, id_selector(ids)
        if self.device == "gpu":
            if self._gpu_index is None:
                self._gpu_res = faiss.StandardGpuResources()
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index)
            return self._gpu_index, None
        return self.index, None

    @_locked
    def search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(D, I)``, each ``(nq, k)``; ``I == -1`` where none.

        Args:
            queries: ``(nq, dim)``.
            k: results per query (at least 1).
            ids: when given, only these ids can be results (runs on the CPU copy).
        """
        q = self.check_vectors(queries, "queries")
        if k <= 0:
            raise InputError(f"k must be at least 1, got {k}")
        if ids is not None and len(ids) == 0 or self.ntotal == 0:
            return _no_results(len(q), k)
        if ids is not None and _is_refine(self.index.index):
            return self._search_among(q, k, as_ids(ids))
        if ids is None and self.device == "cpu":
            stored = _flat_view(self.index.index)
            if stored is not None:
                return self._scan(stored, q, k)
            sq8 = self._sq8_parts()
            if sq8 is not None:
                return self._scan_sq8(*sq8, q, k)
        index, params = self._searcher(ids)
        return index.search(q, k, params=params)

    def _ids_by_position(self) -> np.ndarray:
        """A zero-copy view of the ids, indexed by position in the inner index."""
        return faiss.rev_swig_ptr(self.index.id_map.data(), self.ntotal)

    def _sq8_parts(self) -> tuple[Sq8Codes, np.ndarray | None, float] | None:
        """For an ``SQ8`` or ``SQ8,RFlat`` shard when the integer kernel is built: its codes, its
        float32 vectors (refining indexes only) and how many candidates to re-score per result."""
        if best_kernel() is None:
            return None
        inner = faiss.downcast_index(self.index.index)
        if isinstance(inner, faiss.IndexRefine):
            exact = _flat_view(inner.refine_index)
            codes = Sq8Codes.of(inner.base_index)
            return None if exact is None or codes is None else (codes, exact, float(inner.k_factor))
        codes = Sq8Codes.of(inner)
        return None if codes is None else (codes, None, REFINE_K_FACTOR)

    def _scan_sq8(
        self, codes: Sq8Codes, exact: np.ndarray | None, k_factor: float, q: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by the integer scan of the 8-bit codes (:mod:`operators.index.sq8_codes`),
        its best ``k * k_factor`` re-scored from ``exact`` vectors or, without them, from the
        decoded codes (FAISS's own ``SQ8`` scores)."""
        kk = min(k, self.ntotal)
        rows = codes.candidates(q, max(kk, int(kk * k_factor)))
        vectors = exact[rows] if exact is not None else codes.decode(rows)
        top, best = top_k_rows(np.matmul(vectors, q[:, :, None])[..., 0], kk)
        ids = self._ids_by_position()
        D, I = _no_results(len(q), k)
        D[:, :kk], I[:, :kk] = best, ids[np.take_along_axis(rows, top, 1)]
        return D, I

    def _scan(self, stored: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of each query over ``stored`` by BLAS products, blocks of queries at a time.

        One query is one matrix-vector product at memory bandwidth (FAISS's own scan of a single
        query is ~12 % slower); a batch is a matrix product (~4x faster here than the FAISS
        wheel's BLAS path, whose per-vector heap dominates).
        """
        ids = self._ids_by_position()
        kk = min(k, len(stored))
        D, I = _no_results(len(q), k)
        block = max(1, SCAN_BLOCK_SCORES // len(stored))
        for start in range(0, len(q), block):
            qb = q[start:start + block]
            scores = stored @ qb[0] if len(qb) == 1 else qb @ stored.T
            top, best = top_k_rows(scores.reshape(len(qb), -1), kk)
            D[start:start + len(qb), :kk], I[start:start + len(qb), :kk] = best, ids[top]
        return D, I

    def _search_among(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among ``ids`` from the stored vectors (FAISS's refining indexes
        ignore id selectors)."""
        ids = np.unique(ids)
        ids = ids[self._positions.lookup(ids) >= 0]
        D, I = _no_results(len(q), k)
        if len(ids):
            kk = min(k, len(ids))
            top, D[:, :kk] = top_k_rows(q @ self._vectors_at(self._positions.lookup(ids)).T, kk)
            I[:, :kk] = ids[top]
        return D, I

    @_locked
    def range_search(
        self, queries: np.ndarray, threshold: float, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All vectors with inner product > ``threshold``: FAISS's ``(lims, D, I)``.

        Results for query ``i`` are ``D[lims[i]:lims[i+1]]`` / ``I[lims[i]:lims[i+1]]``.
        ``ids`` restricts the candidates as in :meth:`search`.
        """
        q = self.check_vectors(queries, "queries")
        if not np.isfinite(threshold):
            raise InputError(f"threshold must be finite, got {threshold}")
        if ids is not None and len(ids) == 0 or self.ntotal == 0:
            return np.zeros(len(q) + 1, np.uint64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        params = None if ids is None else id_selector(ids)
        lims, D, I = self.index.range_search(q, float(threshold), params=params)
        keep = D > threshold  # FAISS keeps >= for inner product; the query says strictly greater
        if keep.all():
            return lims, D, I
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        return kept_before[lims].astype(lims.dtype), D[keep], I[keep]

    @_locked
    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored (decoded) vectors of ``ids`` as ``(n, dim)`` float32.

        Raises:
            InputError: an id is not held.
        """
        ids = as_ids(ids)
        at = self._positions.lookup(ids)
        missing = ids[at < 0]
        if len(missing):
            raise InputError(f"{len(missing)} ids are not in this shard, e.g. {int(missing[0])}")
        return self._vectors_at(at)

    def _vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The stored (decoded) vectors at ``positions`` of the inner index, ``(n, dim)`` float32."""
        if len(positions) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.index.index.reconstruct_batch(np.ascontiguousarray(positions, np.int64))

    # ------------------------------------------------------------------ files
    @_locked
    def save(self, path: str | Path) -> None:
        """Write the (CPU) index atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        factory: str = "loaded",
        normalized: bool = False,
        append_only: bool = False,
        device: str | None = None,
        mapped: bool = False,
    ) -> "IndexShard":
        """Read an index written by :meth:`save` (our own files only: FAISS's format, no pickle).

        ``mapped``: map the file's vectors and ids instead of copying them (FAISS
        ``IO_FLAG_MMAP_IFC``). Opening then costs no pass over the vectors (0.04 s instead of
        0.6 s for 500k 256-d vectors here); searches read the OS's file cache, shared with every
        process mapping the file, and the first write reads the file into the shard's memory.
        The file may be replaced meanwhile (:meth:`save` renames a new one into place): the
        shard maps and later reads the file it opened, through its descriptor.

        Raises:
            InputError: the file is missing or not an id-mapped FAISS index.
        """
        try:
            source = open(path, "rb") if mapped else None  # noqa: SIM115 - held until the first write
        except OSError as exc:
            raise InputError(f"cannot read FAISS index {path}: {exc}") from exc
        try:
            index = _read_index(path, source)
        except InputError:
            if source is not None:
                source.close()
            raise
        shard = cls.__new__(cls)
        shard.dim = index.d
        shard.factory = factory
        shard.index = index
        shard._setup(normalized, append_only or not _supports_remove(index), device)
        shard._mapped_file = source
        return shard
