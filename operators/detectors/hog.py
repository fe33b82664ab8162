"""OpenCV's HOG + linear SVM people detector (Dalal-Triggs), a second detector implementation.

The detector window is 64x128 pixels, so people smaller than about 100 pixels are only found
on an upscaled frame (``upscale``); boxes are mapped back to frame pixels. Scores are the
SVM margins OpenCV reports (unbounded, about 0-4), not probabilities.

>>> HOGPeopleDetector(upscale=2.0).output_type(None).label_domain
frozenset({'person'})
"""

from __future__ import annotations

import cv2
import numpy as np

from operators.base import Operator, OperatorContext
from operators.detectors.patches import detections_to_patches
from operators.models.store import HOG_FILE, model_file, spec
from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import FrameType, PatchType, StreamType


class HOGPeopleDetector(Operator[FrameBatch, PatchBatch]):
    """Find people with HOG; one ``"person"`` crop patch per detection.

    Args:
        upscale: factor the frame is enlarged by before detection (1 = as is).
        score_threshold: minimum SVM margin of a kept detection.
        win_stride: sliding-window step in (upscaled) pixels.
        scale: image pyramid step.
        max_detections: most detections kept per frame, best first.
        whole_frames: also emit one whole-frame patch per frame.
    """

    name = f"hog-people@{spec('hog-people').version}"

    def __init__(
        self,
        *,
        upscale: float = 2.0,
        score_threshold: float = 1.0,
        win_stride: int = 8,
        scale: float = 1.05,
        max_detections: int = 100,
        whole_frames: bool = False,
    ) -> None:
        if not 0.5 <= upscale <= 4.0:
            raise ConfigError(f"{self.name}: upscale must be in [0.5, 4], got {upscale}")
        if score_threshold < 0 or win_stride < 1 or scale <= 1.0 or max_detections < 1:
            raise ConfigError(f"{self.name}: need score_threshold >= 0, win_stride >= 1, scale > 1, max_detections >= 1")
        self.upscale = float(upscale)
        self.score_threshold = float(score_threshold)
        self.win_stride = int(win_stride)
        self.scale = float(scale)
        self.max_detections = int(max_detections)
        self.whole_frames = bool(whole_frames)
        self._hog: cv2.HOGDescriptor | None = None

    def input_type(self) -> StreamType:
        """Frames of any size."""
        return FrameType()

    def output_type(self, upstream: StreamType | None) -> StreamType:
        """Pixel patches labelled ``"person"``."""
        return PatchType(kind="pixels", label_domain=frozenset({"person"} | ({""} if self.whole_frames else set())))

    def setup(self, context: OperatorContext) -> None:
        """Load the verified SVM coefficients; OpenCV uses ``num_threads`` threads."""
        cv2.setNumThreads(max(1, context.num_threads))
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(np.fromfile(model_file("hog-people", HOG_FILE), "<f4"))
        self._hog = hog

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (k, 4) x0 y0 x1 y1 in frame pixels, scores (k,))`` for one RGB frame, best first."""
        if self._hog is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        big = image if self.upscale == 1.0 else cv2.resize(image, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(
            big, winStride=(self.win_stride, self.win_stride), padding=(8, 8), scale=self.scale
        )
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        rects = np.asarray(rects, np.float32) / self.upscale
        scores = np.ravel(weights).astype(np.float32)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
        order = np.argsort(-scores, kind="stable")
        order = order[scores[order] >= self.score_threshold][: self.max_detections]
        return boxes[order], scores[order]

    def process(self, batch: FrameBatch) -> PatchBatch:
        """Detect people in every frame of ``batch``."""
        found = [self.detect(image) for image in batch.images]
        return detections_to_patches(
            batch,
            [b for b, _ in found],
            [s for _, s in found],
            [["person"] * len(s) for _, s in found],
            operator=self.name,
            whole_frames=self.whole_frames,
        )

    def teardown(self) -> None:
        """Drop the descriptor."""
        self._hog = None
