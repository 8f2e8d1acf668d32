"""Stripe calls per user and month when invoices are pushed: the design (a draft, every line
in one `add_lines` call, finalize) against the naive push (one invoice item per line), for
users with few and with many assistants, in their first month (customer created) and after."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

import stripe
from simplytalk.invoice import Invoice, InvoiceStatus
from simplytalk.models import UsageEvent
from simplytalk.pricing import DEFAULT_RATE_CARD
from simplytalk.services.aggregation import shard_delta
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import run_period
from simplytalk.services.payments import ensure_customer, push_invoice
from simplytalk.services.payments_deps import firestore_payments

from devtools.bench.invoicing import merge
from devtools.bench.quiet import quiet_stack
from devtools.stack import Stack

USERS = 40
MONTHS = (("2026-10", dt.datetime(2026, 10, 9, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)),
          ("2026-11", dt.datetime(2026, 11, 9, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, 3, tzinfo=dt.UTC)))


class CountingStripe:
    """The official client, counting every API call made through it."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self.calls: Counter[str] = Counter()
        self.v1 = self._wrap(client.v1, "v1")

    def _wrap(self, target: Any, path: str) -> Any:
        outer = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                value = getattr(target, name)
                if not callable(value):
                    return outer._wrap(value, f"{path}.{name}")

                def call(*args: Any, **kwargs: Any) -> Any:
                    outer.calls[f"{path}.{name}"] += 1
                    return value(*args, **kwargs)
                return call

        return Proxy()

    def take(self) -> int:
        total = sum(self.calls.values())
        self.calls.clear()
        return total


def naive_push(db: Any, client: Any, entity: Invoice, now: dt.datetime) -> str:
    """The baseline: a draft, one invoice item per line, finalize (what the old push did)."""
    invoice = entity.to_firestore()
    customer = ensure_customer(firestore_payments(db, client, lambda: now), invoice["userId"])
    draft = client.v1.invoices.create(params={
        "customer": customer, "collection_method": "charge_automatically", "auto_advance": False,
        "pending_invoice_items_behavior": "exclude", "currency": invoice["currency"],
        "metadata": {"invoiceId": invoice["id"]}}, options={"idempotency_key": f"naive-{invoice['id']}"})
    for i, line in enumerate(invoice["lines"]):
        client.v1.invoice_items.create(params={
            "customer": customer, "invoice": draft.id, "amount": line["amount"], "currency": invoice["currency"],
            "metadata": {"line": str(i)}}, options={"idempotency_key": f"naive-{invoice['id']}-{i}"})
    client.v1.invoices.finalize_invoice(draft.id, params={"auto_advance": True})
    return "pushed"


def _seed(db: Any, prefix: str, assistants: int, month: int, at: dt.datetime) -> list[str]:
    uids = [f"{prefix}-{n:03d}" for n in range(USERS)]
    batch, writes = db.batch(), 0
    for uid in uids:
        if month == 0:
            batch.set(db.collection("users").document(uid), {"email": f"{uid}@example.com"})
        shard: dict[str, Any] = {}
        for k in range(assistants):
            fields = {"userId": uid, "assistantId": f"a-{k:03d}", "provider": "openai", "occurredAt": at,
                      "usage": {"totalTokens": 1830 + k, "inputTokens": 1830 + k, "outputTokens": 0}}
            for key, value in shard_delta(UsageEvent.model_validate(fields)).items():
                merge(shard.setdefault(key, {}), value)
        # a year counter document (`{YYYY}-{k}`, as the trigger names them) for each month seeded
        counters = db.collection("tokenUsage").document(uid).collection("usageShards")
        batch.set(counters.document(f"{at.year}-{month}"), shard)
        writes += 2
        if writes >= 400:
            batch.commit()
            batch, writes = db.batch(), 0
    batch.commit()
    return uids


def _settler(db: Any, client: Any, push: Any, now: dt.datetime) -> Any:
    def settle(invoice: Invoice) -> str:
        if invoice.status != InvoiceStatus.DRAFT:
            return "settled"
        return str(push(db, client, invoice, now))
    return settle


def design_push(db: Any, client: Any, invoice: Invoice, now: dt.datetime) -> str:
    """The design's push, with the bench's (db, client, invoice, now) signature."""
    return push_invoice(firestore_payments(db, client, lambda: now), invoice)


def _clock(moment: dt.datetime) -> Any:
    return lambda: moment


def _measure(project: str, sc: stripe.StripeClient, name: str, push: Any, assistants: int) -> list[dict[str, Any]]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    db = firestore.Client(project=project, credentials=AnonymousCredentials())
    counting = CountingStripe(sc)
    rows = []
    for month, (period, at, run_at) in enumerate(MONTHS):
        _seed(db, f"{name}-{assistants}", assistants, month, at)
        started = time.monotonic()
        billing = firestore_billing(db, _clock(run_at)).settling(_settler(db, counting, push, run_at))
        summary = run_period(billing, period, [DEFAULT_RATE_CARD], workers=8)
        elapsed = time.monotonic() - started
        calls = counting.take()
        rows.append({"push": name, "assistants": assistants, "month": "first" if month == 0 else "later",
                     "users": summary.users, "failed": summary.counts.get("failed", 0),
                     "stripe_calls_per_user": round(calls / max(summary.users, 1), 2),
                     "ms_per_user": round(1000 * elapsed / max(summary.users, 1), 1)})
    return rows


def run(stack: Stack) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with quiet_stack(stack, "sc") as quiet:
        sc = stripe.StripeClient("sk_test_local", base_addresses={"api": quiet.stripe_url}, max_network_retries=0)
        for assistants in (3, 60):
            design = _measure(f"{quiet.project}-d{assistants}", sc, "design", design_push, assistants)
            naive = _measure(f"{quiet.project}-n{assistants}", sc, "naive", naive_push, assistants)
            for d, n in zip(design, naive, strict=True):
                d["vs_naive"] = round(n["stripe_calls_per_user"] / d["stripe_calls_per_user"], 1)
                n["vs_naive"] = 1.0
            rows += design + naive
    return {"title": f"Stripe calls per user and month ({USERS} users, local Stripe)",
            "notes": "vs_naive = the naive push's calls per user over the design's; 'later' months reuse "
                     "the customer",
            "rows": rows}
