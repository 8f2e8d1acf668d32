"""openapi.json is what the code says, and says enough (the fuzz test checks the running API against it)."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from simplytalk.api_models import Error, ErrorStatus
from simplytalk.errors import ApiError, FieldViolation, InvalidInput, MethodNotAllowed
from simplytalk.http import ERROR_STATUS, INTERNAL, error_response

from devtools import openapi
from devtools.manifest import ROOT, load


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build()


def test_the_committed_document_is_what_the_code_says(document: dict[str, Any]) -> None:
    committed = (ROOT / "openapi.json").read_text() if (ROOT / "openapi.json").exists() else ""
    assert committed == openapi.render(document), (
        "openapi.json is out of date with the routes or their models: "
        "run `.venv/bin/python -m devtools.openapi` and commit openapi.json")


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_every_http_function_and_route_is_in_the_document(document: dict[str, Any]) -> None:
    routes = {(route.method.lower(), openapi._openapi_path(fn.name, route.path))
              for fn, api in openapi.http_apis() for route in api.routes}
    documented = {(method, path) for method, path, _ in _operations(document)}
    assert documented == routes
    assert {t["name"] for t in document["tags"]} == {f.name for f in load().by_trigger("http")}
    for method, path, op in _operations(document):
        assert op.get("summary"), f"{method} {path}: no summary"
        assert path.startswith("/" + op["tags"][0]), path


def test_every_operation_documents_its_errors_in_the_shared_shape(document: dict[str, Any]) -> None:
    error_ref = {"$ref": "#/components/schemas/Error"}
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == error_ref, name
    for method, path, op in _operations(document):
        responses = op["responses"]
        assert "default" in responses, f"{method} {path}"
        errors = [code for code in responses if code == "default" or int(code) >= 400]
        assert all(responses[c]["$ref"].startswith("#/components/responses/") for c in errors), f"{method} {path}"
        successes = [code for code in responses if code != "default" and int(code) < 400]
        assert len(successes) == 1, f"{method} {path}"
        if op.get("security") != []:  # a signed-in route, or a webhook with its own credential
            assert "401" in responses or "400" in responses, f"{method} {path}"


def test_security_firebase_tokens_except_webhooks_with_their_header_credentials(document: dict[str, Any]) -> None:
    assert document["security"] == [{"firebaseIdToken": []}]
    schemes = document["components"]["securitySchemes"]
    webhooks = {path: op for _, path, op in _operations(document) if "security" in op}
    assert set(webhooks) == {"/vapi-webhook", "/stripe-webhook"}
    for op in webhooks.values():
        assert op["security"], "a webhook names its credential"
        assert all(name in schemes for requirement in op["security"] for name in requirement)
    assert {schemes[n].get("name") for r in webhooks["/vapi-webhook"]["security"] for n in r} >= {
        "x-signature", "x-timestamp", "x-vapi-secret"}


def test_the_error_schema_is_what_error_response_writes() -> None:
    assert {status for _, status in [*ERROR_STATUS.values(), INTERNAL]} <= set(get_args(ErrorStatus))
    cases: list[ApiError] = [cls("no") for cls in ERROR_STATUS if cls is not MethodNotAllowed]
    cases += [MethodNotAllowed("no", ["GET"]), ApiError("internal"),
              InvalidInput("bad", [FieldViolation("name", "must not be empty")])]
    for exc in cases:
        body, code, _ = error_response(exc)
        parsed = Error.model_validate_json(body)
        assert parsed.error.code == code
        assert json.loads(body) == parsed.model_dump(mode="json", by_alias=True)


def test_schemathesis_reads_every_operation(document: dict[str, Any]) -> None:
    import schemathesis
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), [r for r in results if not isinstance(r, Ok)]
    assert len(results) == len(_operations(document))
