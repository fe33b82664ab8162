"""A user's own detector as an operator: a TorchScript file or an ONNX model (onnxruntime).

Output contract (both formats):

* input: one float32 tensor ``[n, 3, H, W]``: RGB frames resized (stretched) to
  ``input_size = (H, W)``, scaled to ``x / 255`` and normalized ``(x - mean) / std``;
* output: one float32 tensor ``[n, k, 6]``, a row per candidate:
  ``x0, y0, x1, y1`` in input pixels (``0..W``, ``0..H``), ``score`` in 0..1, and the
  ``class`` index into ``labels``; rows with ``score < score_threshold`` are ignored, so
  a model pads unused rows with score 0. If the model does no NMS itself, set ``nms_iou``.

Boxes are mapped back to frame pixels. The label domain declared for graph validation is
``labels``. TorchScript files are read with ``torch.jit.load`` and ONNX with onnxruntime:
neither unpickles Python objects.

>>> det = UserDetector(path="people.onnx", labels=["person"], input_size=(320, 320),
...                    name="people-v3")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from operators.base import Operator, OperatorContext
from operators.detectors.options import check_common
from operators.detectors.patches import detections_to_patches
from operators.featurizers.resize import stack_resized
from operators.models.device import TorchDevice
from operators.models.nms import nms
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import FrameType, PatchType, StreamType


def _resize_to(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if images.shape[1:3] == (h, w):
        return images
    if h == w:
        return stack_resized(list(images), h)
    import cv2

    return np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images])


class UserDetector(Operator[FrameBatch, PatchBatch]):
    """Run a user-supplied TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``) detector.

    Args:
        path: the model file; the format follows the suffix.
        labels: class names, indexed by the model's class column (its label domain).
        name: stable operator name with a version (goes into patch ids), e.g. ``"people@3"``.
        input_size: ``(H, W)`` the model expects.
        mean, std: per-channel normalization of ``x / 255``.
        score_threshold: minimum score kept.
        nms_iou: per-class NMS threshold when the model does not suppress duplicates itself.
        max_detections: most detections kept per frame, best first.
        whole_frames: also emit one whole-frame patch per frame.
    """

    def __init__(
        self,
        *,
        path: str,
        labels: Sequence[str],
        name: str,
        input_size: Sequence[int] = (416, 416),
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        score_threshold: float = 0.35,
        nms_iou: float | None = None,
        max_detections: int = 100,
        whole_frames: bool = False,
    ) -> None:
        suffix = Path(path).suffix.lower()
        if suffix not in (".pt", ".ts", ".onnx"):
            raise ConfigError(f"user detector: {path} must end in .pt/.ts (TorchScript) or .onnx")
        if not Path(path).is_file():
            raise InputError(f"user detector: no model file at {path}")
        if not labels or not name or len(input_size) != 2 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError("user detector: need labels, a name, input_size (H, W), 3 means and 3 positive stds")
        check_common(name, score_threshold, max_detections)
        self.name = name  # type: ignore[misc]
        self.path = str(path)
        self.kind = "onnx" if suffix == ".onnx" else "torchscript"
        self.labels = tuple(labels)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.score_threshold = float(score_threshold)
        self.nms_iou = nms_iou
        self.max_detections = int(max_detections)
        self.whole_frames = bool(whole_frames)
        self._runner: Any = None
        self._device: TorchDevice | None = None

    def input_type(self) -> StreamType:
        """Frames of any size."""
        return FrameType()

    def output_type(self, upstream: StreamType) -> StreamType:
        """Pixel patches labelled from ``labels``."""
        return PatchType(kind="pixels", label_domain=frozenset(self.labels) | ({""} if self.whole_frames else set()))

    def setup(self, context: OperatorContext) -> None:
        """Load the model: TorchScript on the context's device, ONNX with CUDA or CPU providers."""
        self._device = TorchDevice.from_context(context)
        if self.kind == "torchscript":
            self._runner = self._device.module(torch.jit.load(self.path, map_location="cpu"))
            return
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, context.num_threads)
        providers = ["CPUExecutionProvider"]
        if self._device.is_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._runner = ort.InferenceSession(self.path, options, providers=providers)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "onnx":
            session = self._runner
            return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])
        assert self._device is not None
        with torch.no_grad(), self._device.autocast():
            return self._runner(self._device.tensor(x)).float().cpu().numpy()

    def process(self, batch: FrameBatch) -> PatchBatch:
        """Detect in every frame of ``batch``; rows are checked against the output contract."""
        if self._runner is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        h, w = batch.size
        images = _resize_to(batch.images, self.input_size)
        x = (images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - self.mean) / self.std
        out = self._infer(np.ascontiguousarray(x, np.float32))
        if out.ndim != 3 or out.shape[0] != len(batch) or out.shape[2] != 6:
            raise InputError(f"{self.name}: model output has shape {out.shape}, the contract is [n, k, 6]")
        scale = np.array([w / self.input_size[1], h / self.input_size[0]] * 2, np.float32)
        boxes, scores, labels = [], [], []
        for rows in out:
            rows = rows[rows[:, 4] >= self.score_threshold]
            classes = rows[:, 5].astype(np.int64)
            if np.any((classes < 0) | (classes >= len(self.labels))):
                raise InputError(f"{self.name}: class index outside 0..{len(self.labels) - 1}")
            b = np.clip(rows[:, :4] * scale, 0, [w, h, w, h]).astype(np.float32)
            if self.nms_iou is not None:
                keep = nms(b, rows[:, 4], classes, self.nms_iou, self.max_detections)
            else:
                keep = np.argsort(-rows[:, 4], kind="stable")[: self.max_detections]
            boxes.append(b[keep])
            scores.append(rows[keep, 4].astype(np.float32))
            labels.append([self.labels[c] for c in classes[keep]])
        return detections_to_patches(batch, boxes, scores, labels, operator=self.name, whole_frames=self.whole_frames)

    def teardown(self) -> None:
        """Drop the model."""
        self._runner = None
