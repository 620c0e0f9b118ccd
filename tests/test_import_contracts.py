"""The layering rules of the design card, checked with import-linter on the real import graph."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([executable], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_layers_and_forbidden_imports_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout, result.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path: Path) -> None:
    # The check must be able to fail: plant a torch import in serving and expect import-linter to refuse it.
    planted = ROOT / "serving" / "_planted_violation.py"
    planted.write_text("import torch  # noqa: F401\n")
    try:
        result = lint_imports()
    finally:
        planted.unlink()
    assert result.returncode != 0
    assert "serving._planted_violation -> torch" in result.stdout, result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_layers(tmp_path: Path) -> None:
    # The stream contract is the bottom layer: an import of the runtime from it must be refused.
    planted = ROOT / "ingest" / "contract" / "_planted_violation.py"
    planted.write_text("import ingest.runtime.settings  # noqa: F401\n")
    try:
        result = lint_imports()
    finally:
        planted.unlink()
    assert result.returncode != 0
    assert "ingest.contract._planted_violation -> ingest.runtime.settings" in result.stdout, result.stdout


def test_the_tools_may_compose_the_services_but_a_service_may_not_import_another() -> None:
    planted = ROOT / "serving" / "_planted_violation.py"
    planted.write_text("import ingest.service.service  # noqa: F401\n")
    try:
        result = lint_imports()
    finally:
        planted.unlink()
    assert result.returncode != 0
    assert "serving._planted_violation -> ingest.service.service" in result.stdout, result.stdout


def test_benches_never_import_the_tests() -> None:
    # Benchmarks run from a clone without the test suite's fixtures; shared stand-ins live in bench/.
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.lstrip().startswith(("from tests", "import tests"))
    ]
    assert offenders == [], offenders
