"""The Helm chart (helm/streamvision), rendered offline by Helm's own engine (helm-python-sdk):
lint, a RayCluster whose pods share the data volume and pipeline file, a RayJob that runs that
pipeline, GPU worker groups, the query service as a RayService running the real Serve app builder,
Kafka SASL/SSL settings from a Secret, one ReadWriteOnce claim per RocksDB writer, locked down by
default (Ray token auth from a Secret on every Ray container, the dashboard off the pod network
unless asked or needed, NetworkPolicies), and values the schema refuses."""

from __future__ import annotations

import base64
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart, lint

from cluster.service import app as service_app
from operators.kafka.settings import ENV_OPTIONS, KafkaSettings
from streamvision.plan.dataflow import Dataflow

CHART = Path(__file__).resolve().parents[2] / "helm" / "streamvision"
KAFKA = {"kafka": {"bootstrapServers": "kafka.video.svc:9092", "topic": "cameras"}}


def render_all(values: dict[str, Any], name: str = "sv") -> list[dict[str, Any]]:
    """Every rendered manifest."""
    manifests = Chart.load(CHART).render(values, name=name, namespace="video")
    return [doc for text in manifests.values() if text.strip() for doc in yaml.safe_load_all(text) if doc]


def render(values: dict[str, Any], name: str = "sv") -> dict[str, dict[str, Any]]:
    """Rendered manifests by kind (one of each here: the service is off by default)."""
    docs = render_all(values, name)
    kinds = {doc["kind"]: doc for doc in docs}
    assert len(kinds) == len(docs), "two manifests of one kind: use render_all"
    return kinds


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



SERVICE = {"service": {"enabled": True}}
SASL = {"kafka": {**KAFKA["kafka"], "securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512",
                  "existingSecret": "kafka-client", "caCertKey": "ca.pem"}}


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _service_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    service = next(d for d in docs if d["kind"] == "RayService")
    return service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]


def test_the_chart_lints_clean_with_the_service_and_kafka_security():
    report = lint(CHART, {**SASL, **SERVICE, **GPU}, strict=True)
    assert report["errors"] == []
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


def test_the_service_is_a_rayservice_running_the_real_serve_app_builder(monkeypatch):
    docs = render_all({**KAFKA, "service": {"enabled": True, "collections": ["cams", "doors"], "shards": 4}})
    service = _one(docs, "RayService", "sv-streamvision-service")
    assert service["apiVersion"] == "ray.io/v1"
    assert service["spec"]["upgradeStrategy"] == {"type": "None"}  # never a second writer on the volume
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    [application] = config["applications"]
    assert application["route_prefix"] == "/" and application["name"] == "streamvision"

    module, _, attr = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr)  # the import path exists
    assert builder is service_app.build_app
    args = application["args"]
    assert args == {"data": ["/data/cams", "/data/doors"], "kafka": "kafka.video.svc:9092",
                    "index_factory": "Flat", "shards": 4, "port": 8000}
    # and the real builder takes these args (the writers' start, which needs Ray, replaced)
    started: list[Any] = []
    monkeypatch.setattr(service_app, "_start_writers", lambda *a, **kw: started.append(a))
    monkeypatch.setenv(service_app.TOKEN_ENV, "t")
    built = builder(args)
    assert built._bound_deployment.init_args == ({"cams": "/data/cams", "doors": "/data/doors"}, "t",
                                                 "kafka.video.svc:9092")
    assert started == [({"cams": Path("/data/cams"), "doors": Path("/data/doors")},
                        {"index_factory": "Flat", "shards": 4})]

    cluster = service["spec"]["rayClusterConfig"]
    assert "workerGroupSpecs" not in cluster  # one pod holds the service's volume
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": 8000, "name": "serve"} in head["ports"]
    mounts = {m["name"]: m["mountPath"] for m in head["volumeMounts"]}
    assert all(d.startswith(mounts["data"] + "/") for d in args["data"])

    assert not [d for d in render_all(KAFKA) if d["kind"] == "RayService"]  # off by default


def test_the_service_is_locked_down_like_the_cluster():
    clients = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    docs = render_all({**KAFKA, "service": {"enabled": True, "clientsFrom": [clients]}})
    cluster = next(d for d in docs if d["kind"] == "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "sv-streamvision-ray-token"}
    pod = _service_pod(docs)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "sv-streamvision-ray-token", "key": "auth_token"}}
    # the API's bearer token: its own Secret (not the Ray token), never its value in the spec
    assert env["STREAMVISION_TOKEN"] == {"name": "STREAMVISION_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "sv-streamvision-api-token", "key": "token"}}}
    # workers start at niceness 0: the service's actors keep it, pipelines into it lower themselves
    assert env["RAY_worker_niceness"]["value"] == "0"
    api = _one(docs, "Secret", "sv-streamvision-api-token")
    assert len(base64.b64decode(api["data"]["token"])) == 48

    policy = _one(docs, "NetworkPolicy", "sv-streamvision-service")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ingress = policy["spec"]["ingress"]
    assert ingress[0] == {"from": [{"podSelector": {"matchLabels": selector}}]}
    assert ingress[1]["ports"] == [{"protocol": "TCP", "port": 8265}]  # the operator deploys serveConfigV2
    assert ingress[1]["from"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}]
    assert ingress[2] == {"from": [clients], "ports": [{"protocol": "TCP", "port": 8000}]}
    assert len(ingress) == 3
    # the ingest cluster's policy does not select the service's pod, nor admit it
    ray = _one(docs, "NetworkPolicy", "sv-streamvision-ray")["spec"]["podSelector"]["matchLabels"]
    assert not ray.items() <= pod["metadata"]["labels"].items()

    docs = render_all({**KAFKA, "service": {"enabled": True, "existingTokenSecret": "api"},
                       "auth": {"existingSecret": "ray"}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    env = {e["name"]: e for e in _service_pod(docs)["spec"]["containers"][0]["env"]}
    assert env["STREAMVISION_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "api"
    ingress = _one(docs, "NetworkPolicy", "sv-streamvision-service")["spec"]["ingress"]
    assert not [r for r in ingress if {"protocol": "TCP", "port": 8000} in r.get("ports", [])]  # nobody by default


def _env_of(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet sets it, with ``secret`` as every Secret's data."""
    return {e["name"]: e["value"] if "value" in e else secret[e["valueFrom"]["secretKeyRef"]["key"]]
            for e in container.get("env", [])}


def test_kafka_sasl_ssl_settings_come_from_the_secret_in_the_ingest_and_service_pods(monkeypatch):
    docs = render_all({**SASL, **SERVICE, **GPU})
    kinds = {d["kind"]: d for d in docs}
    cluster = kinds["RayCluster"]["spec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"],
            **{g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]},
            "service": _service_pod(docs)["spec"]}
    secret = {"username": "cams", "password": "s3cret", "auth_token": "x", "token": "y"}
    for where, pod in pods.items():
        container = pod["containers"][0]
        kafka = {e["name"]: e for e in container["env"] if e["name"].startswith("STREAMVISION_KAFKA_")}
        assert set(kafka) == set(ENV_OPTIONS), where  # exactly the names the Kafka clients read
        for var in ("STREAMVISION_KAFKA_SASL_USERNAME", "STREAMVISION_KAFKA_SASL_PASSWORD"):
            assert kafka[var]["valueFrom"]["secretKeyRef"]["name"] == "kafka-client", where
        ca = next(v for v in pod["volumes"] if v["name"] == "kafka-ca")
        assert ca["secret"] == {"secretName": "kafka-client", "items": [{"key": "ca.pem", "path": "ca.crt"}]}, where
        mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-ca")
        assert kafka["STREAMVISION_KAFKA_SSL_CAFILE"]["value"] == mount["mountPath"] + "/ca.crt", where
        assert mount["readOnly"] is True
        # what a Kafka client built in this pod gets
        for var in ENV_OPTIONS:
            monkeypatch.delenv(var, raising=False)
        for var, value in _env_of(container, secret).items():
            monkeypatch.setenv(var, value)
        assert KafkaSettings("kafka.video.svc:9093").client_config("consumer") == {
            "bootstrap_servers": ["kafka.video.svc:9093"], "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "cams", "sasl_plain_password": "s3cret",
            "ssl_cafile": "/etc/streamvision-kafka/ca.crt"}, where
    # not where no Kafka client runs, and never in the pipeline file
    submitter = kinds["RayJob"]["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert not [e for e in submitter["env"] if e["name"].startswith("STREAMVISION_KAFKA_")]
    assert not [e for e in cluster["autoscalerOptions"]["env"] if e["name"].startswith("STREAMVISION_KAFKA_")]
    pipeline = kinds["ConfigMap"]["data"]["pipeline.yaml"]
    assert "kafka-client" not in pipeline and "sasl" not in pipeline.lower()

    # SSL with the system CAs: only the protocol; PLAINTEXT (the default): nothing
    ssl = render({"kafka": {**KAFKA["kafka"], "securityProtocol": "SSL"}})["RayCluster"]
    env = ssl["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"].startswith("STREAMVISION_KAFKA_")] == [
        {"name": "STREAMVISION_KAFKA_SECURITY_PROTOCOL", "value": "SSL"}]
    for pod in _pods(render(KAFKA)["RayCluster"]):
        assert not [e for e in pod["containers"][0]["env"] if e["name"].startswith("STREAMVISION_KAFKA_")]
        assert "kafka-ca" not in {v["name"] for v in pod["volumes"]}


def test_each_rocksdb_writer_has_its_own_read_write_once_claim_and_its_pods_share_a_node():
    docs = render_all({**KAFKA, **SERVICE, **GPU})
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == {"sv-streamvision-data", "sv-streamvision-service-data"}
    for claim in claims.values():
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"

    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    ingest = [g["template"] for g in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]]
    mounted: dict[str, list[str]] = {}
    for where, pod in [*(("ingest", p) for p in ingest), ("service", _service_pod(docs))]:
        [claim] = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
        mounted.setdefault(claim, []).append(where)
        assert claims[claim]["metadata"]["labels"]["streamvision.io/writer"] == pod["metadata"]["labels"]["streamvision.io/writer"]
    assert mounted == {"sv-streamvision-data": ["ingest"] * 3, "sv-streamvision-service-data": ["service"]}

    # a ReadWriteOnce volume attaches to one node: the ingest cluster's pods all go to one node
    for pod in ingest:
        [term] = pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "streamvision",
                                                        "app.kubernetes.io/instance": "sv", "streamvision.io/writer": "ingest"}
        assert term["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    assert [d["metadata"]["name"] for d in render_all(KAFKA) if d["kind"] == "PersistentVolumeClaim"] == ["sv-streamvision-data"]


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
    ({**KAFKA, "storage": {"accessMode": "ReadWriteMany"}}, "/storage/accessMode"),  # RocksDB on a shared FS
    ({"kafka": {**KAFKA["kafka"], "securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
    ({"kafka": {**KAFKA["kafka"], "securityProtocol": "SASL_SSL", "existingSecret": "kafka-client"}},
     "/kafka/saslMechanism"),
    ({"kafka": {**KAFKA["kafka"], "securityProtocol": "SASL_SSL", "saslMechanism": "PLAIN"}}, "/kafka/existingSecret"),
    ({"kafka": {**KAFKA["kafka"], "saslMechanism": "GSSAPI"}}, "/kafka/saslMechanism"),
    ({"kafka": {**KAFKA["kafka"], "caCertKey": "ca.crt", "existingSecret": "kafka-client"}}, "/kafka/securityProtocol"),
    ({"kafka": {**KAFKA["kafka"], "sasl_mechanism": "PLAIN"}}, "sasl_mechanism"),  # a typo is not ignored
    ({**KAFKA, "service": {"enabled": "yes"}}, "/service/enabled"),
    ({**KAFKA, "service": {"collections": []}}, "/service/collections"),
    ({**KAFKA, "service": {"collections": ["../etc"]}}, "/service/collections/0"),
    ({**KAFKA, "service": {"port": 8265}}, "/service/port"),  # the dashboard's port
    ({**KAFKA, "service": {"shards": 0}}, "/service/shards"),
    ({**KAFKA, "service": {"existingTokenSecret": "API_TOKEN"}}, "/service/existingTokenSecret"),
])
def test_bad_values_are_refused_with_the_key_named(values, message):
    with pytest.raises(Exception, match=message):
        render(values)
