"""Where a model's forward pass runs on CPU: torch, ONNX Runtime or OpenVINO, behind one interface.

``runtime`` options of the NanoDet-m detector and the EfficientNet-Lite0 featurizer take one of
:data:`RUNTIMES`. ``None`` lets :func:`operators.models.compute.choose_compute` pick: torch when
a GPU is asked for and present, else the fastest installed CPU runtime for that model (its
``CPU_RUNTIMES``, ordered by ``benchmarks/inference.py`` at one thread: ONNX Runtime for
NanoDet-m, OpenVINO for EfficientNet-Lite0). An ONNX session runs with exactly ``num_threads``
intra-op threads (ORT ``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS``) and fp32
arithmetic (OpenVINO would otherwise pick bf16 on CPUs that have it).

>>> check_runtime("nanodet-m", "tensorflow")
Traceback (most recent call last):
...
streamvision.core.errors.ConfigError: nanodet-m: runtime must be one of ('torch', 'onnxruntime', 'openvino') or None, got 'tensorflow'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from streamvision.core.errors import ConfigError

RUNTIMES = ("torch", "onnxruntime", "openvino")
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
