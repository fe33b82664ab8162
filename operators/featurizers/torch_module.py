"""Any torch module as a featurizer: a TorchScript file, or an ``nn.Module`` from a driver program.

Contract: the module takes float32 ``[n, 3, size, size]`` RGB, normalized ``(x/255 - mean) / std``
per channel, and returns ``[n, d]`` features (or a tuple whose first element is that).
The vectors are L2-normalized unless ``normalize=False``.

>>> featurizer = TorchModuleFeaturizer(path="model.pt", dim=512, name="my-net@3")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from operators.base import Operator, OperatorContext
from operators.featurizers.resize import stack_resized
from operators.models.device import TorchDevice
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType, StreamType


class TorchModuleFeaturizer(Operator[PatchBatch, PatchBatch]):
    """Embed pixel patches with a user's torch module.

    Args:
        dim: the feature dimension the module produces (declared for graph validation).
        name: a stable operator name with a version (it goes into patch ids), e.g. ``"reid@2"``.
        path: a TorchScript file (``torch.jit.save``); loaded with ``torch.jit.load``, never unpickled.
        module: an in-process ``nn.Module`` instead of ``path`` (Python drivers only).
        size: square input size the crops are resized to.
        mean, std: per-channel normalization of ``x / 255``.
        normalize: L2-normalize the output vectors.
    """

    def __init__(
        self,
        *,
        dim: int,
        name: str,
        path: str | None = None,
        module: torch.nn.Module | None = None,
        size: int = 224,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        normalize: bool = True,
    ) -> None:
        if (path is None) == (module is None):
            raise ConfigError("torch_module featurizer: give exactly one of path= or module=")
        if path is not None and not Path(path).is_file():
            raise InputError(f"torch_module featurizer: no TorchScript file at {path}")
        if dim < 1 or size < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError("torch_module featurizer: need dim >= 1, size >= 1, 3 means and 3 positive stds")
        if not name:
            raise ConfigError("torch_module featurizer: a stable name (with a version) is required")
        self.name = name  # type: ignore[misc]
        self.dim = int(dim)
        self.path = path
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.normalize = bool(normalize)
        self._module = module
        self._device: TorchDevice | None = None

    def input_type(self) -> StreamType:
        """Pixel patches."""
        return PatchType(kind="pixels")

    def output_type(self, upstream: StreamType) -> StreamType:
        """``dim``-d vectors; labels pass through."""
        domain = upstream.label_domain if isinstance(upstream, PatchType) else None
        return PatchType(kind="vector", dim=self.dim, label_domain=domain)

    def setup(self, context: OperatorContext) -> None:
        """Load the module onto the context's device."""
        self._device = TorchDevice.from_context(context)
        module = torch.jit.load(self.path, map_location="cpu") if self.path else self._module
        assert module is not None
        self._module = self._device.module(module)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.mean, device=self._device.device).view(shape)
        self._std = torch.tensor(self.std, device=self._device.device).view(shape)

    def process(self, batch: PatchBatch) -> PatchBatch:
        """One vector per patch."""
        if len(batch) == 0:
            return PatchBatch.empty(batch.meta, dim=self.dim)
        if self._module is None or self._device is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        if batch.crops is None:
            raise ConfigError(f"{self.name}: needs pixel patches, got a batch without crops")
        images = self._device.tensor(stack_resized(batch.crops, self.size))
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std
        with torch.no_grad(), self._device.autocast():
            out = self._module(x)
        vectors = (out[0] if isinstance(out, (tuple, list)) else out).float()
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"{self.name}: module returned shape {tuple(vectors.shape)}, expected (n, {self.dim})")
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        return batch.derive(vectors.cpu().numpy(), operator=self.name)

    def spec(self) -> dict[str, object] | None:
        """How to rebuild this operator from a pipeline file; ``None`` for an in-process module."""
        if self.path is None:
            return None
        options = {"path": self.path, "dim": self.dim, "name": self.name, "size": self.size,
                   "mean": list(self.mean), "std": list(self.std), "normalize": self.normalize}
        return {"op": "torch_module", "options": options}

    def teardown(self) -> None:
        """Drop the module."""
        self._module = None if self.path else self._module
