"""The three services running as the chart runs them, scraped: every metric the dashboard, the alert rules, the
HPA/KEDA/adapter queries use exists in what the services export (from their /metrics pages, no hard-coded list),
and a real Prometheus scrapes them with the rules loaded.

Each service is started through its console command (the images' ENTRYPOINT) with the arguments and the config files
`helm template` renders, paths mapped into a temporary directory and the bus set to ``embedded://`` (no Kafka):
ingest reads a 3-second synthetic clip in a loop, the trainer waits for windows (its metrics are all registered at
start), serving loads a small stand-in model version from the registry and scores a few windows (so the anomaly-score
histogram has samples). So this also proves the chart's command lines and configuration are ones the services accept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.onnx_models import make_registry_version
from ingest.contract import encode_window
from tests.conftest import make_window
from tests.deploy.tools import (
    ADAPTER_VALUES,
    DASHBOARD,
    EVERYTHING_ON,
    PROMETHEUS_SERIES,
    RULES,
    TARGET_LABELS,
    exported_series,
    find,
    free_port,
    helm_template,
    labels_used,
    manifests,
    metric_names,
    pod_spec,
    recording_rules,
    run,
    sample_labels,
    tool,
)

COMMANDS = {"ingest": "streamssl-ingest", "trainer": "streamssl-train", "serving": "streamssl-serve"}
# Generous bounds for start-up on a loaded 2-core machine (the trainer imports torch); never asserted as timings.
START_TIMEOUT_S = 240.0
PROMETHEUS_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# The stand-in model's frame size (make_registry_version's default).
FRAME_SIDE = 16
# More than serving's default warm-up (score_warmup, 10 windows), so some windows get a z-score.
SCORED_WINDOWS = 12


def get(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def wait_for(what: str, probe: Callable[[], bool], timeout_s: float, logs: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{what}: not there after {timeout_s:.0f} s\n{logs()}", pytrace=False)


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.process.poll()}) log tail:\n" + "\n".join(text.splitlines()[-30:])

    def metrics(self) -> str:
        status, body = get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200, f"{self.name} /metrics answered {status}"
        return body.decode()

    def alive(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited early\n{self.tail()}", pytrace=False)
        return get(f"http://127.0.0.1:{self.port}/metrics", timeout=2)[0] == 200


def localize(arg: str, paths: dict[str, Path]) -> str:
    for container_path, local in paths.items():
        arg = arg.replace(container_path, str(local))
    return arg.replace("$(POD_INDEX)", "0")


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    tmp = tmp_path_factory.mktemp("live")
    clip = tmp / "clip.mp4"
    run([tool("streamssl"), "synth", "--seconds", "3", "--out", str(clip)])
    ports = {name: free_port() for name in COMMANDS}
    camera = {"camera_id": "cam-a", "url": str(clip), "loop": True, "realtime": True, "size": "64x64"}
    docs = manifests(
        helm_template(
            "--set", f"ingest.metricsPort={ports['ingest']}",
            "--set", f"trainer.metricsPort={ports['trainer']}",
            "--set", f"serving.port={ports['serving']}",
            "--set-json", f"ingest.cameras={json.dumps([camera])}",
        )
    )  # fmt: skip
    paths = {
        "/etc/streamssl/cameras": tmp / "etc-cameras",
        "/etc/streamssl/trainer": tmp / "etc-trainer",
        "/checkpoints": tmp / "checkpoints",
        "/registry": tmp / "registry",
    }
    for folder in paths.values():
        folder.mkdir()
    for key, value in find(docs, "ConfigMap", "-ingest")["data"].items():
        (paths["/etc/streamssl/cameras"] / key).write_text(value)
    for key, value in find(docs, "ConfigMap", "-trainer")["data"].items():
        (paths["/etc/streamssl/trainer"] / key).write_text(value)
    make_registry_version(paths["/registry"], seed=1, size=FRAME_SIDE)
    workloads = {
        "ingest": find(docs, "StatefulSet", "-ingest"),
        "trainer": find(docs, "StatefulSet", "-trainer"),
        "serving": find(docs, "Deployment", "-serving"),
    }
    # Environment beats flags (the services' rule): no Kafka here, loopback only, one torch thread.
    overrides = {
        "ingest": {"STREAMSSL_BUS": "embedded://"},
        "trainer": {"STREAMSSL_BUS": "embedded://", "STREAMSSL_THREADS": "1"},
        "serving": {"STREAMSSL_BUS": "embedded://", "STREAMSSL_HOST": "127.0.0.1", "STREAMSSL_THREADS": "1"},
    }
    running: dict[str, Service] = {}
    try:
        for name, workload in workloads.items():
            container = pod_spec(workload)["containers"][0]
            assert "command" not in container, f"{name}: the image's ENTRYPOINT runs (no DDP by default)"
            args = [localize(arg, paths) for arg in container["args"]]
            env = {**os.environ, **container_env(container), **overrides[name], "STREAMSSL_LOG_FORMAT": "text"}
            log = tmp / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [tool(COMMANDS[name]), *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp
                )
            running[name] = Service(name, ports[name], process, log)
        for service in running.values():
            wait_for(f"{service.name} /metrics", service.alive, START_TIMEOUT_S, service.tail)
        serving = running["serving"]
        base = f"http://127.0.0.1:{serving.port}"
        wait_for("serving /v2/health/ready", lambda: get(f"{base}/v2/health/ready")[0] == 200, 60, serving.tail)
        pixels = [7] * (FRAME_SIDE * FRAME_SIDE * 3)
        request = {"inputs": [{"name": "frames", "shape": [1, FRAME_SIDE, FRAME_SIDE, 3], "datatype": "UINT8"}]}
        request["inputs"][0]["data"] = pixels
        status, body = get(f"{base}/v2/models/streamssl-encoder/infer", json.dumps(request).encode())
        assert status == 200, body[:500]
        request["inputs"][0]["shape"] = [1, 3]  # a client error, so a 4xx series exists too
        assert get(f"{base}/v2/models/streamssl-encoder/infer", json.dumps(request).encode())[0] == 400
        # Windows of the ingest camera past its warm-up, so the anomaly-score histogram has samples (and labels).
        for sequence in range(SCORED_WINDOWS):
            window = encode_window(make_window(camera["camera_id"], sequence, height=FRAME_SIDE, width=FRAME_SIDE))
            status, body = get(f"{base}/v2/models/streamssl-encoder/score/window", window)
            assert status == 200, body[:500]
        yield running
    finally:
        for service in running.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in running.values():
            try:
                service.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


@pytest.fixture(scope="module")
def exported(services: dict[str, Service]) -> dict[str, set[str]]:
    return {name: exported_series(service.metrics()) for name, service in services.items()}


def queries() -> dict[str, str]:
    """Every PromQL expression that deploy/ ships, by where it comes from."""
    found: dict[str, str] = {}
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for index, target in enumerate(panel.get("targets", [])):
            found[f"dashboard {panel['title']!r} #{index}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found[f"dashboard variable {variable['name']}"] = variable["query"]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"rule {rule.get('alert') or rule['record']}"] = rule["expr"]
    for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]:
        for key in ("seriesQuery", "metricsQuery"):
            found[f"prometheus-adapter {rule['name']['as']} {key}"] = (
                rule[key].replace("<<.LabelMatchers>>", "").replace("<<.GroupBy>>", "namespace, pod")
            )
    keda = find(manifests(helm_template("-f", str(EVERYTHING_ON))), "ScaledObject", "-serving")
    for trigger in keda["spec"]["triggers"]:
        if trigger["type"] == "prometheus":
            found[f"KEDA trigger {trigger['name']}"] = trigger["metadata"]["query"]
    return found


def test_services_export_only_their_own_prefix(exported: dict[str, set[str]]) -> None:
    for name, series in exported.items():
        assert series, f"{name} exported nothing"
        strangers = {s for s in series if not s.startswith(f"streamssl_{name}_")}
        assert not strangers, f"{name} exports series outside streamssl_{name}_: {sorted(strangers)}"


def test_every_query_uses_exported_metrics(exported: dict[str, set[str]]) -> None:
    available = set().union(*exported.values()) | recording_rules() | PROMETHEUS_SERIES
    found = queries()
    assert len(found) > 60, sorted(found)
    missing = {where: sorted(metric_names(expr) - available) for where, expr in found.items()}
    missing = {where: names for where, names in missing.items() if names}
    assert not missing, f"queries use metrics no service exports: {json.dumps(missing, indent=1)}"
    used = set().union(*(metric_names(expr) for expr in found.values()))
    for name in exported:
        assert any(metric.startswith(f"streamssl_{name}_") for metric in used), f"nothing watches {name}"


def test_every_query_uses_labels_the_metrics_carry(services: dict[str, Service]) -> None:
    """Label names in matchers and grouping clauses exist on the series (checked where the services already
    observed a label set: a family without samples yet shows no labels)."""
    seen: dict[str, set[str]] = {}
    for service in services.values():
        for name, labels in sample_labels(service.metrics()).items():
            seen.setdefault(name, set()).update(labels)
    assert seen["streamssl_ingest_camera_up"] >= {"camera"}
    assert seen["streamssl_serving_requests_total"] >= {"endpoint", "status"}
    wrong: dict[str, list[str]] = {}
    for where, expr in queries().items():
        matchers, grouping = labels_used(expr)
        for metric, labels in matchers.items():
            if metric in seen:
                unknown = labels - seen[metric] - TARGET_LABELS
                if unknown:
                    wrong[where] = [*wrong.get(where, []), f"{metric} has no label {sorted(unknown)}"]
        names = metric_names(expr) - PROMETHEUS_SERIES
        if all(name in seen for name in names):  # no recording rule, and every series observed
            unknown = grouping - set().union(*(seen[name] for name in names)) - TARGET_LABELS
            if unknown:
                wrong[where] = [*wrong.get(where, []), f"groups by {sorted(unknown)}, which its series lack"]
    assert not wrong, json.dumps(wrong, indent=1)


def test_metric_name_extraction_would_catch_a_missing_metric() -> None:
    expr = (
        'sum by (camera) (rate(streamssl_serving_made_up_total{endpoint=~"/v2/.*", x="a,b"}[5m])) '
        "/ on (camera) group_left (version) streamssl:recorded:ratio and up offset 1h > bool 1e-9"
    )
    assert metric_names(expr) == {"streamssl_serving_made_up_total", "streamssl:recorded:ratio", "up"}
    assert metric_names("label_values(streamssl_ingest_camera_up, camera)") == {"streamssl_ingest_camera_up"}
    assert labels_used('sum by (cam) (rate(streamssl_ingest_frames_decoded_total{camera=~"a|b"}[5m]))') == (
        {"streamssl_ingest_frames_decoded_total": {"camera"}},
        {"cam"},
    )
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))") == {"x_bucket"}


def test_prometheus_scrapes_the_services_and_evaluates_the_rules(services: dict[str, Service], tmp_path: Path) -> None:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": f"streamssl-{name}", "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}
            for name, service in services.items()
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    run([tool("promtool"), "check", "config", str(config_file)])
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        prometheus = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config_file}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{port}/api/v1"

    def logs() -> str:
        return "--- prometheus log tail:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])

    def api_get(path: str) -> Any:
        status, body = get(f"{api}/{path}")
        assert status == 200, body[:300]
        return json.loads(body)["data"]

    try:
        wait_for("prometheus /-/ready", lambda: get(f"http://127.0.0.1:{port}/-/ready")[0] == 200, 60, logs)

        def targets_up() -> bool:
            active = api_get("targets?state=active")["activeTargets"]
            return sorted((t["labels"]["job"], t["health"]) for t in active) == [
                (f"streamssl-{name}", "up") for name in sorted(services)
            ]

        wait_for("every StreamSSL target up", targets_up, PROMETHEUS_TIMEOUT_S, logs)
        expected_rules = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])

        def rules_evaluated() -> bool:
            groups = api_get("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) == expected_rules and all(
                r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules
            )

        wait_for("every rule evaluated, healthy", rules_evaluated, PROMETHEUS_TIMEOUT_S, logs)
        errors = [
            (r["name"], r.get("lastError"))
            for g in api_get("rules")["groups"]
            for r in g["rules"]
            if r.get("lastError")
        ]
        assert not errors, errors
        up = api_get("query?query=" + urllib.parse.quote('up{job=~"streamssl-.*"}'))["result"]
        assert sorted((r["metric"]["job"], r["value"][1]) for r in up) == [
            (f"streamssl-{name}", "1") for name in sorted(services)
        ]
        cameras = api_get("query?query=streamssl_ingest_camera_up")["result"]
        assert [r["metric"]["camera"] for r in cameras] == ["cam-a"]
        served = api_get("query?query=" + urllib.parse.quote('streamssl_serving_requests_total{status="200"}'))
        assert any(r["metric"]["endpoint"].endswith("/infer") for r in served["result"]), served
        # The anomaly rules select the bucket by its bound as the serving node writes it (le="3.0"): the share
        # recorded from a real scrape exists for the scored camera.
        share = "query?query=" + urllib.parse.quote("streamssl:serving_anomaly_score_above3:ratio_rate15m")
        wait_for(
            "the anomaly-share recording rule over scraped buckets",
            lambda: [r["metric"]["camera"] for r in api_get(share)["result"]] == ["cam-a"],
            PROMETHEUS_TIMEOUT_S,
            logs,
        )
    finally:
        prometheus.send_signal(signal.SIGTERM)
        try:
            prometheus.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
