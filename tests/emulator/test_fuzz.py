"""Fuzzing the running API from its OpenAPI document (schemathesis), on the local stack.

The document is the committed openapi.json (a unit test keeps it equal to the code; the host
serves it at `/openapi.json`, checked here too). Every operation gets generated requests, valid ones and invalid
ones, from a fresh Auth-emulator user with a real ID token (the webhooks get no credential:
everything they answer must be a 4xx). Each answer must be no 5xx, documented (status,
content type, headers, body against its schema), and every error in the contract's shape.

Bounded in `make test` (SIMPLYTALK_FUZZ_EXAMPLES, default 6 generated cases an operation after
schemathesis's deterministic coverage cases, derandomized: the same cases every run); `make fuzz`
runs the same with many more, new ones each run (SIMPLYTALK_FUZZ_RANDOM=1).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from simplytalk.api_models import Error

from devtools.emulator_auth import AuthUser, sign_up
from devtools.manifest import ROOT
from devtools.stack import Stack

pytestmark = pytest.mark.emulator

EXAMPLES = int(os.environ.get("SIMPLYTALK_FUZZ_EXAMPLES", "6"))
RANDOM = os.environ.get("SIMPLYTALK_FUZZ_RANDOM") == "1"  # `make fuzz`: new cases each run; else the same ones
WEBHOOKS = ("/vapi-webhook", "/stripe-webhook")
# per documented operation, the statuses of the requests sent (undocumented methods included)
STATUSES: dict[str, Counter[int]] = {}


@schemathesis.check
def error_in_contract_shape(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                            case: schemathesis.Case) -> bool | None:
    """Every 4xx and 5xx is Google's JSON error shape, its `code` the HTTP status."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"an error with Content-Type {content_type!r}"
    error = Error.model_validate_json(response.content).error
    assert error.code == response.status_code, f"error.code {error.code} on an HTTP {response.status_code}"
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, error_in_contract_shape]


@pytest.fixture(scope="module")
def fuzz_user(stack: Stack) -> AuthUser:
    return sign_up(stack.auth_host, f"fuzz-{time.time_ns()}@example.com")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture
def own_assistant(stack: Stack, fuzz_user: AuthUser, session: requests.Session) -> Callable[[], str]:
    """An assistant of the fuzz user, made on first use (in this operation's clean Firestore), so
    every other case of an `{assistantId}` operation reaches past the 404 with its fuzzed input."""
    made: list[str] = []

    def get() -> str:
        if not made:
            created = session.post(f"{base_url(stack)}/openai-assistants", json={"name": "Fuzz target"},
                                   headers=fuzz_user.headers, timeout=30)
            assert created.status_code == 201, created.text
            made.append(created.json()["id"])
        return made[0]

    return get


DOCUMENT = ROOT / "openapi.json"
fuzzed = schemathesis.openapi.from_path(DOCUMENT)
fuzzed.config.generation.update(max_examples=EXAMPLES)


def base_url(stack: Stack) -> str:
    return f"{stack.functions_url}/{stack.project}/{stack.manifest.region}"


def test_the_host_serves_the_document_with_itself_as_server(stack: Stack, session: requests.Session) -> None:
    served = session.get(f"{stack.functions_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    document = served.json()
    assert document["servers"][0]["url"] == base_url(stack)
    committed = json.loads(DOCUMENT.read_text())
    assert {**document, "servers": committed["servers"]} == committed


def offline(case: schemathesis.Case) -> None:
    """Scraped URLs name a host under `.invalid` (reserved, never resolves): an assistant the fuzzer
    creates has its pages fetched by the trigger, and that must not reach the internet."""
    body = case.body
    urls = body.get("scrapedUrls") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(urls, list):
        body["scrapedUrls"] = [re.sub(r"^(https?://)[^/:?#]*", r"\1fuzz.invalid", url) if isinstance(url, str) else url
                               for url in urls]


@pytest.mark.parametrize("path", ["/realtime-calls/a%0Ab", "/openai-assistants/%1B%0A", "/token-usage/favicon.ico",
                                  "/billing/robots.txt"])
def test_a_path_the_framework_does_not_route_gets_the_contracts_404(stack: Stack, fuzz_user: AuthUser,
                                                                    session: requests.Session, path: str) -> None:
    """Found by the fuzzer: a line break in an id, which the framework's routing never hands to a
    function, was Flask's HTML 404 page."""
    answer = session.get(base_url(stack) + path, headers=fuzz_user.headers, timeout=10)
    assert answer.status_code == 404
    assert answer.headers["Content-Type"].startswith("application/json")
    assert Error.model_validate_json(answer.content).error.status == "NOT_FOUND"


@fuzzed.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_answers_within_the_contract(case: schemathesis.Case, stack: Stack, fuzz_user: AuthUser,
                                                     session: requests.Session,
                                                     own_assistant: Callable[[], str]) -> None:
    sent = STATUSES.setdefault(case.operation.label, Counter()).total()
    if "assistantId" in (case.path_parameters or {}) and sent % 2 == 0:
        case.path_parameters["assistantId"] = own_assistant()
    offline(case)
    webhook = case.path in WEBHOOKS
    headers = {} if webhook else fuzz_user.headers
    response = case.call_and_validate(base_url=base_url(stack), headers=headers, session=session, checks=CHECKS,
                                      timeout=30)
    if webhook:
        assert 400 <= response.status_code < 500, f"{case.path} answered {response.status_code} with no credential"
    STATUSES[case.operation.label][response.status_code] += 1


def test_report_the_fuzz_case_count() -> None:
    """Runs after the fuzz test (same module): the number of requests, for the notes."""
    if STATUSES:
        overall = sum(STATUSES.values(), Counter())
        print(f"\nfuzz: {overall.total()} requests over {len(STATUSES)} operations ({EXAMPLES} generated an "
              f"operation), statuses {dict(sorted(overall.items()))}")
        for label, statuses in sorted(STATUSES.items()):
            print(f"  {label}: {statuses.total()} {dict(sorted(statuses.items()))}")
