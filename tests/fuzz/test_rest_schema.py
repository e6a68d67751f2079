"""schemathesis against a real server on the example store, driven by the app's own OpenAPI document:
every generated request (valid, and invalid in every way the document allows to express) ends in a
2xx or a 4xx with a V2 error body, never a 5xx."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from helpers.fuzzing import EXAMPLE_STORE, FUZZ, examples
from helpers.server import RunningServer

MODELS = sorted(p.name for p in EXAMPLE_STORE.iterdir() if p.is_dir())


def _example_document(base: str) -> dict[str, Any]:
    document = httpx.get(f"{base}/openapi.json", timeout=10).json()
    # Name the example models, so requests reach decoding and the models rather than a 404 for a
    # random name (unknown names are covered by the tests of the metadata endpoints).
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": MODELS}
                if parameter["in"] == "path" and parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": ["1", "2", "0", "x"]}
    return document


def _v2_error_body(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (
            f"{response.status_code} without a V2 error body: {response.text[:200]}"
        )
    return True


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_request_earns_a_server_error(example_server: RunningServer, mode: GenerationMode) -> None:
    base = f"http://{example_server.http_url}"
    schema = schemathesis.openapi.from_dict(_example_document(base))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path.endswith("/infer") for op in operations)
    if mode is GenerationMode.NEGATIVE:  # an operation without parameters or body has nothing to get wrong
        operations = [op for op in operations if {"parameters", "requestBody"} & set(op.definition.raw)]
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=examples(25), parent=FUZZ)
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=base, timeout=30)
            statuses[response.status_code] += 1
            case.validate_response(
                response,
                checks=[not_a_server_error, response_schema_conformance],
                additional_checks=[_v2_error_body],
            )

        call()
    print(f"schemathesis {mode.value}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
