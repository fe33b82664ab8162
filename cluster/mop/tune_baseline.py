"""The same model selection table trained with Ray Tune: what a Ray user would otherwise run.

Every row of the table becomes one Tune trial (``tune.grid_search`` over the rows), one CPU
and one torch thread each, as many trials at once as the cluster has CPUs. The data goes
the way Tune's docs recommend for large objects: :func:`ray.tune.with_parameters` puts it
in the object store once and every trial reads the *whole* data set from there (on a
cluster, every node that runs a trial copies it: the cost MOP avoids).

Each trial trains exactly what ``fit_multiple(..., workers=1)`` trains: the data shuffled
once with the run's seed, the same initial weights (``sub_seed(seed, key, "init")``), one
pass per epoch in the order ``sub_seed(seed, key, epoch, 0)``, the same learning-rate
schedule; so a trial's weights are bit-identical to sequential MOP's. A trial reports its
validation metrics and a checkpoint (weights + optimizer state) every epoch, like MOP.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from operators.datasets import LabeledData
from operators.training.mst import ModelConfig, ModelSelectionTable
from operators.training.step import (evaluate, init_state, load_checkpoint, save_checkpoint, sub_seed,
                                     to_tensors, train_sub_epoch)

_STATE_FILE = "state.pt"


@dataclass
class TuneResult:
    """What :func:`fit_with_tune` returns.

    Attributes:
        results: one dict per trial per epoch (``model``, ``epoch``, ``train_loss``,
            ``val_loss``, ``val_acc``, ``time_s``).
        best: mst key of the trial with the highest final validation accuracy.
        configs: the configuration each trial trained, by mst key (as Tune passed it).
        wall_s: wall-clock seconds of the Tune run.
        data_bytes_per_trial: bytes of training + validation data every trial reads.
        checkpoints: the final checkpoint directory of each trial, by mst key.
    """

    results: list[dict[str, Any]]
    best: str
    configs: dict[str, dict[str, Any]]
    wall_s: float
    data_bytes_per_trial: int
    checkpoints: dict[str, Path]

    def final_state(self, key: str) -> dict[str, Any]:
        """The trained state (weights and optimizer) of trial ``key``."""
        return load_checkpoint(self.checkpoints[key] / _STATE_FILE)["state"]


def _trial(config: dict[str, Any], *, x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
           num_classes: int, epochs: int, seed: int) -> None:
    """One Tune trial: train one configuration on the whole data set for ``epochs`` epochs."""
    from ray import tune

    torch.set_num_threads(1)
    row = ModelConfig.from_json(config["row"])
    train_x, train_y = to_tensors(x), torch.from_numpy(np.array(y, np.int64))
    test_x, test_y = to_tensors(val_x), torch.from_numpy(np.array(val_y, np.int64))
    state = init_state(row, tuple(x.shape[1:]), num_classes, sub_seed(seed, row.key, "init"))
    for epoch in range(1, epochs + 1):
        start = time.time()
        state, loss = train_sub_epoch(row, state, train_x, train_y, num_classes, sub_seed(seed, row.key, epoch, 0),
                                      "cpu", epoch)
        val_loss, val_acc = evaluate(row, state, test_x, test_y, num_classes)
        metrics = {"model": row.key, "epoch": epoch, "train_loss": loss, "val_loss": val_loss, "val_acc": val_acc,
                   "time_s": time.time() - start}
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp) / _STATE_FILE, {"state": state, "metrics": metrics, "config": row.to_json()})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def fit_with_tune(data: LabeledData, mst: ModelSelectionTable, epochs: int, *, validation: LabeledData,
                  out_dir: str | Path, seed: int = 0, concurrent: int | None = None) -> TuneResult:
    """Train every row of ``mst`` as a Ray Tune trial (Ray must be initialised).

    Args:
        data, validation: the labeled training and validation data.
        epochs: epochs per trial.
        out_dir: Tune's storage path (trial results and checkpoints).
        seed: the same seed ``fit_multiple`` takes (data order, initial weights, minibatches).
        concurrent: trials at once (default: as many as the cluster's CPUs).
    """
    import ray
    from ray import tune

    order = np.random.default_rng(seed).permutation(len(data))  # fit_multiple's one shuffle
    trainable = tune.with_resources(
        tune.with_parameters(_trial, x=data.features[order], y=data.labels[order], val_x=validation.features,
                             val_y=validation.labels, num_classes=len(data.classes), epochs=epochs, seed=seed),
        {"cpu": 1})
    limit = concurrent or max(1, int(ray.cluster_resources().get("CPU", 1)))
    tuner = tune.Tuner(
        trainable,
        param_space={"row": tune.grid_search([row.to_json() for row in mst])},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=limit),
        run_config=tune.RunConfig(name="tune", storage_path=str(Path(out_dir).resolve()), verbose=0),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    if grid.errors:
        raise RuntimeError(f"{len(grid.errors)} Tune trial(s) failed: {grid.errors[0]}")
    results, configs, checkpoints = [], {}, {}
    for result in grid:
        history = result.metrics_dataframe.sort_values("epoch")
        key = str(history["model"].iloc[0])
        configs[key] = dict(result.config["row"])
        checkpoints[key] = Path(result.checkpoint.path)
        results += [{"model": key, "epoch": int(r.epoch), "train_loss": float(r.train_loss),
                     "val_loss": float(r.val_loss), "val_acc": float(r.val_acc), "time_s": float(r.time_s)}
                    for r in history.itertuples()]
    final = [r for r in results if r["epoch"] == epochs]
    best = max(final, key=lambda r: (r["val_acc"], -r["val_loss"]))["model"]
    return TuneResult(results, best, configs, wall, data.nbytes + validation.nbytes, checkpoints)
