"""Shard open benchmark: what opening a shard's snapshot costs as the shard grows 10x.

For each size (default 500k and 5M vectors, 256-d, ``IVF1024,Flat`` as in ``live.py``), one
:class:`operators.index.shard.IndexShard` is trained on 40k vectors, filled in chunks and saved
(``faiss.write_index``, as a live shard snapshots). Then, in a new process each time (so that
nothing is shared but the OS's file cache, which the save left warm), the file is opened

* ``mapped``: ``IndexShard.load(path, mapped=True)``, what a restarted shard does,
* ``read``: ``IndexShard.load(path)``, the whole file read into the process,

``--repeats`` times each (median reported), recording wall seconds, user and system CPU seconds
and the private memory (USS) it added; a mapped open is then followed by a first write (16 new
vectors), which reads the file into the process once (``first_write_s``). The vectors are random
and L2-normalized: this measures index cost, not retrieval quality. Usage::

    python benchmarks/shard_open.py --out benchmarks/results

Writes ``OUT/shard_open.json`` and ``OUT/shard_open.png``; the shard files go to a temporary
directory (about 1 KB a vector), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.index.shard import IndexShard  # noqa: E402

DIM = 256
CHUNK = 250_000
#: Training vectors: FAISS asks for 39 per inverted list (40k for IVF1024).
TRAINING = 40_000


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shard(path: Path, n: int, factory: str, seed: int = 0) -> None:
    """Save a trained shard of ``n`` random unit vectors to ``path``."""
    rng = np.random.default_rng(seed)
    shard = IndexShard(DIM, factory, normalized=True)
    shard.train(unit_vectors(rng, TRAINING))
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        shard.upsert(np.arange(start, start + count, dtype=np.int64) * 7919 + 1, unit_vectors(rng, count))
    shard.save(path)


def open_once(path: Path, factory: str, mapped: bool) -> dict[str, float]:
    """Open ``path`` in this process (a fresh one): wall and CPU seconds, private memory added."""
    process = psutil.Process()
    uss, cpu, wall = process.memory_full_info().uss, os.times(), time.perf_counter()
    shard = IndexShard.load(path, factory=factory, normalized=True, mapped=mapped)
    done, opened = os.times(), time.perf_counter()
    result = {"wall_s": opened - wall, "user_s": done.user - cpu.user, "sys_s": done.system - cpu.system,
              "uss_mb": (process.memory_full_info().uss - uss) / 2**20}
    if mapped:
        started = time.perf_counter()
        shard.upsert(np.array([2], np.int64), unit_vectors(np.random.default_rng(1), 1))  # id 2: never held
        result["first_write_s"] = time.perf_counter() - started
    return result


def measure(path: Path, factory: str, mapped: bool, repeats: int) -> dict[str, Any]:
    """:func:`open_once` in ``repeats`` new processes; the median of each figure, and every run."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--open", str(path), "--factory", factory,
                              *(["--mapped"] if mapped else [])], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {**{k: float(np.median([r[k] for r in runs])) for k in runs[0]}, "runs": runs}


def plot(out: Path, result: dict[str, Any]) -> None:
    sizes = [row["vectors"] for row in result["sizes"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.35
    for i, kind in enumerate(("mapped", "read")):
        x = np.arange(len(sizes)) + (i - 0.5) * width
        axes[0].bar(x, [row[kind]["user_s"] for row in result["sizes"]], width, label=f"{kind}: user", color=f"C{i}")
        axes[0].bar(x, [row[kind]["sys_s"] for row in result["sizes"]], width, color=f"C{i}", alpha=0.5,
                    bottom=[row[kind]["user_s"] for row in result["sizes"]], label=f"{kind}: system")
        axes[1].bar(x, [row[kind]["uss_mb"] for row in result["sizes"]], width, label=kind, color=f"C{i}")
    for ax, ylabel in zip(axes, ("CPU s to open", "private MB added")):
        ax.set_xticks(np.arange(len(sizes)), [f"{n:,}" for n in sizes])
        ax.set(xlabel=f"vectors ({DIM}-d {result['factory']})", ylabel=ylabel)
        ax.legend()
    fig.suptitle("opening a shard snapshot: mapped vs read (page cache warm)")
    fig.tight_layout()
    fig.savefig(out / "shard_open.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sizes", default="500000,5000000")
    parser.add_argument("--factory", default="IVF1024,Flat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--open", type=Path, help=argparse.SUPPRESS)  # one measurement, in a child process
    parser.add_argument("--mapped", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open:
        print(json.dumps(open_once(args.open, args.factory, args.mapped)))
        return
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"factory": args.factory, "dim": DIM, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="sv-shard-open-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"shard-{n}.faiss"
            write_shard(path, n, args.factory)
            row = {"vectors": n, "file_mb": path.stat().st_size / 2**20,
                   "mapped": measure(path, args.factory, True, args.repeats),
                   "read": measure(path, args.factory, False, args.repeats)}
            result["sizes"].append(row)
            path.unlink()
            print(f"{n:,}: mapped {row['mapped']['wall_s']:.2f} s, read {row['read']['wall_s']:.2f} s", flush=True)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    (args.out / "shard_open.json").write_text(json.dumps(result, indent=2))
    plot(args.out, result)


if __name__ == "__main__":
    main()
