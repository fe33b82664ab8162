"""One model's life in pieces: initial state, one sub-epoch on a partition, evaluation.

A model's *state* is a plain dict ``{"model": state_dict, "optimizer": state_dict}`` of
tensors and numbers: it is all that moves between MOP workers, and what a checkpoint holds
(``torch.save`` / ``torch.load(weights_only=True)``; nothing is unpickled).

Every function is deterministic: the same state, data, config and seed give bit-identical
weights on CPU (with the same number of torch threads).

>>> import numpy as np
>>> from operators.training.mst import ModelConfig
>>> cfg = ModelConfig("head_linear", lr=0.1)
>>> x, y = to_tensors(np.eye(4, dtype=np.float32)), torch.arange(4) % 2
>>> state = init_state(cfg, (4,), 2, seed=0)
>>> state, loss = train_sub_epoch(cfg, state, x, y, 2, seed=1)
>>> loss > 0
True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from operators.training.architectures import build_model
from operators.training.mst import ModelConfig

ModelState = dict[str, Any]
_EVAL_BATCH = 1024


def sub_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` (model key, epoch, partition...)."""
    text = "\x00".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def to_tensors(features: np.ndarray) -> torch.Tensor:
    """Model input from stored features: uint8 images scaled to ``[0, 1]``, vectors as float32."""
    if features.dtype == np.uint8:
        return torch.from_numpy(features.astype(np.float32) / 255.0)
    return torch.from_numpy(np.array(features, np.float32))  # a writable copy


def _optimizer(config: ModelConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _restore(config: ModelConfig, state: ModelState, input_shape: tuple[int, ...], num_classes: int,
             device: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = build_model(config.arch, input_shape, num_classes)
    model.load_state_dict(state["model"])
    model.to(device)
    optimizer = _optimizer(config, model)
    if state["optimizer"]:
        optimizer.load_state_dict(state["optimizer"])
    return model, optimizer


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def init_state(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> ModelState:
    """Freshly initialised weights (from ``seed``) and an empty optimizer state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config.arch, tuple(input_shape), num_classes)
    return {"model": _to_cpu(model.state_dict()), "optimizer": {}}


def train_sub_epoch(
    config: ModelConfig,
    state: ModelState,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    seed: int,
    device: str = "cpu",
    epoch: int = 1,
) -> tuple[ModelState, float]:
    """One pass of minibatch training over ``(x, y)`` in a ``seed``-shuffled order.

    ``epoch`` (1-based) sets the learning rate (:meth:`ModelConfig.lr_at`).

    Returns:
        The new state (on CPU) and the mean training loss of the pass.
    """
    model, optimizer = _restore(config, state, tuple(x.shape[1:]), num_classes, device)
    for group in optimizer.param_groups:
        group["lr"] = config.lr_at(epoch)
    model.train()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    total = 0.0
    for start in range(0, len(y), config.batch_size):
        index = order[start:start + config.batch_size]
        xb, yb = x[index].to(device), y[index].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
    new_state = {"model": _to_cpu(model.state_dict()), "optimizer": _to_cpu(optimizer.state_dict())}
    return new_state, total / max(1, len(y))


def evaluate(config: ModelConfig, state: ModelState, x: torch.Tensor, y: torch.Tensor, num_classes: int,
             device: str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (0..1) of a model state on ``(x, y)``."""
    model, _ = _restore(config, state, tuple(x.shape[1:]), num_classes, device)
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), _EVAL_BATCH):
            xb, yb = x[start:start + _EVAL_BATCH].to(device), y[start:start + _EVAL_BATCH].to(device)
            logits = model(xb)
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    n = max(1, len(y))
    return loss_sum / n, correct / n


def state_nbytes(state: Any) -> int:
    """Bytes of every tensor in a state (what one hop between workers moves)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) atomically with ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only``: never unpickles code)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
