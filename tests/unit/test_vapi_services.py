"""Recording vapi's end-of-call reports on the in-memory repository: no emulator, no network."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from simplytalk.repositories.vapi_calls import InMemoryVapiCalls, Kept
from simplytalk.services.vapi import CallOutcome, EndOfCallReport, Limits, body_call_id, parse_body, record_end_of_call
from simplytalk.validation import parse_model

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
STARTED = dt.datetime(2026, 11, 3, 10, 0, 0, tzinfo=dt.UTC)
ENDED = dt.datetime(2026, 11, 3, 10, 1, 30, 500_000, tzinfo=dt.UTC)


def body(call_id: str | None = "call-1", assistant_id: str = "vapi-asst-1", ended: str = "2026-11-03T10:01:30.500Z",
         ) -> bytes:
    message: dict[str, Any] = {
        "type": "end-of-call-report", "endedReason": "customer-ended-call",
        "startedAt": "2026-11-03T10:00:00.000Z", "endedAt": ended, "cost": 0.1234,
        "costBreakdown": {"stt": 0.01, "total": 0.1234},
    }
    if call_id is None:
        message["assistant"] = {"id": assistant_id}
    else:
        message["call"] = {"id": call_id, "assistantId": assistant_id}
    return json.dumps({"message": message}).encode()


def record(calls: InMemoryVapiCalls, raw: bytes, limits: Limits | None = None) -> Any:
    report = parse_model(EndOfCallReport, parse_body(raw)["message"])
    return record_end_of_call(calls, report, raw, NOW, limits or Limits())


@pytest.fixture
def calls() -> InMemoryVapiCalls:
    return InMemoryVapiCalls(owners={"vapi-asst-1": "ann"})


def test_a_call_of_a_known_assistant_is_recorded_as_its_owners_usage(calls: InMemoryVapiCalls) -> None:
    done = record(calls, body())

    assert done.event_id == "call-1" and done.outcome is CallOutcome.RECORDED and done.reason is None
    event = calls.kept[Kept.USAGE]["call-1"]
    assert event["provider"] == "vapi" and event["userId"] == "ann" and event["assistantId"] == "vapi-asst-1"
    assert event["callSeconds"] == 90.5 and event["occurredAt"] == ENDED and event["receivedAt"] == NOW
    assert event["vapi"]["callId"] == "call-1" and event["vapi"]["cost"] == "0.1234"
    assert event["vapi"]["startedAt"] == STARTED and event["vapi"]["costBreakdown"] == {"stt": 0.01, "total": 0.1234}
    assert not calls.kept[Kept.UNATTRIBUTED] and not calls.kept[Kept.SET_ASIDE]


def test_a_repeated_report_is_a_duplicate_and_changes_nothing(calls: InMemoryVapiCalls) -> None:
    record(calls, body())
    first = dict(calls.kept[Kept.USAGE]["call-1"])

    again = record(calls, body(ended="2026-11-03T10:02:00Z"))

    assert again.event_id == "call-1" and again.outcome is CallOutcome.DUPLICATE
    assert calls.kept[Kept.USAGE] == {"call-1": first}


def test_a_report_without_call_is_keyed_by_its_body_and_recorded_once(calls: InMemoryVapiCalls) -> None:
    raw = body(call_id=None)

    first, second = record(calls, raw), record(calls, raw)

    assert first.event_id == second.event_id == body_call_id(raw)
    assert (first.outcome, second.outcome) == (CallOutcome.RECORDED, CallOutcome.DUPLICATE)
    assert calls.kept[Kept.USAGE][body_call_id(raw)]["vapi"]["callId"] is None


@pytest.mark.parametrize("owners", [{}, {"vapi-asst-1": None}, {"vapi-asst-1": 42}, {"vapi-asst-1": "a/b"}])
def test_a_call_no_user_owns_is_kept_unattributed_not_counted(owners: dict[str, Any]) -> None:
    calls = InMemoryVapiCalls(owners=owners)

    done = record(calls, body())

    assert done.outcome is CallOutcome.UNATTRIBUTED
    assert calls.kept[Kept.UNATTRIBUTED]["call-1"]["userId"] is None
    assert not calls.kept[Kept.USAGE]
    assert record(calls, body()).outcome is CallOutcome.DUPLICATE


def test_an_absurd_length_is_set_aside_with_its_reason(calls: InMemoryVapiCalls) -> None:
    done = record(calls, body(), Limits(max_call_seconds=90))

    assert done.outcome is CallOutcome.SET_ASIDE and done.reason == "call-too-long"
    kept = calls.kept[Kept.SET_ASIDE]["call-1"]
    assert kept["reason"] == "call-too-long" and kept["reportedCallSeconds"] == "90.5"
    assert kept["callSeconds"] is None and kept["userId"] == "ann"
    assert not calls.kept[Kept.USAGE]


def test_a_repeated_set_aside_report_is_a_duplicate_that_keeps_its_reason(calls: InMemoryVapiCalls) -> None:
    record(calls, body(ended="2026-11-03T09:00:00Z"))

    again = record(calls, body(ended="2026-11-03T09:00:00Z"))

    assert again.outcome is CallOutcome.DUPLICATE and again.reason == "ended-before-started"
    assert list(calls.kept[Kept.SET_ASIDE]) == ["call-1"]


def test_outcomes_keep_their_wire_values() -> None:
    assert [o.value for o in CallOutcome] == ["recorded", "unattributed", "set-aside", "duplicate"]
