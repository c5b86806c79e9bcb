"""Schema fuzzing: schemathesis drives every route of the running server's /openapi.json with valid and
invalid requests; no answer is a 5xx and every answer matches the document (status, content type,
headers, body schema)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serve.app import routes
from serve.service import Service
from serve.settings import Settings
from tests.conftest import MODEL_DIR, Server

# Per operation and phase; ~2,000 requests in all, about half a minute.
EXAMPLES = 40
# An over-limit body or batch is refused with 413, which schemathesis does not count as a refusal by default.
REFUSALS = ["400", "401", "404", "405", "413", "415", "422"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
# positive_data_acceptance is left out on purpose: a schema cannot say that V2 'data' must hold
# prod(shape) values, nor that the MLP overflows to no finite prediction on inputs near 3e38 (a 422).

calls: Counter[str] = Counter()


def served_document() -> dict[str, Any]:
    """The OpenAPI document exactly as the service builds it at start-up (the server's own is checked
    to be the same below). Parametrizing needs it at collection time: schemathesis' lazy fixture-based
    loader uses a pytest internal that pytest 9 no longer has."""
    service = Service(Settings(model_dir=MODEL_DIR, access_log="off"))
    asyncio.run(service.start())
    return orjson.loads(service.openapi)  # type: ignore[no-any-return]


DOCUMENT = served_document()
# Unload would take models away from the other operations' cases; its inputs are the load's, which is fuzzed.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "generation": {"mode": "all"},
    "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
})).exclude(path_regex="/unload$")


@pytest.fixture(scope="module")
def fuzzed_server(server: Server) -> Iterator[Server]:
    yield server
    print(f"\nschema fuzz: {sum(calls.values())} requests over {len(calls)} operations")


def test_the_running_server_serves_the_fuzzed_document(server: Server) -> None:
    assert httpx.get(server.url + "/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_documented_route_answers_as_documented_and_never_5xx(case: Case[Any], fuzzed_server: Server) -> None:
    calls[case.operation.label] += 1
    case.call_and_validate(base_url=fuzzed_server.url, checks=CHECKS, timeout=30)


def test_the_document_lists_every_route_the_server_has(server: Server) -> None:
    documented = set(httpx.get(server.url + "/openapi.json").json()["paths"])
    for route in routes:
        if route.path.startswith("/models/{model}/") and route.path.endswith(("/predict", "/explain")):  # one per model
            for name in ("linear", "mlp"):
                assert route.path.replace("{model}", name) in documented
        else:
            assert route.path in documented, f"{route.path} is served but not documented"
