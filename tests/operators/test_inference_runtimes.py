"""NanoDet-m and EfficientNet-Lite0 on ONNX Runtime and OpenVINO give torch's outputs on real inputs.

Real vtest.avi frames (and a 480x640 crop of them, to check the exported graph keeps the frame
size dynamic) and NanoDet-m's real crops; the torch reference is the traced fp32 module as it
ran before the ONNX path. fp32 must match torch's raw outputs closely and give the same
detections after NMS; int8 (detector only) must keep at least 90% of torch's boxes (same class,
IoU >= 0.5) with at least 90% of its own boxes being torch's: `benchmarks/inference.py` measures
about 0.95 both ways, and about 0.83 / 0.72 person recall / precision against the hand labels for
both. A model whose quantization broke (as the featurizer's did, cosine ~0.7) fails this.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.featurizers.resize import stack_resized
from operators.models import efficientnet_lite, nanodet
from operators.models.calibration import vtest_frames
from operators.models.device import TorchDevice
from operators.models.nanodet import NanoDet
from operators.models.nms import iou_matrix
from operators.models.onnx_export import OnnxRecipe, export_onnx
from operators.models.runtimes import check_runtime
from streamvision.core.errors import ConfigError

ONNX_RUNTIMES = ("onnxruntime", "openvino")
CPU = TorchDevice(torch.device("cpu"))


@pytest.fixture(scope="module")
def frames(vtest_path) -> np.ndarray:
    """Six real frames of vtest.avi, none a calibration frame."""
    return vtest_frames(6, step=41, offset=3)


@pytest.fixture(scope="module")
def torch_nanodet() -> NanoDet:
    return NanoDet(CPU, runtime="torch")


@pytest.fixture(scope="module")
def crops(frames, torch_nanodet) -> np.ndarray:
    """NanoDet-m's crops of the frames and the whole frames, stretched to 224 as the featurizer does."""
    parts = []
    for frame, found in zip(frames, torch_nanodet.detect(frames)):
        parts.append(frame)
        parts += [frame[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] for x0, y0, x1, y1 in found.boxes]
    return stack_resized(parts, 224)


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_detector_raw_outputs_match_torch(runtime, frames, torch_nanodet):
    model = NanoDet(CPU, runtime=runtime, num_threads=1)
    for images in (frames, np.ascontiguousarray(frames[:2, 50:530, 64:704])):
        ref_scores, ref_boxes = torch_nanodet.raw(images)
        scores, boxes = model.raw(images)
        assert scores.shape == ref_scores.shape and boxes.shape == ref_boxes.shape
        assert np.abs(scores - ref_scores).max() < 1e-4
        assert np.abs(boxes - ref_boxes).max() < 0.02  # frame pixels


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_detector_gives_the_same_detections_after_nms(runtime, frames, torch_nanodet):
    mine, reference = NanoDet(CPU, runtime=runtime).detect(frames), torch_nanodet.detect(frames)
    assert sum(len(d.boxes) for d in reference) >= 30  # walkers and the parked van in every frame
    for ours, theirs in zip(mine, reference):
        np.testing.assert_array_equal(ours.classes, theirs.classes)
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=0.02)
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4)


def _agreement(found, reference) -> tuple[float, float]:
    """(share of reference boxes found, share of found boxes in the reference): same class, IoU >= 0.5."""
    hit_ref = hit_found = n_ref = n_found = 0
    for ours, theirs in zip(found, reference):
        n_ref, n_found = n_ref + len(theirs.boxes), n_found + len(ours.boxes)
        if len(ours.boxes) and len(theirs.boxes):
            same = (iou_matrix(ours.boxes, theirs.boxes) >= 0.5) & (ours.classes[:, None] == theirs.classes[None, :])
            hit_found += int(same.any(1).sum())
            hit_ref += int(same.any(0).sum())
    return hit_ref / n_ref, hit_found / n_found


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_int8_detector_keeps_the_boxes(runtime, frames, torch_nanodet):
    recall, precision = _agreement(NanoDet(CPU, runtime=runtime, precision="int8").detect(frames),
                                   torch_nanodet.detect(frames))
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_featurizer_matches_torch(runtime, crops):
    reference = EfficientNetLite0Featurizer(top_k=0, runtime="torch")
    reference.setup(OperatorContext())
    featurizer = EfficientNetLite0Featurizer(top_k=0, runtime=runtime)
    featurizer.setup(OperatorContext(num_threads=1))
    assert featurizer.active_runtime == runtime
    vectors, probs = featurizer.embed(crops)
    ref_vectors, ref_probs = reference.embed(crops)
    assert len(crops) >= 30
    assert np.abs(vectors - ref_vectors).max() < 1e-4 and np.abs(probs - ref_probs).max() < 1e-4
    np.testing.assert_array_equal(probs.argmax(1), ref_probs.argmax(1))


def test_default_runtime_is_torch_on_a_gpu_else_the_fastest_cpu_one():
    gpu = torch.cuda.is_available()
    on_gpu = NanoDetDetector().compute(OperatorContext(device="cuda:0"))
    assert (on_gpu.runtime, on_gpu.dtype) == (("torch", "float16") if gpu else ("onnxruntime", "float32"))
    assert NanoDetDetector().compute(OperatorContext(device="cpu")).runtime == "onnxruntime"
    assert EfficientNetLite0Featurizer().compute(OperatorContext(device="cpu")).runtime == "openvino"
    assert NanoDetDetector(precision="int8").compute(OperatorContext(device="cuda")).runtime == "onnxruntime"
    assert NanoDetDetector(runtime="openvino").compute(OperatorContext(device="cuda")).device == "cpu"
    featurizer = EfficientNetLite0Featurizer(top_k=0)
    featurizer.setup(OperatorContext(device="cpu"))
    assert featurizer.active_runtime == "openvino"


def test_runtime_and_precision_options_are_validated():
    with pytest.raises(ConfigError, match="runtime must be one of"):
        NanoDetDetector(runtime="tensorflow")
    with pytest.raises(ConfigError, match="runtime must be one of"):
        EfficientNetLite0Featurizer(runtime="onnx")
    with pytest.raises(ConfigError, match="int8.*not 'torch'"):
        NanoDetDetector(runtime="torch", precision="int8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        NanoDetDetector(precision="bf16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        EfficientNetLite0Featurizer(precision="int8")  # no quantized export of it
    with pytest.raises(TypeError):
        NanoDetDetector(0.35, 0.6, 100, None, False, True, "onnxruntime")  # keyword-only
    assert check_runtime("x", None) is None and check_runtime("x", "openvino") == "openvino"


def test_detector_operator_runs_on_the_runtime_asked_for(frames):
    batch_images = frames[:2]
    found = {}
    for runtime in ("torch", "onnxruntime", "openvino"):
        op = NanoDetDetector(runtime=runtime)
        op.setup(OperatorContext(num_threads=1))
        assert op.active_runtime == runtime
        found[runtime] = op._model.detect(batch_images)  # type: ignore[union-attr]
    for runtime in ONNX_RUNTIMES:
        for ours, theirs in zip(found[runtime], found["torch"]):
            np.testing.assert_array_equal(ours.classes, theirs.classes)


def test_export_is_cached_and_keyed_by_the_weights(tmp_path, monkeypatch):
    net = efficientnet_lite.Lite0Embedding(efficientnet_lite.load_efficientnet_lite0(
        efficientnet_lite.model_file("efficientnet-lite0", efficientnet_lite.WEIGHTS)))
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        return net, (torch.zeros(1, 224, 224, 3, dtype=torch.uint8),)

    recipe = efficientnet_lite.onnx_recipe()
    first = export_onnx(recipe, build)
    assert first.parent == tmp_path / "onnx" and first.stat().st_size > 10_000_000  # 4.7M fp32 parameters
    assert export_onnx(recipe, build) == first and len(builds) == 1  # cached: not rebuilt
    changed = OnnxRecipe(recipe.name, {efficientnet_lite.WEIGHTS: "0" * 64}, recipe.version, recipe.input_names,
                         recipe.output_names, recipe.dynamic_axes)
    second = export_onnx(changed, build)
    assert second != first and second.exists() and len(builds) == 2  # other weights: exported anew
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted([first.name, second.name])  # no temp files
