"""Deploying a trained model: export it to a file, load it as a dataflow operator.

:func:`export_model` writes one ``torch.save`` file (weights, architecture, input shape,
classes; read back with ``weights_only=True``). :class:`MopClassifier`, registered as
``mop_classifier``, loads it by path or by name (``<cache>/models/<name>.pt``) and labels
patches: vector patches of the trained dimension (e.g. 1280-d EfficientNet-Lite0
features), or pixel crops, which it turns into grayscale images of the trained size.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from operators.base import Operator, OperatorContext
from operators.training.architectures import build_model
from operators.training.mst import ModelConfig
from operators.training.step import load_checkpoint, save_checkpoint, to_tensors
from operators.assets import cache_dir
from streamvision.core.errors import ConfigError, InputError, MissingAssetError
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType, StreamType

EXPORT_FORMAT = "streamvision-mop-classifier/1"


def models_dir() -> Path:
    """Where exported models live when named without a path: ``<cache>/models``."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_model(checkpoint: str | Path, input_shape: tuple[int, ...], classes: tuple[str, ...],
                 path: str | Path | None = None) -> Path:
    """Export a MOP checkpoint as a deployable model file.

    Args:
        checkpoint: a checkpoint written by the MOP driver (state, metrics, config).
        input_shape: the shape of one training example.
        classes: the class names, index = label.
        path: the output file; default ``models_dir() / "<mst key>.pt"``.
    """
    saved = load_checkpoint(checkpoint)
    config = ModelConfig.from_json(saved["config"])
    target = Path(path) if path is not None else models_dir() / f"{config.key}.pt"
    return save_checkpoint(target, {
        "format": EXPORT_FORMAT, "key": config.key, "config": config.to_json(),
        "input_shape": [int(s) for s in input_shape], "classes": list(classes),
        "metrics": saved["metrics"], "model": saved["state"]["model"],
    })


def resolve_model(model: str) -> Path:
    """A model file given as a path, or as a name under :func:`models_dir`."""
    path = Path(model)
    if path.suffix == ".pt" and path.exists():
        return path
    named = models_dir() / f"{model}.pt"
    if named.exists():
        return named
    raise MissingAssetError(f"no exported model {model!r} (neither a .pt file nor {named})")


def model_version(path: str | Path) -> str:
    """``<file stem>@<first 10 hex digits of the file's SHA-256>``: names one exported model's bytes."""
    import hashlib

    path = Path(path)
    return f"{path.stem}@{hashlib.sha256(path.read_bytes()).hexdigest()[:10]}"


class MopClassifier(Operator[PatchBatch, PatchBatch]):
    """Label patches with a model exported from model selection.

    Args:
        model: path of an exported ``.pt`` file, or its name (the mst key by default).

    Each patch gets the predicted class as ``label``, its softmax probability as
    ``score``, the model's key in the ``classifier`` extra column, and the model *version*
    (:attr:`version`: the file's name and a digest of its bytes) as its ``model``, so lineage,
    ``where={"model": ...}`` and SQL's ``model`` column tell which model labelled it (the
    model that made the vector before moves to the ``features_model`` extra column).
    """

    name = "mop_classifier"

    def __init__(self, *, model: str) -> None:
        self.path = resolve_model(model)
        self.version = model_version(self.path)
        saved = load_checkpoint(self.path)
        if saved.get("format") != EXPORT_FORMAT:
            raise ConfigError(f"{self.path} is not an exported StreamVision model")
        self.config = ModelConfig.from_json(saved["config"])
        self.input_shape = tuple(int(s) for s in saved["input_shape"])
        self.classes = tuple(saved["classes"])
        self._weights: dict[str, Any] = saved["model"]
        self._net: torch.nn.Module | None = None
        self._device = "cpu"

    @property
    def takes_vectors(self) -> bool:
        """Whether the model reads feature vectors (else grayscale images)."""
        return len(self.input_shape) == 1

    def input_type(self) -> StreamType:
        """Vector patches of the trained dimension, or pixel patches."""
        if self.takes_vectors:
            return PatchType(kind="vector", dim=self.input_shape[0])
        return PatchType(kind="pixels")

    def output_type(self, upstream: StreamType) -> StreamType:
        """The same patches, labelled with the model's classes."""
        kind = "vector" if self.takes_vectors else "pixels"
        dim = upstream.dim if isinstance(upstream, PatchType) else None
        return PatchType(kind=kind, dim=dim, label_domain=frozenset(self.classes))

    def setup(self, context: OperatorContext) -> None:
        """Build the network on the context's device."""
        torch.set_num_threads(context.num_threads)
        self._device = context.device
        net = build_model(self.config.arch, self.input_shape, len(self.classes))
        net.load_state_dict(self._weights)
        self._net = net.to(self._device).eval()

    def _inputs(self, batch: PatchBatch) -> torch.Tensor:
        if self.takes_vectors:
            if batch.vectors is None or batch.vectors.shape[1] != self.input_shape[0]:
                raise InputError(f"mop_classifier {self.config.key} needs {self.input_shape[0]}-d vectors, "
                                 f"got {None if batch.vectors is None else batch.vectors.shape[1]}")
            return to_tensors(batch.vectors)
        if batch.crops is None:
            raise InputError(f"mop_classifier {self.config.key} needs pixel crops")
        import cv2

        h, w = self.input_shape
        grey = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) if c.ndim == 3 else c, (w, h),
                           interpolation=cv2.INTER_AREA) for c in batch.crops]
        return to_tensors(np.stack(grey).astype(np.uint8))

    def process(self, batch: PatchBatch) -> PatchBatch:
        """Predict a class for every patch."""
        if self._net is None:
            self.setup(OperatorContext())
        if len(batch) == 0:
            return batch
        with torch.no_grad():
            probs = torch.softmax(self._net(self._inputs(batch).to(self._device)), dim=1).cpu()  # type: ignore[misc]
        score, index = probs.max(dim=1)
        return replace(
            batch,
            labels=[self.classes[i] for i in index.tolist()],
            scores=score.numpy().astype(np.float32),
            models=[self.version] * len(batch),
            extra={**batch.extra, "classifier": [self.config.key] * len(batch), "features_model": list(batch.models)},
        )
