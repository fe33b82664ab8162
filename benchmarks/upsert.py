"""Upsert benchmark: the cost of a 16-vector upsert as a ``Flat`` shard grows to a million vectors.

256-d inner-product ``Flat`` :class:`operators.index.shard.IndexShard` objects of 1k, 10k,
100k and 1M vectors (grown in bulk chunks of 65,536) each time, one call at a time,

* 200 upserts of 16 new ids (``new_ms``; the ids are removed again after each round, so every
  size is measured at that size),
* 200 upserts of 16 ids they hold, with new vectors (``replace_ms``: overwritten in place),

and, side by side at the same sizes, the old way of upserting 16 new ids: FAISS
``remove_ids`` then ``add_with_ids`` on a plain ``IndexIDMap2(IndexFlatIP(256))``
(``old_ms``: ``remove_ids`` scans the whole index). The sizes take turns in 5 rounds of 40
upserts each, so that load from other processes on a shared machine falls on every size
alike. Figures are medians in milliseconds; ``cost_ratio_1m_vs_1k`` is ``new_ms`` at 1M over
``new_ms`` at 1k (target: at most 1.5). The vectors are random and L2-normalized: this
measures index cost, not retrieval quality. The shards are freed before the plain indexes
grow, so about 1.1 million vectors (1.1 GB) are held at a time. Usage::

    python benchmarks/upsert.py --out benchmarks/results

Writes ``OUT/upsert.json`` and ``OUT/upsert.png``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.index.shard import IndexShard  # noqa: E402

DIM = 256
SIZES = (1_000, 10_000, 100_000, 1_000_000)
BATCH = 16
REPEATS = 200
CHUNK = 65_536
#: The sizes take turns this many times (``REPEATS / ROUNDS`` upserts of each kind a turn).
ROUNDS = 5
#: Odd, so ``i -> i * MIX mod 2**63`` is a bijection: distinct, scattered 63-bit patch ids.
MIX = np.uint64(0x9E3779B97F4A7C15)
ID_MASK = np.uint64(2**63 - 1)


def patch_ids(start: int, n: int) -> np.ndarray:
    """The ``n`` patch ids numbered ``start, start + 1, ...`` (distinct, 63-bit, unordered)."""
    counter = np.arange(start, start + n, dtype=np.uint64)
    return ((counter * MIX) & ID_MASK).astype(np.int64)


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random L2-normalized float32 vectors of ``DIM`` dimensions."""
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def grown(index: Any, size: int, rng: np.random.Generator, add: Callable[..., object]) -> Any:
    """``index`` after ``add(index, ids, x)`` of the vectors numbered ``0`` to ``size``,
    ``CHUNK`` at a time."""
    for first in range(0, size, CHUNK):
        n = min(CHUNK, size - first)
        add(index, patch_ids(first, n), unit_vectors(rng, n))
    return index


def batches(ids: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``ids`` cut into ``BATCH``-id batches, each with new random vectors."""
    x = unit_vectors(rng, len(ids))
    return [(ids[i:i + BATCH], x[i:i + BATCH]) for i in range(0, len(ids), BATCH)]


def held_batches(size: int, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` batches of ids among the first ``size`` (distinct within a batch), new vectors."""
    picks = np.concatenate([rng.choice(size, BATCH, replace=False) for _ in range(n)])
    return batches(patch_ids(0, size)[picks], rng)


def timings(call: Callable[..., object], args: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Wall time of ``call(*a)`` for each ``a`` in ``args``, each call timed alone, in ms."""
    times = []
    for a in args:
        t0 = time.perf_counter()
        call(*a)
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def interleaved(
    indexes: dict[int, Any],
    measure: Callable[[int, Any, int, np.random.Generator], dict[str, list[float]]],
    repeats: int,
    rng: np.random.Generator,
) -> dict[int, dict[str, float]]:
    """Median ms of each kind of upsert, per size: ``measure(size, index, n, rng)`` times ``n``
    of each kind on one index; the sizes take turns, ``ROUNDS`` times, so that load from other
    processes falls on every size alike."""
    times: dict[int, dict[str, list[float]]] = {size: {} for size in indexes}
    for _ in range(ROUNDS):
        for size, index in indexes.items():
            for kind, ms in measure(size, index, repeats // ROUNDS, rng).items():
                times[size].setdefault(kind, []).extend(ms)
    return {size: {kind: float(np.median(ms)) for kind, ms in kinds.items()} for size, kinds in times.items()}


def shard_round(size: int, shard: IndexShard, n: int, rng: np.random.Generator) -> dict[str, list[float]]:
    """``n`` upserts of new ids (removed again: the shard keeps its size) and ``n`` of held ids."""
    fresh_ids = patch_ids(size, n * BATCH)
    new_ms = timings(shard.upsert, batches(fresh_ids, rng))
    shard.remove(fresh_ids)
    held = held_batches(size, n, rng)
    replace_ms = timings(shard.upsert, held)
    last_ids, last_x = held[-1]
    assert shard.ntotal == size and np.array_equal(shard.reconstruct(last_ids), last_x)
    return {"new_ms": new_ms, "replace_ms": replace_ms}


def old_upsert(index: faiss.IndexIDMap2, ids: np.ndarray, x: np.ndarray) -> None:
    """The old ``IndexShard.upsert`` of a non-append-only shard: remove the ids, then add."""
    index.remove_ids(ids)
    index.add_with_ids(x, ids)


def old_round(
    size: int, index: faiss.IndexIDMap2, n: int, rng: np.random.Generator
) -> dict[str, list[float]]:
    """``n`` old-way upserts of new ids (removed again: the index keeps its size)."""
    fresh_ids = patch_ids(size, n * BATCH)
    old_ms = timings(functools.partial(old_upsert, index), batches(fresh_ids, rng))
    index.remove_ids(fresh_ids)
    return {"old_ms": old_ms}


def measure(sizes: tuple[int, ...], repeats: int) -> list[dict[str, float]]:
    """The figures of every size: new shards first, freed before the old-way indexes grow."""
    rng = np.random.default_rng(0)
    shards = {size: grown(IndexShard(DIM, "Flat", normalized=True), size, rng, IndexShard.upsert)
              for size in sizes}
    rows = interleaved(shards, shard_round, repeats, rng)
    del shards
    gc.collect()
    plain = {size: grown(faiss.IndexIDMap2(faiss.IndexFlatIP(DIM)), size, rng,
                         lambda index, ids, x: index.add_with_ids(x, ids)) for size in sizes}
    for size, figures in interleaved(plain, old_round, repeats, rng).items():
        rows[size].update(figures)
    return [{"size": size, **rows[size]} for size in sizes]


def plot(rows: list[dict[str, float]], path: Path) -> None:
    """Median ms per 16-vector upsert against the shard size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in (("new_ms", "IndexShard.upsert, new ids", "o-"),
                              ("replace_ms", "IndexShard.upsert, held ids (in place)", "s-"),
                              ("old_ms", "old: remove_ids + add_with_ids, new ids", "^--")):
        ax.plot(sizes, [r[key] for r in rows], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vectors in the shard (Flat, 256-d)")
    ax.set_ylabel(f"median ms per {BATCH}-vector upsert")
    ax.set_title(f"Upsert cost vs shard size ({os.cpu_count()} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for upsert.json and upsert.png")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="shard sizes measured")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="upserts timed per size and kind")
    args = parser.parse_args()
    sizes = tuple(sorted(args.sizes))
    started = time.perf_counter()
    rows = measure(sizes, args.repeats)
    for row in rows:
        print(f"{row['size']:>9,}: new {row['new_ms']:.3f} ms, replace {row['replace_ms']:.3f} ms, "
              f"old {row['old_ms']:.3f} ms", flush=True)
    result = {
        "dim": DIM,
        "factory": "Flat",
        "batch": BATCH,
        "repeats": args.repeats,
        "rounds": ROUNDS,
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "sizes": rows,
        "cost_ratio_1m_vs_1k": rows[-1]["new_ms"] / rows[0]["new_ms"],
        "ratio_sizes": [sizes[0], sizes[-1]],
        "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "upsert.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "upsert.png")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=2))


if __name__ == "__main__":
    main()
