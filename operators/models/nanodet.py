"""NanoDet-m (COCO 80): the TF.js graph as torch ops plus its output decoding, run traced on
torch or exported to ONNX and run on ONNX Runtime / OpenVINO (fp32, or int8 calibrated on real
vtest.avi frames).

Input: RGB frames of any size, resized to 416x416, channels flipped to BGR and normalized
``(x - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]``. Outputs per stride 8 / 16 / 32:
class scores ``[n, cells, 80]`` (already sigmoid) and box regression ``[n, cells, 44]``: 4 sides
(left, top, right, bottom) x 11 bins; a side's distance is ``sum(softmax(bins) * [0..10]) *
stride`` from the cell centre ``((col + 0.5) * stride, (row + 0.5) * stride)``. Each cell keeps
its best class; then per-class NMS. Preprocessing and decoding are part of the exported graph
(uint8 frames of any size in, scores and 416-pixel boxes out), so every runtime shares the NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operators.models.calibration import calibration_tag, vtest_frames
from operators.models.device import TorchDevice
from operators.models.nms import nms
from operators.models.onnx_export import OnnxRecipe, export_onnx
from operators.models.quantize import quantize_int8
from operators.models.runtimes import OnnxSession, open_session
from operators.models.store import ensure, spec
from operators.models.tfjs import load_graph_model
from streamvision.core.errors import ConfigError

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11
#: CPU runtimes fastest first at one thread (benchmarks/results/inference.json: ONNX Runtime
#: 1.4x traced torch; OpenVINO with the frame size left dynamic about torch's speed).
CPU_RUNTIMES = ("onnxruntime", "openvino", "torch")
#: vtest.avi frames the int8 model is calibrated on (see :mod:`operators.models.calibration`).
CALIBRATION_FRAMES = 24
_MEAN_BGR = (103.53, 116.28, 123.675)
_STD_BGR = (57.375, 57.12, 58.395)


@dataclass
class Detections:
    """Detections of one frame, in frame pixels: ``boxes (k, 4)`` x0 y0 x1 y1, ``scores (k,)``, ``classes (k,)``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


class NanoDetNet(nn.Module):
    """Preprocessing + the NanoDet graph + box decoding, as one traceable module.

    ``forward(frames uint8 [n, h, w, 3] RGB)`` returns ``(scores [n, A, 80], boxes [n, A, 4])``
    over all ``A`` cells of the three strides, boxes in 416x416 input pixels.
    """

    def __init__(self, model_json: Path) -> None:
        super().__init__()
        self.graph = load_graph_model(model_json)
        mean = torch.tensor(_MEAN_BGR).view(1, 3, 1, 1)
        std = torch.tensor(_STD_BGR).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)
        centres, strides = [], []
        for stride in STRIDES:
            cells = INPUT_SIZE // stride
            rows, cols = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
            centres.append(torch.stack([(cols.flatten() + 0.5) * stride, (rows.flatten() + 0.5) * stride], 1))
            strides.append(torch.full((cells * cells,), float(stride)))
        self.register_buffer("centres", torch.cat(centres).float())
        self.register_buffer("strides", torch.cat(strides))
        self.register_buffer("bins", torch.arange(REG_BINS, dtype=torch.float32))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and boxes of every cell for a batch of uint8 RGB frames."""
        x = frames.permute(0, 3, 1, 2).flip(1).float()
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = (x - self.mean) * self.inv_std
        outputs = self.graph(x)
        n_levels = len(STRIDES)
        scores = torch.cat(outputs[:n_levels], 1).float()
        regression = torch.cat(outputs[n_levels:], 1).float()
        n, cells, _ = regression.shape
        distances = regression.reshape(n, cells, 4, REG_BINS).softmax(-1) @ self.bins
        distances = distances * self.strides[None, :, None]
        centres = self.centres[None]
        boxes = torch.cat([centres - distances[..., :2], centres + distances[..., 2:]], -1)
        return scores, boxes


def onnx_recipe() -> OnnxRecipe:
    """How :class:`NanoDetNet` is exported: uint8 frames ``[n, h, w, 3]`` in, scores and boxes out."""
    return OnnxRecipe(name="nanodet-m", weights=spec("nanodet-m").files, version=1, input_names=["frames"],
                      output_names=["scores", "boxes"],
                      dynamic_axes={"frames": {0: "n", 1: "h", 2: "w"}, "scores": {0: "n"}, "boxes": {0: "n"}})


def onnx_model() -> Path:
    """The cached fp32 ONNX file of :class:`NanoDetNet` (exported on first use)."""

    def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        return NanoDetNet(ensure("nanodet-m") / "nanodet.json"), (torch.zeros(1, 576, 768, 3, dtype=torch.uint8),)

    return export_onnx(onnx_recipe(), build)


def int8_model() -> Path:
    """The cached int8 ONNX file, calibrated one frame at a time on real vtest.avi frames."""
    fp32 = onnx_model()
    return quantize_int8(fp32, lambda: ((f[None],) for f in vtest_frames(CALIBRATION_FRAMES)),
                         tag=calibration_tag(CALIBRATION_FRAMES))


class NanoDet:
    """NanoDet-m ready to run: loaded from the model store, on a device and a runtime.

    Args:
        device: where torch runs (see :class:`TorchDevice`); ONNX runtimes always run on CPU.
        trace: trace the torch module with ``torch.jit.trace`` on first use.
        runtime: ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (see :mod:`operators.models.runtimes`).
        num_threads: intra-op threads of an ONNX runtime.
        precision: ``"fp32"``, or ``"int8"`` (ONNX runtimes only): convolutions quantized,
            calibrated on real vtest.avi frames (:func:`int8_model`).
    """

    model_name = "nanodet-m"

    def __init__(self, device: TorchDevice, *, trace: bool = True, runtime: str = "torch", num_threads: int = 1,
                 precision: str = "fp32") -> None:
        self.device = device
        self.runtime = runtime
        self.precision = precision
        self.version = spec(self.model_name).version
        self._trace = trace
        self._traced: torch.jit.ScriptModule | None = None
        self._session: OnnxSession | None = None
        self.net: nn.Module | None = None
        if runtime == "torch":
            if precision != "fp32":
                raise ConfigError(f"{self.model_name}: precision {precision!r} needs an ONNX runtime, not torch")
            self.net = device.module(NanoDetNet(ensure(self.model_name) / "nanodet.json"))
        else:
            path = onnx_model() if precision == "fp32" else int8_model()
            self._session = open_session(path, runtime, num_threads)

    def _run(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.net is not None
        if self._trace and self._traced is None:
            with torch.no_grad(), self.device.autocast():
                self._traced = torch.jit.trace(self.net, (frames,), check_trace=False)
        module = self._traced if self._traced is not None else self.net
        with torch.no_grad(), self.device.autocast():
            return module(frames)

    def _forward(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._session is not None:
            scores, boxes = self._session.run(np.ascontiguousarray(images))
            return scores, boxes
        s, b = self._run(self.device.tensor(images))
        return s.cpu().numpy(), b.cpu().numpy()

    def raw(self, images: np.ndarray, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell ``(scores [n, A, 80], boxes [n, A, 4])`` for ``images (n, h, w, 3)`` uint8 RGB, boxes in frame pixels.

        Runs ``chunk`` frames per forward pass, bounding activation memory for large merged batches.
        """
        h, w = images.shape[1:3]
        scale = np.array([w / INPUT_SIZE, h / INPUT_SIZE] * 2, np.float32)
        scores, boxes = [], []
        for start in range(0, len(images), chunk):
            s, b = self._forward(images[start : start + chunk])
            scores.append(s)
            boxes.append(b * scale)
        return np.concatenate(scores), np.concatenate(boxes)

    def detect(
        self,
        images: np.ndarray,
        *,
        score_threshold: float = 0.35,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
        classes: np.ndarray | None = None,
    ) -> list[Detections]:
        """Detections per frame for ``images (n, h, w, 3)`` uint8 RGB.

        Args:
            score_threshold: minimum class score kept.
            iou_threshold: NMS overlap above which the weaker box of a class is dropped.
            max_detections: most detections kept per frame (best first).
            classes: COCO class indices to keep (``None``: all 80).
        """
        h, w = images.shape[1:3]
        all_scores, all_boxes = self.raw(images)
        if classes is not None:
            mask = np.full(all_scores.shape[-1], -1.0, np.float32)
            mask[classes] = 0.0
            all_scores = np.where(mask[None, None] < 0, 0.0, all_scores)
        results = []
        for scores, boxes in zip(all_scores, all_boxes):
            best = scores.argmax(1)
            best_score = scores[np.arange(len(best)), best]
            keep = np.flatnonzero(best_score >= score_threshold)
            b = np.clip(boxes[keep], 0, [w, h, w, h]).astype(np.float32)
            valid = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
            keep, b = keep[valid], b[valid]
            chosen = nms(b, best_score[keep], best[keep], iou_threshold, max_detections)
            results.append(Detections(b[chosen], best_score[keep][chosen].astype(np.float32), best[keep][chosen]))
        return results
