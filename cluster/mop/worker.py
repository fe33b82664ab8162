"""The MOP worker actor: holds one partition (and the validation set) for the whole run.

Training runs in a concurrency group of one thread (a worker trains one model at a time);
a second group answers liveness checks while a model trains.

Data reaches a worker once, when it starts; afterwards only model states travel, as
arguments and results of :meth:`MopWorker.train` through Ray's object store.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray
import torch

from operators.training.mst import ModelConfig
from operators.training.step import ModelState, evaluate, state_nbytes, to_tensors, train_sub_epoch


@ray.remote(concurrency_groups={"train": 1, "control": 1})
class MopWorker:
    """One worker = one partition.

    Args:
        index: the worker's (and its partition's) index.
        features, labels: the partition.
        val_features, val_labels: the validation set (evaluated by the worker that ends a
            model's epoch).
        num_classes: number of classes.
        configs: the model selection rows as JSON dicts.
        threads: torch threads for this worker.
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, index: int, features: np.ndarray, labels: np.ndarray, val_features: np.ndarray,
                 val_labels: np.ndarray, num_classes: int, configs: list[dict[str, Any]], threads: int,
                 device: str) -> None:
        torch.set_num_threads(threads)
        self.index = index
        self.x, self.y = to_tensors(features), torch.from_numpy(np.array(labels, np.int64))
        self.val_x, self.val_y = to_tensors(val_features), torch.from_numpy(np.array(val_labels, np.int64))
        self.num_classes = num_classes
        self.configs = {row["key"]: ModelConfig.from_json(row) for row in configs}
        self.device = device

    @ray.method(concurrency_group="control")
    def rows(self) -> int:
        """Rows of the partition held; answers while a model trains (a liveness check)."""
        return len(self.y)

    @ray.method(concurrency_group="train")
    def train(self, key: str, state: ModelState, epoch: int, hop: int, seed: int,
              validate: bool) -> tuple[ModelState, dict[str, Any]]:
        """Train model ``key`` for one pass over this partition; validate if it ends the epoch.

        Returns:
            The new state, and a record for the schedule log (wall-clock start/end,
            train loss, bytes of state received, validation loss/accuracy or NaN).
        """
        start = time.time()
        config = self.configs[key]
        new_state, loss = train_sub_epoch(config, state, self.x, self.y, self.num_classes, seed, self.device,
                                          epoch)
        val_loss, val_acc = (evaluate(config, new_state, self.val_x, self.val_y, self.num_classes, self.device)
                             if validate else (float("nan"), float("nan")))
        record = {
            "model": key, "epoch": epoch, "worker": self.index, "hop": hop, "rows": len(self.y),
            "start": start, "end": time.time(), "train_loss": loss, "val_loss": val_loss, "val_acc": val_acc,
            "bytes_in": state_nbytes(state),
        }
        return new_state, record
