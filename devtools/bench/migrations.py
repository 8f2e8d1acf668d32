"""Migrating 10,000 users with 3 assistants each: wall time and writes per user, against a
naive run that makes one write call per change (and queries per user)."""

from __future__ import annotations

import os
import time
from typing import Any

from devtools.bench.counting import CountingClient
from devtools.bench.quiet import quiet_stack
from devtools.stack import Stack
from migrations.runner import run_all

USERS = int(os.environ.get("BENCH_MIGRATION_USERS", "10000"))
NAIVE_BUDGET_S = float(os.environ.get("BENCH_NAIVE_BUDGET_S", "120"))


def seed(db: Any) -> None:
    batch, writes = db.batch(), 0
    for n in range(USERS):
        uid = f"legacy-{n:05d}"
        docs = [(db.collection("users").document(uid), {"email": f"{uid}@example.com"}),
                (db.collection("assistants").document(f"{uid}-v"), {"userId": uid, "name": "vapi"}),
                (db.collection("openaiAssistants").document(f"{uid}-o1"), {"userId": uid, "name": "o1"}),
                (db.collection("openaiAssistants").document(f"{uid}-o2"), {"userId": uid, "name": "o2"})]
        for ref, data in docs:
            batch.set(ref, data)
            writes += 1
        if writes >= 496:
            batch.commit()
            batch, writes = db.batch(), 0
    if writes:
        batch.commit()


def design(project: str) -> dict[str, Any]:
    db = CountingClient(project)
    seed(db)
    db.counter.take()
    start = time.monotonic()
    outcomes = run_all(db, progress=lambda line: None)
    elapsed = time.monotonic() - start
    rpcs = db.counter.calls.copy()
    writes = sum(o.writes for o in outcomes)
    return {"run": "runner: batches of 500, one pass over assistants", "users": USERS, "seconds": round(elapsed, 1),
            "users_per_s": round(USERS / elapsed, 1), "writes_per_user": round(writes / USERS, 2),
            "write_calls_per_user": round(rpcs.get("Commit", 0) / USERS, 3),
            "queries_per_user": round(rpcs.get("RunQuery", 0) / USERS, 3)}


def naive(project: str) -> dict[str, Any]:
    """Per user: query its assistants of each kind, then one call per write."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    db = CountingClient(project)
    seed(db)
    db.counter.take()
    start = time.monotonic()
    deadline = start + NAIVE_BUDGET_S
    done = writes = 0
    for user in db.collection("users").select([]).stream():
        if time.monotonic() > deadline:
            break
        uid = user.id
        for field, collection in (("vapiAssistants", "assistants"), ("openaiAssistants", "openaiAssistants")):
            ids = [s.id for s in db.collection(collection).where(filter=FieldFilter("userId", "==", uid)).stream()]
            db.collection("users").document(uid).update({field: ids})
            writes += 1
        if not db.collection("tokenUsage").document(uid).get().exists:
            db.collection("tokenUsage").document(uid).set({"userId": uid, "totalTokens": 0, "inputTokens": 0,
                                                          "outputTokens": 0})
            writes += 1
        done += 1
    elapsed = time.monotonic() - start
    rpcs = db.counter.calls.copy()
    return {"run": f"naive: one call per write, queries per user (budget {NAIVE_BUDGET_S:.0f} s)", "users": done,
            "seconds": round(elapsed, 1), "users_per_s": round(done / elapsed, 1),
            "writes_per_user": round(writes / max(done, 1), 2),
            "write_calls_per_user": round(rpcs.get("Commit", 0) / max(done, 1), 3),
            "queries_per_user": round(rpcs.get("RunQuery", 0) / max(done, 1), 3)}


def run(stack: Stack) -> dict[str, Any]:
    with quiet_stack(stack, "mig") as quiet:
        rows = [design(quiet.project + "-d"), naive(quiet.project + "-n")]
    naive_rate = max(rows[1]["users"], 1) / rows[1]["seconds"]
    for row in rows:
        row["vs_naive"] = round((row["users"] / row["seconds"]) / naive_rate, 1)
    return {"title": f"Migrations 001+002: {USERS} users with 3 assistants each (no usage events)",
            "notes": "writes: document writes; write_calls: Commit RPCs (a batch is one); the naive run stops at "
                     "its budget and reports its rate",
            "rows": rows}
