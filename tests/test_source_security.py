"""Nothing read from disk or the network is unpickled: the source is checked for the calls that would.

``torch.load`` must pass ``weights_only=True``; ``numpy.load`` must not allow pickles; no module imports ``pickle``
(or ``dill``, ``marshal``, ``shelve``); YAML is read with ``safe_load`` only; no ``eval``/``exec`` of strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "trainer", "serving")
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve"}


def problems_in(source: str, name: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        call = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if call == "torch.load" and keywords.get("weights_only") != "True":
            found.append(f"{where}: torch.load without weights_only=True")
        if call in ("np.load", "numpy.load") and keywords.get("allow_pickle") == "True":
            found.append(f"{where}: {call} with allow_pickle=True")
        if call == "yaml.load":
            found.append(f"{where}: yaml.load (use yaml.safe_load)")
        if call in ("eval", "exec"):
            found.append(f"{where}: {call}() of a string")
    return found


def test_no_package_module_unpickles_what_it_reads() -> None:
    found = [
        problem
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for problem in problems_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\ntorch.load(f)\n", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(f, weights_only=False)\n", "torch.load without weights_only=True"),
        ("import pickle\n", "imports pickle"),
        ("from pickle import loads\n", "imports pickle"),
        ("import numpy as np\nnp.load(f, allow_pickle=True)\n", "allow_pickle=True"),
        ("import yaml\nyaml.load(text)\n", "yaml.load"),
        ("eval(text)\n", "eval()"),
    ],
)
def test_the_check_catches_each_unsafe_call(source: str, expected: str) -> None:
    found = problems_in(source, "planted.py")
    assert len(found) == 1
    assert expected in found[0]
    assert problems_in("import torch\ntorch.load(f, weights_only=True)\nimport yaml\nyaml.safe_load(t)\n", "ok") == []
