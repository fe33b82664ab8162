"""int8 static quantization of an exported ONNX model, calibrated on real inputs, cached.

ONNX Runtime's ``quantize_static`` in QDQ form (per-channel int8 weights, uint8 activations,
min-max calibration) on the convolutions only: the box decoding's ``softmax @ bins`` and the
classifier stay fp32. Weights use 7 of their 8 bits (``reduce_range``): x86 CPUs without VNNI
multiply uint8 by int8 with ``VPMADDUBSW``, whose int16 pair sums saturate on full-range weights;
on such a CPU (AVX2) NanoDet-m kept 84% of its fp32 boxes with 8-bit weights and 96-97% with 7.
A QDQ file runs as int8 in both ONNX Runtime and OpenVINO. The result is cached beside the fp32
file, named by it and by a tag for the calibration set, so a re-exported model or a different
calibration set quantizes anew.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

#: Names the quantization settings in cached file names, so changed settings quantize anew.
RECIPE = "w7"


def int8_path(fp32: Path, tag: str) -> Path:
    """Where the int8 version of ``fp32`` calibrated on the set ``tag`` is cached."""
    return fp32.with_name(f"{fp32.stem}-int8{RECIPE}-{tag}.onnx")


def quantize_int8(fp32: Path, calibration: Callable[[], Iterable[Sequence[np.ndarray]]], *, tag: str) -> Path:
    """The cached int8 model of ``fp32``; if absent, quantized on ``calibration()`` (each item: the graph's inputs).

    ``calibration`` is only called on a cache miss, so real frames are decoded once.
    """
    from onnxruntime import InferenceSession
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    target = int8_path(fp32, tag)
    if target.exists():
        return target
    names = [i.name for i in InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[Sequence[np.ndarray]] = iter(calibration())

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else dict(zip(names, item))

    fd, tmp = tempfile.mkstemp(dir=fp32.parent, prefix=f".{target.stem}-", suffix=".onnx")
    os.close(fd)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" notices
    try:
        quantize_static(str(fp32), tmp, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        op_types_to_quantize=["Conv"])
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is readable like the models
        os.replace(tmp, target)
    finally:
        logging.getLogger().setLevel(quiet)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
