"""Where a torch model runs and in which dtype: a :class:`~operators.models.compute.Compute` made concrete.

On CUDA the model and the batches live on the device and host batches are copied from pinned
memory without blocking. A ``float16`` device runs inference under fp16 autocast (on CUDA, or on
CPU to reproduce the GPU's arithmetic); ``float32`` runs plain. Torch's CPU threads (used for
pre- and post-processing on a GPU too) are set to the replica's share of CPUs.

>>> from operators.base import OperatorContext
>>> TorchDevice.from_context(OperatorContext(device="cpu", num_threads=1)).device.type
'cpu'
>>> TorchDevice.of(Compute("cpu", "float16", "torch"), num_threads=1).dtype
torch.float16
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import numpy as np
import torch

from operators.base import OperatorContext
from operators.models.compute import Compute

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.float32}


@dataclass(frozen=True)
class TorchDevice:
    """The torch device an operator replica runs on, the dtype it computes in, and how to feed it."""

    device: torch.device
    dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, compute: Compute, num_threads: int) -> "TorchDevice":
        """The device and dtype of ``compute``; sets ``torch.set_num_threads(num_threads)``."""
        torch.set_num_threads(max(1, int(num_threads)))
        return cls(torch.device(compute.device), _DTYPES[compute.dtype])

    @classmethod
    def from_context(cls, context: OperatorContext) -> "TorchDevice":
        """The device the runtime asked for, fp16 there, falling back to CPU fp32 when CUDA is absent.

        For models without a precision option of their own (user torch modules).
        """
        cuda = context.device.startswith("cuda") and torch.cuda.is_available()
        return cls.of(Compute(context.device, "float16", "torch") if cuda else Compute("cpu", "float32", "torch"),
                      context.num_threads)

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
        """fp16 autocast for a ``float16`` device (CUDA or CPU); nothing for ``float32``."""
        if self.dtype == torch.float16:
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in eval mode on the device."""
        return module.eval().to(self.device)
