"""Stripe end to end against the local Stripe, through the official SDK and the functions host."""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import stripe
from simplytalk.billing import DEFAULT_RATE_CARD
from simplytalk.services.aggregation import read_aggregate
from simplytalk.services.invoicing import run_period, stripe_settler

from devtools.stack import Stack
from tests.emulator.conftest import wait_for

SECRET = "whsec_local"
OCT = dt.datetime(2026, 10, 12, tzinfo=dt.UTC)
NOV = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


@pytest.fixture
def sc(stack: Stack) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_local", base_addresses={"api": stack.stripe_url}, max_network_retries=0)


@pytest.fixture
def ann(db: Any, new_user: Any) -> Any:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    return user


def profile(db: Any, uid: str) -> dict[str, Any]:
    return db.collection("users").document(uid).get().to_dict() or {}


def add_card(stack: Stack, sc: stripe.StripeClient, user: Any, db: Any, card: str = "pm_card_visa") -> None:
    """What the frontend does: get a SetupIntent, confirm it with Stripe.js; the webhook does the rest."""
    response = requests.post(stack.function_url("billing") + "/setup-intent", headers=user.headers, timeout=10)
    assert response.status_code == 201, response.text
    sc.v1.setup_intents.confirm(response.json()["setupIntentId"], params={"payment_method": card})
    wait_for(lambda: profile(db, user.uid).get("hasPaymentMethod") is True)


def test_one_customer_per_user_even_under_concurrent_requests(stack: Stack, db: Any, ann: Any,
                                                              sc: stripe.StripeClient) -> None:
    url = stack.function_url("billing") + "/setup-intent"
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: requests.post(url, headers=ann.headers, timeout=20), range(10)))

    assert [r.status_code for r in results] == [201] * 10
    customers = {r.json()["customerId"] for r in results}
    assert len(customers) == 1
    assert all(r.json()["clientSecret"].startswith(r.json()["setupIntentId"]) for r in results)
    assert profile(db, ann.uid)["stripeCustomerId"] in customers
    stripe_side = [c for c in sc.v1.customers.list(params={"email": ann.email}).data]
    assert len(stripe_side) == 1


def test_card_then_subscription_sets_the_user_and_assistants_subscribed(stack: Stack, db: Any, ann: Any,
                                                                        sc: stripe.StripeClient) -> None:
    billing = stack.function_url("billing")
    assistant = requests.post(stack.function_url("openai-assistants"), json={"name": "a"}, headers=ann.headers,
                              timeout=10).json()
    early = requests.post(billing + "/subscription", headers=ann.headers, timeout=10)
    assert early.status_code == 403  # no payment method yet

    add_card(stack, sc, ann, db)
    subscribed = requests.post(billing + "/subscription", headers=ann.headers, timeout=10)

    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json()["isSubscribed"] is True and subscribed.json()["status"] == "active"
    assert db.collection("openaiAssistants").document(assistant["id"]).get().to_dict()["isSubscribed"] is True
    assert requests.post(billing + "/subscription", headers=ann.headers, timeout=10).status_code == 409
    # a new assistant is created subscribed
    second = requests.post(stack.function_url("openai-assistants"), json={"name": "b"}, headers=ann.headers,
                           timeout=10).json()
    assert second["isSubscribed"] is True

    cancelled = requests.delete(billing + "/subscription", headers=ann.headers, timeout=10)

    assert cancelled.status_code == 200 and cancelled.json()["isSubscribed"] is False
    wait_for(lambda: profile(db, ann.uid).get("subscriptionStatus") == "canceled")
    assert db.collection("openaiAssistants").document(assistant["id"]).get().to_dict()["isSubscribed"] is False
    assert requests.get(billing + "/subscription", headers=ann.headers, timeout=10).json()["status"] == "canceled"


def _october(db: Any, users: list[Any]) -> None:
    for i, user in enumerate(users):
        db.collection("usageEvents").document(f"oct-{user.uid}").set({
            "userId": user.uid, "assistantId": f"a-{i}", "provider": "openai", "occurredAt": OCT,
            "usage": {"totalTokens": 1830 * (i + 1), "inputTokens": 1830 * (i + 1), "outputTokens": 0}})
    for i, user in enumerate(users):
        def counted(uid: str = user.uid, tokens: int = 1830 * (i + 1)) -> bool:
            return read_aggregate(db, uid).totals.total_tokens == tokens

        wait_for(counted)


def test_monthly_invoices_become_finalized_stripe_invoices_once(stack: Stack, db: Any, new_user: Any,
                                                                sc: stripe.StripeClient) -> None:
    users = [new_user() for _ in range(3)]
    for user in users:
        db.collection("users").document(user.uid).set({"email": user.email})
    _october(db, users)
    settle = stripe_settler(db, sc, lambda: NOV)

    run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV, settle=settle)
    run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV, settle=settle)  # rerun: nothing new

    for i, user in enumerate(users):
        ours = db.collection("invoices").document(f"{user.uid}_2026-10").get().to_dict()
        assert ours["status"] == "open" and ours["hostedInvoiceUrl"].startswith(stack.stripe_url)
        theirs = sc.v1.invoices.list(params={"customer": profile(db, user.uid)["stripeCustomerId"]}).data
        assert len(theirs) == 1
        assert theirs[0].id == ours["stripeInvoiceId"]
        assert theirs[0].total == ours["total"] == [1373, 2745, 4118][i]  # 30.5 min x (i+1) x 45, half-up
        metadata = theirs[0].to_dict()["metadata"]
        assert metadata["invoiceId"] == f"{user.uid}_2026-10" and metadata["period"] == "2026-10"
        assert theirs[0].collection_method == "charge_automatically" and theirs[0].auto_advance


def test_a_crash_between_stripe_calls_then_a_rerun_charges_once(stack: Stack, db: Any, ann: Any,
                                                                sc: stripe.StripeClient) -> None:
    _october(db, [ann])

    class FinalizeFails:
        """Fault injection: the real client, but finalize fails once (a crash mid-way)."""

        def __init__(self) -> None:
            self.v1 = sc.v1
            real = sc.v1.invoices.finalize_invoice

            def failing(*args: Any, **kwargs: Any) -> Any:
                sc.v1.invoices.finalize_invoice = real  # type: ignore[method-assign]
                raise stripe.APIConnectionError("connection reset")

            sc.v1.invoices.finalize_invoice = failing  # type: ignore[method-assign]

    first = run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV,
                       settle=stripe_settler(db, FinalizeFails(), lambda: NOV))
    assert first.counts == {"failed": 1} and first.failed == [ann.uid]  # recorded; the run went on
    assert db.collection("invoices").document(f"{ann.uid}_2026-10").get().to_dict()["status"] == "draft"

    run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV, settle=stripe_settler(db, sc, lambda: NOV))

    theirs = sc.v1.invoices.list(params={"customer": profile(db, ann.uid)["stripeCustomerId"]}).data
    assert len(theirs) == 1 and theirs[0].status == "open" and theirs[0].total == 1373
    assert len(theirs[0].lines.data) == 1


def _invoice_for(stack: Stack, db: Any, sc: stripe.StripeClient, user: Any) -> tuple[str, str]:
    _october(db, [user])
    run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV, settle=stripe_settler(db, sc, lambda: NOV))
    ours = db.collection("invoices").document(f"{user.uid}_2026-10").get().to_dict()
    return ours["id"], ours["stripeInvoiceId"]


def test_webhooks_move_invoices_to_paid_or_failed(stack: Stack, db: Any, new_user: Any,
                                                  sc: stripe.StripeClient) -> None:
    payer, decliner = new_user(), new_user()
    for user in (payer, decliner):
        db.collection("users").document(user.uid).set({"email": user.email})
    add_card(stack, sc, payer, db)
    add_card(stack, sc, decliner, db, card="pm_card_chargeDeclined")
    paid_id, _ = _invoice_for(stack, db, sc, payer)
    failed_id, _ = _invoice_for(stack, db, sc, decliner)

    # Stripe collects finalized invoices automatically: one card pays, the other declines
    wait_for(lambda: db.collection("invoices").document(paid_id).get().to_dict()["status"] == "paid")
    wait_for(lambda: db.collection("invoices").document(failed_id).get().to_dict()["status"] == "failed")
    shown = requests.get(f"{stack.function_url('billing')}/invoices/{paid_id}", headers=payer.headers,
                         timeout=10).json()
    assert shown["status"] == "paid" and shown["hostedInvoiceUrl"]


def _post_event(stack: Stack, event: dict[str, Any], secret: str = SECRET,
                timestamp: int | None = None) -> requests.Response:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return requests.post(stack.function_url("stripe-webhook"), data=payload,
                         headers={"Stripe-Signature": header, "Content-Type": "application/json"}, timeout=10)


def _event(kind: str, obj: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "api_version": "2025-10-29.clover", "created": int(time.time()),
            "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": kind}


def test_bad_signatures_store_nothing_and_replays_change_nothing(stack: Stack, db: Any, ann: Any,
                                                                 sc: stripe.StripeClient) -> None:
    add_card(stack, sc, ann, db)
    invoice_id, stripe_id = _invoice_for(stack, db, sc, ann)
    wait_for(lambda: db.collection("invoices").document(invoice_id).get().to_dict()["status"] == "paid")
    paid = sc.v1.invoices.retrieve(stripe_id).to_dict()
    event = _event("invoice.paid", paid, "evt_test_replay")

    for bad in (_post_event(stack, event, secret="whsec_wrong"),
                _post_event(stack, event, timestamp=int(time.time()) - 301),
                requests.post(stack.function_url("stripe-webhook"), json=event, timeout=10)):
        assert bad.status_code == 400
        assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert not db.collection("stripeEvents").document("evt_test_replay").get().exists

    assert _post_event(stack, event).json()["outcome"] == "processed"
    before = db.collection("invoices").document(invoice_id).get()
    assert _post_event(stack, event).json()["outcome"] == "duplicate"
    assert db.collection("invoices").document(invoice_id).get().update_time == before.update_time

    # out of order: an older "finalized" event after "paid" leaves it paid (the object is re-fetched)
    late = _post_event(stack, _event("invoice.finalized", {**paid, "status": "open"}, "evt_test_late"))
    assert late.status_code == 200
    assert db.collection("invoices").document(invoice_id).get().to_dict()["status"] == "paid"
    ignored = _post_event(stack, _event("charge.refunded", {"id": "ch_1"}, "evt_test_other"))
    assert ignored.status_code == 200 and ignored.json()["outcome"] == "ignored"


def test_processing_failure_is_5xx_so_stripe_retries(stack: Stack, db: Any) -> None:
    event = _event("invoice.paid", {"id": "in_does_not_exist", "object": "invoice"}, "evt_test_fail")

    response = _post_event(stack, event)

    assert response.status_code == 500
    assert not db.collection("stripeEvents").document("evt_test_fail").get().exists


def test_a_rerun_after_idempotency_keys_expired_still_charges_once(stack: Stack, db: Any, new_user: Any,
                                                                   sc: stripe.StripeClient) -> None:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    for k, tokens in enumerate([1830, 600]):  # two assistants: two lines
        db.collection("usageEvents").document(f"exp-{user.uid}-{k}").set({
            "userId": user.uid, "assistantId": f"a-{k}", "provider": "openai", "occurredAt": OCT,
            "usage": {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}})
    wait_for(lambda: read_aggregate(db, user.uid).totals.total_tokens == 2430)

    class SecondItemFails:
        """Fault injection: the real client, but the second invoice item fails (a crash mid-way)."""

        def __init__(self) -> None:
            self.v1 = sc.v1
            real = sc.v1.invoice_items.create
            calls = {"n": 0}

            def flaky(*args: Any, **kwargs: Any) -> Any:
                calls["n"] += 1
                if calls["n"] == 2:
                    sc.v1.invoice_items.create = real  # type: ignore[method-assign]
                    raise stripe.APIConnectionError("connection reset")
                return real(*args, **kwargs)

            sc.v1.invoice_items.create = flaky  # type: ignore[method-assign]

    first = run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV,
                       settle=stripe_settler(db, SecondItemFails(), lambda: NOV))
    assert first.counts == {"failed": 1}
    requests.delete(f"{stack.stripe_url}/_fake/idempotency", timeout=5)  # a day later: keys forgotten

    run_period(db, "2026-10", [DEFAULT_RATE_CARD], lambda: NOV, settle=stripe_settler(db, sc, lambda: NOV))

    ours = db.collection("invoices").document(f"{user.uid}_2026-10").get().to_dict()
    theirs = sc.v1.invoices.list(params={"customer": profile(db, user.uid)["stripeCustomerId"]}).data
    assert len(theirs) == 1 and theirs[0].id == ours["stripeInvoiceId"]
    assert theirs[0].total == ours["total"] == 1823  # (30.5 + 10) min x 45 = 1822.5 -> 1823, once
    assert len(sc.v1.invoices.line_items.list(theirs[0].id).data) == 2


def test_an_invoice_status_never_moves_back(db: Any, ann: Any) -> None:
    from simplytalk.services.payments import set_invoice_status

    db.collection("invoices").document("inv-rank").set({"userId": ann.uid, "status": "open"})

    assert set_invoice_status(db, "inv-rank", "paid", {}, NOV) == "paid"
    assert set_invoice_status(db, "inv-rank", "open", {}, NOV) == "paid"
    assert set_invoice_status(db, "inv-rank", "failed", {}, NOV) == "paid"
    db.collection("invoices").document("inv-fail").set({"userId": ann.uid, "status": "failed"})
    assert set_invoice_status(db, "inv-fail", "open", {}, NOV) == "failed"
    assert set_invoice_status(db, "inv-fail", "paid", {}, NOV) == "paid"
