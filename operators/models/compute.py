"""Where and in which number format a model runs: one pure decision shared by every model.

:func:`choose_compute` turns what an operator was asked for (the replica's device, a
``precision`` and a ``runtime`` option) and what the machine has (CUDA or not, which runtimes
are installed) into a :class:`Compute`: the device class, the dtype and the runtime. It reads
nothing from the machine itself, so its GPU branches are tested on a CPU-only machine by
passing ``cuda_available=True``.

Precisions:

* ``"auto"`` (default): fp16 (torch autocast) on a GPU, else fp32 on the fastest CPU runtime;
* ``"fp32"``: fp32 everywhere (torch without autocast on a GPU), so vectors match a CPU's;
* ``"fp16"``: torch fp16 autocast, on the GPU where there is one, else on CPU (slow: the GPU's
  arithmetic reproduced on CPU, for checking its drift);
* ``"int8"``: quantized ONNX on CPU (ONNX Runtime or OpenVINO; not every model has one).

ONNX runtimes here run on CPU only, so asking for one puts the model on CPU whatever the device.

>>> choose_compute("m", "cuda:0", cuda_available=True, installed=lambda r: True)
Compute(device='cuda:0', dtype='float16', runtime='torch')
>>> choose_compute("m", "cuda", cuda_available=False, installed=lambda r: True)
Compute(device='cpu', dtype='float32', runtime='onnxruntime')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from streamvision.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "int8")
#: CPU runtimes, fastest first, when a model states no order of its own.
CPU_PREFERENCE = ("onnxruntime", "openvino", "torch")
ONNX_RUNTIMES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class Compute:
    """What a model replica runs on.

    Attributes:
        device: ``"cpu"`` or the CUDA device asked for (``"cuda"``, ``"cuda:N"``).
        dtype: ``"float32"``, ``"float16"`` (torch autocast) or ``"int8"`` (quantized ONNX).
        runtime: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
    """

    device: str
    dtype: str
    runtime: str

    @property
    def is_cuda(self) -> bool:
        """Whether the model runs on a CUDA device."""
        return self.device.startswith("cuda")


def check_precision(owner: str, precision: str, runtime: str | None, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` if it is one of ``allowed`` and possible on ``runtime``; else :class:`ConfigError`."""
    if precision not in allowed:
        raise ConfigError(f"{owner}: precision must be one of {allowed}, got {precision!r}")
    if precision == "int8" and runtime == "torch":
        raise ConfigError(f"{owner}: precision 'int8' needs runtime 'onnxruntime' or 'openvino', not 'torch'")
    if precision == "fp16" and runtime in ONNX_RUNTIMES:
        raise ConfigError(f"{owner}: precision 'fp16' needs runtime 'torch' (autocast), not {runtime!r}")
    return precision


def choose_compute(owner: str, device: str, *, cuda_available: bool, precision: str = "auto",
                   runtime: str | None = None, preference: tuple[str, ...] = CPU_PREFERENCE,
                   installed: Callable[[str], bool]) -> Compute:
    """The device, dtype and runtime a model runs with (see the module docstring).

    Args:
        owner: the model's name, for error messages.
        device: the replica's device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a GPU was reserved).
        cuda_available: whether this process can use CUDA (``torch.cuda.is_available()``).
        precision: one of :data:`PRECISIONS` (checked with :func:`check_precision`).
        runtime: the runtime asked for, or ``None`` to choose.
        preference: the model's CPU runtimes, fastest first.
        installed: whether a runtime's package can be imported.

    Raises:
        ConfigError: an impossible combination (int8 on torch, fp16 on ONNX), or no runtime installed.
    """
    check_precision(owner, precision, runtime)
    gpu = device.startswith("cuda") and cuda_available
    if precision == "fp16" or (gpu and runtime in (None, "torch") and precision in ("auto", "fp32")):
        dtype = "float32" if precision == "fp32" else "float16"
        return Compute(device if gpu else "cpu", dtype, "torch")
    if runtime is None:
        usable = [r for r in preference if installed(r) and (precision != "int8" or r in ONNX_RUNTIMES)]
        if not usable:
            raise ConfigError(f"{owner}: none of the runtimes {preference} is installed for precision {precision!r}")
        runtime = usable[0]
    return Compute("cpu", "int8" if precision == "int8" else "float32", runtime)
