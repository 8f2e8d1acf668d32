"""Usage aggregation throughput (2,000 events, 50 writers, each delivered twice) against a
naive one-transaction-per-event update of one document; and token-usage latency with
10,000 history entries."""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from simplytalk.models import UsageEvent
from simplytalk.repositories.usage import apply_event, read_aggregate
from simplytalk.usage_counters import SHARDS, shard_of

from devtools.bench.quiet import quiet_stack
from devtools.emulator_auth import sign_up
from devtools.firestore_events import document_event
from devtools.stack import Stack

EVENTS = 2000
WRITERS = 50
NAIVE_BUDGET_S = 60.0
HISTORY = 10_000


def _event(uid: str, i: int, when: dt.datetime) -> dict[str, Any]:
    tokens = 50 + i % 400
    return {"userId": uid, "assistantId": f"asst_{i % 5}", "provider": "openai", "model": "gpt-realtime",
            "occurredAt": when, "usage": {"totalTokens": tokens, "inputTokens": tokens // 2,
                                          "outputTokens": tokens - tokens // 2}}


def _wait_exact(db: Any, uid: str, expected: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if read_aggregate(db, uid).totals.total_tokens == expected:
            return True
        time.sleep(0.05)
    return False


def design_end_to_end(stack: Stack, db: Any) -> dict[str, Any]:
    """Writers create usageEvents (the emulator delivers each to the trigger) and deliver
    each event a second time straight to the trigger endpoint."""
    uid = "bench-e2e"
    now = dt.datetime.now(dt.UTC)
    events = {f"resp_e2e_{i}": _event(uid, i, now) for i in range(EVENTS)}
    expected = sum(e["usage"]["totalTokens"] for e in events.values())
    trigger = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/aggregate-token-usage"
    local = threading.local()

    def deliver(item: tuple[str, dict[str, Any]]) -> None:
        event_id, fields = item
        db.collection("usageEvents").document(event_id).create(fields)
        if not hasattr(local, "http"):
            local.http = requests.Session()
        headers, body = document_event(stack.project, f"usageEvents/{event_id}", fields)
        local.http.post(trigger, data=body, headers=headers, timeout=120).raise_for_status()

    start = time.monotonic()
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(deliver, events.items()))
    exact = _wait_exact(db, uid, expected, start + 300)
    elapsed = time.monotonic() - start
    shard_load = Counter(shard_of(e) for e in events)
    summary = db.collection("tokenUsage").document(uid).get().to_dict() or {}
    return {"design": "sharded counters + markers, via emulator triggers (2 deliveries each)",
            "events": EVENTS, "exact": exact, "seconds": round(elapsed, 2),
            "events_per_s": round(EVENTS / elapsed, 1),
            "max_writes_per_doc_per_event": round(max(max(shard_load.values()),
                                                       int(summary.get("rollupCount", 0))) / EVENTS, 3),
            "notes": f"busiest shard {max(shard_load.values())} writes of {EVENTS}; summary mirror written "
                     f"{summary.get('rollupCount', 0)} times; each marker once"}


def design_in_process(db: Any) -> dict[str, Any]:
    uid = "bench-direct"
    now = dt.datetime.now(dt.UTC)
    events = [(f"resp_direct_{i}", UsageEvent.model_validate(_event(uid, i, now))) for i in range(EVENTS)]
    expected = sum(e.usage.total_tokens for _, e in events if e.usage)
    work = events + events  # every event twice

    start = time.monotonic()
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda item: apply_event(db, item[0], item[1], now), work))
    elapsed = time.monotonic() - start
    exact = read_aggregate(db, uid).totals.total_tokens == expected
    busiest = max(Counter(shard_of(e) for e, _ in events).values())
    return {"design": "sharded counters + markers, in process (2 applies each)", "events": EVENTS,
            "exact": exact, "seconds": round(elapsed, 2), "events_per_s": round(EVENTS / elapsed, 1),
            "max_writes_per_doc_per_event": round(busiest / EVENTS, 3),
            "notes": f"{SHARDS} shards; busiest shard {busiest} writes"}


def naive(db: Any) -> dict[str, Any]:
    """One transaction per event: read a marker and the one totals document, write both."""
    uid = "bench-naive"
    totals_ref = db.collection("naiveUsage").document(uid)
    totals_ref.set({"totalTokens": 0})
    now = dt.datetime.now(dt.UTC)
    events = [(f"resp_naive_{i}", _event(uid, i, now)["usage"]["totalTokens"]) for i in range(EVENTS)]
    work = events + events
    deadline = time.monotonic() + NAIVE_BUDGET_S
    done = Counter[str]()
    lock = threading.Lock()

    def apply(item: tuple[str, int]) -> None:
        if time.monotonic() > deadline:
            return
        event_id, tokens = item
        marker = db.collection("naiveApplied").document(event_id)

        @firestore.transactional
        def txn(tx: Any) -> None:
            if marker.get(transaction=tx).exists:
                return
            current = totals_ref.get(transaction=tx).to_dict() or {}
            tx.set(marker, {"at": now})
            tx.update(totals_ref, {"totalTokens": int(current.get("totalTokens", 0)) + tokens})

        try:
            txn(db.transaction(max_attempts=5))
            with lock:
                done["ok"] += 1
        except Exception:
            with lock:
                done["failed"] += 1

    start = time.monotonic()
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(apply, work))
    elapsed = time.monotonic() - start
    counted_ids = {d.id for d in db.collection("naiveApplied").select([]).stream()}
    stored = (totals_ref.get().to_dict() or {}).get("totalTokens", 0)
    exact_for_counted = stored == sum(t for e, t in events if e in counted_ids)
    return {"design": f"naive: one transaction per event on one document (budget {NAIVE_BUDGET_S:.0f} s)",
            "events": len(counted_ids), "exact": len(counted_ids) == EVENTS and exact_for_counted,
            "seconds": round(elapsed, 2), "events_per_s": round(len(counted_ids) / elapsed, 3),
            "max_writes_per_doc_per_event": 1.0,
            "notes": f"{len(counted_ids)} of {EVENTS} events counted (exact for those: {exact_for_counted}); "
                     f"{done['failed']} deliveries failed (transaction aborts, lock timeouts)"}


def token_usage_latency(stack: Stack, db: Any) -> list[dict[str, Any]]:
    user = sign_up(stack.auth_host, "bench-usage@example.com")
    start_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = [(f"resp_hist_{i:05d}", _event(user.uid, i, start_at + dt.timedelta(minutes=i)))
              for i in range(HISTORY)]
    for offset in range(0, HISTORY, 500):
        batch = db.batch()
        for event_id, fields in events[offset:offset + 500]:
            batch.set(db.collection("usageEvents").document(event_id), fields)
        batch.commit()
    now = dt.datetime.now(dt.UTC)
    with ThreadPoolExecutor(20) as pool:  # count them now rather than wait for 10,000 deliveries
        list(pool.map(lambda item: apply_event(db, item[0], UsageEvent.model_validate(item[1]), now), events))
    expected = sum(e["usage"]["totalTokens"] for _, e in events)
    _wait_exact(db, user.uid, expected, time.monotonic() + 120)

    http = requests.Session()
    http.headers.update(user.headers)
    url = stack.function_url("token-usage")
    bare = stack.function_url("bench-bare")
    for _ in range(10):
        http.get(url, timeout=30)
        http.get(bare, timeout=30)

    def sample(target: str, params: dict[str, str], n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            response = http.get(target, params=params, timeout=30)
            out.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
        return out

    first = http.get(url, params={"period": "2026-01"}, timeout=30).json()
    deep = first["nextPageToken"]
    for _ in range(20):
        page = http.get(url, params={"period": "2026-01", "pageToken": deep}, timeout=30).json()
        deep = page["nextPageToken"]
    rows = []
    bare_ms = sample(bare, {}, 200)
    for name, target, params in [
        ("bare authenticated GET (baseline)", bare, {}),
        ("token-usage, first history page (20)", url, {"period": "2026-01"}),
        ("token-usage, page 22 of history", url, {"period": "2026-01", "pageToken": deep}),
        ("token-usage, 100 per page", url, {"period": "2026-01", "pageSize": "100"}),
        ("token-usage ?assistantId=", url, {"period": "2026-01", "assistantId": "asst_1"}),
    ]:
        samples = bare_ms if target == bare else sample(target, params, 200)
        ordered = sorted(samples)
        p50, p99 = statistics.median(ordered), ordered[round(0.99 * (len(ordered) - 1))]
        rows.append({"request": name, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
                     "p50_vs_bare": round(p50 / statistics.median(bare_ms), 1)})
    return rows


def visibility(stack: Stack, db: Any) -> dict[str, Any]:
    """usageEvents write -> visible in token-usage, one event at a time, on a quiet stack."""
    user = sign_up(stack.auth_host, "bench-visible@example.com")
    http = requests.Session()
    http.headers.update(user.headers)
    url = stack.function_url("token-usage")
    http.get(url, timeout=30)
    visible_ms = []
    for i in range(30):
        before = http.get(url, timeout=30).json()["totals"]["totalTokens"]
        t0 = time.perf_counter()
        db.collection("usageEvents").document(f"resp_visible_{i}").create(
            _event(user.uid, i, dt.datetime.now(dt.UTC)))
        while http.get(url, timeout=30).json()["totals"]["totalTokens"] == before:
            if time.perf_counter() - t0 > 10:
                raise RuntimeError("usage did not show up within 10 s")
        visible_ms.append((time.perf_counter() - t0) * 1000)
    ordered = sorted(visible_ms)
    return {"request": "usageEvents write -> visible in token-usage (n=30, max as p99)",
            "p50_ms": round(statistics.median(ordered), 1), "p99_ms": round(ordered[-1], 1),
            "p50_vs_bare": None}


def run(stack: Stack) -> dict[str, Any]:
    db = firestore.Client(project=stack.project, credentials=AnonymousCredentials())
    visible = visibility(stack, db)
    rows = [design_end_to_end(stack, db), design_in_process(db), naive(db)]
    naive_rate = max(rows[-1]["events"], 1) / rows[-1]["seconds"]  # unrounded; at least one event's worth
    for row in rows:
        row["vs_naive"] = round((row["events"] / row["seconds"]) / naive_rate, 1)
    return {
        "title": f"Usage aggregation: {EVENTS} events for one user, {WRITERS} writers, each delivered twice",
        "notes": "events_per_s until the aggregates were exact (naive: what it counted in its budget)",
        "rows": rows,
        "latency": {
            "title": f"token-usage latency with {HISTORY} history entries (sequential, one client, n=200)",
            "rows": [*_latency_on_quiet_stack(stack), visible],
        },
    }


def _latency_on_quiet_stack(stack: Stack) -> list[dict[str, Any]]:
    with quiet_stack(stack, "q") as quiet:
        db = firestore.Client(project=quiet.project, credentials=AnonymousCredentials())
        return token_usage_latency(quiet, db)
