"""The mirrors a dashboard listens to (`tokenUsage/{uid}`, `openaiAssistants/{id}`) converge by
themselves, and carry this month's figures (`currentPeriod`). The test stack runs no scheduler,
so no sweep helps here."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import requests
from simplytalk.models import UsageEvent
from simplytalk.pricing import period_of
from simplytalk.repositories.usage import apply_event, read_aggregate
from simplytalk.services.aggregation import Rollup
from simplytalk.services.usage_deps import firestore_usage_deps

from devtools.stack import Stack
from tests.emulator.conftest import wait_for
from tests.emulator.test_aggregation import openai_event, vapi_event

ASSISTANTS = ("asst_m0", "asst_m1", "asst_m2", "asst_m3", "asst_m4")


def _summary(db: Any, uid: str) -> dict[str, Any]:
    return db.collection("tokenUsage").document(uid).get().to_dict() or {}


def _mirrors_exact(db: Any, uid: str) -> bool:
    aggregate = read_aggregate(db, uid)
    if _summary(db, uid).get("totalTokens") != aggregate.totals.total_tokens:
        return False
    for aid in ASSISTANTS:
        mirrored = (db.collection("openaiAssistants").document(aid).get().to_dict() or {}).get("tokenUsage") or {}
        if mirrored.get("totalTokens") != aggregate.assistants.get(aid, aggregate.totals.__class__()).total_tokens:
            return False
    return True


def test_a_burst_then_silence_leaves_both_mirrors_exact_soon_after_the_counters(db: Any, new_user: Any) -> None:
    """The emulator delivers events one at a time, so a burst of 50 takes it seconds to count; from
    the moment the last one is counted, the mirrors follow within 2 s, with no sweep."""
    uid = new_user().uid
    for aid in ASSISTANTS:
        db.collection("openaiAssistants").document(aid).set({"userId": uid, "name": aid})
    events = {f"resp_burst_{i}": openai_event(uid, ASSISTANTS[i % 5], 10 + i) for i in range(50)}

    def create(item: tuple[str, dict[str, Any]]) -> None:
        db.collection("usageEvents").document(item[0]).create(item[1])

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(create, events.items()))
    expected = sum(e["usage"]["totalTokens"] for e in events.values())

    wait_for(lambda: read_aggregate(db, uid).totals.total_tokens == expected, timeout=30, interval=0.005)
    counted_at = dt.datetime.now(dt.UTC)
    wait_for(lambda: _mirrors_exact(db, uid), timeout=10)

    assert dt.datetime.now(dt.UTC) - counted_at < dt.timedelta(seconds=2)
    assert _summary(db, uid)["rollupCount"] < 50  # rolled up far less often than once an event


def test_a_steady_stream_is_mirrored_within_two_seconds_of_each_event(db: Any, new_user: Any) -> None:
    """What a dashboard's listener sees: every event's figures within 2 s of its commit."""
    uid = new_user().uid
    db.collection("openaiAssistants").document(ASSISTANTS[0]).set({"userId": uid, "name": "stream"})
    seen: list[tuple[dt.datetime, int]] = []

    def on_snapshot(snapshots: list[Any], *_: Any) -> None:
        for snap in snapshots:
            seen.append((dt.datetime.now(dt.UTC), int((snap.to_dict() or {}).get("totalTokens") or 0)))

    watch = db.collection("tokenUsage").document(uid).on_snapshot(on_snapshot)
    try:
        commits: list[tuple[dt.datetime, int]] = []
        running = 0
        for i in range(12):
            running += 10 + i
            result = db.collection("usageEvents").document(f"resp_stream_{i}").create(
                openai_event(uid, ASSISTANTS[0], 10 + i))
            commits.append((result.update_time, running))
            time.sleep(0.4)  # faster than the rollup interval: most events find a fresh rollup
        wait_for(lambda: seen and seen[-1][1] == running, timeout=10)
    finally:
        watch.unsubscribe()
    lags = [min(at for at, total in seen if total >= needed) - committed for committed, needed in commits]
    assert max(lags) < dt.timedelta(seconds=2), lags


def test_current_period_matches_the_api_and_each_assistant(stack: Stack, db: Any, new_user: Any) -> None:
    ann = new_user()
    db.collection("openaiAssistants").document("asst_cp").set({"userId": ann.uid, "name": "Support"})
    db.collection("usageEvents").document("resp_cp_1").set(openai_event(ann.uid, "asst_cp", 1830))
    db.collection("usageEvents").document("call_cp_1").set(vapi_event(ann.uid, "vapi_cp", 90))

    wait_for(lambda: _summary(db, ann.uid).get("currentPeriod", {}).get("totalMinutes") == "32", timeout=15)
    api = requests.get(stack.function_url("token-usage"), headers=ann.headers, timeout=10).json()
    mirror = _summary(db, ann.uid)["currentPeriod"]
    assert {k: v for k, v in mirror.items() if k != "assistants"} == api["period"]
    assert mirror["estimatedCost"] == {"amount": 1440, "currency": "usd"}  # 32 min * 45 cents
    assert set(mirror["assistants"]) == {"asst_cp", "vapi_cp"}
    assistant = db.collection("openaiAssistants").document("asst_cp").get().to_dict()
    assert assistant["currentPeriod"] == mirror["assistants"]["asst_cp"]
    assert assistant["currentPeriod"]["tokenMinutes"] == "30.5"
    assert assistant["tokenUsage"] == {"totalTokens": 1830, "inputTokens": 1220, "outputTokens": 610}
    history = _summary(db, ann.uid)["usageHistory"]
    assert {h["description"] for h in history} == {"Response from Support: 1,830 tokens (1,220 in, 610 out)",
                                                   "vapi call with a deleted assistant, 1 min 30 s"}


def _rollup_at(db: Any, uid: str, moment: dt.datetime) -> Rollup:
    return replace(firestore_usage_deps(db), clock=lambda: moment).rollup(uid, None)


def test_a_new_month_starts_current_period_at_zero_and_keeps_totals_and_history(db: Any, new_user: Any) -> None:
    """The clock is the service's parameter: the month turns on a test clock."""
    uid = new_user().uid
    db.collection("openaiAssistants").document("asst_mt").set({"userId": uid, "name": "Night"})
    november = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.UTC)
    december = dt.datetime(2026, 12, 1, 0, 0, 5, tzinfo=dt.UTC)
    for event_id, when in (("resp_nov_1", november), ("resp_nov_2", november)):
        fields = openai_event(uid, "asst_mt", 600, when)
        db.collection("usageEvents").document(event_id).set(fields)
        apply_event(db, event_id, UsageEvent.model_validate(fields), november)
    time.sleep(1)
    assert _rollup_at(db, uid, november + dt.timedelta(seconds=30)) == Rollup.ROLLED_UP
    before = _summary(db, uid)
    assert before["currentPeriod"]["id"] == "2026-11" and before["currentPeriod"]["totalTokens"] == 1200

    # the month turns; nothing happens at midnight: the mirror still shows November, and says so
    assert _summary(db, uid)["currentPeriod"]["id"] == "2026-11" != period_of(december)
    fields = openai_event(uid, "asst_mt", 60, december)
    db.collection("usageEvents").document("resp_dec_1").set(fields)
    apply_event(db, "resp_dec_1", UsageEvent.model_validate(fields), december)
    assert _rollup_at(db, uid, december + dt.timedelta(minutes=5)) == Rollup.ROLLED_UP

    after = _summary(db, uid)
    assert after["currentPeriod"]["id"] == "2026-12"
    assert (after["currentPeriod"]["totalTokens"], after["currentPeriod"]["totalMinutes"]) == (60, "1")
    assert after["totalTokens"] == 1260  # all-time totals stay
    assert [h["eventId"] for h in after["usageHistory"]] == ["resp_dec_1", "resp_nov_2", "resp_nov_1"] or \
        [h["eventId"] for h in after["usageHistory"]] == ["resp_dec_1", "resp_nov_1", "resp_nov_2"]
    assistant = db.collection("openaiAssistants").document("asst_mt").get().to_dict()
    assert assistant["currentPeriod"]["id"] == "2026-12" and assistant["currentPeriod"]["totalTokens"] == 60
    assert assistant["tokenUsage"]["totalTokens"] == 1260


def test_the_api_serves_the_counters_not_a_lagging_mirror(stack: Stack, db: Any, new_user: Any) -> None:
    ann = new_user()
    db.collection("users").document(ann.uid).set({"email": ann.email})
    url = stack.function_url("openai-assistants")
    created = requests.post(url, json={"name": "Support"}, headers=ann.headers, timeout=20).json()
    aid = created["id"]
    for i, tokens in enumerate((90, 30)):
        db.collection("usageEvents").document(f"resp_api_{i}").set(openai_event(ann.uid, aid, tokens))
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 120, timeout=15)
    wait_for(lambda: _summary(db, ann.uid).get("totalTokens") == 120, timeout=10)
    # a mirror that lags (as it may, about a second): the API must not show it
    db.collection("openaiAssistants").document(aid).update({"tokenUsage": {"totalTokens": 1, "inputTokens": 1,
                                                                           "outputTokens": 0}})
    exact = {"totalTokens": 120, "inputTokens": 80, "outputTokens": 40}
    usage = requests.get(stack.function_url("token-usage"), params={"assistantId": aid}, headers=ann.headers,
                         timeout=10).json()

    assert usage["totals"] == exact
    assert requests.get(f"{url}/{aid}", headers=ann.headers, timeout=10).json()["tokenUsage"] == exact
    assert requests.get(url, headers=ann.headers, timeout=10).json()["assistants"][0]["tokenUsage"] == exact
    both = requests.get(stack.function_url("assistants"), headers=ann.headers, timeout=10).json()
    assert both["assistants"][0]["tokenUsage"] == exact
    patched = requests.patch(f"{url}/{aid}", json={"name": "Help"}, headers=ann.headers, timeout=10).json()
    assert patched["tokenUsage"] == exact
