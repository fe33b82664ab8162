"""A TF.js graph-model loader that builds the graph as torch operations.

``load_graph_model(model.json)`` reads the topology and the weight shards (raw little-endian
bytes; ``float16`` / ``uint8`` / ``uint16`` quantized weights are dequantized as TF.js does)
and returns a :class:`TfjsGraph` ``nn.Module``. Constant sub-graphs (shape arithmetic such as
``SparseToDense`` feeding a ``Reshape``) are folded at load time; the rest runs as torch ops,
so the module can be moved to CUDA and traced with ``torch.jit.trace``.

Only the ops listed in :data:`SUPPORTED_OPS` are implemented; any other op is refused by name
when the model is loaded, never silently skipped.

Batching: TF.js exports fix the batch size to 1 in constant reshape shapes; a constant
``Reshape`` shape whose leading dimension is 1 keeps the leading (batch) dimension of the tensor
it reshapes, so a graph exported for one image runs on a batch of ``n``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operators.models.padding import same_padding
from streamvision.core.errors import InputError

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def _attr(node: dict[str, Any], name: str, default: Any = None) -> Any:
    value = node.get("attr", {}).get(name)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "f" in value:
        return float(value["f"])
    if "i" in value:
        return int(value["i"])
    if "b" in value:
        return bool(value["b"])
    if "list" in value:
        return [int(v) for v in value["list"].get("i", [])]
    return default


def read_weights(model_json: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Decode every weight of a TF.js ``weightsManifest`` from its shard files next to ``model_json``."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        raw = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            shape = [int(s) for s in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            stored = np.dtype(_QUANT[quant["dtype"]] if quant else _DTYPES[entry["dtype"]]).newbyteorder("<")
            nbytes = count * stored.itemsize
            if offset + nbytes > len(raw):
                raise InputError(f"{model_json}: weight {entry['name']!r} runs past the end of its shard")
            values = np.frombuffer(raw, stored, count, offset)
            offset += nbytes
            if quant and quant["dtype"] != "float16":
                values = values.astype(np.float32) * quant["scale"] + quant["min"]
            weights[entry["name"]] = values.astype(_DTYPES[entry["dtype"]]).reshape(shape)
    return weights


def _tensor_name(ref: str) -> str:
    """``"node"`` -> ``"node:0"``; ``"node:1"`` stays."""
    return ref if ":" in ref else f"{ref}:0"


def _sparse_to_dense(indices: np.ndarray, shape: np.ndarray, values: np.ndarray, default: np.ndarray) -> np.ndarray:
    out = np.full(shape.astype(np.int64), default, dtype=values.dtype)
    idx = indices.reshape(len(indices), -1) if indices.size else indices.reshape(0, out.ndim)
    for row, value in zip(idx, np.broadcast_to(values, (len(idx),))):
        out[tuple(row)] = value
    return out


def _nhwc_conv(x: torch.Tensor, w: torch.Tensor, node: dict[str, Any], groups: int) -> torch.Tensor:
    if _attr(node, "data_format", "NHWC") != "NHWC":
        raise InputError(f"{node['name']}: only NHWC convolutions are supported")
    padding = _attr(node, "padding")
    strides = _attr(node, "strides", [1, 1, 1, 1])[1:3]
    dilations = _attr(node, "dilations", [1, 1, 1, 1])[1:3]
    x = x.permute(0, 3, 1, 2)
    if padding == "SAME":
        x = F.pad(x, same_padding(x.shape[2:], w.shape[2:], strides, dilations))
    elif padding != "VALID":
        raise InputError(f"{node['name']}: padding {padding!r} is not supported")
    return F.conv2d(x, w, stride=strides, dilation=dilations, groups=groups).permute(0, 2, 3, 1)


def _pad(x: torch.Tensor, paddings: np.ndarray, value: float = 0.0) -> torch.Tensor:
    flat: list[int] = []
    for before, after in paddings[::-1].tolist():
        flat += [int(before), int(after)]
    return F.pad(x, flat, value=value)


class TfjsGraph(nn.Module):
    """A TF.js graph model as a torch module: ``forward(x)`` returns the outputs as a tuple.

    Attributes:
        input_name: the graph's single input.
        output_names: output tensor names, in the order ``forward`` returns them.
    """

    def __init__(self, nodes: list[dict[str, Any]], weights: dict[str, np.ndarray], outputs: list[str]) -> None:
        super().__init__()
        placeholders = [n["name"] for n in nodes if n["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise InputError(f"a graph with exactly one input is supported, found {placeholders}")
        self.input_name = placeholders[0]
        self.output_names = outputs
        unknown = sorted({n["op"] for n in nodes} - set(SUPPORTED_OPS))
        if unknown:
            raise InputError(f"TF.js graph uses unsupported op(s): {', '.join(unknown)}")
        consts: dict[str, np.ndarray] = {}
        for node in nodes:
            if node["op"] == "Const":
                if node["name"] not in weights:
                    raise InputError(f"constant {node['name']!r} has no weights")
                consts[f"{node['name']}:0"] = weights[node["name"]]
        self._steps: list[tuple[dict[str, Any], list[str]]] = []
        self._buffers_by_tensor: dict[str, str] = {}
        done = set(consts) | {f"{self.input_name}:0"}
        pending = [n for n in nodes if n["op"] not in ("Const", "Placeholder")]
        while pending:
            progressed = []
            for node in pending:
                inputs = [_tensor_name(i) for i in node.get("input", []) if not i.startswith("^")]
                if not all(i in done for i in inputs):
                    continue
                if node["op"] in _FOLDABLE and all(i in consts for i in inputs):
                    consts[f"{node['name']}:0"] = _FOLDABLE[node["op"]](*[consts[i] for i in inputs])
                elif node["op"] not in _OPS:
                    raise InputError(f"TF.js op {node['op']} ({node['name']}) is supported on constant inputs only")
                else:
                    self._steps.append((node, inputs))
                done |= {f"{node['name']}:{k}" for k in range(_attr(node, "num_split", 1))}
                progressed.append(node)
            if not progressed:
                raise InputError(f"TF.js graph has inputs that no node produces: {[n['name'] for n in pending][:5]}")
            pending = [n for n in pending if n not in progressed]
        needed = {i for _, inputs in self._steps for i in inputs} | {_tensor_name(o) for o in outputs}
        self._consts_np = {k: v for k, v in consts.items() if k in needed}
        for index, (name, value) in enumerate(sorted(self._consts_np.items())):
            if value.dtype == np.float32 and value.ndim > 0:
                buffer = f"w{index}"
                self.register_buffer(buffer, torch.from_numpy(value.copy()))
                self._buffers_by_tensor[name] = buffer
        self._prepare_conv_weights()

    def _prepare_conv_weights(self) -> None:
        """Store conv filters as torch OIHW once, instead of transposing HWIO on every call."""
        for node, inputs in self._steps:
            if node["op"] in ("Conv2D", "DepthwiseConv2dNative"):
                buffer = self._buffers_by_tensor[inputs[1]]
                hwio = getattr(self, buffer)
                if node["op"] == "DepthwiseConv2dNative":
                    h, w, c, m = hwio.shape
                    oihw = hwio.reshape(h, w, c * m, 1).permute(2, 3, 0, 1)
                else:
                    oihw = hwio.permute(3, 2, 0, 1)
                setattr(self, buffer, oihw.contiguous())

    def _value(self, env: dict[str, Any], name: str) -> Any:
        if name in env:
            return env[name]
        if name in self._buffers_by_tensor:
            return getattr(self, self._buffers_by_tensor[name])
        return self._consts_np[name]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph on ``x`` (shaped as the model's input, any batch size)."""
        env: dict[str, Any] = {f"{self.input_name}:0": x}
        for node, inputs in self._steps:
            args = [self._value(env, i) for i in inputs]
            result = _OPS[node["op"]](node, *args)
            if isinstance(result, (list, tuple)):
                for k, r in enumerate(result):
                    env[f"{node['name']}:{k}"] = r
            else:
                env[f"{node['name']}:0"] = result
        return tuple(self._value(env, _tensor_name(o)) for o in self.output_names)


def _reshape(node: dict[str, Any], x: torch.Tensor, shape: np.ndarray) -> torch.Tensor:
    dims: list[Any] = [int(d) for d in np.asarray(shape).ravel()]
    if dims and dims[0] == 1:
        dims[0] = x.shape[0]
    return x.reshape(dims)


def _resize_bilinear(node: dict[str, Any], x: torch.Tensor, size: np.ndarray) -> torch.Tensor:
    if _attr(node, "align_corners", False):
        align = True
    elif _attr(node, "half_pixel_centers", False):
        align = False
    else:
        raise InputError(f"{node['name']}: legacy (asymmetric) bilinear resize is not supported")
    h, w = (int(v) for v in np.asarray(size).ravel())
    y = F.interpolate(x.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=align)
    return y.permute(0, 2, 3, 1)


def _max_pool(node: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    k = _attr(node, "ksize")[1:3]
    s = _attr(node, "strides")[1:3]
    y = x.permute(0, 3, 1, 2)
    if _attr(node, "padding") == "SAME":
        y = F.pad(y, same_padding(y.shape[2:], k, s), value=float("-inf"))
    return F.max_pool2d(y, k, s).permute(0, 2, 3, 1)


def _fused_batch_norm(node: dict[str, Any], x, scale, offset, mean, var) -> torch.Tensor:  # type: ignore[no-untyped-def]
    eps = _attr(node, "epsilon", 1e-3)
    return (x - mean) * torch.rsqrt(var + eps) * scale + offset


def _add(node: dict[str, Any], a: Any, b: Any) -> Any:
    return a + (torch.as_tensor(b) if isinstance(b, np.ndarray) else b)


_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda node, x: x,
    "Add": _add,
    "AddV2": _add,
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Relu": lambda node, x: F.relu(x),
    "Relu6": lambda node, x: F.relu6(x),
    "LeakyRelu": lambda node, x: F.leaky_relu(x, _attr(node, "alpha", 0.2)),
    "Sigmoid": lambda node, x: torch.sigmoid(x),
    "Transpose": lambda node, x, perm: x.permute(*[int(p) for p in np.asarray(perm).ravel()]),
    "Reshape": _reshape,
    "ConcatV2": lambda node, *xs: torch.cat(list(xs[:-1]), dim=int(np.asarray(xs[-1]))),
    "SplitV": lambda node, x, sizes, dim: torch.split(x, [int(s) for s in np.asarray(sizes).ravel()], int(np.asarray(dim))),
    "Pad": lambda node, x, paddings: _pad(x, np.asarray(paddings)),
    "PadV2": lambda node, x, paddings, value: _pad(x, np.asarray(paddings), float(np.asarray(value))),
    "Conv2D": lambda node, x, w: _nhwc_conv(x, w, node, groups=x.shape[3] // w.shape[1]),
    "DepthwiseConv2dNative": lambda node, x, w: _nhwc_conv(x, w, node, groups=x.shape[3]),
    "FusedBatchNorm": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm,
    "MaxPool": _max_pool,
    "ResizeBilinear": _resize_bilinear,
}

#: Ops evaluated in numpy at load time when all their inputs are constants.
_FOLDABLE: dict[str, Callable[..., np.ndarray]] = {
    "SparseToDense": _sparse_to_dense,
    "AddV2": lambda a, b: np.asarray(a + b),
    "Add": lambda a, b: np.asarray(a + b),
    "Identity": lambda x: x,
}

#: Every op the loader accepts (``SparseToDense`` only on constant inputs).
SUPPORTED_OPS = frozenset({"Const", "Placeholder", "SparseToDense", *_OPS})


def load_graph_model(model_json: Path) -> TfjsGraph:
    """Load a TF.js graph model (``model.json`` and the weight shards beside it) as a torch module.

    Raises:
        InputError: not a graph model, or it uses an op outside :data:`SUPPORTED_OPS` (named).
    """
    model = json.loads(Path(model_json).read_text())
    if model.get("format") != "graph-model":
        raise InputError(f"{model_json} is not a TF.js graph model (format {model.get('format')!r})")
    nodes = model["modelTopology"]["node"]
    weights = read_weights(Path(model_json), model["weightsManifest"])
    outputs = sorted(model.get("signature", {}).get("outputs", {}), key=_output_order)
    if not outputs:
        outputs = [n["name"] for n in nodes if n["op"] == "Identity" and n["name"].startswith("Identity")]
    return TfjsGraph(nodes, weights, [o.split(":")[0] if o.endswith(":0") else o for o in outputs])


def _output_order(name: str) -> tuple[str, int]:
    base = name.split(":")[0]
    stem, _, number = base.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (base, -1)
