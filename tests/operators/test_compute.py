"""Which device, dtype and runtime each model runs with: decided by CPU-visible logic, so the GPU
branches are checked on a machine without one (``cuda_available`` is an argument)."""

from __future__ import annotations

import pytest

from operators.models.compute import Compute, choose_compute
from operators.models.efficientnet_lite import CPU_RUNTIMES as LITE0_RUNTIMES
from operators.models.nanodet import CPU_RUNTIMES as NANODET_RUNTIMES
from streamvision.core.errors import ConfigError

ALL = lambda runtime: True  # noqa: E731 - every runtime installed
NO_OPENVINO = lambda runtime: runtime != "openvino"  # noqa: E731


@pytest.mark.parametrize("device, cuda, precision, runtime, preference, expected", [
    # a GPU was reserved and exists: torch, fp16 autocast unless fp32 is asked for
    ("cuda:0", True, "auto", None, NANODET_RUNTIMES, Compute("cuda:0", "float16", "torch")),
    ("cuda", True, "fp16", None, LITE0_RUNTIMES, Compute("cuda", "float16", "torch")),
    ("cuda", True, "fp32", None, LITE0_RUNTIMES, Compute("cuda", "float32", "torch")),
    ("cuda", True, "auto", "torch", NANODET_RUNTIMES, Compute("cuda", "float16", "torch")),
    # a GPU was reserved but CUDA is absent (a CPU-only torch): the fastest CPU runtime, fp32
    ("cuda", False, "auto", None, NANODET_RUNTIMES, Compute("cpu", "float32", "onnxruntime")),
    ("cuda", False, "auto", None, LITE0_RUNTIMES, Compute("cpu", "float32", "openvino")),
    # CPU replicas never get fp16 unless asked for (the GPU's arithmetic reproduced on CPU)
    ("cpu", True, "auto", None, LITE0_RUNTIMES, Compute("cpu", "float32", "openvino")),
    ("cpu", False, "fp16", None, LITE0_RUNTIMES, Compute("cpu", "float16", "torch")),
    ("cpu", False, "fp32", "torch", NANODET_RUNTIMES, Compute("cpu", "float32", "torch")),
    # int8 is quantized ONNX on CPU, even on a GPU replica
    ("cuda", True, "int8", None, NANODET_RUNTIMES, Compute("cpu", "int8", "onnxruntime")),
    # an ONNX runtime asked for runs on CPU whatever the device
    ("cuda", True, "auto", "openvino", NANODET_RUNTIMES, Compute("cpu", "float32", "openvino")),
])
def test_device_dtype_and_runtime(device, cuda, precision, runtime, preference, expected):
    got = choose_compute("m", device, cuda_available=cuda, precision=precision, runtime=runtime,
                         preference=preference, installed=ALL)
    assert got == expected
    assert got.is_cuda == expected.device.startswith("cuda")


def test_a_missing_runtime_falls_to_the_next_installed_one():
    assert choose_compute("m", "cpu", cuda_available=False, preference=LITE0_RUNTIMES,
                          installed=NO_OPENVINO).runtime == LITE0_RUNTIMES[LITE0_RUNTIMES.index("openvino") + 1]
    with pytest.raises(ConfigError, match="none of the runtimes"):
        choose_compute("m", "cpu", cuda_available=False, precision="int8", preference=("openvino", "torch"),
                       installed=NO_OPENVINO)


@pytest.mark.parametrize("precision, runtime, message", [
    ("bf16", None, "precision must be one of"),
    ("int8", "torch", "needs runtime 'onnxruntime' or 'openvino'"),
    ("fp16", "onnxruntime", "needs runtime 'torch'"),
])
def test_impossible_combinations_are_refused(precision, runtime, message):
    with pytest.raises(ConfigError, match=message):
        choose_compute("m", "cuda", cuda_available=True, precision=precision, runtime=runtime, installed=ALL)
