"""vapi-webhook: end-of-call reports become usage events; a vapi credential guards it."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from simplytalk.services.aggregation import read_aggregate

from devtools.firestore_events import document_event
from devtools.stack import Stack
from tests.emulator.conftest import wait_for

# the demo defaults the local stack uses
SECRET = "local-vapi-secret"
BEARER = "local-vapi-bearer"
HMAC_SECRET = "local-vapi-hmac"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "vapi"


@pytest.fixture
def url(stack: Stack) -> str:
    return stack.function_url("vapi-webhook")


@pytest.fixture
def vapi_assistant(db: Any) -> str:
    db.collection("assistants").document("vapi-asst-1").set({"userId": "u-vapi", "name": "Phone"})
    return "vapi-asst-1"


def report(call_id: str, assistant_id: str, started: str = "2026-11-03T10:00:00.000Z",
           ended: str = "2026-11-03T10:01:30.500Z") -> dict[str, Any]:
    return {"message": {
        "type": "end-of-call-report", "endedReason": "customer-ended-call",
        "call": {"id": call_id, "assistantId": assistant_id, "orgId": "org-1"},
        "startedAt": started, "endedAt": ended, "durationSeconds": 90.5, "cost": 0.1234,
        "costBreakdown": {"stt": 0.01, "llm": 0.05, "tts": 0.03, "vapi": 0.0334, "total": 0.1234},
        "transcript": "AI: Hello\nUser: Hi", "summary": "short call", "artifact": {"messages": []},
    }}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def credentials(scheme: str, raw: bytes) -> dict[str, str]:
    if scheme == "hmac":
        timestamp = str(int(time.time()))
        digest = hmac.new(HMAC_SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
        return {"x-signature": digest, "x-timestamp": timestamp}
    if scheme == "bearer":
        return {"Authorization": f"Bearer {BEARER}"}
    return {"x-vapi-secret": SECRET}


def send(url: str, raw: bytes, scheme: str = "hmac", headers: dict[str, str] | None = None) -> requests.Response:
    """POST the exact bytes (an HMAC covers them), authenticated with `scheme`."""
    return requests.post(url, data=raw, timeout=30, headers={
        "Content-Type": "application/json", **credentials(scheme, raw), **(headers or {})})


def post(url: str, body: Any, secret: str | None = SECRET) -> requests.Response:
    headers = {"x-vapi-secret": secret} if secret is not None else {}
    return requests.post(url, json=body, headers=headers, timeout=10)


def doc(db: Any, collection: str, doc_id: str) -> dict[str, Any] | None:
    snap = db.collection(collection).document(doc_id).get()
    return snap.to_dict() if snap.exists else None


def test_an_end_of_call_report_becomes_usage_counted_once(url: str, db: Any, vapi_assistant: str) -> None:
    response = post(url, report("call-1", vapi_assistant))

    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "recorded"}
    event = db.collection("usageEvents").document("call-1").get().to_dict()
    assert event["userId"] == "u-vapi" and event["provider"] == "vapi"
    assert event["callSeconds"] == 90.5
    assert event["vapi"]["cost"] == "0.1234" and event["vapi"]["costBreakdown"]["total"] == 0.1234
    wait_for(lambda: read_aggregate(db, "u-vapi").totals.vapi_call_millis == 90_500)

    again = post(url, report("call-1", vapi_assistant, ended="2026-11-03T11:00:00Z"))

    assert again.json()["outcome"] == "duplicate"
    assert db.collection("usageEvents").document("call-1").get().to_dict()["callSeconds"] == 90.5
    assert read_aggregate(db, "u-vapi").totals.vapi_call_millis == 90_500


# -- each credential vapi can send ---------------------------------------------------------

@pytest.mark.parametrize("scheme", ["hmac", "bearer", "legacy"])
def test_call_level_fields_are_billed_with_each_credential(url: str, db: Any, vapi_assistant: str,
                                                           scheme: str) -> None:
    response = send(url, fixture("call-level.json"), scheme)

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "recorded"
    event = doc(db, "usageEvents", "call-level-1")
    assert event is not None
    assert event["userId"] == "u-vapi" and event["assistantId"] == vapi_assistant
    assert event["callSeconds"] == 90.5
    assert event["occurredAt"] == dt.datetime(2026, 11, 3, 10, 1, 30, 500000, tzinfo=dt.UTC)
    assert event["vapi"]["cost"] == "0.1484" and event["vapi"]["endedReason"] == "customer-ended-call"
    breakdown = event["vapi"]["costBreakdown"]
    assert breakdown["total"] == 0.1484 and breakdown["analysisCostBreakdown.summary"] == 0.0011
    wait_for(lambda: read_aggregate(db, "u-vapi").totals.vapi_call_millis == 90_500)
    assert read_aggregate(db, "u-vapi").periods["2026-11"].vapi_call_millis == 90_500


@pytest.mark.parametrize(("scheme", "headers"), [
    ("hmac", {"x-signature": "0" * 64}),
    ("hmac", {"x-timestamp": str(int(time.time()) - 3600)}),  # an hour-old timestamp
    ("bearer", {"Authorization": "Bearer nope"}),
    ("legacy", {"x-vapi-secret": "nope"}),
])
def test_a_bad_credential_is_401_and_stores_nothing(url: str, db: Any, vapi_assistant: str, scheme: str,
                                                    headers: dict[str, str]) -> None:
    response = send(url, fixture("call-level.json"), scheme, headers)

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert doc(db, "usageEvents", "call-level-1") is None


def test_a_stale_hmac_signature_is_refused(url: str, db: Any, vapi_assistant: str) -> None:
    raw = fixture("call-level.json")
    timestamp = str(int(time.time()) - 301)
    digest = hmac.new(HMAC_SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()

    response = requests.post(url, data=raw, timeout=10, headers={
        "Content-Type": "application/json", "x-signature": digest, "x-timestamp": timestamp})

    assert response.status_code == 401 and "x-timestamp" in response.json()["error"]["message"]


def test_a_signature_over_other_bytes_is_refused(url: str, vapi_assistant: str) -> None:
    raw = fixture("call-level.json")
    headers = credentials("hmac", raw)

    response = requests.post(url, data=raw.replace(b"90", b"99", 1), timeout=10, headers=headers)

    assert response.status_code == 401


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_a_bad_secret_is_401_and_stores_nothing(url: str, db: Any, vapi_assistant: str,
                                                secret: str | None) -> None:
    response = post(url, report("call-bad", vapi_assistant), secret)

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert not db.collection("usageEvents").document("call-bad").get().exists


# -- where vapi puts things --------------------------------------------------------------------

def test_message_level_times_are_billed(url: str, db: Any, vapi_assistant: str) -> None:
    assert send(url, fixture("message-level.json"), "bearer").json()["outcome"] == "recorded"

    event = doc(db, "usageEvents", "message-level-1")
    assert event is not None and event["callSeconds"] == 120.25
    assert event["vapi"]["costBreakdown"] == {"stt": 0.02, "llm": 0.09, "tts": 0.04, "vapi": 0.0511, "total": 0.2011}
    wait_for(lambda: read_aggregate(db, "u-vapi").totals.vapi_call_millis == 120_250)


def test_a_fractional_duration_is_exact(url: str, db: Any, vapi_assistant: str) -> None:
    assert send(url, fixture("fractional-duration.json")).json()["outcome"] == "recorded"

    event = doc(db, "usageEvents", "fractional-1")
    assert event is not None
    assert event["callSeconds"] == 90.50025  # 90500.25 ms, not truncated to an integer
    assert event["vapi"]["durationMs"] == "90500.25"
    # counters hold whole milliseconds: 90500.25 ms counts as 90500 (half-up, once)
    wait_for(lambda: read_aggregate(db, "u-vapi").totals.vapi_call_millis == 90_500)
    received = doc(db, "usageEvents", "fractional-1")
    assert received is not None and received["occurredAt"] == received["receivedAt"]  # no call times


def test_a_report_without_call_is_billed_to_its_assistant_once(url: str, db: Any, vapi_assistant: str) -> None:
    raw = fixture("no-call.json")
    event_id = "body-" + hashlib.sha256(raw).hexdigest()

    assert send(url, raw).json()["outcome"] == "recorded"
    assert send(url, raw, "legacy").json()["outcome"] == "duplicate"  # the same report again

    event = doc(db, "usageEvents", event_id)
    assert event is not None and event["userId"] == "u-vapi" and event["callSeconds"] == 45
    assert event["vapi"]["callId"] is None
    wait_for(lambda: read_aggregate(db, "u-vapi").totals.vapi_call_millis == 45_000)


def test_a_report_without_call_or_owner_is_kept_not_billed(url: str, db: Any) -> None:
    raw = fixture("no-call-no-assistant.json")
    event_id = "body-" + hashlib.sha256(raw).hexdigest()

    response = send(url, raw)

    assert response.status_code == 200 and response.json()["outcome"] == "unattributed"
    kept = doc(db, "unattributedUsage", event_id)
    assert kept is not None and kept["callSeconds"] == 5 and kept["userId"] is None
    assert list(db.collection("usageEvents").stream()) == []


def test_an_unknown_assistant_is_kept_for_an_operator_not_billed(url: str, db: Any) -> None:
    response = post(url, report("call-orphan", "vapi-unknown"))

    assert response.json()["outcome"] == "unattributed"
    assert not db.collection("usageEvents").document("call-orphan").get().exists
    assert db.collection("unattributedUsage").document("call-orphan").get().exists


# -- absurd reports ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "event_id", "reason"), [
    ("absurd.json", "absurd-1", "time-in-future"),  # year 1 to 9999, 10^25 ms, a 40-level costBreakdown
    ("absurd-duration.json", "absurd-duration-1", "call-too-long"),
])
def test_an_absurd_report_is_set_aside_not_counted(url: str, db: Any, vapi_assistant: str, name: str,
                                                   event_id: str, reason: str) -> None:
    response = send(url, fixture(name))

    assert response.status_code == 200 and response.json()["outcome"] == "set-aside"
    kept = doc(db, "setAsideUsage", event_id)
    assert kept is not None and kept["reason"] == reason and kept["callSeconds"] is None
    assert kept["userId"] == "u-vapi"  # an operator can tell whose call it was
    assert doc(db, "usageEvents", event_id) is None
    assert send(url, fixture(name)).json()["outcome"] == "duplicate"
    time.sleep(1)
    assert read_aggregate(db, "u-vapi").read_time is None  # nothing counted


def test_an_endless_call_is_set_aside(url: str, db: Any, vapi_assistant: str) -> None:
    body = report("call-long-ago", vapi_assistant, started="2026-11-01T00:00:00Z", ended="2026-11-03T00:00:00Z")

    assert post(url, body).json()["outcome"] == "set-aside"
    kept = doc(db, "setAsideUsage", "call-long-ago")
    assert kept is not None and kept["reason"] == "call-too-long" and kept["reportedCallSeconds"] == "172800"


def test_an_end_before_the_start_is_set_aside(url: str, db: Any, vapi_assistant: str) -> None:
    body = report("call-backwards", vapi_assistant, started="2026-11-03T10:00:00Z", ended="2026-11-03T09:00:00Z")

    assert post(url, body).json()["outcome"] == "set-aside"
    kept = doc(db, "setAsideUsage", "call-backwards")
    assert kept is not None and kept["reason"] == "ended-before-started"


def test_oversized_fields_are_cut_and_the_call_counted(url: str, db: Any, vapi_assistant: str) -> None:
    body = json.loads(fixture("oversized-fields.json"))
    body["message"]["endedReason"] = "x" * 1_000_000  # 1 MB; Firestore takes 1 MiB a document

    response = send(url, json.dumps(body).encode())

    assert response.status_code == 200 and response.json()["outcome"] == "recorded"
    event = doc(db, "usageEvents", "oversized-1")
    assert event is not None and event["callSeconds"] == 30
    assert event["vapi"]["endedReason"] == "x" * 500
    assert event["vapi"]["costBreakdown"] == {"total": 0.03, "tts": 0.01, "stt": 39.0, "level39.stt": 38.0}
    wait_for(lambda: read_aggregate(db, "u-vapi").totals.vapi_call_millis == 30_000)


@pytest.mark.parametrize("fields", [
    {"callSeconds": 1e25},  # more milliseconds than a Firestore integer holds
    {"callSeconds": float("inf")},
    {"callSeconds": 43_201.0},  # over vapi's maximum: the webhook would have set it aside
    {"assistantId": "__reserved__"},  # a field name Firestore refuses (InvalidInput)
])
def test_an_event_that_can_never_be_counted_is_acknowledged(stack: Stack, db: Any, fields: dict[str, Any]) -> None:
    event = {"userId": "u-vapi", "assistantId": "vapi-asst-1", "provider": "vapi",
             "occurredAt": dt.datetime(2026, 11, 3, tzinfo=dt.UTC), "callSeconds": 60.0, **fields}
    headers, body = document_event(stack.project, "usageEvents/never", event)
    trigger = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/aggregate-token-usage"

    for _ in range(2):  # acknowledged (2xx) every time: the platform does not redeliver it
        assert requests.post(trigger, data=body, headers=headers, timeout=30).status_code == 200
    assert read_aggregate(db, "u-vapi").read_time is None


# -- shapes ----------------------------------------------------------------------------------

def test_other_messages_are_acknowledged_and_ignored(url: str, db: Any) -> None:
    for kind in ("status-update", "transcript", "hang", "speech-update"):
        response = post(url, {"message": {"type": kind, "call": {"id": "call-x"}}})
        assert response.status_code == 200
    assert list(db.collection("usageEvents").stream()) == []


@pytest.mark.parametrize("body", [
    {"nope": 1}, [], {"message": "text"},
    {"message": {"type": "end-of-call-report"}},
    {"message": {"type": "end-of-call-report", "call": {"id": "c"}}},
    {"message": {"type": "end-of-call-report", "call": {"id": "c"}, "startedAt": "2026-11-03T10:00:00Z",
                 "endedAt": "2026-11-03T10:05:00"}},
    {"message": {"type": "end-of-call-report", "call": "c", "durationMs": 1}},
    {"message": {"type": "end-of-call-report", "call": {"id": "c"}, "durationMs": "long"}},
])
def test_malformed_reports_are_400_and_store_nothing(url: str, db: Any, body: Any) -> None:
    response = post(url, body)

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert list(db.collection("usageEvents").stream()) == []


@pytest.mark.parametrize("raw", [
    b"[" * 200_000 + b"]" * 200_000,  # deeper than the JSON parser goes
    b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "durationMs": ' + b"9" * 5000 + b"}}",
    b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "durationMs": NaN}}',
    b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "durationMs": 1e999999}}',
    b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "endedAt": "9999-12-31T23:00:00-05:00",'
    b' "startedAt": "2026-11-03T10:00:00Z"}}',
    b"\xff\xfe",
])
def test_no_json_body_is_a_500(url: str, raw: bytes) -> None:
    response = send(url, raw)

    assert response.status_code in (200, 400), response.text
    assert response.json().get("outcome") != "recorded"


def test_large_transcripts_are_accepted(url: str, vapi_assistant: str) -> None:
    body = report("call-long", vapi_assistant)
    body["message"]["transcript"] = "word " * 200_000  # about 1 MB

    assert post(url, body).status_code == 200


@pytest.mark.parametrize("call_id", ["a/b", "..", "__c__"])
def test_a_call_id_no_document_can_have_is_400(url: str, call_id: str, vapi_assistant: str) -> None:
    assert post(url, report(call_id, vapi_assistant)).status_code == 400
