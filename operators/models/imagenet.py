"""ImageNet-1k class names, read from opencv-doc's ``dnn/classification_classes_ILSVRC2012.txt``."""

from __future__ import annotations

from functools import lru_cache

from operators.assets import sample_data_dir
from streamvision.core.errors import MissingAssetError


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 class names in training-index order (first synonym of each line)."""
    path = sample_data_dir() / "dnn" / "classification_classes_ILSVRC2012.txt"
    if not path.exists():
        raise MissingAssetError(f"{path} is missing; it ships with Debian's opencv-doc sample data")
    names = tuple(line.split(",")[0].strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != 1000:
        raise MissingAssetError(f"{path} has {len(names)} classes, expected 1000")
    return names
