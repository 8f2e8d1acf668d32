"""Margin per assistant on the real stack: usage of both providers through their real paths, an
invoice from the monthly run, late usage, and GET /billing/margin (admins only) and
`python -m ops.margin` checked against figures computed by hand.

Prices (shipped table, USD per 1M tokens): gpt-realtime-1.5 text in 4, audio in 32, cached audio
0.40, text out 16, audio out 64; gpt-realtime-mini-2025-10-06 text in 0.60, text out 2.40;
gpt-4o-transcribe audio in 6, text out 10. vapi: the call's reported cost. Rate card: the default,
60 tokens a minute at 45 cents.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simplytalk.realtime import response_usage, transcription_usage
from simplytalk.services.aggregation import read_aggregate

from devtools.emulator_auth import AuthUser, set_claims
from devtools.stack import Stack
from tests.emulator.conftest import wait_for
from tests.emulator.test_realtime_calls import Caller, assistant_of, started
from tests.realtime_fakes import sdk_usage

HMAC_SECRET = "local-vapi-hmac"  # the local stack's demo value


def vapi_report(call_id: str, assistant_id: str, started_at: str, ended_at: str, cost: float) -> bytes:
    return json.dumps({"message": {
        "type": "end-of-call-report", "endedReason": "customer-ended-call",
        "call": {"id": call_id, "assistantId": assistant_id, "orgId": "org-1"},
        "startedAt": started_at, "endedAt": ended_at, "cost": cost,
        "costBreakdown": {"stt": 0.01, "llm": 0.05, "tts": 0.03, "vapi": 0.0334, "total": cost},
        "transcript": "AI: Hello\nUser: Hi", "artifact": {"messages": []}}}).encode()


def send_signed(stack: Stack, raw: bytes) -> None:
    """As vapi sends it: HMAC-SHA256 of `{timestamp}.{body}` in x-signature."""
    timestamp = str(int(time.time()))
    digest = hmac.new(HMAC_SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    response = requests.post(stack.function_url("vapi-webhook"), data=raw, timeout=30, headers={
        "Content-Type": "application/json", "x-signature": digest, "x-timestamp": timestamp})
    assert response.status_code == 200 and response.json()["outcome"] == "recorded", response.text


def tap_event(db: Any, event_id: str, uid: str, assistant: str, model: str, when: dt.datetime,
              usage: dict[str, Any] | None = None, transcription: dict[str, Any] | None = None,
              seconds: float | None = None) -> None:
    """A usage event in the shape the realtime tap writes (repositories.calls.*_event), usage
    converted from OpenAI's wire format by the tap's own functions."""
    base = {"userId": uid, "assistantId": assistant, "provider": "openai", "callId": "call-oct", "occurredAt": when}
    if usage is not None:
        doc = {**base, "kind": "response", "model": model, "usage": response_usage(usage),
               "responseStatus": "completed"}
    elif transcription is not None:
        doc = {**base, "kind": "transcription", "model": model, "usage": None,
               "transcription": transcription_usage(transcription)}
    else:
        doc = {**base, "kind": "call", "model": model, "callSeconds": seconds}
    db.collection("usageEvents").document(event_id).create(doc)


OCT = dt.datetime(2026, 10, 20, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def admin(stack: Stack, new_user: Any) -> AuthUser:
    return set_claims(stack.auth_host, stack.project, new_user(), {"admin": True})


def margin_of(stack: Stack, user: AuthUser, **params: str) -> requests.Response:
    return requests.get(f"{stack.function_url('billing')}/margin", params=params, headers=user.headers, timeout=30)


def rows(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {a["assistantId"]: (a["minutes"], a["revenue"]["amount"], a["invoicedRevenue"], a["estimatedRevenue"],
                               a["estimated"], a["providerCost"]["amount"], a["providerCostUsd"],
                               a["margin"]["amount"], a["events"], a["unpricedEvents"])
            for a in body["assistants"]}


def test_october_for_both_providers_invoiced_then_late_usage(stack: Stack, db: Any, new_user: Any,
                                                             admin: AuthUser) -> None:
    ann, bob = new_user(), new_user()
    for user in (ann, bob):
        db.collection("users").document(user.uid).set({"email": user.email})
    db.collection("assistants").document("ann-phone").set({"userId": ann.uid, "name": "Phone"})
    # ann's Realtime assistant (gpt-realtime-1.5): one turn, the caller's speech transcribed, the call's end
    tap_event(db, "resp-1", ann.uid, "ann-rt", "gpt-realtime-1.5", OCT,
              usage=sdk_usage(text=100, audio=500, cached_audio=200, out_text=20, out_audio=580))
    tap_event(db, "item-1", ann.uid, "ann-rt", "gpt-4o-transcribe", OCT, transcription={
        "type": "tokens", "input_tokens": 600, "output_tokens": 30, "total_tokens": 630,
        "input_token_details": {"audio_tokens": 600, "text_tokens": 0}})
    tap_event(db, "call-oct", ann.uid, "ann-rt", "gpt-realtime-1.5", OCT, seconds=95.0)
    # ann's vapi assistant: a 90.5 s call that cost $0.1234, through the signed webhook
    send_signed(stack, vapi_report("vapi-call-1", "ann-phone", "2026-10-20T10:00:00.000Z",
                                   "2026-10-20T10:01:30.500Z", 0.1234))
    # bob's mini assistant: 60 tokens = 1 minute = 45 cents, under Stripe's minimum: carried
    tap_event(db, "resp-b", bob.uid, "bob-rt", "gpt-realtime-mini-2025-10-06", OCT,
              usage=sdk_usage(text=50, out_text=10))
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 1200
             and read_aggregate(db, ann.uid).totals.vapi_call_millis == 90_500
             and read_aggregate(db, bob.uid).totals.total_tokens == 60, timeout=20)

    stack.publish("monthly-invoicing", {"period": "2026-10"})  # the scheduled run
    wait_for(lambda: (db.collection("invoiceRuns").document("2026-10").get().to_dict() or {}).get("completed"),
             timeout=30)
    invoice = db.collection("invoices").document(f"{ann.uid}_2026-10").get().to_dict()
    # 181/120 min x 45 = 67.875 and 20 min x 45 = 900: 967.875 -> 968, the cent to the vapi line
    assert [(x["assistantId"], x["amount"]) for x in invoice["lines"]] == [("ann-phone", 68), ("ann-rt", 900)]
    assert db.collection("invoices").document(f"{bob.uid}_2026-10").get().to_dict()["status"] == "carried"
    # an October response reported after the run: 60 text tokens = 1 minute, not invoiced yet
    tap_event(db, "resp-late", ann.uid, "ann-rt", "gpt-realtime-1.5", OCT + dt.timedelta(hours=1),
              usage=sdk_usage(text=60))
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 1260, timeout=20)

    response = margin_of(stack, admin, period="2026-10")

    assert response.status_code == 200, response.text
    body = response.json()
    # provider cost, by hand (per 1M tokens):
    #   resp-1: 100x4 + 300x32 + 200x0.40 + 20x16 + 580x64 = 400 + 9600 + 80 + 320 + 37120 = 47520 -> $0.04752
    #   item-1: 600x6 + 30x10 = 3900 -> $0.0039; call-oct: $0; resp-late: 60x4 = 240 -> $0.00024
    #   ann-rt: $0.05166 = 5.166 cents; ann-phone: vapi's $0.1234 = 12.34 cents
    #   resp-b: 50x0.60 + 10x2.40 = 54 -> $0.000054 = 0.0054 cents
    #   total 17.5114 cents -> 18; floors 12 + 5 + 0 = 17, the cent to the largest remainder (0.34)
    # revenue: ann-phone invoiced 68; ann-rt invoiced 900 + 1 late minute estimated 45; bob's 45 carried,
    #   so estimated: total 1058 = 968 invoiced + 90 estimated; margin 1058 - 18 = 1040
    assert rows(body) == {
        "ann-phone": ("1.508333", 68, 68, 0, False, 13, "0.1234", 55, 1, 0),
        "ann-rt": ("21", 945, 900, 45, True, 5, "0.05166", 940, 4, 0),
        "bob-rt": ("1", 45, 0, 45, True, 0, "0.000054", 45, 1, 0),
    }
    assert {a["assistantId"]: (a["userId"], a["provider"]) for a in body["assistants"]} == {
        "ann-phone": (ann.uid, "vapi"), "ann-rt": (ann.uid, "openai"), "bob-rt": (bob.uid, "openai")}
    totals = body["totals"]
    assert (totals["revenue"], totals["providerCost"], totals["margin"]) == (
        {"amount": 1058, "currency": "usd"}, {"amount": 18, "currency": "usd"}, {"amount": 1040, "currency": "usd"})
    assert (totals["invoicedRevenue"], totals["estimatedRevenue"], totals["providerCostUsd"], totals["minutes"],
            totals["events"], totals["unpricedEvents"], totals["notComparable"]) == (
        968, 90, "0.175114", "23.508333", 6, 0, 0)
    assert body["period"] == "2026-10" and body["rateCardId"] == "default-2026-01"
    assert body["priceVersions"] == ["openai-2026-11-26"] and body["userId"] is None

    only_bob = margin_of(stack, admin, period="2026-10", userId=bob.uid).json()
    assert list(rows(only_bob)) == ["bob-rt"] and only_bob["totals"]["margin"]["amount"] == 45

    env = {**os.environ, **stack.client_env()}
    cli = subprocess.run([sys.executable, "-m", "ops.margin", "--period", "2026-10", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == body
    table = subprocess.run([sys.executable, "-m", "ops.margin", "--period", "2026-10"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 0, table.stderr
    total_line = next(line for line in table.stdout.splitlines() if line.startswith("total"))
    assert total_line.split() == ["total", "23.508333", "10.58~", "0.18", "10.40", "6", "0"]


def test_only_admins_see_margins_and_a_bad_period_is_refused(stack: Stack, new_user: Any,
                                                             admin: AuthUser) -> None:
    user = new_user()

    assert margin_of(stack, user, period="2026-10").status_code == 403
    assert requests.get(f"{stack.function_url('billing')}/margin?period=2026-10", timeout=10).status_code == 401
    for params in ({}, {"period": "2026-13"}, {"period": "Oct 2026"}, {"period": "2026-10", "userId": "a/b"}):
        refused = margin_of(stack, admin, **params)
        assert refused.status_code == 400, params
        assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    empty = margin_of(stack, admin, period="2026-09").json()
    assert empty["assistants"] == [] and empty["totals"]["revenue"] == {"amount": 0, "currency": "usd"}


# -- this month, through the real Realtime path ---------------------------------------------------

@pytest.fixture
def caller(stack: Stack) -> Iterator[Caller]:
    played = Caller(stack)
    yield played
    for call in requests.get(f"{stack.openai_url}/_fake/calls", timeout=10).json()["calls"]:
        if call["status"] == "active":
            requests.post(f"{played.base}/{call['id']}/end", timeout=10)


def test_a_live_realtime_call_and_a_vapi_call_this_month(stack: Stack, db: Any, new_user: Any, admin: AuthUser,
                                                         caller: Caller) -> None:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email, "isSubscribed": True})
    assistant_id = assistant_of(stack, user)  # gpt-4o-transcribe transcribes the caller
    call_id = started(stack.function_url("realtime-calls"), user, assistant_id)["callId"]
    caller.watched(call_id)
    heard = caller.control(call_id, "transcriptions", {"transcript": "A cleaning on Friday?", "usage": {
        "type": "tokens", "input_tokens": 100, "output_tokens": 20, "total_tokens": 120,
        "input_token_details": {"audio_tokens": 100, "text_tokens": 0}}})
    assert heard["delivered"]
    turn = {"total_tokens": 600, "input_tokens": 310, "output_tokens": 290,
            "input_token_details": {"text_tokens": 10, "audio_tokens": 300, "image_tokens": 0, "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": 5, "audio_tokens": 285}}
    response = requests.post(f"{caller.base}/{call_id}/responses", json={"usage": turn, "transcript": "Friday."},
                             timeout=15)
    assert response.json()["delivered"], response.text
    caller.control(call_id, "end")
    wait_for(lambda: db.collection("usageEvents").document(call_id).get().exists, timeout=30)  # the call's length
    db.collection("assistants").document("phone-1").set({"userId": user.uid, "name": "Phone"})
    now = dt.datetime.now(dt.UTC)
    send_signed(stack, vapi_report("vapi-now", "phone-1", (now - dt.timedelta(seconds=90.5)).isoformat(),
                                   now.isoformat(), 0.1234))
    wait_for(lambda: read_aggregate(db, user.uid).totals.total_tokens == 600
             and read_aggregate(db, user.uid).totals.vapi_call_millis == 90_500, timeout=20)
    events = [d.to_dict() for d in db.collection("usageEvents").stream()]
    assert {e["model"] for e in events if e.get("kind") == "response"} == {"gpt-realtime-1.5"}
    periods = {f"{e['occurredAt'].year:04d}-{e['occurredAt'].month:02d}" for e in events}
    assert len(periods) == 1, "the test ran across a month's end"

    body = margin_of(stack, admin, period=periods.pop(), userId=user.uid).json()

    # the turn: 10x4 + 300x32 + 5x16 + 285x64 = 40 + 9600 + 80 + 18240 = 27960 -> $0.02796; the
    # transcription 100x6 + 20x10 = 800 -> $0.0008; the call's end $0: 2.876 cents. vapi 12.34 cents.
    # cost 15.216 -> 15 (floors 2 + 12, the cent to 0.876). Not invoiced: 600 tokens = 10 min x 45 = 450,
    # 90.5 s x 45 / 60 = 67.875: 517.875 -> 518 (floors 450 + 67, the cent to the vapi line)
    assert rows(body) == {
        assistant_id: ("10", 450, 0, 450, True, 3, "0.02876", 447, 3, 0),
        "phone-1": ("1.508333", 68, 0, 68, True, 12, "0.1234", 56, 1, 0),
    }
    assert (body["totals"]["revenue"]["amount"], body["totals"]["providerCost"]["amount"],
            body["totals"]["margin"]["amount"], body["totals"]["estimated"]) == (518, 15, 503, True)
