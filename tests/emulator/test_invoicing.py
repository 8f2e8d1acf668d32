"""Monthly invoicing on the emulators: exact invoices, exactly once, late usage, the billing API."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import requests
from simplytalk.pricing import DEFAULT_RATE_CARD
from simplytalk.services.aggregation import read_aggregate
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import run_period

from devtools.emulator_auth import set_claims
from devtools.stack import Stack
from tests.emulator.conftest import wait_for

OCT = dt.datetime(2026, 10, 12, 9, 30, tzinfo=dt.UTC)
NOV = dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.UTC)


def usage(db: Any, event_id: str, uid: str, assistant: str, tokens: int = 0, seconds: float | None = None,
          when: dt.datetime = OCT) -> None:
    fields: dict[str, Any] = {"userId": uid, "assistantId": assistant, "occurredAt": when,
                              "provider": "vapi" if seconds is not None else "openai"}
    if seconds is not None:
        fields["callSeconds"] = seconds
    else:
        fields["usage"] = {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}
    db.collection("usageEvents").document(event_id).set(fields)


@pytest.fixture
def month(db: Any, new_user: Any) -> dict[str, Any]:
    """October usage for three users (and one user with none)."""
    users = [new_user() for _ in range(4)]
    for user in users:
        db.collection("users").document(user.uid).set({"email": user.email})
    ann, bob, cat, _idle = users
    usage(db, "a1", ann.uid, "ann-o1", 1830)  # 30.5 min
    usage(db, "a2", ann.uid, "ann-o2", 100)  # 1.666667 min
    usage(db, "a3", ann.uid, "ann-v1", seconds=90)  # 1.5 min
    usage(db, "b1", bob.uid, "bob-o1", 1)  # 1/60 min: 0.75 cents
    usage(db, "c1", cat.uid, "cat-v1", seconds=3600.25)
    usage(db, "c-nov", cat.uid, "cat-v1", seconds=60, when=NOV)  # not October's
    expected = {ann.uid: 1930, bob.uid: 1, cat.uid: 0}
    wait_for(lambda: all(read_aggregate(db, u).totals.total_tokens == t for u, t in expected.items()))
    wait_for(lambda: read_aggregate(db, cat.uid).totals.vapi_call_millis == 3_660_250)
    return {"users": users}


def invoices(db: Any) -> dict[str, dict[str, Any]]:
    return {d.id: d.to_dict() for d in db.collection("invoices").stream()}


def test_a_month_of_usage_for_three_users_gives_three_exact_invoices(stack: Stack, db: Any,
                                                                      month: dict[str, Any]) -> None:
    ann, bob, cat, _idle = month["users"]

    stack.publish("monthly-invoicing", {"period": "2026-10"})  # as Cloud Scheduler does

    run = wait_for(lambda: (d := db.collection("invoiceRuns").document("2026-10").get().to_dict())
                   and d.get("completed") and d, timeout=20)
    assert run["counts"] == {"created": 2, "carried": 1, "no-usage": 1}
    found = invoices(db)
    assert set(found) == {f"{u.uid}_2026-10" for u in (ann, bob, cat)}
    ann_invoice = found[f"{ann.uid}_2026-10"]
    # 30.5 + 1.666667 + 1.5 = 33.666667 minutes at 45 cents = 1515 cents exactly
    assert ann_invoice["total"] == 1515
    assert [(line["assistantId"], line["minutes"], line["amount"]) for line in ann_invoice["lines"]] == [
        ("ann-o1", "30.5", 1373), ("ann-o2", "1.666667", 75), ("ann-v1", "1.5", 67)]
    assert sum(line["amount"] for line in ann_invoice["lines"]) == ann_invoice["total"]
    assert ann_invoice["rateCardId"] == DEFAULT_RATE_CARD.id
    # the scheduled run also made each a finalized Stripe invoice, charged automatically
    assert ann_invoice["status"] == "open" and ann_invoice["stripeInvoiceId"].startswith("in_")
    assert ann_invoice["hostedInvoiceUrl"].startswith(stack.stripe_url)
    # 0.75 cents, rounded half-up once: under Stripe's minimum, carried to the next invoice
    assert found[f"{bob.uid}_2026-10"]["total"] == 1 and found[f"{bob.uid}_2026-10"]["status"] == "carried"
    assert not db.collection("billingLedger").document(bob.uid).get().exists
    # 3600.25 s = 60.004166.. min * 45 = 2700.1875 cents -> 2700; November's call is not billed
    assert found[f"{cat.uid}_2026-10"]["total"] == 2700
    assert found[f"{cat.uid}_2026-10"]["lines"][0]["minutes"] == "60.004167"


def test_a_rerun_creates_nothing(db: Any, month: dict[str, Any]) -> None:
    first = run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD])
    before = invoices(db)

    again = run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD])

    assert first.counts["created"] + first.counts["carried"] == 3
    assert again.counts == {"exists": 3, "no-usage": 1}
    assert invoices(db) == before


def test_a_crash_in_the_middle_then_a_rerun_bills_everyone_once(db: Any, month: dict[str, Any]) -> None:
    class Crash(Exception):
        pass

    def crash_after_two(summary: Any) -> None:
        if summary.users >= 2:
            raise Crash

    with pytest.raises(Crash):
        run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD], progress=crash_after_two,
                   page_size=1)
    assert 1 <= len(invoices(db)) <= 2
    assert db.collection("invoiceRuns").document("2026-10").get().to_dict()["cursor"]

    resumed = run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD], page_size=1)

    assert resumed.completed and resumed.resumed_from
    assert len(invoices(db)) == 3
    assert sum(resumed.counts.get(k, 0) for k in ("created", "carried", "exists")) == 3


def test_late_usage_goes_on_the_next_invoice_never_twice(db: Any, month: dict[str, Any]) -> None:
    ann = month["users"][0]
    run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD])
    usage(db, "a-late", ann.uid, "ann-o1", 60, when=OCT)  # an October call reported in November
    usage(db, "a-nov", ann.uid, "ann-o1", 120, when=NOV)
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 2110)

    run_period(firestore_billing(db, lambda: NOV + dt.timedelta(days=30)), "2026-11", [DEFAULT_RATE_CARD])

    november = invoices(db)[f"{ann.uid}_2026-11"]
    assert [(line["usagePeriod"], line["minutes"], line["amount"]) for line in november["lines"]] == [
        ("2026-10", "1", 45), ("2026-11", "2", 90)]
    assert november["total"] == 135
    assert invoices(db)[f"{ann.uid}_2026-10"]["total"] == 1515  # the closed invoice is untouched
    run_period(firestore_billing(db, lambda: NOV + dt.timedelta(days=60)), "2026-12", [DEFAULT_RATE_CARD])
    assert f"{ann.uid}_2026-12" not in invoices(db)  # nothing left unbilled


def test_the_dry_run_writes_nothing(stack: Stack, db: Any, month: dict[str, Any]) -> None:
    out = subprocess.run([sys.executable, "-m", "ops.invoicing", "--period", "2026-10", "--dry-run"],
                         capture_output=True, text=True, env={**os.environ, **stack.client_env()})

    assert out.returncode == 0, out.stderr
    assert "would bill 3 invoices, 4216 cents" in out.stdout
    assert invoices(db) == {}
    assert not db.collection("invoiceRuns").document("2026-10").get().exists


def test_the_billing_api_shows_the_callers_invoices_only(stack: Stack, db: Any,
                                                         month: dict[str, Any]) -> None:
    ann, bob, *_ = month["users"]
    run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD])
    url = stack.function_url("billing")

    listed = requests.get(f"{url}/invoices", headers=ann.headers, timeout=10).json()
    assert [i["id"] for i in listed["invoices"]] == [f"{ann.uid}_2026-10"]
    assert listed["nextPageToken"] is None
    one = requests.get(f"{url}/invoices/{ann.uid}_2026-10", headers=ann.headers, timeout=10).json()
    assert one["total"] == 1515 and one["currency"] == "usd" and one["hostedInvoiceUrl"] is None
    assert set(one["lines"][0]) == {"assistantId", "provider", "usagePeriod", "minutes", "amount",
                                    "rateCardId"}
    assert requests.get(f"{url}/invoices/{ann.uid}_2026-10", headers=bob.headers,
                        timeout=10).status_code == 404
    assert requests.get(f"{url}/invoices", timeout=10).status_code == 401


def test_rate_cards_are_added_by_admins_only(stack: Stack, new_user: Any) -> None:
    url = stack.function_url("billing") + "/rate-cards"
    user = new_user()
    admin = set_claims(stack.auth_host, stack.project, new_user(), {"admin": True})
    card = {"id": "card-2027", "effectiveFrom": "2027-01-01", "tokensPerMinute": 1200,
            "centsPerMinute": "12.5", "openaiBasis": "tokens"}

    assert requests.post(url, json=card, headers=user.headers, timeout=10).status_code == 403
    created = requests.post(url, json=card, headers=admin.headers, timeout=10)
    assert created.status_code == 201, created.text
    assert created.json()["centsPerMinute"] == "12.5"
    assert requests.post(url, json=card, headers=admin.headers, timeout=10).status_code == 409
    this_month = dt.datetime.now(dt.UTC).date().replace(day=1).isoformat()
    for bad, field in [({**card, "id": "x-past", "effectiveFrom": "2020-01-01"}, "effectiveFrom"),
                       ({**card, "id": "x-now", "effectiveFrom": this_month}, "effectiveFrom"),
                       ({**card, "id": "x-mid", "effectiveFrom": "2027-01-15"}, "effectiveFrom"),
                       ({**card, "id": "x-float", "centsPerMinute": 12.5}, "centsPerMinute"),
                       ({**card, "id": "x-zero", "tokensPerMinute": 0}, "tokensPerMinute"),
                       ({**card, "id": "x-eur", "currency": "eur"}, "currency")]:
        response = requests.post(url, json=bad, headers=admin.headers, timeout=10)
        assert response.status_code == 400, bad
        assert field in [d["field"] for d in response.json()["error"]["details"]]
    cards = requests.get(url, headers=user.headers, timeout=10).json()["rateCards"]
    assert [c["id"] for c in cards] == [DEFAULT_RATE_CARD.id, "card-2027"]


def test_an_operator_adds_a_rate_card_from_the_cli(stack: Stack, db: Any) -> None:
    env = {**os.environ, **stack.client_env()}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops.rate_cards", *args], capture_output=True, text=True,
                              env=env)

    added = cli("add", "--effective-from", "2030-01-01", "--tokens-per-minute", "1200", "--cents-per-minute",
                "12.5", "--basis", "call-duration", "--id", "card-2030", "--by", "ops@example.com")
    assert added.returncode == 0, added.stderr
    assert db.collection("rateCards").document("card-2030").get().to_dict()["createdBy"] == "cli:ops@example.com"
    assert cli("add", "--effective-from", "2001-01-01", "--tokens-per-minute", "1", "--cents-per-minute", "1",
               "--by", "x").returncode == 2
    listed = [json.loads(line)["id"] for line in cli("list").stdout.splitlines()]
    assert listed == [DEFAULT_RATE_CARD.id, "card-2030"]
