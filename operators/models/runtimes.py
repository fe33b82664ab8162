"""Where a model's forward pass runs on CPU: torch, ONNX Runtime or OpenVINO, behind one interface.

``runtime`` options of the NanoDet-m detector and the EfficientNet-Lite0 featurizer take one of
:data:`RUNTIMES`. ``None`` picks torch when a GPU is asked for and present (fp16 autocast
there), else the fastest installed CPU runtime for that model (its ``CPU_RUNTIMES``, ordered by
``benchmarks/inference.py`` at one thread: ONNX Runtime for NanoDet-m, OpenVINO for
EfficientNet-Lite0). An ONNX session runs with exactly ``num_threads``
intra-op threads (ORT ``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS``) and fp32
arithmetic (OpenVINO would otherwise pick bf16 on CPUs that have it).

>>> check_runtime("nanodet-m", "tensorflow")
Traceback (most recent call last):
...
streamvision.core.errors.ConfigError: nanodet-m: runtime must be one of ('torch', 'onnxruntime', 'openvino') or None, got 'tensorflow'
>>> resolve_runtime("torch", "cpu")
'torch'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from streamvision.core.errors import ConfigError

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")
#: CPU runtimes, fastest first, when a model states no order of its own.
CPU_PREFERENCE = ("onnxruntime", "openvino", "torch")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def is_installed(runtime: str) -> bool:
    """Whether the runtime's Python package can be imported."""
    return importlib.util.find_spec(_MODULES[runtime]) is not None


def check_runtime(owner: str, runtime: str | None) -> str | None:
    """``runtime`` if it is ``None`` or a known, installed runtime; else :class:`ConfigError`."""
    if runtime is None:
        return None
    if runtime not in RUNTIMES:
        raise ConfigError(f"{owner}: runtime must be one of {RUNTIMES} or None, got {runtime!r}")
    if not is_installed(runtime):
        raise ConfigError(f"{owner}: runtime {runtime!r} is not installed (pip install 'streamvision[{runtime}]')")
    return runtime


def check_precision(owner: str, precision: str, runtime: str | None) -> str:
    """``precision`` if it is known and possible on ``runtime`` (int8 needs an ONNX runtime); else :class:`ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{owner}: precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and runtime == "torch":
        raise ConfigError(f"{owner}: precision 'int8' needs runtime 'onnxruntime' or 'openvino', not 'torch'")
    return precision


def resolve_runtime(runtime: str | None, device: str, precision: str = "fp32",
                    preference: tuple[str, ...] = CPU_PREFERENCE) -> str:
    """The runtime to use: the one asked for, else torch on an available GPU (fp32 only), else the
    first installed one of ``preference`` (a model's CPU runtimes, fastest first; an ONNX one for int8)."""
    if runtime is not None:
        return runtime
    if precision == "fp32" and device.startswith("cuda") and torch.cuda.is_available():
        return "torch"
    return next(r for r in preference if is_installed(r) and (precision == "fp32" or r != "torch"))


class OnnxSession(Protocol):
    """A loaded ONNX model: positional numpy inputs in, the graph's outputs (in order) out."""

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run the graph once."""


class OrtSession:
    """An ONNX Runtime CPU session with ``num_threads`` intra-op threads and full graph optimization."""

    def __init__(self, path: Path, num_threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(num_threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs for the given inputs (in the graph's input order)."""
        return self._session.run(None, dict(zip(self._inputs, inputs)))


class OpenVinoSession:
    """An OpenVINO CPU model compiled for latency on ``num_threads`` threads, fp32 inference precision."""

    def __init__(self, path: Path, num_threads: int) -> None:
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": max(1, int(num_threads)), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._outputs = list(self._compiled.outputs)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs for the given inputs (in the graph's input order)."""
        result = self._compiled([np.ascontiguousarray(x) for x in inputs])
        return [np.asarray(result[o]) for o in self._outputs]


def open_session(path: Path, runtime: str, num_threads: int) -> OnnxSession:
    """``path`` loaded in ``runtime`` (``"onnxruntime"`` or ``"openvino"``)."""
    if runtime == "onnxruntime":
        return OrtSession(path, num_threads)
    if runtime == "openvino":
        return OpenVinoSession(path, num_threads)
    raise ConfigError(f"no ONNX session for runtime {runtime!r}")
