"""The alert and recording rules with promtool: `check rules`, and `test rules` (input series -> expected alerts) for
every alert; each alert has a runbook entry in deploy/README.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, RULES, RULES_TEST, run, tool


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(RULES)])
    count = len([r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]])
    assert f"SUCCESS: {count} rules found" in result.stdout, result.stdout


def test_promtool_test_rules() -> None:
    result = run([tool("promtool"), "test", "rules", str(RULES_TEST)])
    assert "SUCCESS" in result.stdout, result.stdout


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """A unit test expecting the wrong alert fails: promtool really evaluated the rules."""
    tests = yaml.safe_load(RULES_TEST.read_text())
    tests["rule_files"] = [str(RULES)]
    first = tests["tests"][0]["alert_rule_test"][1]
    first["exp_alerts"][0]["exp_labels"]["camera"] = "cam-b"
    broken = tmp_path / "broken-test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    result = run([tool("promtool"), "test", "rules", str(broken)], check=False)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    missing = {rule["alert"] for rule in alerts()} - fired
    assert not missing, f"alerts without a promtool test that makes them fire: {sorted(missing)}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_entry() -> None:
    readme = (DEPLOY / "README.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in readme.splitlines() if line.startswith("#")}
    for rule in alerts():
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "deploy/README.md", runbook
        assert anchor == rule["alert"].lower(), runbook
        assert anchor in anchors, f"deploy/README.md has no heading for {rule['alert']} (#{anchor})"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
