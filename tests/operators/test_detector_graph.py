"""Detectors and featurizers in a validated dataflow graph (no Ray: validation only)."""

from __future__ import annotations

import pytest

from operators import registry
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.filters.label_filter import LabelFilter
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from streamvision.plan.dataflow import Dataflow
from streamvision.core.errors import GraphValidationError


def build(tmp_path, detector, labels):
    flow = Dataflow("models")
    (flow.source(VideoFileSource(path="vtest.avi"))
         .then(detector)
         .then(LabelFilter(labels=labels))
         .then(EfficientNetLite0Featurizer())
         .sink(StoreSink(data=str(tmp_path / "data"))))
    return flow


def test_filter_on_a_label_the_detector_cannot_produce_is_rejected(tmp_path):
    types = build(tmp_path, NanoDetDetector(), ["car", "person"]).validate()
    assert types[EfficientNetLite0Featurizer.name].dim == 1280
    assert types[EfficientNetLite0Featurizer.name].label_domain == frozenset({"car", "person"})
    with pytest.raises(GraphValidationError, match="'label_filter'.*'toaster oven'.*'nanodet-m"):
        build(tmp_path, NanoDetDetector(), ["toaster oven"]).validate()
    with pytest.raises(GraphValidationError, match="'label_filter'.*'car'"):
        build(tmp_path, NanoDetDetector(classes=["person"]), ["car"]).validate()


def test_featurizer_spec_rebuilds_it_from_the_registry():
    spec = EfficientNetLite0Featurizer(top_k=3).spec()
    rebuilt = registry.build(spec["op"], spec["options"])
    assert isinstance(rebuilt, EfficientNetLite0Featurizer) and rebuilt.top_k == 3
