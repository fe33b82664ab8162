"""Graph building, type validation before running, YAML pipelines and the fusion rule."""

from __future__ import annotations

import pytest

from operators.featurizers.color_histogram import ColorHistogram
from operators.filters.label_filter import LabelFilter
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from streamvision.plan.dataflow import Dataflow
from streamvision.core.errors import ConfigError, GraphValidationError
from streamvision.plan.rules import optimize
from streamvision.core.types import PatchType


def _source() -> VideoFileSource:
    return VideoFileSource(path="video.avi")


def test_valid_graph_types_and_featurizer_binding(tmp_path):
    flow = Dataflow("ok")
    sink = StoreSink(data=str(tmp_path))
    flow.source(_source()).then(WholeFramePatches()).then(ColorHistogram(bins=4, grid=1)).sink(sink)
    types = flow.validate()
    assert types["color_histogram"] == PatchType(kind="vector", dim=64, label_domain=frozenset())
    assert sink.dim == 64
    assert sink.featurizer == {"op": "color_histogram", "options": {"bins": 4, "grid": 1}}


def test_frames_into_a_patch_operator_names_both():
    flow = Dataflow("bad")
    flow.source(_source()).then(ColorHistogram()).sink(StoreSink(data="/tmp/x"))
    with pytest.raises(GraphValidationError, match="'color_histogram' cannot read the output of 'video_file'"):
        flow.validate()


def test_vectors_into_a_pixel_operator_is_refused():
    flow = Dataflow("bad")
    flow.source(_source()).then(WholeFramePatches()).then(ColorHistogram()).then(ColorHistogram()).sink(
        StoreSink(data="/tmp/x"))
    with pytest.raises(GraphValidationError, match="vector patches where pixels patches are needed"):
        flow.validate()


def test_filter_on_a_label_nobody_produces_names_both():
    flow = Dataflow("bad")
    flow.source(_source()).then(WholeFramePatches()).then(LabelFilter(labels=["car"])).then(ColorHistogram()).sink(
        StoreSink(data="/tmp/x"))
    with pytest.raises(GraphValidationError, match=r"'label_filter' filters on label\(s\) \['car'\] that 'whole_frame'"):
        flow.validate()


def test_stream_without_sink_and_flow_without_source():
    flow = Dataflow("open-ended")
    flow.source(_source()).then(WholeFramePatches())
    with pytest.raises(GraphValidationError, match="goes nowhere"):
        flow.validate()
    with pytest.raises(GraphValidationError, match="no source"):
        Dataflow("empty").validate()


def test_bad_resources_and_options():
    with pytest.raises(ConfigError, match="replicas"):
        Dataflow("r").source(_source(), replicas=0)
    with pytest.raises(ConfigError, match="unknown resource option"):
        Dataflow("r").source(_source(), gpus=1)
    with pytest.raises(ConfigError, match="bins"):
        ColorHistogram(bins=1)


def test_yaml_pipeline(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "name: y\nsource: {op: video_file, path: v.avi, every: 5, max_batch: 8}\n"
        "steps:\n  - {op: whole_frame}\n  - {op: color_histogram, bins: 4, replicas: 2, num_cpus: 0.5}\n"
        "sink: {op: store, data: out}\n")
    flow = Dataflow.from_yaml(tmp_path / "p.yaml")
    assert [n.id for n in flow.nodes] == ["video_file", "whole_frame", "color_histogram", "store"]
    assert flow.nodes[0].component.path == str(tmp_path / "v.avi")
    assert flow.nodes[0].component.every == 5 and flow.nodes[0].resources.max_batch == 8
    assert flow.nodes[2].resources.replicas == 2
    assert flow.nodes[3].component.data == str(tmp_path / "out")


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("source: {op: video_file, path: v.avi}\nsink: {op: store, data: d}\nstepz: []\n", "bad pipeline"),
    ("source: {op: nope}\nsink: {op: store, data: d}\n", "unknown operator 'nope'"),
    ("source: {op: video_file, path: v.avi, colour: red}\nsink: {op: store, data: d}\n", "bad options"),
])
def test_bad_yaml_gives_a_clear_error(tmp_path, text, message):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Dataflow.from_yaml(tmp_path / "p.yaml")


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Dataflow.from_yaml(tmp_path / "nope.yaml")


def test_fusion_joins_alike_operators_only():
    flow = Dataflow("f")
    flow.source(_source()).then(WholeFramePatches()).then(ColorHistogram()).sink(StoreSink(data="/tmp/x"))
    assert [n.id for n in optimize(flow).nodes] == ["video_file", "whole_frame->color_histogram", "store"]
    apart = Dataflow("g")
    apart.source(_source()).then(WholeFramePatches()).then(ColorHistogram(), replicas=2).sink(StoreSink(data="/tmp/x"))
    assert [n.id for n in optimize(apart).nodes] == ["video_file", "whole_frame", "color_histogram", "store"]
    fused = optimize(flow)
    assert fused.nodes[2].upstream == "whole_frame->color_histogram"
    assert fused.validate()["whole_frame->color_histogram"].dim == ColorHistogram().dim


def test_a_sinks_frame_storage_is_pushed_down_to_its_kafka_source():
    from operators.sources.kafka_source import KafkaSource

    source = KafkaSource(topic="cams", bootstrap_servers="127.0.0.1:9092")
    flow = Dataflow("k")
    flow.source(source).then(WholeFramePatches()).sink(StoreSink(data="/tmp/x", store_frames="jpeg"))
    pushed = optimize(flow).nodes[0].component
    assert (pushed.keeper.format, source.keeper.format) == ("jpeg", "segments")  # a copy; the user's is unchanged
    default = Dataflow("d")
    default.source(source).then(WholeFramePatches()).sink(StoreSink(data="/tmp/x"))
    assert optimize(default).nodes[0].component.keeper.format == "segments"
    files = Dataflow("f")
    files.source(_source()).then(WholeFramePatches()).sink(StoreSink(data="/tmp/x", store_frames="raw"))
    with pytest.raises(ConfigError, match="kept as their originals"):
        optimize(files)
    kept_file = Dataflow("o")
    kept_file.source(_source()).then(WholeFramePatches()).sink(StoreSink(data="/tmp/x", store_frames="segments"))
    assert [n.id for n in optimize(kept_file).nodes] == ["video_file", "whole_frame", "store"]
