"""The OCR patch generator (DeepLens q5): frames in, one pixel patch per line of text out.

PP-OCRv4 (model store entry ``pp-ocr``, the ONNX files of the PyPI wheel
``rapidocr-onnxruntime==1.4.4``) finds text lines, turns them upright and reads them
(:mod:`operators.models.ppocr`). Every line becomes a patch: the axis-aligned box of the
detected quad in frame pixels, label ``"text"``, score = recognition confidence, and the
string itself in the extra column ``text`` (kept by the store in the patch's metadata, so that
SQL can ask ``WHERE text ILIKE '%exit%'``).

Work per frame is bounded: the detector sees the frame scaled to a short side of ``min_side``
pixels but never a long side over ``max_side`` (so at most ``max_side`` x ``max_side``
pixels, whatever the camera), at most 1000 candidate regions are scored, and only the
``max_boxes`` best-scored lines are cropped and recognized.

>>> ocr = OCRDetector(max_boxes=20)
>>> ocr.output_type(ocr.input_type()).label_domain
frozenset({'text'})
>>> OCRDetector.name, ocr.model
('ocr', 'ocr@pp-ocr-v4-rapidocr-1.4.4')
"""

from __future__ import annotations

import cv2
import numpy as np

from operators.base import Operator, OperatorContext
from operators.detectors.options import check_common
from operators.detectors.patches import detections_to_patches
from operators.models.ppocr import PPOCR
from operators.models.store import spec
from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import FrameType, PatchType, StreamType

#: The label of every text-line patch.
TEXT_LABEL = "text"


class OCRDetector(Operator[FrameBatch, PatchBatch]):
    """Detect and read text lines with PP-OCRv4; emit a crop patch per line with its string.

    Args:
        score_threshold: minimum recognition confidence (0..1) of a kept line; lines read as
            an empty string are always dropped.
        box_threshold: minimum detection score (mean text probability inside the box, 0..1).
        binary_threshold: text-probability level at which the detector's map is binarized.
        unclip_ratio: how much a detected core region is grown to cover the whole line
            (DB's ``unclip_ratio``; larger = looser boxes).
        max_boxes: most text lines recognized per frame (the best-scored detections).
        min_side: short side, in pixels, the frame is scaled to for detection (small text
            needs upscaling) ...
        max_side: ... unless that makes the long side longer than this (the bound on
            detection cost per frame; both are rounded to multiples of 32).
        orientation: run the 0/180-degree line classifier, so upside-down lines are read.
        whole_frames: also emit one whole-frame patch per frame (label ``""``, text ``""``).

    Patch ids are ``patch_id(frame_key, "ocr@pp-ocr-VERSION", i)`` for the ``i``-th line of
    a frame in reading order (top to bottom, left to right), so reprocessing a frame gives the
    same ids. Each frame is read on its own, so a line's text does not depend on the batch.
    """

    name = "ocr"

    def __init__(
        self,
        *,
        score_threshold: float = 0.5,
        box_threshold: float = 0.5,
        binary_threshold: float = 0.3,
        unclip_ratio: float = 1.6,
        max_boxes: int = 50,
        min_side: int = 736,
        max_side: int = 1280,
        orientation: bool = True,
        whole_frames: bool = False,
    ) -> None:
        if max_boxes < 1:
            raise ConfigError(f"{self.name}: max_boxes must be >= 1, got {max_boxes}")
        check_common(self.name, score_threshold, max_boxes)
        for option, value in (("box_threshold", box_threshold), ("binary_threshold", binary_threshold)):
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{self.name}: {option} must be in (0, 1), got {value}")
        if not 0.5 <= unclip_ratio <= 4.0:
            raise ConfigError(f"{self.name}: unclip_ratio must be in [0.5, 4], got {unclip_ratio}")
        if not 32 <= min_side <= max_side <= 4096:
            raise ConfigError(f"{self.name}: need 32 <= min_side <= max_side <= 4096, got {min_side}, {max_side}")
        self.score_threshold = float(score_threshold)
        self.box_threshold = float(box_threshold)
        self.binary_threshold = float(binary_threshold)
        self.unclip_ratio = float(unclip_ratio)
        self.max_boxes = int(max_boxes)
        self.min_side = int(min_side)
        self.max_side = int(max_side)
        self.orientation = bool(orientation)
        self.whole_frames = bool(whole_frames)
        #: operator name and model version: the ``model`` of every patch and part of its id.
        self.model = f"{self.name}@pp-ocr-{spec('pp-ocr').version}"
        self._ocr: PPOCR | None = None

    def input_type(self) -> StreamType:
        """Frames of any size (scaled for detection; crops come from the original pixels)."""
        return FrameType()

    def output_type(self, upstream: StreamType) -> StreamType:
        """Pixel patches labelled ``"text"``."""
        return PatchType(kind="pixels", label_domain=frozenset({TEXT_LABEL} | ({""} if self.whole_frames else set())))

    def setup(self, context: OperatorContext) -> None:
        """Load the three verified PP-OCR ONNX sessions with ``context.num_threads`` threads each
        (onnxruntime's CUDA provider on a ``cuda`` context, where it is installed)."""
        threads = max(1, int(context.num_threads))
        cv2.setNumThreads(threads)
        self._ocr = PPOCR(num_threads=threads, cuda=context.device.startswith("cuda"), orientation=self.orientation)

    def read(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(boxes (k, 4) x0 y0 x1 y1, scores (k,), texts)`` of one RGB frame, in reading order."""
        if self._ocr is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        lines = self._ocr.read(
            image,
            min_side=self.min_side,
            max_side=self.max_side,
            binary_threshold=self.binary_threshold,
            box_threshold=self.box_threshold,
            unclip_ratio=self.unclip_ratio,
            max_boxes=self.max_boxes,
        )
        kept = [line for line in lines if line.text.strip() and line.score >= self.score_threshold]
        if not kept:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), []
        boxes = np.stack([line.bbox for line in kept])
        return boxes, np.asarray([line.score for line in kept], np.float32), [line.text for line in kept]

    def process(self, batch: FrameBatch) -> PatchBatch:
        """Read the text of every frame of ``batch``."""
        if self._ocr is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        if len(batch) == 0:
            empty = PatchBatch.empty(batch.meta)
            empty.extra["text"] = []
            return empty
        found = [self.read(image) for image in batch.images]
        patches = detections_to_patches(
            batch,
            [boxes for boxes, _, _ in found],
            [scores for _, scores, _ in found],
            [[TEXT_LABEL] * len(texts) for _, _, texts in found],
            operator=self.model,
            whole_frames=self.whole_frames,
        )
        # always present (empty too), so that concatenated batches keep the column
        patches.extra["text"] = [t for _, _, texts in found for t in ([""] if self.whole_frames else []) + texts]
        return patches

    def teardown(self) -> None:
        """Drop the sessions."""
        self._ocr = None
