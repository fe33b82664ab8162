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


def is_collection(path: str | Path) -> bool:
    """Whether ``path`` is a collection's data directory (a ``lineage`` store inside)."""
    from operators.index.sharded import STORE_DIRNAME

    return (Path(path) / STORE_DIRNAME / "CURRENT").exists()


def labelled_patches(data: str | Path, *, where: dict[str, Any] | None = None, sql: str | None = None,
                     inputs: str = "vectors", size: tuple[int, int] = (28, 28),
                     params: dict[str, Any] | None = None) -> LabeledData:
    """The user-labelled patches of a collection as training data (``streamvision label`` sets them).

    Args:
        data: the collection's data directory.
        where: a filter on the patches (``{"label", "camera", "start", "end", "model"}``).
        sql: a ``SELECT`` over ``patches`` whose ``patch_id`` column picks the patches
            (e.g. ``"SELECT patch_id FROM patches WHERE camera = 'cam1' AND score > 0.5"``).
        inputs: ``"vectors"`` (stored feature vectors) or ``"pixels"`` (grayscale crops of ``size``).
        params: ``:name`` parameters of ``sql``.
    """
    from operators.datasets import from_collection

    ids = None
    if sql is not None:
        from streamvision.api.query import Collection

        with Collection(data) as collection:
            table = collection.sql(sql, **(params or {}))
        if "patch_id" not in table.column_names:
            raise ConfigError(f"the query must return a patch_id column; it returns {table.column_names}")
        ids = [int(i) for i in table.column("patch_id").to_pylist()]
    return from_collection(data, ids=ids, where=where, inputs=inputs, size=size)  # type: ignore[arg-type]


def _data(value: LabeledData | str | Path, what: str, selection: dict[str, Any] | None = None) -> LabeledData:
    if isinstance(value, LabeledData):
        return value
    if isinstance(value, (str, Path)):
        if is_collection(value):
            return labelled_patches(value, **(selection or {}))
        if selection and any(v is not None for k, v in selection.items() if k in ("where", "sql")):
            raise ConfigError(f"{what}: where= and sql= select patches of a collection; {value} is not one")
        return load_data(str(value))
    raise ConfigError(f"{what} must be LabeledData, a collection or store directory, a .parquet path or "
                      f"'fashion-mnist[:N]'")


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
    where: dict[str, Any] | None = None,
    sql: str | None = None,
    inputs: str = "vectors",
    size: tuple[int, int] = (28, 28),
) -> "FitResult":
    """Train every configuration of ``mst`` with model hopper parallelism on ``workers`` Ray actors.

    Args:
        data: the labeled training data, or where to load it from: a collection's data
            directory (its user-labelled patches, see :func:`labelled_patches`) or what
            :func:`~operators.datasets.load_data` reads.
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
        where, sql, inputs, size: which labelled patches of a collection, and whether as
            stored vectors or as crops (see :func:`labelled_patches`).

    Returns:
        A :class:`cluster.mop.runner.FitResult` (results, schedule log, best mst key).
    """
    from cluster.local import ensure_ray
    from cluster.mop.runner import fit_multiple as run

    mst.check_workers(workers)
    train = _data(data, "data", {"where": where, "sql": sql, "inputs": inputs, "size": size})
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


def export_model_of(result: "FitResult", key: str, path: str | Path) -> Path:
    """Export any model of a run (by mst key) as a ``mop_classifier`` model file at ``path``."""
    from operators.training.classifier import export_model

    return export_model(result.checkpoint(key), result.input_shape, result.classes, path)


def deploy(model: str | None, pipeline: str, *, op: str = "mop_classifier", params: dict[str, Any] | None = None,
           node: str | None = None, collection: str | Path | None = None, rollback: bool = False,
           address: str | None = None) -> dict[str, Any]:
    """Swap the best model (or another operator) into a running pipeline, between two batches.

    Args:
        model: an exported model (name or ``.pt`` path) for ``mop_classifier``; ``None`` with
            ``rollback`` or when ``params`` say everything.
        pipeline: the running pipeline's name (its ``Dataflow`` name).
        op: the registered operator to deploy; a featurizer needs ``collection``.
        params: more options of the operator.
        node: the node to replace (default: the pipeline's one node running ``op``).
        collection: a featurizer's new collection (data directory); the old one keeps answering.
        rollback: put back what the last deployment replaced.
        address: the Ray cluster the pipeline runs on (default: ``RAY_ADDRESS``, else the local one).

    Returns:
        The applied deployment: ``{"applied": {"node", "old", "new", ...}, ...}``.
    """
    from cluster.hot_swap import deploy as post
    from cluster.local import ensure_ray

    options = dict(params or {})
    if model is not None:
        options["model"] = model
    if not rollback and not options:
        raise ConfigError("name the model to deploy (or --rollback)")
    ensure_ray(address or "auto")
    return post(pipeline, op, options, node=node, collection=str(Path(collection).resolve()) if collection else None,
                rollback=rollback)
