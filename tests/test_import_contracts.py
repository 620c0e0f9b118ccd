"""The layering rules of the design card, checked with import-linter on the real import graph."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([executable], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_layers_and_forbidden_imports_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout, result.stdout


def lint_with_planted(package: str, imported: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with a module in ``package`` (a dotted path) that imports ``imported``; removed after."""
    planted = ROOT.joinpath(*package.split("."), "_planted_violation.py")
    planted.write_text(f"import {imported}  # noqa: F401\n")
    try:
        return lint_imports()
    finally:
        planted.unlink()


@pytest.mark.parametrize(
    ("package", "imported", "why"),
    [
        ("serving", "torch", "serving runs on edge boxes without torch"),
        ("ingest.contract", "ingest.runtime.settings", "the stream contract is the bottom layer"),
        ("serving", "ingest.service.service", "a service may not import another; only the tools compose them"),
    ],
)
def test_each_contract_can_fail(package: str, imported: str, why: str) -> None:
    result = lint_with_planted(package, imported)
    assert result.returncode != 0, why
    assert f"{package}._planted_violation -> {imported}" in result.stdout, result.stdout


def test_benches_never_import_the_tests() -> None:
    # Benchmarks run from a clone without the test suite's fixtures; shared stand-ins live in bench/.
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.lstrip().startswith(("from tests", "import tests"))
    ]
    assert offenders == [], offenders
