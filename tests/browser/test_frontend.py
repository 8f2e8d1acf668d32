"""A frontend in a real browser: a page served from `http://localhost:3000` signs up with
the Auth emulator, creates its profile in Firestore, and calls every user endpoint of
the local stack cross-origin (tests/browser/page/app.js). Chromium itself enforces CORS:
preflights, which response headers a page may read, and what another origin gets."""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devtools.manifest import ROOT, load
from devtools.stack import Stack
from tests.browser.cdp import Chromium
from tests.browser.conftest import PREFERRED_PORT, PageServer, opened, page_config

# Every call the page makes, and the status the contract gives it for a new user.
EXPECTED: dict[str, int] = {
    "auth.signUp": 200,
    "auth.signIn": 200,
    "firestore.createProfile": 200,
    "firestore.readProfile": 200,
    "tokenUsage.get": 200,
    "tokenUsage.noToken": 401,
    "tokenUsage.wrongMethod": 405,
    "tokenUsage.badPeriod": 400,
    "openaiAssistants.create": 201,
    "openaiAssistants.createInvalid": 400,
    "openaiAssistants.list": 200,
    "openaiAssistants.get": 200,
    "openaiAssistants.getMissing": 404,
    "openaiAssistants.patch": 200,
    "openaiAssistants.scrape": 200,
    "assistants.list": 200,
    "assistants.badPageSize": 400,
    "realtimeCalls.start": 201,
    "realtimeCalls.startSecond": 201,
    "realtimeCalls.startThird": 429,  # at most two calls at once
    "realtimeCalls.startInvalid": 400,
    "realtimeCalls.list": 200,
    "realtimeCalls.get": 200,
    "realtimeCalls.transcript": 200,
    "realtimeCalls.hangUp": 200,
    "realtimeCalls.hangUpSecond": 200,
    "realtimeCalls.getMissing": 404,
    "billing.invoices": 200,
    "billing.invoiceMissing": 404,
    "billing.rateCards": 200,
    "billing.addRateCard": 403,  # needs the admin claim
    "billing.margin": 403,  # needs the admin claim
    "billing.setupIntent": 201,
    "billing.subscription": 200,
    "billing.subscribe": 400,  # FAILED_PRECONDITION: no card yet
    "billing.cancel": 404,  # no subscription
    "openaiAssistants.delete": 204,
    "openaiAssistants.getDeleted": 404,
}
ERROR_STATUS = {400: {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"}, 401: {"UNAUTHENTICATED"},
                403: {"PERMISSION_DENIED"}, 404: {"NOT_FOUND"}, 405: {"METHOD_NOT_ALLOWED"},
                429: {"RESOURCE_EXHAUSTED"}}


@pytest.fixture(scope="module")
def results(browser: Chromium, page_server: PageServer, browser_stack: Stack) -> dict[str, Any]:
    """One run of the page's whole script; each test reads its part of `window.results`."""
    if page_server.port != PREFERRED_PORT:
        warnings.warn(f"port {PREFERRED_PORT} is busy: the page is served from {page_server.origin} "
                      "(added to the stack's allowed origins)", stacklevel=1)
    with opened(browser, page_server.url("index.html")) as page:
        started = time.monotonic()
        try:
            page.evaluate(f"runAll({json.dumps(page_config(browser_stack, page_server))})", timeout=90)
        finally:
            found: dict[str, Any] = page.evaluate("window.results") or {}
        found["_seconds"] = time.monotonic() - started
        found["_console"] = page.console
        return found


def _entry(results: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in results, f"the page never made {name}; console: {results.get('_console')}"
    entry: dict[str, Any] = results[name]
    assert "error" not in entry, f"{name}: fetch rejected in the browser ({entry['error']}): {entry['url']}"
    return entry


def _error(entry: dict[str, Any]) -> dict[str, Any]:
    """The contract's error body, read by the page: {"error": {code, status, message[, details]}}."""
    body = entry.get("body")
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error shape: {entry}"
    error: dict[str, Any] = body["error"]
    assert error["code"] == entry["status"], error
    assert error["status"] in ERROR_STATUS[entry["status"]], error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def test_the_page_signs_up_and_in_with_the_auth_emulator(results: dict[str, Any]) -> None:
    sign_up, sign_in = _entry(results, "auth.signUp"), _entry(results, "auth.signIn")

    assert sign_up["status"] == 200 and sign_in["status"] == 200, (sign_up, sign_in)
    assert sign_in["body"]["localId"] == sign_up["body"]["localId"] == results["uid"]
    assert sign_in["body"]["idToken"]


def test_the_page_creates_its_own_profile_under_the_rules(results: dict[str, Any]) -> None:
    created = _entry(results, "firestore.createProfile")

    assert created["status"] == 200, created
    assert created["body"]["name"].endswith(f"/documents/users/{results['uid']}")
    assert _entry(results, "firestore.readProfile")["body"]["fields"]["displayName"] == {"stringValue": "Browser Test"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_call_answers_the_browser_readably(results: dict[str, Any], name: str) -> None:
    entry = _entry(results, name)

    assert entry["status"] == EXPECTED[name], f"{name}: {entry}"
    if name.startswith(("auth.", "firestore.")):
        return
    if entry["status"] == 204:
        assert entry["body"] is None
    elif entry["status"] < 300:
        assert entry["headers"]["content-type"] == "application/json", entry
        assert isinstance(entry["body"], dict), entry
    else:
        _error(entry)


def user_apis() -> dict[str, Any]:
    """Every HTTP function whose Api browsers may call (CORS on), by function name."""
    functions_dir = str(ROOT / "functions")
    if functions_dir not in sys.path:
        sys.path.insert(0, functions_dir)  # as the deployed source folder is laid out
    apis = {}
    for fn in load().functions:
        if fn.trigger == "http":
            api = importlib.import_module(f"entrypoints.{fn.entry_point}").api
            if api.cors:
                apis[fn.name] = api
    return apis


def test_the_page_calls_every_route_of_every_user_api(results: dict[str, Any], browser_stack: Stack) -> None:
    """A route added to a user API fails here until the page calls it."""
    answered = [(e["method"], urlsplit(e["url"]).path) for e in results.values()
                if isinstance(e, dict) and "status" in e and "method" in e]
    made = {name for name, e in results.items() if isinstance(e, dict) and "method" in e}
    assert made == {*EXPECTED, "openaiAssistants.wrongMethod"}, "every call the page makes has its expected status"
    apis = user_apis()
    assert set(apis) == {"token-usage", "openai-assistants", "assistants", "realtime-calls", "billing"}
    missing = []
    for name, api in apis.items():
        prefix = urlsplit(browser_stack.function_url(name)).path
        paths = [(m, p.removeprefix(prefix) or "/") for m, p in answered if p == prefix or p.startswith(prefix + "/")]
        missing += [f"{route.method} {name} {route.pattern.pattern}" for route in api._routes
                    if not any(m == route.method and route.pattern.match(p) for m, p in paths)]
    assert not missing, f"routes the page never called: {missing}"


def test_what_the_page_reads_back(results: dict[str, Any]) -> None:
    uid = results["uid"]
    assert _entry(results, "tokenUsage.get")["body"]["userId"] == uid

    created = _entry(results, "openaiAssistants.create")["body"]
    listed = _entry(results, "openaiAssistants.list")["body"]["assistants"]
    assert [a["id"] for a in listed] == [created["id"]]
    assert _entry(results, "openaiAssistants.get")["body"]["id"] == created["id"]
    assert _entry(results, "openaiAssistants.patch")["body"]["name"] == "Front desk (browser)"
    scraped = _entry(results, "openaiAssistants.scrape")["body"]
    assert "Opening hours" in scraped.get("scrapedContent", ""), scraped
    assert [a["id"] for a in _entry(results, "assistants.list")["body"]["assistants"]] == [created["id"]]

    assert _entry(results, "billing.setupIntent")["body"]["clientSecret"]
    assert _entry(results, "billing.subscription")["body"]["isSubscribed"] is False
    assert _entry(results, "billing.rateCards")["body"]["rateCards"]


def test_a_call_starts_from_the_browsers_own_webrtc_offer(results: dict[str, Any]) -> None:
    offer = results["offer"]["sdp"]
    assert offer.startswith("v=0") and "\nm=audio" in offer and "webrtc-datachannel" in offer

    started = _entry(results, "realtimeCalls.start")
    call_id = started["body"]["callId"]
    assert started["headers"]["location"] == f"/{call_id}", "Location is exposed to the page"
    assert results["answer"] == {"accepted": True, "signalingState": "stable"}, "the answer SDP fits the offer"
    assert call_id in [c["callId"] for c in _entry(results, "realtimeCalls.list")["body"]["calls"]]
    assert _entry(results, "realtimeCalls.get")["body"]["status"] == "active"
    assert _entry(results, "realtimeCalls.hangUp")["body"]["status"] == "ended"


def test_headers_the_api_exposes_are_readable_on_errors(results: dict[str, Any]) -> None:
    limited = _entry(results, "realtimeCalls.startThird")
    assert int(limited["headers"]["retry-after"]) > 0, limited

    wrong = _entry(results, "tokenUsage.wrongMethod")
    assert _error(wrong)["status"] == "METHOD_NOT_ALLOWED"
    assert wrong["headers"]["allow"] == "GET", wrong

    invalid = _error(_entry(results, "openaiAssistants.createInvalid"))
    assert invalid["details"] == [{"field": "name", "description": "must not be empty"}]


def test_a_method_the_route_lacks_is_stopped_at_the_preflight(
        results: dict[str, Any], browser_stack: Stack, page_server: PageServer) -> None:
    """A PUT with a token needs a preflight; the preflight names only the route's methods, so
    the browser never sends it (and the page cannot read the 405 it would get)."""
    put = results["openaiAssistants.wrongMethod"]
    assert "status" not in put and put["error"].startswith("TypeError"), put

    preflight = requests.options(put["url"], timeout=10, headers={
        "Origin": page_server.origin, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == page_server.origin
    assert "PUT" not in preflight.headers["Access-Control-Allow-Methods"].split(", ")


def test_the_page_runs_quickly(results: dict[str, Any]) -> None:
    assert results["_seconds"] < 30, f"the page took {results['_seconds']:.1f} s"
    assert not [line for line in results["_console"] if line.startswith("uncaught")], results["_console"]


def test_a_page_from_an_origin_not_allowed_is_blocked_by_the_browser(
        browser: Chromium, other_origin_server: PageServer, page_server: PageServer, browser_stack: Stack) -> None:
    config = page_config(browser_stack, page_server, token="not-read-anyway")
    with opened(browser, other_origin_server.url("index.html")) as page:
        probed: dict[str, Any] = page.evaluate(f"probe({json.dumps(config)})", timeout=30)

    assert set(probed) == {"blocked.withToken", "blocked.simpleGet", "blocked.post"}
    for name, entry in probed.items():
        assert "status" not in entry and entry["error"].startswith("TypeError"), f"{name} was not blocked: {entry}"
    # The API is up and answers that origin; it is the browser that withholds the answer.
    plain = requests.get(f"{browser_stack.function_url('billing')}/rate-cards",
                         headers={"Origin": other_origin_server.origin}, timeout=10)
    assert plain.status_code == 401 and "Access-Control-Allow-Origin" not in plain.headers
