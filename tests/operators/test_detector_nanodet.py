"""NanoDet-m on real vtest.avi frames: walkers and the parked van, patches with lineage.

Expected counts were fixed by drawing the detections of frames 0, 100, 200, 300 into PNGs and
looking at them: 3 to 7 walkers per frame found with score >= 0.5 (tight, upright boxes), and
the white van parked at the top right (x 650-725, y 40-100) as "truck" (score about 0.5-0.6).
A random-weight network scores every class near 0.5 +- noise everywhere and cannot place
upright person boxes nor one on the van.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.models.coco import COCO80
from operators.models.nms import iou_matrix
from streamvision.core.errors import ConfigError, GraphValidationError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey, FrameKeyCodec, patch_id
from streamvision.core.types import check_labels

FRAMES = (0, 100, 200, 300)
VAN = np.array([[650, 40, 726, 100]], np.float32)


@pytest.fixture(scope="module")
def vtest_batch(vtest_path) -> FrameBatch:
    images, numbers = [], []
    with av.open(str(vtest_path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in FRAMES:
                images.append(frame.to_ndarray(format="rgb24"))
                numbers.append(i)
            if i >= max(FRAMES):
                break
    n = len(images)
    return FrameBatch(
        keys=[FileKey(str(vtest_path), i).encode() for i in numbers], cameras=["vtest"] * n,
        frame_no=np.array(numbers), pts=np.array(numbers) / 10.0, wall_time=np.zeros(n),
        images=np.stack(images), meta={"offset_ranges": ["marker"]},
    )


@pytest.fixture(scope="module")
def detector():
    op = NanoDetDetector(score_threshold=0.3)
    op.setup(OperatorContext(device="cuda", num_threads=2))
    return op


def test_the_device_asked_for_is_used_where_it_exists_else_cpu(detector):
    assert detector.device.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch.get_num_threads() == 2
    # torch (fp16) on a GPU; else the fastest CPU runtime (tests/operators/test_inference_runtimes.py)
    assert detector.active_runtime == ("torch" if torch.cuda.is_available() else "onnxruntime")


def test_finds_the_walkers_and_the_parked_van(detector, vtest_batch):
    patches = detector.process(vtest_batch)
    assert patches.meta == {"offset_ranges": ["marker"]}
    for row, frame_no in enumerate(FRAMES):
        mine = np.flatnonzero(patches.frame_no == frame_no)
        labels = [patches.labels[i] for i in mine]
        people = [i for i in mine if patches.labels[i] == "person" and patches.scores[i] >= 0.5]
        assert len(people) >= 3, (frame_no, labels)
        boxes = patches.bboxes[people]
        heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
        assert np.all(heights > 1.3 * widths), (frame_no, boxes)  # walkers stand upright
        assert np.all((heights > 30) & (heights < 200))
        vehicles = [i for i in mine if patches.labels[i] in ("truck", "car", "bus") and patches.scores[i] >= 0.4]
        assert vehicles and iou_matrix(patches.bboxes[vehicles], VAN).max() > 0.6, (frame_no, labels)
    assert sum(1 for label in patches.labels if label == "person") >= 16


def test_patches_carry_crops_and_lineage(detector, vtest_batch):
    patches = detector.process(vtest_batch)
    assert len(patches) > 0 and patches.crops is not None
    assert set(patches.models) == {detector.name} and "nanodet-m" in detector.name
    for i in range(len(patches)):
        x0, y0, x1, y1 = patches.bboxes[i]
        assert patches.crops[i].shape[:2] == (int(np.ceil(y1)) - int(np.floor(y0)), int(np.ceil(x1)) - int(np.floor(x0)))
        key = FrameKeyCodec.decode(patches.frame_keys[i])
        assert key.frame_no == patches.frame_no[i] and patches.parent_ids[i] == 0
    first = patches.frame_keys[0]
    assert patches.ids[0] == patch_id(first, detector.name, 0)
    again = detector.process(vtest_batch)
    np.testing.assert_array_equal(again.ids, patches.ids)  # reprocessing yields the same ids
    crop = patches.crops[int(np.argmax(patches.scores))]
    frame = vtest_batch.images[list(vtest_batch.keys).index(patches.frame_keys[int(np.argmax(patches.scores))])]
    assert crop.std() > 10 and not np.array_equal(crop.mean((0, 1)), frame.mean((0, 1)))


def test_class_filter_max_detections_and_whole_frames(vtest_batch):
    op = NanoDetDetector(score_threshold=0.3, classes=["person"], max_detections=2, whole_frames=True)
    op.setup(OperatorContext())
    patches = op.process(vtest_batch)
    wholes = [i for i, m in enumerate(patches.models) if m == "whole_frame"]
    assert len(wholes) == len(vtest_batch)
    assert all(patches.crops[i].shape == (576, 768, 3) for i in wholes)
    objects = [patches.labels[i] for i in range(len(patches)) if i not in wholes]
    assert set(objects) == {"person"} and len(objects) == 2 * len(vtest_batch)


def test_validation_rejects_a_label_the_detector_cannot_produce():
    detector = NanoDetDetector()
    out = detector.output_type(detector.input_type())
    assert len(out.label_domain) == 80 and set(out.label_domain) == set(COCO80)
    check_labels(detector.name, out, "label_filter", frozenset({"car", "person"}))
    with pytest.raises(GraphValidationError, match="'label_filter'.*'pizza_box'.*nanodet-m"):
        check_labels(detector.name, out, "label_filter", frozenset({"pizza_box"}))
    people_only = NanoDetDetector(classes=["person"])
    with pytest.raises(GraphValidationError, match="car"):
        check_labels(people_only.name, people_only.output_type(people_only.input_type()), "label_filter", frozenset({"car"}))
    with pytest.raises(ConfigError, match="cannot detect.*'unicorn'"):
        NanoDetDetector(classes=["unicorn"])
    with pytest.raises(ConfigError, match="score_threshold"):
        NanoDetDetector(score_threshold=1.5)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_chunked_forward_gives_the_same_outputs(vtest_batch, runtime):
    from operators.models.device import TorchDevice
    from operators.models.nanodet import NanoDet

    model = NanoDet(TorchDevice.from_context(OperatorContext(num_threads=2)), runtime=runtime, num_threads=2)
    whole_scores, whole_boxes = model.raw(vtest_batch.images)
    chunk_scores, chunk_boxes = model.raw(vtest_batch.images, chunk=3)
    np.testing.assert_allclose(chunk_scores, whole_scores, atol=1e-5)
    np.testing.assert_allclose(chunk_boxes, whole_boxes, atol=1e-3)
    assert whole_boxes.shape == (len(FRAMES), 2704 + 676 + 169, 4)
