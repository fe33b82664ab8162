"""Export a torch module to ONNX once and cache the file, keyed by the weights it was built from.

The file lands in ``cache_dir()/onnx/NAME-KEY.onnx``. ``KEY`` hashes the model's pinned weight
SHA-256s (from the model store), the export recipe version and the torch version, so a changed
model, recipe or exporter writes a new file and a stale one is never reused. The module is only
built (weights loaded) when the file is missing. Export uses torch's TorchScript-based exporter
(``dynamo=False``), which needs no extra package; the file is written beside its final name and
renamed into place, so concurrent replicas never read a half-written model.

>>> recipe = OnnxRecipe("m", {"w.bin": "ab" * 32}, 1, ["x"], ["y"])
>>> recipe.key() == OnnxRecipe("m", {"w.bin": "cd" * 32}, 1, ["x"], ["y"]).key()
False
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from operators.assets import cache_dir

#: ONNX opset of every exported model (supported by onnxruntime >= 1.17 and OpenVINO 2024+).
OPSET = 17


@dataclass(frozen=True)
class OnnxRecipe:
    """How one model is exported.

    Attributes:
        name: the file name stem (e.g. ``"nanodet-m"``).
        weights: weight file name -> pinned SHA-256 (the model store's ``ModelSpec.files``).
        version: bump when the exported graph changes for the same weights (pre/post-processing).
        input_names, output_names: the graph's tensor names.
        dynamic_axes: ``torch.onnx.export``'s dynamic axes (e.g. the batch axis).
    """

    name: str
    weights: Mapping[str, str]
    version: int
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    def key(self) -> str:
        """Hex digest of the weights' SHA-256s, the recipe version, the opset and the torch version."""
        blob = json.dumps({"weights": dict(sorted(self.weights.items())), "version": self.version,
                           "opset": OPSET, "torch": torch.__version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self) -> Path:
        """Where the exported file is cached."""
        return cache_dir() / "onnx" / f"{self.name}-{self.key()[:16]}.onnx"


def export_onnx(recipe: OnnxRecipe, build: Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]) -> Path:
    """The cached ONNX file of ``recipe``, exported from ``build()`` = ``(module, example inputs)`` if absent."""
    target = recipe.path()
    if target.exists():
        return target
    module, example = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".onnx")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter notices
            torch.onnx.export(module.eval(), example, tmp, input_names=list(recipe.input_names),
                              output_names=list(recipe.output_names),
                              dynamic_axes={k: dict(v) for k, v in recipe.dynamic_axes.items()},
                              opset_version=OPSET, dynamo=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is readable like the models
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
