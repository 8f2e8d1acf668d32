"""vapi webhook: each credential scheme, and reading reports (fixtures from vapi's schema) within bounds."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.config import Settings
from simplytalk.errors import InvalidInput, Unauthenticated
from simplytalk.services.vapi import (
    MAX_BREAKDOWN_ENTRIES,
    EndOfCallReport,
    Limits,
    WebhookAuth,
    assess,
    authenticate,
    body_call_id,
    flat_breakdown,
    hmac_signature,
    parse_body,
)
from simplytalk.validation import parse_model

FIXTURES = Path(__file__).parent.parent / "fixtures" / "vapi"
NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
AUTH = WebhookAuth(bearer_token="tok-bearer", hmac_secret="hmac-secret", legacy_secret="legacy-secret",
                   tolerance_seconds=300)
BODY = (FIXTURES / "call-level.json").read_bytes()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def report(raw: bytes) -> EndOfCallReport:
    return parse_model(EndOfCallReport, parse_body(raw)["message"])


def signed(body: bytes = BODY, at: dt.datetime = NOW, secret: str = "hmac-secret", millis: bool = False,
           prefix: str = "") -> dict[str, str]:
    timestamp = str(int(at.timestamp() * 1000)) if millis else str(int(at.timestamp()))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"x-signature": prefix + digest, "x-timestamp": timestamp, "Content-Type": "application/json"}


# -- authentication ---------------------------------------------------------------------

def test_the_signature_is_vapis_default_hmac() -> None:
    # sha256, hex, over "{timestamp}.{body}": an independent computation gives the same
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert hmac_signature("k", "1700000000", b"{}") == expected


@pytest.mark.parametrize("headers", [
    signed(), signed(millis=True), signed(prefix="sha256="),
    {k.upper(): v for k, v in signed().items()},  # header names are case-insensitive
    signed(at=NOW - dt.timedelta(seconds=299)), signed(at=NOW + dt.timedelta(seconds=299)),
])
def test_a_good_hmac_signature_passes(headers: dict[str, str]) -> None:
    assert authenticate(headers, BODY, AUTH, NOW) == "hmac"


@pytest.mark.parametrize(("headers", "why"), [
    (signed(secret="other"), "does not match"),
    (signed(body=BODY + b" "), "does not match"),  # the raw bytes are signed, not the parsed JSON
    ({**signed(), "x-signature": signed()["x-signature"][:-1]}, "does not match"),
    ({**signed(), "x-signature": ""}, "does not match"),
    (signed(at=NOW - dt.timedelta(seconds=301)), "away from now"),  # stale: a replay
    (signed(at=NOW + dt.timedelta(seconds=301)), "away from now"),  # from the future
    (signed(at=NOW - dt.timedelta(days=400), millis=True), "away from now"),
    ({"x-signature": signed()["x-signature"]}, "missing"),
    ({**signed(), "x-timestamp": "yesterday"}, "not a Unix time"),
    ({**signed(), "x-timestamp": "-1700000000"}, "not a Unix time"),
    ({**signed(), "x-timestamp": "9" * 40}, "not a Unix time"),
    ({**signed(), "x-signature": "\u00e9" * 64}, "does not match"),
])
def test_a_bad_stale_or_future_signature_is_refused(headers: dict[str, str], why: str) -> None:
    with pytest.raises(Unauthenticated, match=why):
        authenticate(headers, BODY, AUTH, NOW)


@pytest.mark.parametrize("value", ["Bearer tok-bearer", "bearer tok-bearer", "Bearer  tok-bearer "])
def test_a_bearer_token_passes(value: str) -> None:
    assert authenticate({"Authorization": value}, BODY, AUTH, NOW) == "bearer"


@pytest.mark.parametrize("value", ["Bearer tok-bearerx", "Bearer", "tok-bearer", "Basic tok-bearer", "Bearer tok"])
def test_a_bad_bearer_token_is_refused(value: str) -> None:
    with pytest.raises(Unauthenticated, match="bearer"):
        authenticate({"Authorization": value}, BODY, AUTH, NOW)


def test_the_legacy_secret_passes_and_a_wrong_one_does_not() -> None:
    assert authenticate({"x-vapi-secret": "legacy-secret"}, BODY, AUTH, NOW) == "legacy"
    for wrong in ("", "legacy-secretx", "legacy"):
        with pytest.raises(Unauthenticated, match="x-vapi-secret"):
            authenticate({"x-vapi-secret": wrong}, BODY, AUTH, NOW)


def test_one_passing_scheme_is_enough() -> None:
    headers = {**signed(secret="other"), "Authorization": "Bearer wrong", "x-vapi-secret": "legacy-secret"}
    assert authenticate(headers, BODY, AUTH, NOW) == "legacy"


def test_no_credential_at_all_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="no vapi credential"):
        authenticate({"Content-Type": "application/json"}, BODY, AUTH, NOW)


def test_a_scheme_not_configured_is_not_accepted() -> None:
    only_hmac = WebhookAuth(hmac_secret="hmac-secret")
    with pytest.raises(Unauthenticated):
        authenticate({"Authorization": "Bearer tok-bearer", "x-vapi-secret": "legacy-secret"}, BODY, only_hmac, NOW)
    assert authenticate(signed(), BODY, only_hmac, NOW) == "hmac"
    only_bearer = WebhookAuth(bearer_token="tok-bearer")
    with pytest.raises(Unauthenticated):
        authenticate(signed(), BODY, only_bearer, NOW)


def test_nothing_configured_fails_closed() -> None:
    for headers in (signed(), {"Authorization": "Bearer "}, {"x-vapi-secret": ""}, {}):
        with pytest.raises(Unauthenticated, match="not configured"):
            authenticate(headers, BODY, WebhookAuth(), NOW)


def test_the_tolerance_is_a_setting() -> None:
    tight = WebhookAuth(hmac_secret="hmac-secret", tolerance_seconds=10)
    with pytest.raises(Unauthenticated):
        authenticate(signed(at=NOW - dt.timedelta(seconds=11)), BODY, tight, NOW)


def test_settings_from_the_environment() -> None:
    local = WebhookAuth.from_settings(Settings.from_env({}))
    assert local == WebhookAuth("local-vapi-bearer", "local-vapi-hmac", "local-vapi-secret", 300)
    prod = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "simplytalk-prod", "VAPI_WEBHOOK_HMAC_SECRET": "h",
                              "VAPI_WEBHOOK_TOLERANCE_SECONDS": "60", "SIMPLYTALK_VAPI_MAX_CALL_SECONDS": "600"})
    assert WebhookAuth.from_settings(prod) == WebhookAuth(None, "h", None, 60)
    assert prod.vapi_max_call_seconds == 600 and Settings.from_env({}).vapi_max_call_seconds == 43200
    assert not WebhookAuth.from_settings(Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"})).configured


# -- reading reports ----------------------------------------------------------------------

def test_call_level_times_cost_and_breakdown_are_read() -> None:
    r = report(fixture("call-level.json"))

    assert r.started == dt.datetime(2026, 11, 3, 10, 0, tzinfo=dt.UTC)
    assert assess(r, NOW, Limits()) == (Decimal("90.5"), None)
    assert r.assistant_id() == "vapi-asst-1"
    assert r._pick("cost") == Decimal("0.1484")
    breakdown = flat_breakdown(r._pick("cost_breakdown"))
    assert breakdown is not None
    assert breakdown["total"] == 0.1484 and breakdown["analysisCostBreakdown.summary"] == 0.0011
    assert len(breakdown) == 27


def test_message_level_fields_come_first() -> None:
    raw = json.loads(fixture("call-level.json"))
    raw["message"].update(startedAt="2026-11-03T10:00:00Z", endedAt="2026-11-03T10:00:10Z", cost=1,
                          costBreakdown={"total": 1})
    r = report(json.dumps(raw).encode())

    assert assess(r, NOW, Limits())[0] == 10
    assert r._pick("cost") == 1 and flat_breakdown(r._pick("cost_breakdown")) == {"total": 1.0}
    assert assess(report(fixture("message-level.json")), NOW, Limits()) == (Decimal("120.25"), None)


def test_a_fractional_duration_is_exact() -> None:
    seconds, reason = assess(report(fixture("fractional-duration.json")), NOW, Limits())

    assert (seconds, reason) == (Decimal("90.50025"), None)
    assert float(seconds) == 90.50025


def test_a_duration_on_call_is_read_when_the_message_has_none() -> None:
    raw = json.loads(fixture("fractional-duration.json"))
    message = raw["message"]
    message["call"]["durationMs"] = message.pop("durationMs")
    del message["durationSeconds"]

    assert assess(report(json.dumps(raw).encode()), NOW, Limits())[0] == Decimal("90.50025")


def test_a_report_without_call_names_its_assistant_and_gets_a_body_id() -> None:
    raw = fixture("no-call.json")
    r = report(raw)

    assert r.call is None and r.assistant_id() == "vapi-asst-1"
    assert assess(r, NOW, Limits()) == (Decimal(45), None)
    assert body_call_id(raw) == body_call_id(bytes(raw)) != body_call_id(raw + b" ")
    assert body_call_id(raw) == "body-" + hashlib.sha256(raw).hexdigest()
    assert report(fixture("no-call-no-assistant.json")).assistant_id() is None


@pytest.mark.parametrize(("name", "reason"), [
    ("absurd.json", "time-in-future"),
    ("absurd-duration.json", "call-too-long"),
])
def test_absurd_reports_are_set_aside(name: str, reason: str) -> None:
    assert assess(report(fixture(name)), NOW, Limits())[1] == reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"startedAt": "2019-12-31T23:59:00Z", "endedAt": "2020-01-01T00:01:00Z"}, "time-before-floor"),
    ({"startedAt": "2026-11-26T12:00:00Z", "endedAt": "2026-11-26T12:06:00Z"}, "time-in-future"),
    ({"startedAt": "2026-11-03T10:00:00Z", "endedAt": "2026-11-03T09:00:00Z"}, "ended-before-started"),
    ({"startedAt": "2026-11-03T00:00:00Z", "endedAt": "2026-11-03T12:00:00.001Z"}, "call-too-long"),
    ({"startedAt": "2026-11-03T00:00:00Z", "endedAt": "2026-11-03T12:00:00Z"}, None),  # vapi's maximum
    ({"startedAt": "2026-11-26T11:59:00Z", "endedAt": "2026-11-26T12:04:59Z"}, None),  # within the skew
])
def test_time_and_length_bounds(change: dict[str, str], reason: str | None) -> None:
    raw = json.loads(fixture("call-level.json"))
    raw["message"]["call"].update(change)

    assert assess(report(json.dumps(raw).encode()), NOW, Limits())[1] == reason


def test_the_length_cap_is_a_setting() -> None:
    r = report(fixture("call-level.json"))
    assert assess(r, NOW, Limits(max_call_seconds=90))[1] == "call-too-long"
    assert assess(r, NOW, Limits(max_call_seconds=91))[1] is None


def test_stored_fields_are_cut_to_size() -> None:
    raw = json.loads(fixture("oversized-fields.json"))
    raw["message"]["endedReason"] = "x" * 1_000_000
    r = report(json.dumps(raw).encode())

    assert r._pick("ended_reason") == "x" * 500
    assert flat_breakdown(r._pick("cost_breakdown")) == {"total": 0.03, "tts": 0.01, "stt": 39.0,
                                                         "level39.stt": 38.0}


def test_the_breakdown_keeps_only_short_flat_figures() -> None:
    value: dict[str, Any] = {f"k{i}": i for i in range(100)}
    assert len(flat_breakdown(value) or {}) == MAX_BREAKDOWN_ENTRIES
    assert flat_breakdown({"a": "x" * 65, "b": "ok", "c": True, "d": [1], "e": None, "__f__": 1, "g.h": 1,
                           "i": Decimal("1e13"), "j": float("inf"), "k": Decimal("NaN"), "l": -0.5,
                           "m": {"n": {"o": 1}, "p": 2}}) == {"b": "ok", "l": -0.5, "m.p": 2.0}
    assert flat_breakdown([1, 2]) is None and flat_breakdown(None) is None


@pytest.mark.parametrize("message", [
    {"type": "end-of-call-report"},  # nothing to measure the call by
    {"type": "end-of-call-report", "call": {"id": "c"}},
])
def test_a_report_with_no_length_is_invalid(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        assess(parse_model(EndOfCallReport, message), NOW, Limits())


@pytest.mark.parametrize("message", [
    {"type": "end-of-call-report", "call": "c"},
    {"type": "end-of-call-report", "call": {"id": "a/b"}},
    {"type": "end-of-call-report", "call": {"id": ""}},
    {"type": "end-of-call-report", "durationMs": -1},
    {"type": "end-of-call-report", "durationMs": "lots"},
    {"type": "end-of-call-report", "durationSeconds": float("inf")},
    {"type": "end-of-call-report", "endedAt": "2026-11-03T10:05:00"},  # no time zone
    {"type": "end-of-call-report", "endedAt": "9999-12-31T23:00:00-05:00"},  # past year 9999 in UTC
    {"type": "end-of-call-report", "endedReason": 5},
    {"type": "end-of-call-report", "assistant": "a"},
])
def test_bad_shapes_are_invalid(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        parse_model(EndOfCallReport, message)


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"\xff", b"[" * 100_000 + b"]" * 100_000, b"1" * 5000])
def test_bodies_that_are_not_json_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_body(raw)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=30)
FIELDS = st.sampled_from(["startedAt", "endedAt", "durationMs", "durationSeconds", "cost", "costBreakdown",
                          "endedReason", "call", "assistant", "id", "assistantId"])
MESSAGE = st.dictionaries(FIELDS, JSON | st.datetimes(timezones=st.just(dt.UTC)).map(lambda t: t.isoformat())
                          | st.dictionaries(FIELDS, JSON, max_size=6), max_size=8)


@given(MESSAGE)
def test_any_message_is_read_or_refused_as_invalid(message: dict[str, Any]) -> None:
    """Whatever vapi sends: a report that is assessed, or a 400; never another exception (a 500)."""
    try:
        r = parse_model(EndOfCallReport, {**message, "type": "end-of-call-report"})
        assess(r, NOW, Limits())
    except InvalidInput:
        return
    breakdown = flat_breakdown(r._pick("cost_breakdown"))
    assert breakdown is None or len(breakdown) <= MAX_BREAKDOWN_ENTRIES
    assert r._pick("ended_reason") is None or len(r._pick("ended_reason")) <= 500


def test_numbers_past_decimals_range_are_set_aside_or_dropped_never_raised() -> None:
    raw = json.loads(fixture("no-call.json"))
    raw["message"].pop("startedAt", None)
    raw["message"].pop("endedAt", None)
    body = json.dumps(raw).replace("{", '{"durationMs": 1e999999999, ', 2).encode()
    body = body.replace(b'"costBreakdown": {', b'"costBreakdown": {"huge": 1e999999999, ', 1)

    r = report(body)

    assert assess(r, NOW, Limits())[1] == "call-too-long"
    assert "huge" not in (flat_breakdown({"huge": Decimal("1e999999999"), "stt": Decimal("0.01")}) or {})
