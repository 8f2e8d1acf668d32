"""Monthly invoicing of many users with usage (Stripe against the local server): wall time,
Firestore reads and Stripe calls per user, against a naive run that reads every raw event."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import urllib.request
from collections import defaultdict
from typing import Any

import stripe
from simplytalk.charges import Unbilled, price
from simplytalk.invoice import Invoice
from simplytalk.models import UsageEvent
from simplytalk.pricing import DEFAULT_RATE_CARD, UsageFigures
from simplytalk.services.aggregation import figures_of, shard_delta
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import run_period
from simplytalk.services.payments import push_invoice
from simplytalk.services.payments_deps import firestore_payments

from devtools.bench.counting import CountingClient
from devtools.bench.quiet import quiet_stack
from devtools.stack import Stack

USERS = int(os.environ.get("BENCH_INVOICE_USERS", "10000"))
EVENTS_PER_USER = 3
PERIOD = "2026-10"
NAIVE_BUDGET_S = float(os.environ.get("BENCH_NAIVE_BUDGET_S", "120"))
NOW = dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)


def _events(uid: str, n: int, count: int = EVENTS_PER_USER) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for k in range(count):
        when = dt.datetime(2026, 10, 1 + (n + k) % 28, tzinfo=dt.UTC)
        if k % 3 == 2:
            fields = {"userId": uid, "assistantId": f"{uid}-vapi", "provider": "vapi", "occurredAt": when,
                      "callSeconds": 30 + n % 600}
        else:
            tokens = 100 + (n * 7 + k) % 5000
            fields = {"userId": uid, "assistantId": f"{uid}-o{k % 3}", "provider": "openai", "occurredAt": when,
                      "usage": {"totalTokens": tokens, "inputTokens": tokens // 2,
                                "outputTokens": tokens - tokens // 2}}
        out.append((f"{uid}-ev{k}", fields))
    return out


def merge(into: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if isinstance(value, dict):
            merge(into.setdefault(key, {}), value)
        elif isinstance(value, int) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
        else:
            into[key] = value


def seed(db: Any, with_counters: bool, prefix: str, users: int = USERS, events: int = EVENTS_PER_USER) -> None:
    """USERS users with a month of usage: raw events always; the counters (as the trigger makes
    them) only where the design reads them."""
    batch, writes = db.batch(), 0

    def add(ref: Any, data: dict[str, Any]) -> None:
        nonlocal batch, writes
        batch.set(ref, data)
        writes += 1
        if writes == 500:
            batch.commit()
            batch, writes = db.batch(), 0

    for n in range(users):
        uid = f"{prefix}-{n:05d}"
        add(db.collection("users").document(uid), {"email": f"{uid}@example.com"})
        shard: dict[str, Any] = {}
        for event_id, fields in _events(uid, n, events):
            add(db.collection("usageEvents").document(event_id), fields)
            merge(shard, shard_delta(UsageEvent.model_validate(fields)))
        if with_counters:
            # one year counter document (`{YYYY}-{k}`, as the trigger names them) with the whole month
            add(db.collection("tokenUsage").document(uid).collection("usageShards").document(f"{PERIOD[:4]}-0"), shard)
    if writes:
        batch.commit()


def _stripe_requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as resp:
        return int(json.loads(resp.read()).get("requests", 0))


def design(quiet: Stack, sc: stripe.StripeClient, project: str | None = None, users: int = USERS,
           events: int = EVENTS_PER_USER) -> dict[str, Any]:
    db = CountingClient(project or quiet.project)
    seed(db, with_counters=True, prefix=f"design-{events}", users=users, events=events)
    db.counter.take()
    db.counter.take_reads()
    stripe_before = _stripe_requests(quiet.stripe_url)
    start = time.monotonic()
    summary = run_period(firestore_billing(db, lambda: NOW, sc), PERIOD, [DEFAULT_RATE_CARD])
    elapsed = time.monotonic() - start
    reads, rpcs = db.counter.take_reads(), db.counter.take()
    stripe_calls = _stripe_requests(quiet.stripe_url) - stripe_before
    return {"run": f"design: counters + ledger, 8 workers ({events} events/user)", "users": summary.users,
            "invoices": summary.counts.get("created", 0), "seconds": round(elapsed, 1),
            "users_per_s": round(summary.users / elapsed, 1), "reads_per_user": round(reads / summary.users, 2),
            "rpcs_per_user": round(rpcs / summary.users, 2),
            "stripe_calls_per_user": round(stripe_calls / summary.users, 2), "total_cents": summary.total_cents}


def naive(quiet: Stack, sc: stripe.StripeClient, project: str | None = None, users: int = USERS,
          events: int = EVENTS_PER_USER) -> dict[str, Any]:
    """Per user: read every raw event of the month, price them, write the invoice, push it to Stripe."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    db = CountingClient(project or quiet.project + "-naive")
    seed(db, with_counters=False, prefix=f"naive-{events}", users=users, events=events)
    db.counter.take()
    db.counter.take_reads()
    stripe_before = _stripe_requests(quiet.stripe_url)
    start = time.monotonic()
    deadline = start + NAIVE_BUDGET_S
    done = invoices = total = 0
    for user in db.collection("users").order_by("__name__").select([]).stream():
        if time.monotonic() > deadline:
            break
        uid = user.id
        per: dict[str, UsageFigures] = defaultdict(UsageFigures)
        providers: dict[str, str] = {}
        for snap in db.collection("usageEvents").where(filter=FieldFilter("userId", "==", uid)).stream():
            event = UsageEvent.model_validate(snap.to_dict())
            if f"{event.occurred_at:%Y-%m}" == PERIOD:
                per[event.assistant_id] += figures_of(event)
                providers[event.assistant_id] = event.provider
        done += 1
        if not per:
            continue
        priced = price([Unbilled(PERIOD, aid, providers[aid], f) for aid, f in sorted(per.items())],
                       lambda p: DEFAULT_RATE_CARD)
        invoice = Invoice.draft(uid, PERIOD, priced, DEFAULT_RATE_CARD, NOW)
        db.collection("invoices").document(invoice.id).create(invoice.to_firestore())
        push_invoice(firestore_payments(db, sc, lambda: NOW), invoice)
        invoices += 1
        total += priced.total
    elapsed = time.monotonic() - start
    reads, rpcs = db.counter.take_reads(), db.counter.take()
    stripe_calls = _stripe_requests(quiet.stripe_url) - stripe_before
    return {"run": f"naive: every raw event ({events} events/user, budget {NAIVE_BUDGET_S:.0f} s)", "users": done,
            "invoices": invoices, "seconds": round(elapsed, 1), "users_per_s": round(done / elapsed, 1),
            "reads_per_user": round(reads / max(done, 1), 2), "rpcs_per_user": round(rpcs / max(done, 1), 2),
            "stripe_calls_per_user": round(stripe_calls / max(done, 1), 2), "total_cents": total}


def run(stack: Stack) -> dict[str, Any]:
    with quiet_stack(stack, "inv") as quiet:
        sc = stripe.StripeClient("sk_test_local", base_addresses={"api": quiet.stripe_url}, max_network_retries=0)
        rows = [design(quiet, sc), naive(quiet, sc)]
        # reads per user as a user's month grows: constant for the design, linear for the naive run
        scaling = []
        for events in (3, 30, 300):
            d = design(quiet, sc, project=f"{quiet.project}-d{events}", users=50, events=events)
            n = naive(quiet, sc, project=f"{quiet.project}-n{events}", users=50, events=events)
            scaling.append({"events_per_user": events, "design_reads_per_user": d["reads_per_user"],
                            "naive_reads_per_user": n["reads_per_user"],
                            "design_ms_per_user": round(1000 * d["seconds"] / max(d["users"], 1), 1),
                            "naive_ms_per_user": round(1000 * n["seconds"] / max(n["users"], 1), 1),
                            "reads_ratio": round(n["reads_per_user"] / d["reads_per_user"], 1)})
    naive_rate = max(rows[1]["users"], 1) / rows[1]["seconds"]
    for row in rows:
        row["vs_naive"] = round((row["users"] / row["seconds"]) / naive_rate, 1)
    return {
        "title": f"Monthly invoicing: {USERS} users with usage ({EVENTS_PER_USER} events each), "
                 "Stripe on the local server",
        "notes": "reads = documents read (an empty query counts one), counted on the gRPC channel; "
                 "the naive run stops at its budget and reports its rate",
        "rows": rows,
        "scaling": {"title": "Reads per user as a month's events grow (50 users each; same stack)",
                    "rows": scaling},
    }
