"""Operators by name, for pipeline files.

A pipeline YAML names each step's ``op``; :func:`build` looks the class up and calls it
with the step's options, turning a bad option into a :class:`ConfigError` that names the
step and the option.

>>> sorted(names())[:3]  # doctest: +SKIP
['color_histogram', 'image_folder', 'store']
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from streamvision.core.errors import ConfigError

# name -> "module:Class"; imported on use so that a missing optional dependency only
# matters to pipelines that use it.
_BUILTIN: dict[str, str] = {
    "video_file": "operators.sources.video_file:VideoFileSource",
    "image_folder": "operators.sources.image_folder:ImageFolderSource",
    "kafka": "operators.sources.kafka_source:KafkaSource",
    "whole_frame": "operators.patches.whole_frame:WholeFramePatches",
    "color_histogram": "operators.featurizers.color_histogram:ColorHistogram",
    "label_filter": "operators.filters.label_filter:LabelFilter",
    "store": "operators.sinks.store_sink:StoreSink",
    "nanodet": "operators.detectors.nanodet:NanoDetDetector",
    "hog_people": "operators.detectors.hog:HOGPeopleDetector",
    "ocr": "operators.detectors.ocr:OCRDetector",
    "user_detector": "operators.detectors.user_model:UserDetector",
    "efficientnet_lite0": "operators.featurizers.efficientnet:EfficientNetLite0Featurizer",
    "torch_module": "operators.featurizers.torch_module:TorchModuleFeaturizer",
    "mop_classifier": "operators.training.classifier:MopClassifier",
    "tracker": "operators.tracking.tracker:ObjectTracker",
}
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory`` available to pipeline files as ``op: name``."""
    _REGISTERED[name] = factory


def register_path(name: str, target: str) -> None:
    """Register a ``"module:Class"`` path, imported when first used."""
    _BUILTIN[name] = target


def names() -> list[str]:
    """Every operator name a pipeline file may use."""
    return sorted({*_BUILTIN, *_REGISTERED})


def lookup(name: str) -> Callable[..., Any]:
    """The class or factory registered as ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ConfigError(f"unknown operator {name!r}; known: {', '.join(names())}")
    module, _, attr = _BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build(name: str, options: dict[str, Any]) -> Any:
    """Instantiate operator ``name`` with ``options`` as keyword arguments."""
    factory = lookup(name)
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"operator {name!r}: bad options {sorted(options)}: {exc}") from exc
