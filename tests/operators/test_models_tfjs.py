"""The TF.js graph loader: real NanoDet graph, batch independence, refused ops, dequantization."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from operators.models.store import ensure
from operators.models.tfjs import SUPPORTED_OPS, load_graph_model, read_weights
from streamvision.core.errors import InputError


@pytest.fixture(scope="module")
def nanodet_json():
    return ensure("nanodet-m") / "nanodet.json"


def test_nanodet_graph_outputs_and_batch_independence(nanodet_json):
    graph = load_graph_model(nanodet_json).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 416, 416)).astype(np.float32))
    with torch.no_grad():
        both = graph(x)
        first = graph(x[:1])
    shapes = [tuple(o.shape) for o in both]
    assert shapes == [(2, 2704, 80), (2, 676, 80), (2, 169, 80), (2, 2704, 44), (2, 676, 44), (2, 169, 44)]
    for a, b in zip(both, first):
        torch.testing.assert_close(a[:1], b, atol=1e-4, rtol=1e-4)
    scores = both[0]
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0  # sigmoid inside the graph


def test_unknown_op_is_refused_by_name(nanodet_json, tmp_path):
    model = json.loads(nanodet_json.read_text())
    node = next(n for n in model["modelTopology"]["node"] if n["op"] == "LeakyRelu")
    node["op"] = "Einsum"
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "nanodet.bin").symlink_to(nanodet_json.parent / "nanodet.bin")
    with pytest.raises(InputError, match="unsupported op.*Einsum"):
        load_graph_model(tmp_path / "model.json")
    assert "Einsum" not in SUPPORTED_OPS


def test_quantized_weights_are_dequantized(tmp_path):
    values = np.array([0.5, -2.0, 3.25], np.float32)
    q = np.array([0, 128, 255], np.uint8)
    (tmp_path / "w.bin").write_bytes(values.astype("<f2").tobytes() + q.tobytes() + values.tobytes())
    manifest = [{
        "paths": ["w.bin"],
        "weights": [
            {"name": "half", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "byte", "shape": [3], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.0}},
            {"name": "full", "shape": [1, 3], "dtype": "float32"},
        ],
    }]
    weights = read_weights(tmp_path / "model.json", manifest)
    np.testing.assert_array_equal(weights["half"], values)
    np.testing.assert_allclose(weights["byte"], [-1.0, 11.8, 24.5], rtol=1e-6)
    assert weights["full"].shape == (1, 3)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_depthwise_batchnorm_relu6_and_same_pooling_match_tensorflow_semantics(tmp_path):
    rng = np.random.default_rng(1)
    consts = {
        "dw": rng.normal(size=(3, 3, 4, 1)).astype(np.float32),
        "scale": rng.uniform(0.5, 2, 4).astype(np.float32),
        "offset": rng.normal(size=4).astype(np.float32),
        "mean": rng.normal(size=4).astype(np.float32),
        "var": rng.uniform(0.5, 2, 4).astype(np.float32),
        "gain": rng.uniform(0.5, 2, 4).astype(np.float32),
        "shift": rng.normal(size=4).astype(np.float32),
    }
    (tmp_path / "g.bin").write_bytes(b"".join(v.tobytes() for v in consts.values()))
    strides = {"list": {"i": ["1", "2", "2", "1"]}}
    same = {"s": _b64("SAME")}
    nodes = [{"name": "x", "op": "Placeholder"}]
    nodes += [{"name": k, "op": "Const"} for k in consts]
    nodes += [
        {"name": "conv", "op": "DepthwiseConv2dNative", "input": ["x", "dw"],
         "attr": {"padding": same, "strides": strides, "data_format": {"s": _b64("NHWC")}}},
        {"name": "bn", "op": "FusedBatchNormV3", "input": ["conv", "scale", "offset", "mean", "var"],
         "attr": {"epsilon": {"f": 0.001}}},
        {"name": "act", "op": "Relu6", "input": ["bn"]},
        {"name": "mul", "op": "Mul", "input": ["act", "gain"]},
        {"name": "sub", "op": "Sub", "input": ["mul", "shift"]},
        {"name": "pool", "op": "MaxPool", "input": ["sub"],
         "attr": {"padding": same, "strides": strides, "ksize": {"list": {"i": ["1", "3", "3", "1"]}}}},
        {"name": "Identity", "op": "Identity", "input": ["pool"]},
    ]
    manifest = [{"paths": ["g.bin"], "weights": [
        {"name": k, "shape": list(v.shape), "dtype": "float32"} for k, v in consts.items()]}]
    (tmp_path / "model.json").write_text(json.dumps(
        {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": manifest}))
    graph = load_graph_model(tmp_path / "model.json")
    x = torch.from_numpy(rng.normal(size=(2, 5, 6, 4)).astype(np.float32))
    (out,) = graph(x)
    # reference, written out by hand: TF SAME for 5x6, k3, s2 pads rows (1, 1) and columns (0, 1)
    c = {k: torch.from_numpy(v) for k, v in consts.items()}
    y = torch.nn.functional.pad(x.permute(0, 3, 1, 2), [0, 1, 1, 1])
    y = torch.nn.functional.conv2d(y, c["dw"].permute(2, 3, 0, 1), stride=2, groups=4).permute(0, 2, 3, 1)
    y = (y - c["mean"]) / torch.sqrt(c["var"] + 1e-3) * c["scale"] + c["offset"]
    y = y.clamp(0, 6) * c["gain"] - c["shift"]
    assert tuple(y.shape) == (2, 3, 3, 4)
    # pooling 3x3 SAME on 3x3 -> 2x2: pads rows (1, 1), columns (1, 1) with -inf
    y = torch.nn.functional.pad(y.permute(0, 3, 1, 2), [1, 1, 1, 1], value=float("-inf"))
    y = torch.nn.functional.max_pool2d(y, 3, 2).permute(0, 2, 3, 1)
    assert tuple(out.shape) == (2, 2, 2, 4)
    torch.testing.assert_close(out, y, atol=1e-5, rtol=1e-5)
