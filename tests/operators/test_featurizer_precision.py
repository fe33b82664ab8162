"""Query images are embedded on CPU in fp32; ingest on a GPU runs fp16 autocast. The drift
between the two, measured here by running the GPU's fp16 arithmetic on CPU (torch autocast),
is bounded far below the gaps the index ranks by, on real photos and real vtest.avi crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.featurizers.resize import stack_resized
from operators.models.calibration import vtest_frames
from operators.models.device import TorchDevice
from operators.models.nanodet import NanoDet
from operators.models.nms import iou_matrix
from tests.operators.test_featurizer_efficientnet import KNOWN, photo

#: Largest change of an inner product between an fp32 query and an fp16-embedded vector
#: (measured 0.0024 on these images; neighbours here are 0.037 apart at the median).
DRIFT = 0.005


@pytest.fixture(scope="module")
def images(sample_dir) -> np.ndarray:
    frames = vtest_frames(4)
    crops = []
    for frame, found in zip(frames, NanoDet(TorchDevice(torch.device("cpu"))).detect(frames, score_threshold=0.4)):
        for x0, y0, x1, y1 in found.boxes[:6].astype(int):
            crops.append(frame[max(y0, 0):y1, max(x0, 0):x1])
    return stack_resized([photo(sample_dir, name) for name in KNOWN] + [c for c in crops if min(c.shape[:2]) >= 8], 224)


def _embed(images: np.ndarray, precision: str) -> np.ndarray:
    featurizer = EfficientNetLite0Featurizer(top_k=0, runtime="torch", precision=precision)
    featurizer.setup(OperatorContext(device="cpu", num_threads=2))
    return featurizer.embed(images)[0]


def test_fp16_vectors_stay_within_the_bound_of_the_fp32_ones(images):
    assert len(images) >= 20
    fp32, fp16 = _embed(images, "fp32"), _embed(images, "fp16")
    cosine = (fp32 * fp16).sum(1)
    assert cosine.min() >= 0.999, cosine.min()
    # a query embedded in fp32 scores fp16-ingested vectors within DRIFT of their fp32 scores ...
    exact, mixed = fp32 @ fp32.T, fp32 @ fp16.T
    drift = np.abs(exact - mixed).max()
    assert drift <= DRIFT, drift
    # ... so every nearest neighbour that leads the next one by more than twice that stays first
    np.fill_diagonal(exact, -np.inf), np.fill_diagonal(mixed, -np.inf)
    top2 = np.sort(exact, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * drift
    assert clear.mean() >= 0.5
    np.testing.assert_array_equal(exact.argmax(1)[clear], mixed.argmax(1)[clear])

def test_fp16_detections_match_the_fp32_ones():
    detector = NanoDetDetector(runtime="torch", precision="fp16")
    detector.setup(OperatorContext(device="cpu", num_threads=2))
    assert detector.device.dtype == torch.float16
    frames = vtest_frames(3)
    found = {dtype: NanoDet(TorchDevice(torch.device("cpu"), dtype)).detect(frames)
             for dtype in (torch.float32, torch.float16)}
    for a, b in zip(found[torch.float32], found[torch.float16]):
        assert len(a.boxes) >= 5 and abs(len(a.boxes) - len(b.boxes)) <= 1
        overlap = iou_matrix(a.boxes, b.boxes).max(1)
        assert np.median(overlap) >= 0.95 and (overlap >= 0.5).mean() >= 0.9
