"""vapi-webhook: end-of-call reports become usage events; the shared secret guards it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from simplytalk.services.aggregation import read_aggregate

from devtools.stack import Stack
from tests.emulator.conftest import wait_for

SECRET = "local-vapi-secret"  # the demo default the local stack uses


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


def post(url: str, body: Any, secret: str | None = SECRET) -> requests.Response:
    headers = {"x-vapi-secret": secret} if secret is not None else {}
    return requests.post(url, json=body, headers=headers, timeout=10)


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


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_a_bad_secret_is_401_and_stores_nothing(url: str, db: Any, vapi_assistant: str,
                                                secret: str | None) -> None:
    response = post(url, report("call-bad", vapi_assistant), secret)

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert not db.collection("usageEvents").document("call-bad").get().exists


def test_other_messages_are_acknowledged_and_ignored(url: str, db: Any) -> None:
    for kind in ("status-update", "transcript", "hang", "speech-update"):
        response = post(url, {"message": {"type": kind, "call": {"id": "call-x"}}})
        assert response.status_code == 200
    assert list(db.collection("usageEvents").stream()) == []


def test_an_unknown_assistant_is_kept_for_an_operator_not_billed(url: str, db: Any) -> None:
    response = post(url, report("call-orphan", "vapi-unknown"))

    assert response.json()["outcome"] == "unattributed"
    assert not db.collection("usageEvents").document("call-orphan").get().exists
    assert db.collection("unattributedUsage").document("call-orphan").get().exists


@pytest.mark.parametrize("body", [
    {"nope": 1}, [], {"message": "text"},
    {"message": {"type": "end-of-call-report"}},
    {"message": {"type": "end-of-call-report", "call": {"id": "c"}, "startedAt": "2026-11-03T10:00:00Z",
                 "endedAt": "2026-11-03T09:00:00Z"}},
    {"message": {"type": "end-of-call-report", "call": {"id": "c"}}},
    {"message": {"type": "end-of-call-report", "call": {"id": "c"}, "startedAt": "2026-11-03T10:00:00Z",
                 "endedAt": "2026-11-03T10:05:00"}},
])
def test_malformed_reports_are_400_and_store_nothing(url: str, db: Any, body: Any) -> None:
    response = post(url, body)

    assert response.status_code == 400
    assert list(db.collection("usageEvents").stream()) == []


def test_large_transcripts_are_accepted(url: str, vapi_assistant: str) -> None:
    body = report("call-long", vapi_assistant)
    body["message"]["transcript"] = "word " * 200_000  # about 1 MB

    assert post(url, body).status_code == 200


@pytest.mark.parametrize("call_id", ["a/b", "..", "__c__"])
def test_a_call_id_no_document_can_have_is_400(url: str, call_id: str, vapi_assistant: str) -> None:
    assert post(url, report(call_id, vapi_assistant)).status_code == 400
