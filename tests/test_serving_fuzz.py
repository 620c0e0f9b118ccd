"""Fuzz the HTTP API with schemathesis against the OpenAPI document the node serves: no input may cause a 5xx.

For every operation in the served document, schemathesis generates requests that follow the schema (positive) and
requests that break it (negative), once with free path parameters and once with the served model and version
pinned, so generated bodies reach the tensor parser and the window decoder instead of stopping at a 404.
(schemathesis's own pytest plugin does not run under pytest 9 yet, hence the strategies driven by hypothesis here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from bench.onnx_models import make_registry_version
from serving.node import ServingNode
from tests.serving_fixtures import MODEL, base_url, running_node

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingNode]:
    registry: Path = tmp_path_factory.mktemp("registry")
    make_registry_version(registry, seed=31, pixel=True)
    with running_node(registry, max_body_bytes=256 * 1024) as node:
        yield node


def test_no_generated_request_gets_a_server_error(fuzz_node: ServingNode) -> None:
    url = base_url(fuzz_node)
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 13, [op.label for op in operations]
    calls: list[str] = []
    for operation in operations:
        strategies = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]
        if "{name}" in operation.path:
            pinned = {"name": MODEL, **({"version": "1"} if "{version}" in operation.path else {})}
            strategies += [
                operation.as_strategy(generation_mode=mode, path_parameters=pinned) for mode in GenerationMode
            ]

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call_and_validate(base_url=url, checks=[not_a_server_error])
            calls.append(f"{case.method} {case.formatted_path} → {response.status_code}")

        call()
    assert len(calls) >= len(operations) * EXAMPLES_PER_OPERATION // 2, "too few requests were generated"
    reached = [line for line in calls if "/infer → 400" in line or "/infer → 200" in line]
    assert reached, "no generated request reached the tensor parser"
