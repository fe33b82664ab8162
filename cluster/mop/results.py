"""The MOP results table (Parquet), the schedule log (Parquet) and the learning-curve PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq


def write_records(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write a list of flat dicts (same keys) as a Parquet table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(records)), path)
    return path


def plot_curves(results: Sequence[dict[str, Any]], path: Path, title: str = "model hopper parallelism") -> Path:
    """Train loss, validation loss and validation accuracy per epoch, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for key in sorted({r["model"] for r in results}):
        rows = sorted((r for r in results if r["model"] == key), key=lambda r: r["epoch"])
        epochs = [r["epoch"] for r in rows]
        for ax, column in zip(axes, ("train_loss", "val_loss", "val_acc")):
            ax.plot(epochs, [r[column] for r in rows], marker="o", label=key)
    for ax, label in zip(axes, ("train loss", "validation loss", "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
