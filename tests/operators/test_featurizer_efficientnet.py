"""EfficientNet-Lite0 on real opencv-doc photos: right top-1, stable embeddings, whole frames too.

The photos and their ImageNet classes were checked by hand (each crop stretched to 224):
orange.jpg -> orange, baboon.jpg -> baboon, butterfly.jpg -> monarch, squirrel_cls.jpg ->
fox squirrel, apple.jpg -> Granny Smith, messi5.jpg -> soccer ball, sudoku.png -> crossword puzzle.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from operators.base import OperatorContext
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.featurizers.torch_module import TorchModuleFeaturizer
from operators.models.efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from operators.models.store import model_file
from streamvision.core.lineage import FileKey
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType

KNOWN = {
    "orange.jpg": "orange",
    "baboon.jpg": "baboon",
    "butterfly.jpg": "monarch",
    "squirrel_cls.jpg": "fox squirrel",
    "apple.jpg": "Granny Smith",
    "messi5.jpg": "soccer ball",
    "sudoku.png": "crossword puzzle",
}


def photo(sample_dir, name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(sample_dir / name)), cv2.COLOR_BGR2RGB)


def patches_of(images: list[np.ndarray], meta: dict | None = None) -> PatchBatch:
    """Whole-image pixel patches, one per photo (what the detector's whole_frames option emits)."""
    n = len(images)
    keys = [FileKey(f"photo{i}.jpg", 0).encode() for i in range(n)]
    batch = PatchBatch.whole_frames(
        keys=keys, cameras=["photos"] * n, frame_no=np.zeros(n), pts=np.zeros(n), wall_time=np.zeros(n),
        size=(1, 1), operator="whole_frame", crops=images, meta=meta,
    )
    batch.bboxes[:] = [[0, 0, im.shape[1], im.shape[0]] for im in images]
    return batch


@pytest.fixture(scope="module")
def featurizer():
    op = EfficientNetLite0Featurizer(top_k=5)
    op.setup(OperatorContext(device="cuda:0", num_threads=2))
    return op


def test_the_device_asked_for_is_used_where_it_exists_else_cpu(featurizer):
    assert featurizer.device.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    # torch (fp16) on a GPU; else the fastest CPU runtime (tests/operators/test_inference_runtimes.py)
    assert featurizer.active_runtime == ("torch" if torch.cuda.is_available() else "openvino")


def test_top1_is_right_on_known_photos(featurizer, sample_dir):
    names = list(KNOWN)
    out = featurizer.process(patches_of([photo(sample_dir, n) for n in names], meta={"offset_ranges": [1]}))
    top1 = {name: out.extra["imagenet"][i][0][0] for i, name in enumerate(names)}
    assert top1 == KNOWN
    assert all(len(row) == 5 and row[0][1] >= row[1][1] for row in out.extra["imagenet"])
    assert out.meta == {"offset_ranges": [1]}
    assert out.vectors.shape == (len(names), 1280) and out.crops is None
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)


def test_embedding_is_stable_under_flip_and_brightness_but_not_across_photos(featurizer, sample_dir):
    orange = photo(sample_dir, "orange.jpg")
    variant = np.clip(orange[:, ::-1].astype(np.int16) + 30, 0, 255).astype(np.uint8)
    out = featurizer.process(patches_of([orange, variant, photo(sample_dir, "baboon.jpg"), photo(sample_dir, "sudoku.png")]))
    v = out.vectors
    assert float(v[0] @ v[1]) >= 0.9
    assert float(v[0] @ v[2]) <= 0.5 and float(v[0] @ v[3]) <= 0.5


def test_lineage_and_types(featurizer, sample_dir):
    batch = patches_of([photo(sample_dir, "orange.jpg")])
    out = featurizer.process(batch)
    assert out.parent_ids[0] == batch.ids[0] and out.ids[0] != batch.ids[0]
    assert out.models == [featurizer.name]
    domain = frozenset({"person", "car"})
    assert featurizer.output_type(PatchType(kind="pixels", label_domain=domain)) == PatchType(
        kind="vector", dim=1280, label_domain=domain)
    empty = featurizer.process(PatchBatch.empty({"offset_ranges": [7]}))
    assert len(empty) == 0 and empty.dim == 1280 and empty.meta == {"offset_ranges": [7]}


def test_shipped_state_dict_loads_strictly():
    state = torch.load(model_file("efficientnet-lite0", "efficientnet-lite0-57934424.pth"), weights_only=True)
    assert set(state) == set(EfficientNetLite0().state_dict())
    state.pop("_fc.bias")
    with pytest.raises(RuntimeError, match="_fc.bias"):
        EfficientNetLite0().load_state_dict(state, strict=True)


class _Features(torch.nn.Module):
    """EfficientNet-Lite0's pooled features behind ImageNet mean/std input, as a user would wrap it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = load_efficientnet_lite0(model_file("efficientnet-lite0", "efficientnet-lite0-57934424.pth"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features((x * 255.0 - 127.0) / 128.0)


def test_a_user_torchscript_module_is_a_featurizer(featurizer, sample_dir, tmp_path):
    scripted = torch.jit.trace(_Features().eval(), torch.zeros(1, 3, 224, 224))
    path = tmp_path / "features.pt"
    torch.jit.save(scripted, str(path))
    user = TorchModuleFeaturizer(path=str(path), dim=1280, name="lite0-features@1", mean=(0, 0, 0), std=(1, 1, 1))
    user.setup(OperatorContext())
    batch = patches_of([photo(sample_dir, "orange.jpg"), photo(sample_dir, "baboon.jpg")])
    mine, reference = user.process(batch), featurizer.process(batch)
    assert mine.models == ["lite0-features@1"] * 2
    np.testing.assert_allclose(mine.vectors, reference.vectors, atol=1e-4)
    with pytest.raises(Exception, match="expected \\(n, 64\\)"):
        wrong = TorchModuleFeaturizer(path=str(path), dim=64, name="wrong@1")
        wrong.setup(OperatorContext())
        wrong.process(batch)


def test_chunked_forward_gives_the_same_vectors(featurizer, sample_dir):
    batch = patches_of([photo(sample_dir, n) for n in ("orange.jpg", "baboon.jpg", "apple.jpg")])
    small = EfficientNetLite0Featurizer(top_k=1, chunk=2)
    small.setup(OperatorContext())
    np.testing.assert_allclose(small.process(batch).vectors, featurizer.process(batch).vectors, atol=1e-5)
