"""The NanoDet-m detector operator: frames in, one pixel patch per detected object out.

>>> detector = NanoDetDetector(score_threshold=0.5, classes=["person", "car"])
>>> sorted(detector.output_type(detector.input_type()).label_domain)
['car', 'person']
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from operators.base import Operator, OperatorContext
from operators.detectors.options import check_common, class_filter
from operators.detectors.patches import detections_to_patches
from operators.models.coco import COCO80
from operators.models.compute import Compute, check_precision, choose_compute
from operators.models.device import TorchDevice
from operators.models.nanodet import CPU_RUNTIMES, NanoDet
from operators.models.runtimes import check_runtime, is_installed
from operators.models.store import spec
from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import FrameType, PatchType, StreamType


class NanoDetDetector(Operator[FrameBatch, PatchBatch]):
    """Detect the 80 COCO classes with NanoDet-m; emit a crop patch per detection.

    Args:
        score_threshold: minimum class score (0..1) of a kept detection.
        iou_threshold: per-class NMS overlap threshold.
        max_detections: most detections kept per frame, best first.
        classes: COCO class names to keep (``None``: all 80); narrows the declared label domain.
        whole_frames: also emit one whole-frame patch per frame (label ``""``), so that a
            featurizer after this operator embeds both the objects and the frames.
        trace: run the ``torch.jit.trace``-d module (torch runtime; off only for debugging).
        runtime: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``; ``None`` (default): torch when a
            GPU is asked for and present, else the fastest installed CPU runtime
            (:func:`~operators.models.compute.choose_compute`). Outputs agree to ~1e-5.
        precision: ``"auto"`` (default: fp16 on a GPU, fp32 on CPU), ``"fp32"``, ``"fp16"`` (torch
            autocast) or ``"int8"`` (ONNX runtimes only; convolutions quantized, calibrated on real
            vtest.avi frames; see ``benchmarks/inference.py`` for its agreement).
    """

    name = f"nanodet-m@{spec('nanodet-m').version}"

    def __init__(
        self,
        *,
        score_threshold: float = 0.35,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
        classes: Iterable[str] | None = None,
        whole_frames: bool = False,
        trace: bool = True,
        runtime: str | None = None,
        precision: str = "auto",
    ) -> None:
        check_common(self.name, score_threshold, max_detections)
        self.runtime = check_runtime(self.name, runtime)
        self.precision = check_precision(self.name, precision, self.runtime)
        if not 0.0 < iou_threshold <= 1.0:
            raise ConfigError(f"{self.name}: iou_threshold must be in (0, 1], got {iou_threshold}")
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.classes = class_filter(self.name, classes, COCO80)
        self.whole_frames = bool(whole_frames)
        self.trace = bool(trace)
        self._class_index = None if self.classes is None else np.array(sorted(COCO80.index(c) for c in self.classes))
        self._model: NanoDet | None = None

    def input_type(self) -> StreamType:
        """Frames of any size (they are resized to 416x416 internally)."""
        return FrameType()

    def output_type(self, upstream: StreamType) -> StreamType:
        """Pixel patches whose labels are COCO names (or the class filter)."""
        domain = frozenset(COCO80) if self.classes is None else self.classes
        return PatchType(kind="pixels", label_domain=domain | ({""} if self.whole_frames else set()))

    def compute(self, context: OperatorContext) -> Compute:
        """The device, dtype and runtime this detector runs with in ``context``."""
        return choose_compute(self.name, context.device, cuda_available=torch.cuda.is_available(),
                              precision=self.precision, runtime=self.runtime, preference=CPU_RUNTIMES,
                              installed=is_installed)

    def setup(self, context: OperatorContext) -> None:
        """Load NanoDet-m from the model store onto the context's device, dtype and runtime."""
        compute = self.compute(context)
        self._model = NanoDet(TorchDevice.of(compute, context.num_threads), trace=self.trace,
                              runtime=compute.runtime, num_threads=context.num_threads,
                              precision="int8" if compute.dtype == "int8" else "fp32")

    @property
    def device(self) -> TorchDevice:
        """The device the model runs on (after ``setup``)."""
        if self._model is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        return self._model.device

    @property
    def active_runtime(self) -> str:
        """The runtime the model runs on (after ``setup``): ``"torch"``, ``"onnxruntime"`` or ``"openvino"``."""
        if self._model is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        return self._model.runtime

    def process(self, batch: FrameBatch) -> PatchBatch:
        """Detect objects in every frame of ``batch``."""
        if self._model is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        if len(batch) == 0:
            return PatchBatch.empty(batch.meta)
        found = self._model.detect(
            batch.images,
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            classes=self._class_index,
        )
        return detections_to_patches(
            batch,
            [d.boxes for d in found],
            [d.scores for d in found],
            [[COCO80[c] for c in d.classes] for d in found],
            operator=self.name,
            whole_frames=self.whole_frames,
        )

    def teardown(self) -> None:
        """Drop the model."""
        self._model = None
