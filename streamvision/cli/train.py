"""``streamvision train``: model selection with model hopper parallelism from the shell.

Registered by the main CLI as a sub-app::

    streamvision train --mst mst.yaml --data fashion-mnist:6000 --validation fashion-mnist-test:1000 \\
        --workers 2 --epochs 2 --out runs/fmnist --export fmnist-best

``--mst`` is a YAML/JSON file with ``archs``/``compile_params``/``fit_params`` (a grid) or
``rows`` (explicit). ``--data`` and ``--validation`` take ``fashion-mnist[-test][:N]``, a
labeled Parquet table, a store directory (labeled patches), or a collection's data directory:
its patches labelled with ``streamvision label``, chosen by ``--where key=value`` filters
(``label``, ``camera``, ``model``, ``start``, ``end``) or an ``--sql`` query returning
``patch_id``, as stored vectors (``--inputs vectors``) or grayscale crops (``--inputs pixels``)::

    streamvision train --mst heads.yaml --data DIR --sql "SELECT patch_id FROM patches WHERE score > 0.4" \
        --workers 2 --epochs 10 --out runs/heads --export cam-heads
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from streamvision.core.errors import StreamVisionError

app = typer.Typer(help="Train many model configurations at once with model hopper parallelism (MOP).")


def _where(pairs: Optional[List[str]]) -> dict[str, Any] | None:
    from streamvision.core.errors import ConfigError

    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in ("label", "camera", "model", "start", "end"):
            raise ConfigError(f"--where takes label=, camera=, model=, start= or end=, got {pair!r}")
        out[key] = float(value) if key in ("start", "end") else value
    return out


@app.callback(invoke_without_command=True)
def train(
    mst: Path = typer.Option(..., "--mst", help="model selection table, YAML or JSON"),
    data: str = typer.Option(..., "--data", help="fashion-mnist[:N], a labeled .parquet table or a store directory"),
    validation: Optional[str] = typer.Option(None, "--validation", help="validation data (default: hold out 10%)"),
    epochs: int = typer.Option(2, "--epochs", help="epochs per configuration"),
    workers: int = typer.Option(2, "--workers", help="worker actors = data partitions"),
    out: Path = typer.Option(Path("mop-run"), "--out", help="run directory (checkpoints, results); reuse to resume"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", help="torch threads per worker"),
    gpu: bool = typer.Option(False, "--gpu", help="place workers on GPUs"),
    store: Optional[Path] = typer.Option(None, "--store", help="also save the table and the best model in this store"),
    export: Optional[str] = typer.Option(None, "--export", help="export the best model under this name for mop_classifier"),
    where: Optional[List[str]] = typer.Option(None, "--where", help="a collection's patches: key=value filter "
                                                                    "(label, camera, model, start, end); repeatable"),
    sql: Optional[str] = typer.Option(None, "--sql", help="a collection's patches: SELECT returning patch_id"),
    inputs: str = typer.Option("vectors", "--inputs", help="a collection's patches as 'vectors' or 'pixels' (crops)"),
    size: int = typer.Option(28, "--size", help="side of the grayscale crops for --inputs pixels"),
) -> None:
    """Train every configuration of MST on DATA and report the best."""
    from operators.training.mst import ModelSelectionTable
    from streamvision.api.mop import export_best, fit_multiple

    try:
        table = ModelSelectionTable.from_file(mst)
        result = fit_multiple(
            data, table, epochs, workers, gpu, validation=validation if validation is not None else 0.1,
            out_dir=out, seed=seed, threads_per_worker=threads, where=_where(where), sql=sql, inputs=inputs,
            size=(size, size),
            on_epoch_end=lambda m: typer.echo(
                f"{m['model']:<24} epoch {m['epoch']}: train loss {m['train_loss']:.4f}  "
                f"val loss {m['val_loss']:.4f}  val acc {m['val_acc']:.4f}"),
        )
        best = next(r for r in result.results if r["model"] == result.best and r["epoch"] == epochs)
        summary = {"best": result.best, "val_acc": best["val_acc"], "results": str(result.paths["results"]),
                   "curves": str(result.paths["curves"]), "wall_s": round(result.wall_s, 2)}
        if export is not None or store is not None:
            model_path = export_best(result, name=export)
            summary["model"] = str(model_path)
            if store is not None:
                from operators.stores.lineage_store import LineageStore

                with LineageStore(store) as db:
                    table.save(db)
                    db.put("models", b"best\x00" + str(out.resolve()).encode(), json.dumps(summary).encode())
    except StreamVisionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(summary))
