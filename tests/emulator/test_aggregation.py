"""aggregate-token-usage: events reach the trigger through the emulator; counted exactly once."""

from __future__ import annotations

import datetime as dt
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from simplytalk.services.aggregation import ROLLUP_INTERVAL, read_aggregate

from devtools.firestore_events import document_event
from devtools.stack import Stack
from tests.emulator.conftest import wait_for

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def openai_event(uid: str, assistant: str, total: int, when: dt.datetime = NOW) -> dict[str, Any]:
    return {"userId": uid, "assistantId": assistant, "provider": "openai", "model": "gpt-realtime",
            "occurredAt": when,
            "usage": {"totalTokens": total, "inputTokens": total - total // 3, "outputTokens": total // 3,
                      "inputTokenDetails": {"textTokens": 1, "audioTokens": total - total // 3 - 1,
                                            "cachedTokens": 0, "imageTokens": 0},
                      "outputTokenDetails": {"textTokens": 0, "audioTokens": total // 3}}}


def vapi_event(uid: str, assistant: str, seconds: float, when: dt.datetime = NOW) -> dict[str, Any]:
    return {"userId": uid, "assistantId": assistant, "provider": "vapi", "occurredAt": when,
            "callSeconds": seconds}


@pytest.fixture
def assistant(db: Any) -> str:
    db.collection("openaiAssistants").document("asst_agg").set({
        "userId": "u-agg", "name": "agg", "tokenUsage": {"totalTokens": 0, "inputTokens": 0,
                                                         "outputTokens": 0}})
    return "asst_agg"


def summary(db: Any, uid: str) -> dict[str, Any]:
    return db.collection("tokenUsage").document(uid).get().to_dict() or {}


def test_events_are_counted_into_totals_periods_and_mirrors(db: Any, assistant: str) -> None:
    for i, total in enumerate([100, 250, 7]):
        db.collection("usageEvents").document(f"resp_{i}").set(openai_event("u-agg", assistant, total))
    db.collection("usageEvents").document("call_1").set(vapi_event("u-agg", "vapi-1", 90.5))

    wait_for(lambda: read_aggregate(db, "u-agg").totals.vapi_call_millis == 90_500
             and read_aggregate(db, "u-agg").totals.total_tokens == 357, timeout=15)

    aggregate = read_aggregate(db, "u-agg")
    assert aggregate.totals.total_tokens == 357
    assert aggregate.totals.vapi_call_millis == 90_500
    period = f"{NOW.year:04d}-{NOW.month:02d}"
    assert aggregate.periods[period].total_tokens == 357
    assert aggregate.period_assistants[period]["vapi-1"].vapi_call_millis == 90_500
    assert aggregate.providers == {assistant: "openai", "vapi-1": "vapi"}
    time.sleep(ROLLUP_INTERVAL)  # mirrors are rolled up at most once an interval
    db.collection("usageEvents").document("resp_3").set(openai_event("u-agg", assistant, 3))
    wait_for(lambda: summary(db, "u-agg").get("totalTokens") == 360, timeout=10)
    wait_for(lambda: db.collection("openaiAssistants").document(assistant).get().to_dict()["tokenUsage"]
             == {"totalTokens": 360, "inputTokens": 360 - 33 - 83 - 2 - 1, "outputTokens": 33 + 83 + 2 + 1},
             timeout=10)
    history = summary(db, "u-agg")["usageHistory"]
    assert {h["eventId"] for h in history} == {"resp_0", "resp_1", "resp_2", "resp_3", "call_1"}


def test_a_second_delivery_of_the_same_event_changes_nothing(stack: Stack, db: Any, assistant: str) -> None:
    fields = openai_event("u-agg", assistant, 60)
    db.collection("usageEvents").document("resp_dup").set(fields)
    wait_for(lambda: read_aggregate(db, "u-agg").totals.total_tokens == 60)
    headers, body = document_event(stack.project, "usageEvents/resp_dup", fields)
    url = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/aggregate-token-usage"

    for _ in range(3):
        assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 200

    assert read_aggregate(db, "u-agg").totals.total_tokens == 60
    assert summary(db, "u-agg")["totalTokens"] == 60


def test_out_of_order_events_land_in_their_own_periods(db: Any, assistant: str) -> None:
    months = [dt.datetime(2026, m, 15, tzinfo=dt.UTC) for m in (3, 1, 2, 1)]
    for i, when in enumerate(months):
        db.collection("usageEvents").document(f"resp_ooo_{i}").set(
            openai_event("u-agg", assistant, 10 * (i + 1), when))

    wait_for(lambda: read_aggregate(db, "u-agg").totals.total_tokens == 100)

    periods = read_aggregate(db, "u-agg").periods
    assert {p: f.total_tokens for p, f in periods.items()} == {"2026-01": 60, "2026-02": 30, "2026-03": 10}


def test_50_events_at_the_same_moment_are_exact(stack: Stack, db: Any, assistant: str) -> None:
    def write(i: int) -> None:
        db.collection("usageEvents").document(f"resp_burst_{i}").set(openai_event("u-agg", assistant, i + 1))

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(write, range(50)))

    expected = sum(range(1, 51))
    wait_for(lambda: read_aggregate(db, "u-agg").totals.total_tokens == expected, timeout=20)
    # the mirrors catch up on the scheduled sweep (Cloud Scheduler publishes to usage-rollup)
    time.sleep(ROLLUP_INTERVAL)
    stack.publish("usage-rollup", {})
    wait_for(lambda: summary(db, "u-agg").get("totalTokens") == expected, timeout=20)
    wait_for(lambda: db.collection("openaiAssistants").document(assistant).get().to_dict()
             ["tokenUsage"]["totalTokens"] == expected, timeout=20)
    shards = list(db.collection("tokenUsage").document("u-agg").collection("usageShards").stream())
    assert 1 < len(shards) <= 10


def test_a_malformed_event_is_acknowledged_and_not_counted(stack: Stack, db: Any) -> None:
    headers, body = document_event(stack.project, "usageEvents/bad", {"userId": "u-agg", "provider": "x"})
    url = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/aggregate-token-usage"

    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200
    assert read_aggregate(db, "u-agg").read_time is None


def test_the_rebuild_from_raw_events_gives_the_same_figures(stack: Stack, db: Any, assistant: str) -> None:
    import subprocess
    import sys

    for i in range(12):
        when = dt.datetime(2026, 1 + i % 3, 10, tzinfo=dt.UTC)
        db.collection("usageEvents").document(f"resp_rb_{i}").set(
            openai_event("u-agg", assistant, 7 * (i + 1), when))
    db.collection("usageEvents").document("call_rb").set(vapi_event("u-agg", "vapi-rb", 61.25))
    wait_for(lambda: read_aggregate(db, "u-agg").totals.total_tokens == 7 * sum(range(1, 13)))
    wait_for(lambda: read_aggregate(db, "u-agg").totals.vapi_call_millis == 61_250)
    before = read_aggregate(db, "u-agg")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops.rebuild_usage", *args, "u-agg"],
                              capture_output=True, text=True, env={**os.environ, **stack.client_env()})

    checked = cli()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "u-agg: 13 events, OK" in checked.stdout

    # lose a shard, as a bad deploy might: the check says so, the rebuild restores it
    db.collection("tokenUsage").document("u-agg").collection("usageShards").document(
        next(iter(db.collection("tokenUsage").document("u-agg").collection("usageShards").stream())).id
    ).delete()
    assert cli().returncode == 1

    rebuilt = cli("--apply")

    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    after = read_aggregate(db, "u-agg")
    assert (after.totals, after.assistants, after.periods, after.period_assistants) == (
        before.totals, before.assistants, before.periods, before.period_assistants)
    assert summary(db, "u-agg")["totalTokens"] == before.totals.total_tokens
