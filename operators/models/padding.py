"""TensorFlow ``SAME`` padding, shared by the TF.js loader and EfficientNet-Lite0.

>>> same_padding((224, 224), (3, 3), (2, 2))
[0, 1, 0, 1]
"""

from __future__ import annotations

from typing import Sequence


def same_padding(
    size: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int] = (1, 1)
) -> list[int]:
    """``F.pad`` amounts (last dim first) that make a ``(h, w)`` input come out ``ceil(size / stride)``.

    As in TensorFlow, an odd total puts the extra pixel at the bottom / right.
    """
    pads: list[int] = []
    for n, k, s, d in zip(list(size)[::-1], list(kernel)[::-1], list(strides)[::-1], list(dilations)[::-1]):
        n = int(n)
        total = max((-(-n // s) - 1) * s + (int(k) - 1) * d + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return pads
