"""How soon the mirrors a dashboard listens to are exact, and what each usage event costs in
Firestore operations end to end, against a naive one-transaction-per-event design.

Convergence runs through the real path (usageEvents create -> the emulator's trigger ->
counters -> rollup, or a follow-up through Pub/Sub to mirror-usage), timed by a Firestore
listener on `tokenUsage/{uid}` as a dashboard would; the stack runs no scheduler, so no sweep.
An event is mirrored when a snapshot's `rollup.readTime` is at or after the commit that
counted it. Operations are counted on the wire (a counting client) by replaying each
trigger's work in this process: event create, apply, rollup or the follow-up's rollup.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from simplytalk.models import UsageEvent
from simplytalk.repositories.usage import apply_event, read_aggregate
from simplytalk.services.aggregation import MIRROR_PATIENCE, FollowUps, Rollup
from simplytalk.services.usage_deps import firestore_usage_deps

from devtools.bench.counting import CountingClient
from devtools.stack import Stack

BURST = 50
STREAM_RATE = 5.0  # events a second
STREAM_EVENTS = 60
ASSISTANTS = 5


def _event(uid: str, i: int) -> dict[str, Any]:
    tokens = 40 + i % 50
    return {"userId": uid, "assistantId": f"asst_mirror_{i % ASSISTANTS}", "provider": "openai",
            "kind": "response", "model": "gpt-realtime", "occurredAt": dt.datetime.now(dt.UTC),
            "usage": {"totalTokens": tokens, "inputTokens": tokens // 2, "outputTokens": tokens - tokens // 2}}


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[round(0.99 * (len(ordered) - 1))], ordered[-1])


class _Listener:
    """What a dashboard sees: each snapshot of `tokenUsage/{uid}`, with the local time it arrived."""

    def __init__(self, db: Any, uid: str) -> None:
        self.seen: list[tuple[dt.datetime, dt.datetime | None]] = []
        self._lock = threading.Lock()
        self._watch = db.collection("tokenUsage").document(uid).on_snapshot(self._on)

    def _on(self, snapshots: list[Any], *_: Any) -> None:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            for snap in snapshots:
                self.seen.append((now, ((snap.to_dict() or {}).get("rollup") or {}).get("readTime")))

    def mirrored_at(self, counted: dt.datetime) -> dt.datetime | None:
        with self._lock:
            return min((at for at, read in self.seen if read is not None and read >= counted), default=None)

    def close(self) -> None:
        self._watch.unsubscribe()


def _counted_at(db: Any, uid: str, event_ids: list[str]) -> dict[str, dt.datetime]:
    """When each event was counted: its marker's commit (the trigger's batch)."""
    markers = db.collection("tokenUsage").document(uid).collection("applied")
    return {snap.id: snap.create_time for snap in markers.stream() if snap.id in set(event_ids)}


def convergence(db: Any, uid: str, mode: str) -> dict[str, Any]:
    for a in range(ASSISTANTS):
        db.collection("openaiAssistants").document(f"asst_mirror_{a}").set({"userId": uid, "name": f"A{a}"})
    listener = _Listener(db, uid)
    ids = [f"resp_{mode}_{uid}_{i}" for i in range(BURST if mode == "burst" else STREAM_EVENTS)]
    commits: dict[str, dt.datetime] = {}
    try:
        if mode == "burst":
            with ThreadPoolExecutor(10) as pool:
                results = list(pool.map(
                    lambda pair: db.collection("usageEvents").document(pair[1]).create(_event(uid, pair[0])),
                    enumerate(ids)))
            commits = {event_id: r.update_time for event_id, r in zip(ids, results, strict=True)}
        else:
            for i, event_id in enumerate(ids):
                commits[event_id] = db.collection("usageEvents").document(event_id).create(_event(uid, i)).update_time
                time.sleep(1 / STREAM_RATE)
        deadline = time.monotonic() + 120
        counted: dict[str, dt.datetime] = {}
        while time.monotonic() < deadline:
            counted = _counted_at(db, uid, ids)
            if len(counted) == len(ids) and listener.mirrored_at(max(counted.values())) is not None:
                break
            time.sleep(0.1)
    finally:
        listener.close()
    commit_to_mirror, count_to_mirror, commit_to_count = [], [], []
    for event_id, committed in commits.items():
        mirrored = listener.mirrored_at(counted[event_id]) if event_id in counted else None
        if mirrored is None:
            raise RuntimeError(f"{event_id} was never mirrored")
        commit_to_mirror.append((mirrored - committed).total_seconds())
        count_to_mirror.append((mirrored - counted[event_id]).total_seconds())
        commit_to_count.append((counted[event_id] - committed).total_seconds())
    exact = (db.collection("tokenUsage").document(uid).get().to_dict() or {}).get("totalTokens") == \
        read_aggregate(db, uid).totals.total_tokens
    p50, p99, worst = _percentiles(commit_to_mirror)
    c50, c99, _ = _percentiles(count_to_mirror)
    d50, d99, _ = _percentiles(commit_to_count)
    label = f"burst of {BURST} at once" if mode == "burst" else f"stream, {STREAM_RATE:g} events/s for " \
        f"{STREAM_EVENTS / STREAM_RATE:g} s"
    return {"load": label, "commit_to_mirror_p50_s": round(p50, 3), "commit_to_mirror_p99_s": round(p99, 3),
            "commit_to_mirror_max_s": round(worst, 3), "counted_to_mirror_p50_s": round(c50, 3),
            "counted_to_mirror_p99_s": round(c99, 3), "commit_to_counted_p50_s": round(d50, 3),
            "commit_to_counted_p99_s": round(d99, 3), "mirror_exact_at_end": exact}


def operations_design(db: CountingClient, uid: str) -> dict[str, Any]:
    """Each event's path as the functions run it (a thread per event, as concurrent triggers of
    one instance): create, apply, then a rollup unless a follow-up this instance asked for covers
    it; a deferred one asks for a follow-up and does its work (wait until due, roll up)."""
    db.counter.take_reads(), db.counter.take_writes()
    outcomes: list[str] = []
    deps = firestore_usage_deps(db)
    follow_ups = FollowUps()

    def one(i: int) -> None:
        event_id = f"resp_ops_{uid}_{i}"
        fields = _event(uid, i)
        db.collection("usageEvents").document(event_id).create(fields)
        applied = apply_event(db, event_id, UsageEvent.model_validate(fields), dt.datetime.now(dt.UTC))
        commit = applied.commit_time
        assert commit is not None
        if follow_ups.pending(uid, commit):
            outcomes.append("pending")
            return
        outcome: str = deps.rollup(uid, commit)
        if outcome == Rollup.DEFERRED:
            due = FollowUps.due_for(commit)
            follow_ups.asked(uid, due)
            outcome = "follow-up " + deps.follow_up(uid, due, patience=MIRROR_PATIENCE)
        outcomes.append(outcome)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(one, range(BURST)))
    reads, writes = db.counter.take_reads(), db.counter.take_writes()
    rolled = sum(1 for o in outcomes if o.endswith("rolled-up"))
    exact = (db.collection("tokenUsage").document(uid).get().to_dict() or {}).get("totalTokens") == \
        read_aggregate(db, uid).totals.total_tokens
    return {"design": "sharded counters + throttled rollups + follow-ups (this design)",
            "events": BURST, "reads_per_event": round(reads / BURST, 2), "writes_per_event": round(writes / BURST, 2),
            "summary_writes": rolled, "mirror_exact": exact, "notes": f"{rolled} rollups for {BURST} events; "
            f"{sum(1 for o in outcomes if o.startswith('follow-up'))} follow-ups published; outcomes "
            f"{dict(sorted(Counter(outcomes).items()))}"}


def operations_naive(db: CountingClient, uid: str, writers: int = 10) -> dict[str, Any]:
    """One transaction per event: read the marker, the user's summary and the assistant, write all
    three (the summary is both the counter and the mirror: exact at once, one hot document).
    With one writer nothing contends: its best case."""
    db.counter.take_reads(), db.counter.take_writes()
    summary = db.collection("naiveUsage").document(uid)
    aborted = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal aborted
        event_id = f"resp_naive_{uid}_{i}"
        fields = _event(uid, i)
        db.collection("usageEvents").document(event_id).create(fields)
        marker = db.collection("naiveApplied").document(event_id)
        assistant = db.collection("openaiAssistants").document(fields["assistantId"])
        tokens = fields["usage"]["totalTokens"]

        @firestore.transactional
        def txn(tx: Any) -> None:
            if marker.get(transaction=tx).exists:
                return
            current = summary.get(transaction=tx).to_dict() or {}
            mirrored = assistant.get(transaction=tx).to_dict() or {}
            tx.set(marker, {"at": fields["occurredAt"]})
            tx.set(summary, {"totalTokens": int(current.get("totalTokens") or 0) + tokens,
                             "history": ([{"eventId": event_id}, *list(current.get("history") or [])])[:20]})
            tx.set(assistant, {"tokenUsage": {"totalTokens": int(((mirrored.get("tokenUsage") or {})
                                                                  .get("totalTokens")) or 0) + tokens}}, merge=True)

        try:
            txn(db.transaction(max_attempts=5))
        except Exception:
            with lock:
                aborted += 1

    start = time.monotonic()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(one, range(BURST)))
    elapsed = time.monotonic() - start
    reads, writes = db.counter.take_reads(), db.counter.take_writes()
    label = "one writer, no contention" if writers == 1 else f"{writers} writers"
    return {"design": f"naive: one transaction per event on the summary ({label})", "events": BURST,
            "reads_per_event": round(reads / BURST, 2), "writes_per_event": round(writes / BURST, 2),
            "summary_writes": BURST - aborted,
            "notes": f"{elapsed:.1f} s for the burst here; {aborted} events lost to aborts; in production "
                     "one document takes about 1 write/s, so a burst of 50 takes about 50 s to land"}


def run(stack: Stack) -> dict[str, Any]:
    db = firestore.Client(project=stack.project, credentials=AnonymousCredentials())
    latency = [convergence(db, "bench-mirror-burst", "burst"), convergence(db, "bench-mirror-stream", "stream")]
    counting = CountingClient(stack.project)
    ops = [operations_design(counting, "bench-ops"), operations_naive(counting, "bench-ops-naive"),
           operations_naive(counting, "bench-ops-naive-1", writers=1)]
    design, naive = ops[0], ops[1]
    for row in ops:
        row["ops_vs_naive"] = round((row["reads_per_event"] + row["writes_per_event"])
                                    / (naive["reads_per_event"] + naive["writes_per_event"]), 2)
    return {
        "title": "Usage mirrors: Firestore operations per usage event, end to end (event, marker, shards, mirrors)",
        "notes": f"{BURST} events at once for one user over {ASSISTANTS} assistants; counted on the wire; "
                 f"design summary document written {design['summary_writes']} times vs {naive['summary_writes']}",
        "rows": ops,
        "convergence": {
            "title": "Usage mirrors: from an event's commit to a listener on tokenUsage/{uid} seeing it (seconds)",
            "notes": "the local emulator delivers trigger events one at a time, so commit_to_counted grows "
                     "with a burst; counted_to_mirror is the design's own lag",
            "rows": latency,
        },
    }
