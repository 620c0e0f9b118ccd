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


def test_serving_and_ingest_never_import_trainer_or_torch() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


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
