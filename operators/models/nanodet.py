"""NanoDet-m (COCO 80) on torch: the TF.js graph, traced, plus its output decoding.

Input: RGB frames of any size, resized to 416x416, channels flipped to BGR and normalized
``(x - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]``. Outputs per stride 8 / 16 / 32:
class scores ``[n, cells, 80]`` (already sigmoid) and box regression ``[n, cells, 44]``: 4 sides
(left, top, right, bottom) x 11 bins; a side's distance is ``sum(softmax(bins) * [0..10]) *
stride`` from the cell centre ``((col + 0.5) * stride, (row + 0.5) * stride)``. Each cell keeps
its best class; then per-class NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operators.models.device import TorchDevice
from operators.models.nms import nms
from operators.models.store import ensure, spec
from operators.models.tfjs import load_graph_model

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11
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


class NanoDet:
    """NanoDet-m ready to run: loaded from the model store, on a device, traced.

    Args:
        device: where to run (see :class:`TorchDevice`).
        trace: trace the module with ``torch.jit.trace`` on first use.
    """

    model_name = "nanodet-m"

    def __init__(self, device: TorchDevice, *, trace: bool = True) -> None:
        self.device = device
        self.version = spec(self.model_name).version
        self.net = device.module(NanoDetNet(ensure(self.model_name) / "nanodet.json"))
        self._trace = trace
        self._traced: torch.jit.ScriptModule | None = None

    def _run(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._trace and self._traced is None:
            with torch.no_grad(), self.device.autocast():
                self._traced = torch.jit.trace(self.net, (frames,), check_trace=False)
        module = self._traced if self._traced is not None else self.net
        with torch.no_grad(), self.device.autocast():
            return module(frames)

    def raw(self, images: np.ndarray, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell ``(scores [n, A, 80], boxes [n, A, 4])`` for ``images (n, h, w, 3)`` uint8 RGB, boxes in frame pixels.

        Runs ``chunk`` frames per forward pass, bounding activation memory for large merged batches.
        """
        h, w = images.shape[1:3]
        scale = np.array([w / INPUT_SIZE, h / INPUT_SIZE] * 2, np.float32)
        scores, boxes = [], []
        for start in range(0, len(images), chunk):
            s, b = self._run(self.device.tensor(images[start : start + chunk]))
            scores.append(s.cpu().numpy())
            boxes.append(b.cpu().numpy() * scale)
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
