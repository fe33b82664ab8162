"""Where a model runs: CUDA when the actor was given a GPU and one exists, else CPU.

On CUDA the model and the batches live on the device, host batches are copied from pinned
memory without blocking, and inference runs under fp16 autocast. On CPU torch uses as many
threads as the actor has CPUs.

>>> from operators.base import OperatorContext
>>> TorchDevice.from_context(OperatorContext(device="cpu", num_threads=1)).device.type
'cpu'
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import numpy as np
import torch

from operators.base import OperatorContext


@dataclass(frozen=True)
class TorchDevice:
    """The torch device an operator replica runs on, and how to feed it."""

    device: torch.device

    @classmethod
    def from_context(cls, context: OperatorContext) -> "TorchDevice":
        """Pick the device the runtime asked for, falling back to CPU when CUDA is absent.

        On CPU this also sets ``torch.set_num_threads(context.num_threads)``.
        """
        if context.device.startswith("cuda") and torch.cuda.is_available():
            return cls(torch.device(context.device))
        torch.set_num_threads(max(1, int(context.num_threads)))
        return cls(torch.device("cpu"))

    @property
    def is_cuda(self) -> bool:
        """Whether this is a CUDA device."""
        return self.device.type == "cuda"

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on the device (via pinned memory, non-blocking, on CUDA)."""
        host = torch.from_numpy(np.ascontiguousarray(array))
        if not self.is_cuda:
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    def autocast(self) -> ContextManager[object]:
        """fp16 autocast on CUDA; nothing on CPU (fp32)."""
        if self.is_cuda:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in eval mode on the device."""
        return module.eval().to(self.device)
