"""Model selection with model hopper parallelism (MOP): the public API.

>>> mst = load_model_selection_table(["cnn_small", "cnn_base"], {"lr": [1e-3, 3e-3]}, {"batch_size": [64]})
>>> len(mst)
4

``fit_multiple`` trains every row on Ray worker actors (``cluster.mop``, imported at call
time); ``export_best`` turns the winner into a ``mop_classifier`` operator file that a
Dataflow loads by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from operators.datasets import LabeledData, load_data
from streamvision.core.errors import ConfigError

if TYPE_CHECKING:
    from cluster.mop.runner import FitResult
    from operators.training.mst import ModelSelectionTable, ParamSpec


def load_model_selection_table(archs: Sequence[str], compile_params: "ParamSpec | None" = None,
                               fit_params: "ParamSpec | None" = None, *, store: str | Path | None = None
                               ) -> "ModelSelectionTable":
    """The grid ``archs x compile_params x fit_params`` (see :mod:`operators.training.mst`).

    Args:
        store: a store directory; if given, the rows are also written to its ``models``
            column family under their mst keys.
    """
    from operators.training.mst import load_model_selection_table as load

    table = load(archs, compile_params, fit_params)
    if store is not None:
        from operators.stores.lineage_store import LineageStore

        with LineageStore(store) as db:
            table.save(db)
    return table


def _data(value: LabeledData | str | Path, what: str) -> LabeledData:
    if isinstance(value, LabeledData):
        return value
    if isinstance(value, (str, Path)):
        return load_data(str(value))
    raise ConfigError(f"{what} must be LabeledData, a .parquet path, a store directory or 'fashion-mnist[:N]'")


def fit_multiple(
    data: LabeledData | str | Path,
    mst: "ModelSelectionTable",
    epochs: int,
    workers: int,
    use_gpu: bool = False,
    *,
    validation: LabeledData | str | Path | float = 0.1,
    out_dir: str | Path = "mop-run",
    seed: int = 0,
    threads_per_worker: int = 1,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> "FitResult":
    """Train every configuration of ``mst`` with model hopper parallelism on ``workers`` Ray actors.

    Args:
        data: the labeled training data (or where to load it from, see :func:`load_data`).
        mst: the model selection table.
        epochs: epochs per model (each epoch visits every worker's partition once).
        workers: worker actors = data partitions.
        use_gpu: place workers on GPUs (fractions of one GPU when there are fewer GPUs).
        validation: labeled validation data, or a fraction of ``data`` to hold out (seeded).
        out_dir: checkpoints, ``results.parquet``, ``schedule.parquet`` and
            ``learning_curves.png``; calling again with the same directory resumes.
        seed: seeds the partitioning, the schedule, initial weights and minibatch order.
        threads_per_worker: torch threads (and Ray CPUs) per worker.
        on_epoch_end: called with each model's metrics after its epoch's checkpoint.

    Returns:
        A :class:`cluster.mop.runner.FitResult` (results, schedule log, best mst key).
    """
    from cluster.local import ensure_ray
    from cluster.mop.runner import fit_multiple as run

    mst.check_workers(workers)
    train = _data(data, "data")
    if isinstance(validation, float):
        import numpy as np

        if not 0 < validation < 1:
            raise ConfigError(f"a validation fraction must be in (0, 1), got {validation}")
        order = np.random.default_rng(seed).permutation(len(train))
        cut = max(1, int(round(len(train) * validation)))
        train, val = train.take(np.sort(order[cut:])), train.take(np.sort(order[:cut]))
    else:
        val = _data(validation, "validation")
    ensure_ray()
    return run(train, mst, epochs, workers, validation=val, out_dir=out_dir, use_gpu=use_gpu, seed=seed,
               threads_per_worker=threads_per_worker, on_epoch_end=on_epoch_end)


def export_best(result: "FitResult", name: str | None = None, path: str | Path | None = None) -> Path:
    """Export the best model of a run as a ``mop_classifier`` model file.

    Args:
        name: file name under the models directory (default: the mst key), so that a
            pipeline step ``{op: mop_classifier, model: NAME}`` loads it.
        path: an explicit output path instead.
    """
    from operators.training.classifier import export_model, models_dir

    target = path if path is not None else (models_dir() / f"{name}.pt" if name else None)
    return export_model(result.checkpoint(result.best), result.input_shape, result.classes, target)
