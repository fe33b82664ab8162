"""Torch architectures by name.

Two families:

* small CNNs for ``(28, 28)`` grayscale images (Fashion-MNIST): ``cnn_tiny``,
  ``cnn_small``, ``cnn_base``, ``cnn_wide``, ``cnn_deep``, and ``mlp`` (no convolutions);
* classifier heads on feature vectors of any dimension (1280-d EfficientNet-Lite0 features
  of patches, colour histograms): ``head_linear``, ``head_mlp``.

>>> model = build_model("cnn_small", (28, 28), 10)
>>> sum(p.numel() for p in model.parameters()) > 0
True
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from streamvision.core.errors import ConfigError

Builder = Callable[[tuple[int, ...], int], nn.Module]


class SmallCNN(nn.Module):
    """Conv-ReLU-MaxPool blocks, then a hidden layer and the class logits.

    Weights and activations are kept channels-last (NHWC): oneDNN's convolutions and max
    pooling over few channels run about twice as fast on CPU that way (and cuDNN's fp16 ones
    on tensor cores); the values are the same as in the default layout, up to summation order.

    Args:
        input_shape: ``(h, w)`` of the grayscale input.
        num_classes: number of output logits.
        channels: output channels of each 3x3 conv block (each halves the resolution).
        hidden: width of the hidden fully connected layer.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, (h, w) = 1, input_shape
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, h, w = c_out, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a ``(n, h, w)`` or ``(n, 1, h, w)`` float batch."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))


def _cnn(channels: tuple[int, ...], hidden: int) -> Builder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 2:
            raise ConfigError(f"CNN architectures need (h, w) grayscale images, got examples of shape {input_shape}")
        return SmallCNN(input_shape, num_classes, channels, hidden)
    return build


def _mlp(hidden: tuple[int, ...]) -> Builder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        size = 1
        for s in input_shape:
            size *= s
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, num_classes))
        return nn.Sequential(*layers)
    return build


def _head(hidden: tuple[int, ...]) -> Builder:
    mlp = _mlp(hidden)

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 1:
            raise ConfigError(f"classifier heads need feature vectors, got examples of shape {input_shape}")
        return mlp(input_shape, num_classes)
    return build


ARCHITECTURES: dict[str, Builder] = {
    "cnn_tiny": _cnn((4, 8), 32),
    "cnn_small": _cnn((8, 16), 64),
    "cnn_base": _cnn((16, 32), 64),
    "cnn_wide": _cnn((32, 64), 128),
    "cnn_deep": _cnn((8, 16, 32), 64),
    "mlp": _mlp((128,)),
    "head_linear": _head(()),
    "head_mlp": _head((256,)),
}
#: EfficientNet-Lite0's pooled feature dimension, what ``head_*`` are meant for on patches.
EFFICIENTNET_LITE0_DIM = 1280


def names() -> list[str]:
    """Every architecture name."""
    return sorted(ARCHITECTURES)


def check_name(name: str) -> None:
    """Raise :class:`ConfigError` for an unknown architecture name."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(names())}")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised model (seed torch's generator first for reproducible weights)."""
    check_name(name)
    if num_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {num_classes}")
    return ARCHITECTURES[name](tuple(input_shape), num_classes)


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one example's forward pass through conv and linear layers.

    Used as the deterministic cost estimate of training a model on a partition.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_out
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return total
