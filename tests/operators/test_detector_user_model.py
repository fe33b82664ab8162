"""A user's TorchScript and ONNX detectors, built here from the real NanoDet-m graph.

The user model follows the documented contract (input ``[n, 3, 416, 416]`` RGB in 0..1,
output ``[n, k, 6]``); its detections must agree with the built-in NanoDet operator.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.detectors.user_model import UserDetector
from operators.models.coco import COCO80
from operators.models.nanodet import NanoDetNet
from operators.models.nms import iou_matrix
from operators.models.store import ensure
from streamvision.core.errors import InputError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey


class ContractNanoDet(torch.nn.Module):
    """NanoDet-m wrapped to the user-detector contract (no NMS inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = NanoDetNet(ensure("nanodet-m") / "nanodet.json")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = (x * 255.0).permute(0, 2, 3, 1)
        scores, boxes = self.net(frames)
        best, cls = scores.max(-1)
        return torch.cat([boxes, best[..., None], cls[..., None].float()], -1)


@pytest.fixture(scope="module")
def frames(vtest_path) -> FrameBatch:
    images = []
    with av.open(str(vtest_path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in (50, 250):
                images.append(frame.to_ndarray(format="rgb24"))
            if i >= 250:
                break
    return FrameBatch(keys=[FileKey(str(vtest_path), i).encode() for i in (50, 250)], cameras=["v"] * 2,
                      frame_no=np.array([50, 250]), pts=np.array([5.0, 25.0]), wall_time=np.zeros(2),
                      images=np.stack(images))


@pytest.fixture(scope="module")
def reference(frames):
    op = NanoDetDetector(score_threshold=0.5)
    op.setup(OperatorContext(num_threads=2))
    return op.process(frames)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user-models")
    module = ContractNanoDet().eval()
    example = torch.zeros(1, 3, 416, 416)
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(module, (example,), check_trace=False), str(folder / "nanodet.pt"))
        torch.onnx.export(module, (example,), str(folder / "nanodet.onnx"), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["rows"], dynamic_axes={"x": {0: "n"}, "rows": {0: "n"}})
    return folder


@pytest.mark.parametrize("file", ["nanodet.pt", "nanodet.onnx"])
def test_user_detector_agrees_with_builtin_nanodet(exported, frames, reference, file):
    user = UserDetector(path=str(exported / file), labels=COCO80, name=f"user-{file}@1", input_size=(416, 416),
                        score_threshold=0.5, nms_iou=0.6)
    user.setup(OperatorContext(num_threads=2))
    found = user.process(frames)
    assert set(found.models) == {f"user-{file}@1"}
    assert len(found) >= 6 and abs(len(found) - len(reference)) <= 2
    for frame_no in (50, 250):
        mine = np.flatnonzero(found.frame_no == frame_no)
        ref = np.flatnonzero(reference.frame_no == frame_no)
        overlap = iou_matrix(found.bboxes[mine], reference.bboxes[ref])
        matched = overlap.max(1) > 0.8
        assert matched.mean() >= 0.8
        for i, j in zip(mine[matched], ref[overlap.argmax(1)[matched]]):
            assert found.labels[i] == reference.labels[j]


def test_output_contract_is_enforced(exported, frames, tmp_path):
    bad = torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 3, 4, 4))
    torch.jit.save(bad, str(tmp_path / "bad.pt"))
    user = UserDetector(path=str(tmp_path / "bad.pt"), labels=["x"], name="bad@1", input_size=(4, 4))
    user.setup(OperatorContext())
    with pytest.raises(InputError, match=r"contract is \[n, k, 6\]"):
        user.process(frames)
    with pytest.raises(InputError, match="no model file"):
        UserDetector(path=str(tmp_path / "missing.onnx"), labels=["x"], name="m@1")
