"""The Helm chart deploy/helm/streamssl with the real tools: `helm lint --strict` (values.schema.json included),
`helm template` for the defaults and ci/everything-on-values.yaml, every manifest validated by kubeconform in strict
mode against offline Kubernetes schemas (kubernetes-validate) and the CRD schemas kept in deploy/kubeconform, with
deliberately broken manifests proving kubeconform did check; then what the manifests must say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    ADAPTER_VALUES,
    CHART,
    DASHBOARD,
    EVERYTHING_ON,
    KUBERNETES_VERSIONS,
    RULES,
    find,
    helm_template,
    kubeconform,
    kubernetes_schemas,
    manifests,
    pod_spec,
    run,
    tool,
)

NEWEST = ("--kube-version", KUBERNETES_VERSIONS[-1])
VALUE_SETS = {"defaults": [], "everything-on": ["-f", str(EVERYTHING_ON)]}
WORKLOADS = ("StatefulSet", "Deployment")
PROBES = {
    "ingest": ("/healthz", "/readyz", "metrics"),
    "trainer": ("/healthz", "/readyz", "metrics"),
    "serving": ("/v2/health/live", "/v2/health/ready", "http"),
}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kubernetes_schemas(tmp_path_factory.mktemp("kubernetes-schemas"))


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, manifests(helm_template(*VALUE_SETS[request.param]))


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_strict(values: str, kube_version: str) -> None:
    result = run([tool("helm"), "lint", "--strict", "--kube-version", kube_version, str(CHART), *VALUE_SETS[values]])
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (["--set", "ingest.camera=oops"], "additional properties 'camera' not allowed"),
        (["--set", "kafka.securityProtocol=SASL"], "value must be one of"),
        (["--set", "serving.autoscaling.maxReplicas=0"], "minimum"),
        (["--set-json", 'ingest.cameras=[{"url": "rtsp://x"}]'], "camera_id"),
    ],
)
def test_values_schema_refuses_bad_values(override: list[str], complaint: str) -> None:
    result = run([tool("helm"), "lint", "--strict", *NEWEST, str(CHART), *override], check=False)
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_kubeconform_strict_offline(schemas: Path, kube_version: str, values: str) -> None:
    text = helm_template(*VALUE_SETS[values], kube_version=kube_version)
    docs = manifests(text)
    report = json.loads(kubeconform(schemas, kube_version, text).stdout)
    assert report["summary"] == {"valid": len(docs), "invalid": 0, "errors": 0, "skipped": 0}, report
    kinds = {d["kind"] for d in docs}
    if values == "everything-on":  # the CRD schemas were used too
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject", "KafkaTopic"} <= kinds


def _broken(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of rendered resources, each with one mistake a user could make."""
    deployment = json.loads(json.dumps(find(docs, "Deployment", "-serving")))
    pod_spec(deployment)["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # wrong case
    deployment["metadata"]["name"] = "typo-in-security-context"
    statefulset = json.loads(json.dumps(find(docs, "StatefulSet", "-ingest")))
    statefulset["spec"]["replicas"] = "two"
    statefulset["metadata"]["name"] = "replicas-not-a-number"
    rule = json.loads(json.dumps(find(docs, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = rule["spec"]["groups"][0]["rules"][0].pop("expr")
    rule["metadata"]["name"] = "misspelt-expr"
    scaled = json.loads(json.dumps(find(docs, "ScaledObject")))
    scaled["spec"]["triggers"][0]["metricType"] = "Average"
    scaled["metadata"]["name"] = "bad-metric-type"
    topic = json.loads(json.dumps(find(docs, "KafkaTopic", "windows")))
    del topic["metadata"]["labels"]["strimzi.io/cluster"]
    topic["metadata"]["name"] = "no-cluster-label"
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "no-schema-at-all"}, "spec": {}}
    return [deployment, statefulset, rule, scaled, topic, unknown]


def test_kubeconform_rejects_broken_manifests(schemas: Path) -> None:
    """Proof that kubeconform checked: a kubeconform that cannot reach its schemas passes silently."""
    broken = _broken(manifests(helm_template("-f", str(EVERYTHING_ON))))
    text = yaml.safe_dump_all(broken)
    result = kubeconform(schemas, KUBERNETES_VERSIONS[-1], text, check=False)
    assert result.returncode != 0, result.stdout
    report = json.loads(result.stdout)
    status = {r["name"]: r["status"] for r in report["resources"]}
    assert status == {
        "typo-in-security-context": "statusInvalid",
        "replicas-not-a-number": "statusInvalid",
        "misspelt-expr": "statusInvalid",
        "bad-metric-type": "statusInvalid",
        "no-cluster-label": "statusInvalid",
        "no-schema-at-all": "statusError",
    }, report


def _containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            spec = pod_spec(doc)
            for container in spec["containers"]:
                yield doc["metadata"]["labels"]["app.kubernetes.io/component"], spec, container


def test_every_pod_is_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    seen = set()
    for component, spec, container in _containers(docs):
        seen.add(component)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 1000
        assert spec["enableServiceLinks"] is False, "STREAMSSL_* service variables would be read as settings"
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"], f"{component} has no resource requests"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{component}: a read-only root filesystem needs a writable /tmp"
        live, ready, port = PROBES[component]
        assert container["livenessProbe"]["httpGet"] == {"path": live, "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": ready, "port": port}
        assert port in {p["name"] for p in container["ports"]}
    assert seen == set(PROBES)


def test_kafka_password_only_from_a_secret(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    for _, _, container in _containers(docs):
        env = {e["name"]: e for e in container["env"]}
        assert env["STREAMSSL_BUS"]["value"].startswith("kafka://")
        if name == "everything-on":
            assert env["STREAMSSL_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
            password = env["STREAMSSL_KAFKA__SASL_PLAIN_PASSWORD"]
            assert password["valueFrom"]["secretKeyRef"] == {"name": "streamssl-kafka-user", "key": "password"}
            assert env["STREAMSSL_KAFKA__SSL_CAFILE"]["value"].startswith("/etc/streamssl/kafka-ca/")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert "password" not in json.dumps(doc).lower()


def test_kafka_password_from_values_becomes_a_secret() -> None:
    docs = manifests(
        helm_template(
            "--set",
            "kafka.sasl.mechanism=PLAIN",
            "--set",
            "kafka.sasl.username=u",
            "--set",
            "kafka.sasl.password=s3cret",
        )
    )
    secret = find(docs, "Secret", "-kafka")
    assert secret["stringData"] == {"password": "s3cret"}
    missing = run(
        [tool("helm"), "template", "x", str(CHART), *NEWEST, "--set", "kafka.sasl.mechanism=PLAIN"], check=False
    )
    assert missing.returncode != 0
    assert "kafka.sasl.existingSecret" in missing.stderr


def test_cameras_are_split_across_ingest_replicas() -> None:
    docs = manifests(helm_template("-f", str(EVERYTHING_ON)))
    secret = find(docs, "Secret", "-ingest")  # camerasInSecret: the URLs may hold credentials
    files = {key: yaml.safe_load(value) for key, value in secret["stringData"].items()}
    assert sorted(files) == ["cameras-0.yaml", "cameras-1.yaml"]
    assert [c["camera_id"] for c in files["cameras-0.yaml"]["cameras"]] == ["junction-north", "depot-http"]
    assert [c["camera_id"] for c in files["cameras-1.yaml"]["cameras"]] == ["junction-south"]
    assert files["cameras-1.yaml"]["topic"] == "streamssl.windows"
    ingest = find(docs, "StatefulSet", "-ingest")
    args = pod_spec(ingest)["containers"][0]["args"]
    assert args[-1] == "/etc/streamssl/cameras/cameras-$(POD_INDEX).yaml"
    too_many = run([tool("helm"), "template", "x", str(CHART), *NEWEST, "--set", "ingest.replicas=2"], check=False)
    assert too_many.returncode != 0
    assert "some pods would have none" in too_many.stderr


def test_trainer_ddp_with_gpus() -> None:
    docs = manifests(helm_template("-f", str(EVERYTHING_ON)))
    trainer = find(docs, "StatefulSet", "-trainer")
    container = pod_spec(trainer)["containers"][0]
    assert container["command"] == ["torchrun"]
    assert container["args"][:5] == [
        "--nnodes=2",
        "--nproc-per-node=2",
        "--node-rank=$(POD_INDEX)",
        "--master-addr=streamssl-trainer-0.streamssl-trainer.streamssl.svc",
        "--master-port=29500",
    ]
    assert container["args"][5:7] == ["-m", "trainer"]
    assert "--device=cuda" in container["args"]
    assert container["image"].endswith("-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert trainer["spec"]["podManagementPolicy"] == "Parallel"
    assert trainer["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "checkpoints"
    headless = find(docs, "Service", "-trainer")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    single = run([tool("helm"), "template", "x", str(CHART), *NEWEST, "--set", "trainer.replicas=2"], check=False)
    assert single.returncode != 0
    assert "trainer.ddp.enabled" in single.stderr


def test_registry_is_shared_read_write_many() -> None:
    docs = manifests(helm_template())
    claim = find(docs, "PersistentVolumeClaim", "-registry")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {}
    for component, spec, container in _containers(docs):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in container["volumeMounts"]:
            if mount["name"] == "registry":
                assert volumes["registry"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
                mounts[component] = mount.get("readOnly", False)
    assert mounts == {"trainer": False, "serving": True}


def test_hpa_on_cpu_and_adapter_metrics() -> None:
    docs = manifests(
        helm_template(
            "--set", "serving.autoscaling.queueTime.enabled=true", "--set", "serving.autoscaling.streamLag.enabled=true"
        )
    )
    hpa = find(docs, "HorizontalPodAutoscaler", "-serving")
    assert hpa["spec"]["scaleTargetRef"]["name"] == find(docs, "Deployment", "-serving")["metadata"]["name"]
    metrics = hpa["spec"]["metrics"]
    assert metrics[0]["resource"]["name"] == "cpu"
    assert metrics[1]["pods"]["target"]["averageValue"] == "20m"
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert {m["pods"]["metric"]["name"] for m in metrics[1:]} == served
    assert "replicas" not in find(docs, "Deployment", "-serving")["spec"], "the HPA owns the replica count"


def test_keda_replaces_the_hpa() -> None:
    docs = manifests(helm_template("-f", str(EVERYTHING_ON)))
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"], "KEDA creates its own HPA"
    scaled = find(docs, "ScaledObject", "-serving")
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["cpu", "prometheus", "prometheus"]


def test_prometheus_rule_and_dashboard_are_the_committed_files() -> None:
    docs = manifests(helm_template("-f", str(EVERYTHING_ON)))
    rule = find(docs, "PrometheusRule")
    committed = yaml.safe_load(RULES.read_text())
    for group in committed["groups"]:
        for entry in group["rules"]:
            if "alert" in entry:
                anchor = entry["annotations"]["runbook"].split("#")[1]
                entry["annotations"]["runbook_url"] = (
                    f"https://docs.example.internal/streamssl/deploy/README.md#{anchor}"
                )
    assert rule["spec"] == committed
    dashboard = find(docs, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["streamssl.json"]) == json.loads(DASHBOARD.read_text())
    monitors = {d["metadata"]["name"] for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor")}
    assert monitors == {f"streamssl-{c}" for c in PROBES}
    for doc in docs:
        if doc["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
            assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        if doc["kind"] in ("ServiceMonitor", "PodMonitor"):
            # the operator's `endpoint` target label must not rename serving's `endpoint` (route) label
            endpoints = doc["spec"].get("endpoints") or doc["spec"]["podMetricsEndpoints"]
            assert all(e["honorLabels"] is True for e in endpoints)
