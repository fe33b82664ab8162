"""The Helm chart (helm/streamvision), rendered offline by Helm's own engine (helm-python-sdk):
lint, a RayCluster whose pods share the data volume and pipeline file, a RayJob that runs that
pipeline, GPU worker groups, and values the schema refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart, lint

from streamvision.plan.dataflow import Dataflow

CHART = Path(__file__).resolve().parents[2] / "helm" / "streamvision"
KAFKA = {"kafka": {"bootstrapServers": "kafka.video.svc:9092", "topic": "cameras"}}


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rendered manifests by kind (one of each here)."""
    manifests = Chart.load(CHART).render(values, name="sv", namespace="video")
    docs = [yaml.safe_load(text) for text in manifests.values() if text.strip()]
    return {doc["kind"]: doc for doc in docs if doc}


def _pods(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def test_chart_lints_clean():
    report = lint(CHART, KAFKA, strict=True)
    assert report["errors"] == []
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


def test_default_render_is_a_cluster_and_a_job_running_a_valid_pipeline():
    kinds = render(KAFKA)
    assert set(kinds) == {"ConfigMap", "PersistentVolumeClaim", "RayCluster", "RayJob"}
    cluster, job, config = kinds["RayCluster"], kinds["RayJob"], kinds["ConfigMap"]

    pipeline = yaml.safe_load(config["data"]["pipeline.yaml"])
    assert pipeline["source"] == {"op": "kafka", "bootstrap_servers": "kafka.video.svc:9092", "topic": "cameras",
                                  "group_id": "streamvision"}
    flow = Dataflow.from_config(pipeline)  # the program accepts what the chart writes
    flow.validate()
    assert [type(n.component).__name__ for n in flow.nodes] == [
        "KafkaSource", "NanoDetDetector", "EfficientNetLite0Featurizer", "StoreSink"]

    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["entrypoint"] == "streamvision run /etc/streamvision/pipeline.yaml"
    assert [g["groupName"] for g in cluster["spec"]["workerGroupSpecs"]] == ["cpu"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # actors go to workers
    for pod in _pods(cluster):  # every pod sees the same data volume and the pipeline file
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
        assert volumes["pipeline"]["configMap"]["name"] == config["metadata"]["name"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts == {"data": "/data", "pipeline": "/etc/streamvision"}
        assert pipeline["sink"]["data"].startswith(mounts["data"] + "/")


def test_gpu_workers_ask_kubernetes_and_ray_for_their_gpus():
    cluster = render({**KAFKA, "gpuWorkers": {"enabled": True, "gpusPerWorker": 2,
                                               "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}})["RayCluster"]
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["rayStartParams"]["num-gpus"] == "2"
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert gpu["template"]["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    cpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu")
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_job_can_be_left_out_and_the_sink_can_drop_its_index():
    kinds = render({**KAFKA, "job": {"enabled": False}, "sink": {"keepIndex": False}})
    assert "RayJob" not in kinds
    pipeline = yaml.safe_load(kinds["ConfigMap"]["data"]["pipeline.yaml"])
    assert pipeline["sink"]["keep_index"] is False
    assert Dataflow.from_config(pipeline).nodes[-1].component.keep_index is False


@pytest.mark.parametrize("values, message", [
    ({}, "kafka.bootstrapServers is required"),
    ({**KAFKA, "workers": {"replicas": -1}}, "/workers/replicas"),
    ({"kafka": {"bootstrapServers": "k:9092", "topic": "frames.dlq"}}, "/kafka/topic"),
    ({**KAFKA, "storage": {"mountPath": "data"}}, "/storage/mountPath"),
    ({**KAFKA, "sink": {"keepIndex": "no"}}, "/sink/keepIndex"),
    ({**KAFKA, "pipeline": {"steps": [{"replicas": 2}]}}, "op"),
])
def test_bad_values_are_refused_with_the_key_named(values, message):
    with pytest.raises(Exception, match=message):
        render(values)
