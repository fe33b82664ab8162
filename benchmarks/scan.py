"""Scan benchmark: exact and 8-bit top-k through the sharded service vs the memory-read limit.

Everything runs side by side in one process tree, on the same vectors:

* the memory-read limit: vectors/s of a numpy matrix-vector product over the whole array;
* exact top-10 (``Flat``) through :class:`cluster.index_service.VectorIndexService`, one query
  at a time and in batches, checked against numpy;
* ``SQ8`` codes through the same service: vectors/s against exact fp32 and recall@10. The
  shards scan the 8-bit codes with integer products (``operators/index/_sq8scan.c``; the
  kernel used is in the JSON) and re-score the best ``10 x 4`` from the float32 vectors
  (``SQ8,RFlat``); the recall of the 8-bit codes alone (``SQ8``, re-scored from the decoded
  codes as FAISS scores them) is reported beside it;
* DuckDB's ``array_inner_product`` in SQL over the same vectors (zero-copy Arrow scan);
* near-duplicate self-join of the first ``--join-n`` vectors: the pruned index join vs the
  tuple-at-a-time nested loop (timed on its first ``--nested-rows`` rows and extrapolated
  to all pairs; its pairs for those rows must equal the index join's, scores to 1e-5).

The vectors imitate video features (1024-d, L2-normalized, 4 KB each as in the MemSQL demo):
shots of 100 frames, each shot a random walk around its own direction plus per-frame noise,
so consecutive frames are near-duplicates. Usage::

    python benchmarks/scan.py --out results/ [--n 1000000]

Writes ``OUT/scan.json`` and ``OUT/scan.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.index.joins import nested_loop_self_join, self_join  # noqa: E402

FRAMES_PER_SHOT = 100
#: 8-bit codes scanned, the best k x REFINE_K_FACTOR re-scored exactly.
SQ8_FACTORY = "SQ8,RFlat"


def video_like(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors: shots of random-walk frames with noise (near-duplicate neighbours)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    step = np.float32(0.6 / np.sqrt(FRAMES_PER_SHOT * dim))
    noise = np.float32(0.07 / np.sqrt(dim))
    for start in range(0, n, 100 * FRAMES_PER_SHOT):
        rows = min(100 * FRAMES_PER_SHOT, n - start)
        shots = -(-rows // FRAMES_PER_SHOT)
        centers = rng.standard_normal((shots, 1, dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=2, keepdims=True)
        walk = rng.standard_normal((shots, FRAMES_PER_SHOT, dim), dtype=np.float32)
        walk *= step
        np.cumsum(walk, axis=1, out=walk)
        walk += centers
        walk += noise * rng.standard_normal(walk.shape, dtype=np.float32)
        block = walk.reshape(-1, dim)[:rows]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start:start + rows] = block
        del walk, centers
    return x


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` runs, seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def exact_top_k(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row positions of the exact top-``k`` of each query (numpy, blocked)."""
    scores = np.empty((len(q), len(x)), np.float32)
    for start in range(0, len(x), 1 << 17):
        scores[:, start:start + (1 << 17)] = q @ x[start:start + (1 << 17)].T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def load_service(x: np.ndarray, ids: np.ndarray, factory: str, shards: int, root: Path, train: bool):
    """A fresh service holding ``x`` (vectors sent in chunks through the object store)."""
    from cluster.index_service import VectorIndexService

    svc = VectorIndexService.open(root / factory, x.shape[1], factory, shards, wal=False,
                                  num_cpus=os.cpu_count() / shards)
    if train:
        svc.train(x[np.random.default_rng(1).choice(len(x), min(len(x), 100_000), replace=False)])
    for start in range(0, len(x), 50_000):
        svc.upsert(ids[start:start + 50_000], x[start:start + 50_000])
    return svc


def scan_service(svc, queries: np.ndarray, batch: int, k: int) -> dict[str, object]:
    """Per-query (median over 10 queries of the best of 3) and batched search times, and results."""
    svc.search(queries[:2], k)  # warm up
    single = [best_time(lambda q=q: svc.search(q, k), 3) for q in queries[:10]]
    batched = best_time(lambda: svc.search(queries[:batch], k), 3)
    D, I = svc.search(queries, k)
    return {"single_s": float(np.median(single)), "batch_s": batched, "D": D, "I": I,
            "kernel": svc.stats()["shards"][0]["scan_kernel"]}


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k ids among those found."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def duckdb_scan(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Seconds per top-``k`` query in DuckDB SQL over the vectors (Arrow, zero-copy), and results."""
    import duckdb
    import pyarrow as pa

    dim = x.shape[1]
    table = pa.table({
        "id": pa.array(np.arange(len(x), dtype=np.int64)),
        "v": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim),
    })
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    con.register("features", table)
    sql = (f"SELECT id FROM features ORDER BY array_inner_product(v, $q::FLOAT[{dim}]) DESC LIMIT {k}")
    got = []
    times = []
    for q in queries:
        t0 = time.perf_counter()
        rows = con.execute(sql, {"q": q.tolist()}).fetchall()
        times.append(time.perf_counter() - t0)
        got.append([r[0] for r in rows])
    con.close()
    return float(np.median(times)), np.array(got)


def join_benchmark(x: np.ndarray, t: float, nested_rows: int) -> dict[str, object]:
    """Index self-join vs nested loop on ``x``; the nested loop is timed on its first rows."""
    n = len(x)
    ids = np.arange(1, n + 1, dtype=np.int64)
    t0 = time.perf_counter()
    a, b, s = self_join(ids, x, t)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    na, nb, ns = nested_loop_self_join(ids, x, t, rows=nested_rows)
    nested_sample_s = time.perf_counter() - t0
    sample_pairs = sum(n - 1 - i for i in range(nested_rows))
    nested_s = nested_sample_s * (n * (n - 1) / 2) / sample_pairs
    mine = a <= nested_rows  # pairs whose first row is among the nested loop's rows (ids = row + 1)
    identical = bool(np.array_equal(a[mine], na) and np.array_equal(b[mine], nb)
                     and np.allclose(s[mine], ns, rtol=0, atol=1e-5))
    return {"pairs": int(len(a)), "index_s": index_s, "nested_sample_s": nested_sample_s,
            "nested_rows": nested_rows, "nested_estimated_s": nested_s,
            "checked_pairs": int(len(na)), "identical": identical}


def plot(result: dict[str, object], path: Path) -> None:
    """Bar charts of scan rates and join times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["numpy limit\n(matvec)", "exact Flat\n1 query", "exact Flat\nbatched", "SQ8,RFlat\n1 query",
             "SQ8 alone\n1 query", "DuckDB\nSQL"]
    keys = ["limit_vectors_per_s", "exact_vectors_per_s", "exact_batched_vectors_per_s",
            "sq8_vectors_per_s", "sq8_codes_only_vectors_per_s", "duckdb_vectors_per_s"]
    values = [float(result[k]) / 1e6 for k in keys]
    bars = ax1.bar(names, values, color=["grey", "tab:blue", "tab:cyan", "tab:orange", "tab:red", "tab:green"])
    ax1.bar_label(bars, fmt="%.2f")
    ax1.set_ylabel("million vectors / s")
    ax1.set_title(f"top-10 scan, {result['n']:,} x {result['dim']}-d ({result['shards']} shards)")
    join = result["join"]
    bars = ax2.bar(["index join", "nested loop\n(extrapolated)"], [join["index_s"], join["nested_estimated_s"]],
                   color=["tab:blue", "tab:red"])
    ax2.bar_label(bars, fmt="%.1f s")
    ax2.set_yscale("log")
    ax2.set_ylabel("seconds")
    ax2.set_title(f"near-duplicate self-join of {result['join_n']:,} (t={result['join_t']}): "
                  f"{result['join_speedup_vs_nested_loop']:.0f}x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=os.cpu_count(), help="shard actors (default: cores)")
    parser.add_argument("--queries", type=int, default=100, help="queries for recall")
    parser.add_argument("--batch", type=int, default=64, help="queries per batch")
    parser.add_argument("--join-n", type=int, default=100_000)
    parser.add_argument("--join-t", type=float, default=0.97)
    parser.add_argument("--nested-rows", type=int, default=20, help="rows of the nested loop to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import ray

    k = 10
    x = video_like(args.n, args.dim, args.seed)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    rng = np.random.default_rng(args.seed + 1)
    queries = x[rng.choice(args.n, args.queries, replace=False)] + rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32) * np.float32(0.05 / np.sqrt(args.dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_top_k(x, queries, k)

    limit_s = float(np.median([best_time(lambda q=q: x @ q, 3) for q in queries[:5]]))
    result: dict[str, object] = {"n": args.n, "dim": args.dim, "shards": args.shards, "k": k,
                                 "cores": os.cpu_count(), "limit_GB_per_s": x.nbytes / limit_s / 1e9}
    result["limit_vectors_per_s"] = args.n / limit_s

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        svc = load_service(x, ids, "Flat", args.shards, Path(tmp), train=False)
        flat = scan_service(svc, queries, args.batch, k)
        svc.close()
        del svc
        gc.collect()
        svc = load_service(x, ids, SQ8_FACTORY, args.shards, Path(tmp), train=True)
        sq8 = scan_service(svc, queries, args.batch, k)
        svc.close()
        del svc
        gc.collect()
        svc = load_service(x, ids, "SQ8", args.shards, Path(tmp), train=True)
        sq8_raw = scan_service(svc, queries, args.batch, k)
        svc.close()
        del svc
    ray.shutdown()
    result["exact_vectors_per_s"] = args.n / flat["single_s"]
    result["exact_batched_vectors_per_s"] = args.n * args.batch / flat["batch_s"]
    result["exact_ratio_to_limit"] = result["exact_vectors_per_s"] / result["limit_vectors_per_s"]
    result["exact_batched_ratio_to_limit"] = result["exact_batched_vectors_per_s"] / result["limit_vectors_per_s"]
    truth_scores = np.einsum("qkd,qd->qk", x[truth], queries)
    # exact = the same top-10 scores as numpy; ids may swap places between scores tied to 1e-6
    result["exact_equals_numpy"] = bool(np.allclose(flat["D"], truth_scores, rtol=0, atol=1e-5))
    result["exact_same_ids_in_order"] = float((flat["I"] == ids[truth]).mean())
    result["exact_scan_kernel"] = flat["kernel"]
    result["sq8_vectors_per_s"] = args.n / sq8["single_s"]
    result["sq8_batched_vectors_per_s"] = args.n * args.batch / sq8["batch_s"]
    result["sq8_speedup_vs_fp32"] = result["sq8_vectors_per_s"] / result["exact_vectors_per_s"]
    result["sq8_factory"] = SQ8_FACTORY
    result["sq8_scan_kernel"] = sq8["kernel"]
    result["sq8_recall_at_10"] = recall_at(sq8["I"], ids[truth])
    result["sq8_codes_only_vectors_per_s"] = args.n / sq8_raw["single_s"]
    result["sq8_codes_only_recall_at_10"] = recall_at(sq8_raw["I"], ids[truth])

    duck_s, duck_top = duckdb_scan(x, queries[:3], k)
    result["duckdb_vectors_per_s"] = args.n / duck_s
    result["duckdb_equals_numpy"] = bool((duck_top == truth[:3]).all())

    join_x = x[:args.join_n].copy()
    del x
    gc.collect()
    join = join_benchmark(join_x, args.join_t, args.nested_rows)
    result.update({"join_n": len(join_x), "join_t": args.join_t, "join": join,
                   "join_speedup_vs_nested_loop": join["nested_estimated_s"] / join["index_s"],
                   "join_identical": join["identical"]})
    (args.out / "scan.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "scan.png")
    print(json.dumps({key: value for key, value in result.items() if key != "join"}, indent=2))
    print(json.dumps(join, indent=2))
    return result


if __name__ == "__main__":
    main()
