"""The Helm chart (helm/streamvision), rendered offline by Helm's own engine (helm-python-sdk):
lint, a RayCluster whose pods share the data volume and pipeline file, a RayJob that runs that
pipeline, GPU worker groups, locked down by default (Ray token auth from a Secret on every Ray
container, the dashboard off the pod network unless asked or needed, a NetworkPolicy), and values
the schema refuses."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart, lint

from streamvision.plan.dataflow import Dataflow

CHART = Path(__file__).resolve().parents[2] / "helm" / "streamvision"
KAFKA = {"kafka": {"bootstrapServers": "kafka.video.svc:9092", "topic": "cameras"}}


def render(values: dict[str, Any], name: str = "sv") -> dict[str, dict[str, Any]]:
    """Rendered manifests by kind (one of each here)."""
    manifests = Chart.load(CHART).render(values, name=name, namespace="video")
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
    assert set(kinds) == {"ConfigMap", "PersistentVolumeClaim", "RayCluster", "RayJob", "Secret", "NetworkPolicy"}
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


def _ray_containers(kinds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every container that runs Ray or talks to it: head, workers, autoscaler sidecar, submitter."""
    cluster = kinds["RayCluster"]
    containers = {f"{group.get('groupName', 'head')}/{c['name']}": c
                  for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
                  for c in group["template"]["spec"]["containers"]}
    containers["autoscaler"] = cluster["spec"].get("autoscalerOptions", {})
    if "RayJob" in kinds:
        for c in kinds["RayJob"]["spec"]["submitterPodTemplate"]["spec"]["containers"]:
            containers[f"submitter/{c['name']}"] = c
    return containers


def _dashboard_host(kinds: dict[str, dict[str, Any]]) -> str:
    return kinds["RayCluster"]["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"]


def _dashboard_rule(policy: dict[str, Any]) -> dict[str, Any] | None:
    rules = [r for r in policy["spec"]["ingress"] if {"protocol": "TCP", "port": 8265} in r.get("ports", [])]
    assert len(rules) <= 1
    return rules[0] if rules else None


GPU = {"gpuWorkers": {"enabled": True}}


def test_every_ray_container_authenticates_with_the_token_from_the_release_secret():
    kinds = render({**KAFKA, **GPU})
    secret = kinds["Secret"]
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    assert len(token) == 48 and token.isalnum()  # randAlphaNum 48
    assert secret["type"] == "Opaque"
    name = secret["metadata"]["name"]
    # the operator (KubeRay >= 1.5.1) sends the same token when it polls the dashboard for the job
    assert kinds["RayCluster"]["spec"]["authOptions"] == {"mode": "token", "secretName": name}
    containers = _ray_containers(kinds)
    assert set(containers) == {"head/ray-head", "cpu/ray-worker", "gpu/ray-worker", "autoscaler", "submitter/submitter"}
    for where, container in containers.items():
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, where
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": name, "key": "auth_token"}}, where
        assert "value" not in env["RAY_AUTH_TOKEN"], where  # never the token itself in a pod spec


def test_an_existing_secret_is_used_and_none_is_rendered():
    kinds = render({**KAFKA, "auth": {"existingSecret": "video-ray-token"}})
    assert "Secret" not in kinds
    assert kinds["RayCluster"]["spec"]["authOptions"]["secretName"] == "video-ray-token"
    for where, container in _ray_containers(kinds).items():
        ref = next(e for e in container["env"] if e["name"] == "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "video-ray-token", "key": "auth_token"}, where


def test_auth_can_be_turned_off_explicitly():
    kinds = render({**KAFKA, "auth": {"enabled": False}})
    assert "Secret" not in kinds and "authOptions" not in kinds["RayCluster"]["spec"]
    for where, container in _ray_containers(kinds).items():
        assert not [e for e in container.get("env", []) if e["name"].startswith("RAY_AUTH")], where


def test_the_dashboard_stays_on_loopback_unless_exposed_or_the_rayjob_needs_it():
    # no RayJob and not exposed: 127.0.0.1 in the head pod, nothing may reach port 8265
    kinds = render({**KAFKA, "job": {"enabled": False}})
    assert _dashboard_host(kinds) == "127.0.0.1"
    assert _dashboard_rule(kinds["NetworkPolicy"]) is None

    # the default (a RayJob): KubeRay's submitter pod and the operator reach the dashboard through
    # the head Service, so it listens on the pod network, but only those two may connect
    kinds = render(KAFKA)
    assert _dashboard_host(kinds) == "0.0.0.0"
    peers = _dashboard_rule(kinds["NetworkPolicy"])["from"]
    submitter = kinds["RayJob"]["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert peers == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "streamvision", "app.kubernetes.io/instance": "sv",
                                         "app.kubernetes.io/component": "submitter"}}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}},
    ]
    assert peers[0]["podSelector"]["matchLabels"].items() <= submitter.items()

    # opted in: on the pod network for the peers the user names (and the operator)
    ingress = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    kinds = render({**KAFKA, "job": {"enabled": False}, "dashboard": {"exposed": True},
                    "networkPolicy": {"dashboardFrom": [ingress]}})
    assert _dashboard_host(kinds) == "0.0.0.0"
    peers = _dashboard_rule(kinds["NetworkPolicy"])["from"]
    assert ingress in peers and len(peers) == 2
    assert not [p for p in peers if p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")]


def test_the_network_policy_admits_only_the_release_ray_pods_and_leaves_egress_open():
    kinds = render({**KAFKA, **GPU, "job": {"enabled": False}})
    policy = kinds["NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "streamvision", "app.kubernetes.io/instance": "sv",
                        "app.kubernetes.io/component": "ray"}
    for pod in [g["template"] for g in [kinds["RayCluster"]["spec"]["headGroupSpec"],
                                        *kinds["RayCluster"]["spec"]["workerGroupSpecs"]]]:
        assert selector.items() <= pod["metadata"]["labels"].items()  # head, cpu and gpu workers
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress unrestricted: Kafka is outside
    # each other, on every port, and nothing else
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": selector}}]}]

    other = render({**KAFKA, "job": {"enabled": False}}, name="other")["NetworkPolicy"]
    assert other["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "other"

    rule = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 8080}]}
    assert rule in render({**KAFKA, "networkPolicy": {"extraIngress": [rule]}})["NetworkPolicy"]["spec"]["ingress"]
    assert "NetworkPolicy" not in render({**KAFKA, "networkPolicy": {"enabled": False}})


@pytest.mark.parametrize("values, message", [
    ({}, "kafka.bootstrapServers is required"),
    ({**KAFKA, "workers": {"replicas": -1}}, "/workers/replicas"),
    ({"kafka": {"bootstrapServers": "k:9092", "topic": "frames.dlq"}}, "/kafka/topic"),
    ({**KAFKA, "storage": {"mountPath": "data"}}, "/storage/mountPath"),
    ({**KAFKA, "sink": {"keepIndex": "no"}}, "/sink/keepIndex"),
    ({**KAFKA, "pipeline": {"steps": [{"replicas": 2}]}}, "op"),
    ({**KAFKA, "auth": {"enabled": "yes"}}, "/auth/enabled"),
    ({**KAFKA, "auth": {"existingSecret": "Ray_Token"}}, "/auth/existingSecret"),
    ({**KAFKA, "auth": {"existingsecret": "ray-token"}}, "existingsecret"),  # a typo is not ignored
    ({**KAFKA, "dashboard": {"exposed": "false"}}, "/dashboard/exposed"),
    ({**KAFKA, "networkPolicy": {"enabled": 1}}, "/networkPolicy/enabled"),
    ({**KAFKA, "networkPolicy": {"dashboardFrom": [{"podselector": {}}]}}, "/networkPolicy/dashboardFrom/0"),
    ({**KAFKA, "networkPolicy": {"operator": {"podSelector": {"app": "ray"}}}}, "/networkPolicy/operator/podSelector"),
    ({**KAFKA, "rayVersion": "2.51.0"}, "Ray 2.52.0 or newer"),  # no token auth before Ray 2.52
])
def test_bad_values_are_refused_with_the_key_named(values, message):
    with pytest.raises(Exception, match=message):
        render(values)
