"""PP-OCRv4 text detection + line orientation + recognition on onnxruntime, numpy and OpenCV.

The three ONNX graphs come from the PyPI wheel ``rapidocr-onnxruntime==1.4.4`` (model store
entry ``pp-ocr``); this module re-implements the small amount of pre- and post-processing
around them that RapidOCR / PaddleOCR do, so that neither package (nor ``pyclipper`` or
``shapely``) is needed at run time:

1. **Detection** (DBNet): the BGR image, scaled so that its short side is ``min_side`` but its
   long side at most ``max_side`` (both rounded to multiples of 32), normalized to
   ``(x / 255 - 0.5) / 0.5``, gives a text-probability map. It is binarized at
   ``binary_threshold`` and dilated 2x2; every contour's minimum-area rectangle is scored by
   the mean probability inside it (kept at ``box_threshold``), then grown by
   ``d = area * unclip_ratio / perimeter`` on every side (the DB "unclip": offsetting a
   rectangle by ``d`` with round joins and taking the minimum-area rectangle again gives
   exactly the rectangle grown by ``d``, so no polygon clipper is needed).
2. **Crops**: each quad is warped upright (perspective transform, replicated border); crops
   at least 1.5x taller than wide are turned 90 degrees (vertical lines).
3. **Orientation**: a 0/180-degree classifier on 48x192 crops; lines it calls upside down with
   more than ``0.9`` confidence are rotated.
4. **Recognition** (SVTR-LCNet + CTC): crops resized to height 48, batched by aspect ratio,
   greedy CTC decoding over the character list stored in the ONNX file's metadata
   (6623 characters: Chinese, Latin letters, digits, punctuation; plus blank and space). The
   confidence of a line is the mean probability of its decoded characters.

>>> TextLine(quad=np.zeros((4, 2), np.float32), text="PAN", score=0.9, det_score=0.8).bbox.tolist()
[0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from operators.models.store import PPOCR_CLS, PPOCR_DET, PPOCR_REC, ensure

#: Recognition input height and the width of the narrowest batch (PP-OCRv4: 3 x 48 x 320).
REC_HEIGHT = 48
REC_MIN_WIDTH = 320
#: Orientation classifier input (3 x 48 x 192) and the confidence needed to rotate a line.
CLS_SHAPE = (48, 192)
CLS_THRESHOLD = 0.9
#: Crops recognized (or classified) per onnxruntime call, grouped by similar aspect ratio.
REC_BATCH = 6
#: Most contours of the binarized map looked at per image (DB ``max_candidates``).
MAX_CANDIDATES = 1000
#: Boxes whose short side is under this many map pixels are noise.
MIN_BOX_SIDE = 3


@dataclass(frozen=True)
class TextLine:
    """One recognized line of text.

    Attributes:
        quad: ``(4, 2)`` float32 corners in image pixels, clockwise from top-left.
        text: the recognized string.
        score: recognition confidence (mean character probability, 0..1).
        det_score: detection score (mean text probability inside the box, 0..1).
    """

    quad: np.ndarray
    text: str
    score: float
    det_score: float

    @property
    def bbox(self) -> np.ndarray:
        """The quad's axis-aligned bounding box ``x0, y0, x1, y1`` (float32)."""
        return np.concatenate([self.quad.min(0), self.quad.max(0)]).astype(np.float32)


def _session(path: Path, num_threads: int, cuda: bool):  # -> ort.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(num_threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def _normalize(image: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32 ``(x / 255 - 0.5) / 0.5``."""
    return (image.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5


def order_clockwise(points: np.ndarray) -> np.ndarray:
    """Four corners as top-left, top-right, bottom-right, bottom-left (imutils' rule)."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], np.float32)


def _rect_corners(rect: tuple) -> np.ndarray:
    """Corners of a ``cv2.minAreaRect`` result in DB's order (as PaddleOCR's ``get_mini_boxes``)."""
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    a, d = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    b, c = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    return np.array([pts[a], pts[b], pts[c], pts[d]], np.float32)


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean of ``prob`` inside the polygon ``box`` (DB's "fast" score)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(box - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def detection_size(h: int, w: int, min_side: int, max_side: int) -> tuple[int, int]:
    """``(height, width)`` the detector sees: short side ``min_side``, long side <= ``max_side``, x32.

    >>> detection_size(576, 768, 736, 1280)
    (736, 992)
    >>> detection_size(1080, 1920, 736, 1280)
    (704, 1280)
    """
    scale = min(min_side / min(h, w), max_side / max(h, w))
    rh = max(32, min(max_side // 32 * 32, int(round(h * scale / 32)) * 32))
    rw = max(32, min(max_side // 32 * 32, int(round(w * scale / 32)) * 32))
    return rh, rw


def rotate_crop(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The pixels of ``quad`` warped upright; tall crops (vertical text) turned 90 degrees."""
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] >= 1.5 * crop.shape[1]:
        crop = np.ascontiguousarray(np.rot90(crop))
    return crop


def _resize_pad(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to ``height`` keeping the aspect ratio (at most ``width`` wide), right-pad with 0."""
    h, w = crop.shape[:2]
    new_w = min(width, int(math.ceil(height * w / float(h))))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :new_w] = _normalize(cv2.resize(crop, (new_w, height)))
    return out


class PPOCR:
    """The three PP-OCR sessions and the processing around them.

    Args:
        folder: the verified ``pp-ocr`` model directory (default: from the model store).
        num_threads: onnxruntime intra-op threads per session.
        cuda: use onnxruntime's CUDA provider when it is installed.
        orientation: run the 0/180-degree line classifier before recognition.
    """

    def __init__(self, folder: Path | None = None, *, num_threads: int = 1, cuda: bool = False,
                 orientation: bool = True) -> None:
        folder = ensure("pp-ocr") if folder is None else folder
        self._det = _session(folder / PPOCR_DET, num_threads, cuda)
        self._cls = _session(folder / PPOCR_CLS, num_threads, cuda) if orientation else None
        self._rec = _session(folder / PPOCR_REC, num_threads, cuda)
        characters = self._rec.get_modelmeta().custom_metadata_map.get("character")
        if not characters:
            raise ValueError(f"{folder / PPOCR_REC} has no 'character' list in its metadata")
        # index 0 is the CTC blank, the last index the space (PaddleOCR's use_space_char)
        self.characters = ["", *characters.splitlines(), " "]
        classes = self._rec.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.characters):
            raise ValueError(f"recognizer has {classes} classes but {len(self.characters)} characters")

    @property
    def providers(self) -> list[str]:
        """The onnxruntime providers of the recognition session."""
        return list(self._rec.get_providers())

    # ------------------------------------------------------------------ detection
    def detect(self, bgr: np.ndarray, *, min_side: int = 736, max_side: int = 1280, binary_threshold: float = 0.3,
               box_threshold: float = 0.5, unclip_ratio: float = 1.6, max_boxes: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Text quads ``(k, 4, 2)`` in image pixels and their scores ``(k,)``, at most ``max_boxes``,
        the best scored kept, in reading order (top to bottom, then left to right)."""
        h, w = bgr.shape[:2]
        rh, rw = detection_size(h, w, min_side, max_side)
        x = _normalize(cv2.resize(bgr, (rw, rh)))[None]
        prob = np.asarray(self._det.run(None, {self._det.get_inputs()[0].name: x})[0])[0, 0]
        mask = cv2.dilate((prob > binary_threshold).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        quads, scores = [], []
        for contour in contours[:MAX_CANDIDATES]:
            rect = cv2.minAreaRect(contour)
            if min(rect[1]) < MIN_BOX_SIDE:
                continue
            score = _box_score(prob, _rect_corners(rect))
            if score < box_threshold:
                continue
            (cx, cy), (bw, bh), angle = rect
            grow = bw * bh * unclip_ratio / (2.0 * (bw + bh))
            grown = ((cx, cy), (bw + 2 * grow, bh + 2 * grow), angle)
            if min(grown[1]) < MIN_BOX_SIDE + 2:
                continue
            quad = _rect_corners(grown)
            quad[:, 0] = np.clip(np.round(quad[:, 0] / rw * w), 0, w)
            quad[:, 1] = np.clip(np.round(quad[:, 1] / rh * h), 0, h)
            quad = order_clockwise(quad)
            quad[:, 0] = np.clip(quad[:, 0], 0, w - 1)
            quad[:, 1] = np.clip(quad[:, 1], 0, h - 1)
            if int(np.linalg.norm(quad[0] - quad[1])) <= 3 or int(np.linalg.norm(quad[0] - quad[3])) <= 3:
                continue
            quads.append(quad)
            scores.append(score)
        if not quads:
            return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
        keep = np.argsort(-np.asarray(scores), kind="stable")[:max_boxes]
        # reading order: by top-left y, then x; lines whose tops are within 10 px by x
        order = sorted(keep.tolist(), key=lambda i: (quads[i][0, 1], quads[i][0, 0]))
        for i in range(len(order) - 1):
            for j in range(i, -1, -1):
                a, b = quads[order[j]][0], quads[order[j + 1]][0]
                if abs(b[1] - a[1]) < 10 and b[0] < a[0]:
                    order[j], order[j + 1] = order[j + 1], order[j]
                else:
                    break
        return np.stack([quads[i] for i in order]), np.asarray([scores[i] for i in order], np.float32)

    # ------------------------------------------------------------------ orientation and recognition
    def _upright(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        if self._cls is None or not crops:
            return crops
        out = list(crops)
        order = np.argsort([c.shape[1] / c.shape[0] for c in crops], kind="stable")
        for start in range(0, len(crops), REC_BATCH):
            idx = order[start : start + REC_BATCH]
            x = np.stack([_resize_pad(crops[i], *CLS_SHAPE) for i in idx])
            prob = np.asarray(self._cls.run(None, {self._cls.get_inputs()[0].name: x})[0])
            for i, p in zip(idx, prob):
                if int(np.argmax(p)) == 1 and float(p[1]) > CLS_THRESHOLD:
                    out[i] = cv2.rotate(crops[i], cv2.ROTATE_180)
        return out

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """``(text, confidence)`` per upright BGR line crop (orientation-corrected first if enabled)."""
        crops = self._upright(crops)
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        ratios = [c.shape[1] / float(c.shape[0]) for c in crops]
        order = np.argsort(ratios, kind="stable")
        for start in range(0, len(crops), REC_BATCH):
            idx = order[start : start + REC_BATCH]
            ratio = max(REC_MIN_WIDTH / REC_HEIGHT, *(ratios[i] for i in idx))
            width = int(REC_HEIGHT * ratio)
            x = np.stack([_resize_pad(crops[i], REC_HEIGHT, width) for i in idx])
            prob = np.asarray(self._rec.run(None, {self._rec.get_inputs()[0].name: x})[0])
            best, conf = prob.argmax(2), prob.max(2)
            for i, b, c in zip(idx, best, conf):
                keep = np.ones(len(b), bool)
                keep[1:] = b[1:] != b[:-1]
                keep &= b != 0
                text = "".join(self.characters[k] for k in b[keep])
                results[i] = (text, float(c[keep].mean()) if keep.any() else 0.0)
        return results

    def read(self, rgb: np.ndarray, **detect_options: Any) -> list[TextLine]:
        """Every text line of one RGB image, in reading order (``detect_options``: see :meth:`detect`)."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        quads, det_scores = self.detect(bgr, **detect_options)
        recognized = self.recognize([rotate_crop(bgr, q) for q in quads])
        return [TextLine(q, text, score, float(s)) for q, s, (text, score) in zip(quads, det_scores, recognized)]
