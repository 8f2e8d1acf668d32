"""Stripe end to end against the local Stripe, through the official SDK and the functions host."""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import requests
import stripe
from simplytalk.invoice import Invoice, InvoiceStatus
from simplytalk.pricing import DEFAULT_RATE_CARD
from simplytalk.services.aggregation import read_aggregate
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import run_period
from simplytalk.services.payments_deps import firestore_payments

from devtools.bench.stripe_calls import CountingStripe
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
    assert len({r.json()["setupIntentId"] for r in results}) == 1  # one open SetupIntent per user
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
    assert early.status_code == 400 and early.json()["error"]["status"] == "FAILED_PRECONDITION"  # no card yet

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
    billing = firestore_billing(db, lambda: NOV, sc)

    run_period(billing, "2026-10", [DEFAULT_RATE_CARD])
    run_period(billing, "2026-10", [DEFAULT_RATE_CARD])  # rerun: nothing new

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

    first = run_period(firestore_billing(db, lambda: NOV, FinalizeFails()), "2026-10", [DEFAULT_RATE_CARD])
    assert first.counts == {"failed": 1} and first.failed == [ann.uid]  # recorded; the run went on
    assert db.collection("invoices").document(f"{ann.uid}_2026-10").get().to_dict()["status"] == "draft"

    run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    theirs = sc.v1.invoices.list(params={"customer": profile(db, ann.uid)["stripeCustomerId"]}).data
    assert len(theirs) == 1 and theirs[0].status == "open" and theirs[0].total == 1373
    assert len(theirs[0].lines.data) == 1


def failing_on(sc: stripe.StripeClient, method: str, call: int) -> Any:
    """Fault injection: the real client, but its `call`-th `invoices.<method>` fails (a crash mid-way)."""
    real = getattr(sc.v1.invoices, method)
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            raise stripe.APIConnectionError("connection reset")
        return real(*args, **kwargs)

    class Client:
        v1 = type("V1", (), {"__getattr__": lambda self, name: getattr(sc.v1, name)})()

    invoices = type("Invoices", (), {"__getattr__": lambda self, name: getattr(sc.v1.invoices, name)})()
    setattr(invoices, method, flaky)
    Client.v1.invoices = invoices
    return Client()


def default_payment_method(sc: stripe.StripeClient, customer: str) -> Any:
    settings: Any = sc.v1.customers.retrieve(customer).invoice_settings
    return settings.default_payment_method if settings else None


def advance_stripe_clock(stack: Stack, seconds: int) -> None:
    response = requests.post(f"{stack.stripe_url}/_fake/clock", json={"advance": seconds}, timeout=10)
    assert response.status_code == 200, response.text


def _invoice_for(stack: Stack, db: Any, sc: stripe.StripeClient, user: Any) -> tuple[str, str]:
    _october(db, [user])
    run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])
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


def _post_event(stack: Stack, event: Any, secret: str = SECRET,
                timestamp: int | None = None) -> requests.Response:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return requests.post(stack.function_url("stripe-webhook"), data=payload,
                         headers={"Stripe-Signature": header, "Content-Type": "application/json"}, timeout=10)


def _event(kind: str, obj: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "api_version": stripe.api_version, "created": int(time.time()),
            "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": kind}


def _quiet(ref: Any, for_seconds: float = 0.5) -> Any:
    """The document once it has stopped changing (webhooks still in flight have landed)."""
    snap = ref.get()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(for_seconds)
        again = ref.get()
        if again.update_time == snap.update_time:
            return again
        snap = again
    raise AssertionError(f"{ref.path} kept changing")


def test_bad_signatures_store_nothing_and_replays_change_nothing(stack: Stack, db: Any, ann: Any,
                                                                 sc: stripe.StripeClient) -> None:
    add_card(stack, sc, ann, db)
    invoice_id, stripe_id = _invoice_for(stack, db, sc, ann)
    wait_for(lambda: db.collection("invoices").document(invoice_id).get().to_dict()["status"] == "paid")
    paid = json.loads(json.dumps(sc.v1.invoices.retrieve(stripe_id).to_dict(), default=str))
    event = _event("invoice.paid", paid, "evt_test_replay")

    for bad in (_post_event(stack, event, secret="whsec_wrong"),
                _post_event(stack, event, timestamp=int(time.time()) - 301),
                requests.post(stack.function_url("stripe-webhook"), json=event, timeout=10)):
        assert bad.status_code == 400
        assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert not db.collection("stripeEvents").document("evt_test_replay").get().exists

    assert _post_event(stack, event).json()["outcome"] == "processed"
    before = _quiet(db.collection("invoices").document(invoice_id))  # the local Stripe's own events landed
    assert _post_event(stack, event).json()["outcome"] == "duplicate"
    assert db.collection("invoices").document(invoice_id).get().update_time == before.update_time

    # out of order: an older "finalized" event after "paid" leaves it paid (the object is re-fetched)
    late = _post_event(stack, _event("invoice.finalized", {**paid, "status": "open"}, "evt_test_late"))
    assert late.status_code == 200
    assert db.collection("invoices").document(invoice_id).get().to_dict()["status"] == "paid"
    ignored = _post_event(stack, _event("charge.refunded", {"id": "ch_1"}, "evt_test_other"))
    assert ignored.status_code == 200 and ignored.json()["outcome"] == "ignored"


@pytest.mark.parametrize(("event", "outcome"), [
    ({"type": "invoice.paid", "data": {"object": {"id": "in_1"}}}, "malformed"),  # no id
    ({"id": "evt_no_data", "type": "invoice.paid"}, "malformed"),
    ({"id": "evt_no_object_id", "type": "invoice.paid", "data": {"object": {"object": "invoice"}}}, "malformed"),
    ({"id": "evt_bad/id", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}, "malformed"),
    ({"id": "evt_unknown", "type": "invoice.paid", "data": {"object": {"id": "in_does_not_exist"}}},
     "unknown-object"),
    ([1, 2, 3], "malformed"),
])
def test_a_signed_event_that_can_never_apply_is_acknowledged_not_retried(stack: Stack, event: Any,
                                                                         outcome: str) -> None:
    response = _post_event(stack, event)

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == outcome


def test_a_signed_event_that_is_not_json_is_acknowledged(stack: Stack) -> None:
    payload = "{not json"
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET)

    response = requests.post(stack.function_url("stripe-webhook"), data=payload,
                             headers={"Stripe-Signature": header}, timeout=10)

    assert response.status_code == 200 and response.json()["outcome"] == "malformed"


def test_a_rerun_after_idempotency_keys_expired_still_charges_once(stack: Stack, db: Any, new_user: Any,
                                                                   sc: stripe.StripeClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from simplytalk.services import payments

    monkeypatch.setattr(payments, "LINES_PER_REQUEST", 1)  # one line per add_lines: a crash between them
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    for k, tokens in enumerate([1830, 600]):  # two assistants: two lines
        db.collection("usageEvents").document(f"exp-{user.uid}-{k}").set({
            "userId": user.uid, "assistantId": f"a-{k}", "provider": "openai", "occurredAt": OCT,
            "usage": {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}})
    wait_for(lambda: read_aggregate(db, user.uid).totals.total_tokens == 2430)

    first = run_period(firestore_billing(db, lambda: NOV, failing_on(sc, "add_lines", 2)), "2026-10",
                       [DEFAULT_RATE_CARD])
    assert first.counts == {"failed": 1}
    requests.delete(f"{stack.stripe_url}/_fake/idempotency", timeout=5)  # a day later: keys forgotten
    advance_stripe_clock(stack, 6 * 3600)  # hours later: the draft waited (it does not advance by itself)

    run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    ours = db.collection("invoices").document(f"{user.uid}_2026-10").get().to_dict()
    theirs = sc.v1.invoices.list(params={"customer": profile(db, user.uid)["stripeCustomerId"]}).data
    assert len(theirs) == 1 and theirs[0].id == ours["stripeInvoiceId"]
    assert theirs[0].total == ours["total"] == 1823  # (30.5 + 10) min x 45 = 1822.5 -> 1823, once
    assert len(sc.v1.invoices.line_items.list(theirs[0].id).data) == 2


def test_an_invoice_status_never_moves_back(db: Any, ann: Any) -> None:
    from simplytalk.services.payments import set_invoice_status as set_status

    def set_invoice_status(db: Any, invoice_id: str, status: str, fields: dict[str, Any], now: dt.datetime) -> Any:
        return set_status(firestore_payments(db, None, lambda: now), invoice_id, InvoiceStatus(status), fields)

    db.collection("invoices").document("inv-rank").set({"userId": ann.uid, "status": "open"})

    assert set_invoice_status(db, "inv-rank", "paid", {}, NOV) == "paid"
    assert set_invoice_status(db, "inv-rank", "open", {}, NOV) == "paid"
    assert set_invoice_status(db, "inv-rank", "failed", {}, NOV) == "paid"
    db.collection("invoices").document("inv-fail").set({"userId": ann.uid, "status": "failed"})
    assert set_invoice_status(db, "inv-fail", "open", {}, NOV) == "failed"
    assert set_invoice_status(db, "inv-fail", "paid", {}, NOV) == "paid"


# -- against Stripe's rules for the API version the SDK pins ---------------------------------------

DEC = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def _usage(db: Any, uid: str, event: str, tokens: int, at: dt.datetime = OCT, assistant: str = "a-0") -> None:
    db.collection("usageEvents").document(event).set({
        "userId": uid, "assistantId": assistant, "provider": "openai", "occurredAt": at,
        "usage": {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}})


def _invoice(db: Any, uid: str, period: str = "2026-10") -> dict[str, Any]:
    return db.collection("invoices").document(f"{uid}_{period}").get().to_dict() or {}


def _stripe_invoices(db: Any, sc: stripe.StripeClient, uid: str) -> list[Any]:
    return list(sc.v1.invoices.list(params={"customer": profile(db, uid)["stripeCustomerId"], "limit": 100}).data)


def test_card_setup_hands_out_the_open_intent_until_it_is_used(stack: Stack, db: Any, ann: Any,
                                                              sc: stripe.StripeClient) -> None:
    url = stack.function_url("billing") + "/setup-intent"
    first = requests.post(url, headers=ann.headers, timeout=10).json()
    again = requests.post(url, headers=ann.headers, timeout=10).json()

    assert again["setupIntentId"] == first["setupIntentId"] and again["clientSecret"] == first["clientSecret"]
    intent = sc.v1.setup_intents.retrieve(first["setupIntentId"])
    assert intent.automatic_payment_methods is not None and intent.automatic_payment_methods.enabled is True
    assert intent.usage == "off_session"

    sc.v1.setup_intents.confirm(first["setupIntentId"], params={"payment_method": "pm_card_visa"})
    wait_for(lambda: profile(db, ann.uid).get("hasPaymentMethod") is True)
    after = requests.post(url, headers=ann.headers, timeout=10).json()

    assert after["setupIntentId"] != first["setupIntentId"]  # the used one is never handed out again


def test_a_first_payment_that_fails_leaves_the_subscription_incomplete(stack: Stack, db: Any, ann: Any,
                                                                      sc: stripe.StripeClient) -> None:
    billing = stack.function_url("billing")
    assistant = requests.post(stack.function_url("openai-assistants"), json={"name": "a"}, headers=ann.headers,
                              timeout=10).json()
    add_card(stack, sc, ann, db, card="pm_card_chargeDeclined")

    declined = requests.post(billing + "/subscription", headers=ann.headers, timeout=10)

    assert declined.status_code == 402, declined.text
    view = requests.get(billing + "/subscription", headers=ann.headers, timeout=10).json()
    assert view["status"] == "incomplete" and view["isSubscribed"] is False
    assert db.collection("openaiAssistants").document(assistant["id"]).get().to_dict()["isSubscribed"] is False

    setup = requests.post(billing + "/setup-intent", headers=ann.headers, timeout=10).json()
    card = sc.v1.setup_intents.confirm(setup["setupIntentId"], params={"payment_method": "pm_card_visa"})
    wait_for(lambda: default_payment_method(sc, profile(db, ann.uid)["stripeCustomerId"]) == card.payment_method)
    retried = requests.post(billing + "/subscription", headers=ann.headers, timeout=10)

    assert retried.status_code == 201, retried.text
    assert retried.json()["status"] == "active" and retried.json()["isSubscribed"] is True
    assert retried.json()["subscriptionId"] == view["subscriptionId"]  # the same subscription, now paid


def _half_pushed_by_stripe(stack: Stack, db: Any, sc: stripe.StripeClient, uid: str) -> tuple[dict[str, Any], str]:
    """Our invoice (two lines) whose Stripe invoice got only its first line, auto-advancing (as the
    old push made it), then finalized by Stripe itself an hour later."""
    _usage(db, uid, f"half-{uid}-0", 1830, assistant="a-0")
    _usage(db, uid, f"half-{uid}-1", 600, assistant="a-1")
    wait_for(lambda: read_aggregate(db, uid).totals.total_tokens == 2430)
    run_period(firestore_billing(db, lambda: NOV), "2026-10", [DEFAULT_RATE_CARD])  # our invoice only, no Stripe yet
    ours = _invoice(db, uid)
    customer = profile(db, uid).get("stripeCustomerId") or sc.v1.customers.create(
        params={"metadata": {"uid": uid}}).id
    db.collection("stripeCustomers").document(customer).set({"userId": uid})
    db.collection("users").document(uid).set({"stripeCustomerId": customer}, merge=True)
    half = sc.v1.invoices.create(params={
        "customer": customer, "auto_advance": True, "collection_method": "charge_automatically",
        "pending_invoice_items_behavior": "exclude", "currency": "usd",
        "metadata": {"invoiceId": ours["id"], "period": "2026-10", "userId": uid}})
    sc.v1.invoices.add_lines(half.id, params={"lines": [{"amount": ours["lines"][0]["amount"],
                                                            "metadata": {"line": "0"}}]})
    db.collection("invoices").document(ours["id"]).update({"stripeInvoiceId": half.id})
    advance_stripe_clock(stack, 3700)
    assert sc.v1.invoices.retrieve(half.id).status in ("open", "paid")  # Stripe finalized it by itself
    return ours, half.id


def test_an_invoice_stripe_finalized_with_fewer_lines_is_voided_and_reissued(stack: Stack, db: Any, ann: Any,
                                                                            sc: stripe.StripeClient) -> None:
    ours, half = _half_pushed_by_stripe(stack, db, sc, ann.uid)
    assert _invoice(db, ann.uid)["status"] == "draft"  # webhooks about the half one changed nothing

    run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    after = _invoice(db, ann.uid)
    assert sc.v1.invoices.retrieve(half).status == "void"
    full = sc.v1.invoices.retrieve(after["stripeInvoiceId"])
    assert full.id != half and full.status == "open" and full.total == ours["total"] == 1823
    assert after["status"] == "open" and after["replacedStripeInvoices"] == [half]
    time.sleep(1)  # the voided invoice's webhooks arrive: ours is not voided by them
    assert _invoice(db, ann.uid)["status"] == "open"


def test_a_partial_invoice_stripe_already_charged_is_flagged_never_marked_paid(stack: Stack, db: Any, ann: Any,
                                                                              sc: stripe.StripeClient) -> None:
    add_card(stack, sc, ann, db)
    _, half = _half_pushed_by_stripe(stack, db, sc, ann.uid)
    wait_for(lambda: sc.v1.invoices.retrieve(half).status == "paid")
    time.sleep(1)  # its invoice.paid webhook has been handled
    assert _invoice(db, ann.uid)["status"] == "review"

    run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    after = _invoice(db, ann.uid)
    assert after["status"] == "review" and "(paid) bills 1373, not 1823" in after["reviewReason"]
    assert len(_stripe_invoices(db, sc, ann.uid)) == 1  # nothing charged twice


def test_a_month_under_stripes_minimum_is_carried_to_the_next_invoice(stack: Stack, db: Any, ann: Any,
                                                                     sc: stripe.StripeClient) -> None:
    _usage(db, ann.uid, f"small-{ann.uid}", 40)  # 40 tokens = 2/3 min x 45 cents = 30 cents
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 40)

    october = run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    assert october.counts == {"carried": 1}
    carried = requests.get(f"{stack.function_url('billing')}/invoices/{ann.uid}_2026-10", headers=ann.headers,
                           timeout=10).json()
    assert carried["status"] == "carried" and carried["total"] == 30 and "minimum" in carried["statusReason"]
    assert not db.collection("billingLedger").document(ann.uid).get().exists  # nothing billed yet
    assert "stripeCustomerId" not in profile(db, ann.uid)  # Stripe never saw it

    _usage(db, ann.uid, f"nov-{ann.uid}", 1830, at=NOV)
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 1870)
    run_period(firestore_billing(db, lambda: DEC, sc), "2026-11", [DEFAULT_RATE_CARD])

    november = _invoice(db, ann.uid, "2026-11")
    assert [(line["usagePeriod"], line["amount"]) for line in november["lines"]] == [("2026-10", 30),
                                                                                     ("2026-11", 1373)]
    assert november["total"] == 1403  # 30 + 1372.5, rounded once
    theirs = _stripe_invoices(db, sc, ann.uid)
    assert [(i.total, i.amount_due) for i in theirs] == [(1403, 1403)]


def test_usage_whose_owner_has_no_users_document_is_invoiced_and_reported(stack: Stack, db: Any, new_user: Any,
                                                                         sc: stripe.StripeClient) -> None:
    ghost = new_user()  # an Auth account whose profile was never written
    _usage(db, ghost.uid, f"ghost-{ghost.uid}", 1830)
    wait_for(lambda: read_aggregate(db, ghost.uid).totals.total_tokens == 1830)
    wait_for(lambda: db.collection("tokenUsage").document(ghost.uid).get().exists)

    summary = run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    assert ghost.uid in summary.without_profile
    assert _invoice(db, ghost.uid)["total"] == 1373
    assert [i.total for i in _stripe_invoices(db, sc, ghost.uid)] == [1373]
    run = db.collection("invoiceRuns").document("2026-10").get().to_dict()
    assert ghost.uid in run["usersWithoutProfile"]


def test_a_month_after_the_first_costs_three_stripe_calls(stack: Stack, db: Any, ann: Any,
                                                          sc: stripe.StripeClient) -> None:
    _usage(db, ann.uid, f"m1-{ann.uid}", 1830)
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 1830)
    run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])
    for k in range(3):
        _usage(db, ann.uid, f"m2-{ann.uid}-{k}", 1830, at=NOV, assistant=f"a-{k}")
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 4 * 1830)
    counting = CountingStripe(sc)

    run_period(firestore_billing(db, lambda: DEC, counting), "2026-11", [DEFAULT_RATE_CARD])

    assert list(counting.calls.elements()) == ["v1.invoices.create", "v1.invoices.add_lines",
                                                "v1.invoices.finalize_invoice"]
    assert _stripe_invoices(db, sc, ann.uid)[0].total == _invoice(db, ann.uid, "2026-11")["total"] == 4118  # 3 x 1372.5


def _many_lines(db: Any, uid: str, n: int) -> dict[str, Any]:
    """An invoice document with n lines (written directly: the aggregation is not under test)."""
    lines = [{"assistantId": f"a-{i:03d}", "provider": "openai", "usagePeriod": "2026-10", "minutes": "1",
              "minutesExact": "1/1", "amount": 45, "rateCardId": DEFAULT_RATE_CARD.id} for i in range(n)]
    doc = {"id": f"{uid}_2026-10", "userId": uid, "period": "2026-10", "status": "draft", "currency": "usd",
           "total": 45 * n, "lines": lines, "rateCardId": DEFAULT_RATE_CARD.id, "stripeInvoiceId": None,
           "hostedInvoiceUrl": None, "createdAt": NOV, "updatedAt": NOV}
    db.collection("invoices").document(doc["id"]).set(doc)
    return doc


def test_a_retry_pages_through_the_lines_already_on_stripes_invoice(stack: Stack, db: Any, ann: Any,
                                                                    sc: stripe.StripeClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from simplytalk.services import payments

    monkeypatch.setattr(payments, "LINES_PER_REQUEST", 60)
    doc = _many_lines(db, ann.uid, 200)
    with pytest.raises(stripe.APIConnectionError):
        # 180 lines in, then a crash
        payments.push_invoice(firestore_payments(db, failing_on(sc, "add_lines", 4), lambda: NOV),
                              Invoice.from_firestore(doc))
    requests.delete(f"{stack.stripe_url}/_fake/idempotency", timeout=5)

    assert payments.push_invoice(firestore_payments(db, sc, lambda: NOV),
                                 Invoice.from_firestore(_invoice(db, ann.uid))) == "pushed"

    stripe_id = _invoice(db, ann.uid)["stripeInvoiceId"]
    lines = list(sc.v1.invoices.line_items.list(stripe_id, params={"limit": 100}).auto_paging_iter())
    assert sorted(int(line.metadata["line"]) for line in lines) == list(range(200))  # each once
    assert sc.v1.invoices.retrieve(stripe_id).total == 9000


def test_more_lines_than_stripe_allows_are_grouped_to_the_same_total(stack: Stack, db: Any, ann: Any,
                                                                     sc: stripe.StripeClient) -> None:
    from simplytalk.services import payments

    doc = _many_lines(db, ann.uid, 300)

    assert payments.push_invoice(firestore_payments(db, sc, lambda: NOV), Invoice.from_firestore(doc)) == "pushed"

    theirs = sc.v1.invoices.retrieve(_invoice(db, ann.uid)["stripeInvoiceId"])
    assert theirs.total == 300 * 45 and theirs.status == "open"
    assert len(list(sc.v1.invoices.line_items.list(theirs.id).auto_paging_iter())) == 1


def test_a_published_run_charges_everyone_once_when_stripe_fails_mid_way_and_the_retry_is_hours_later(
        stack: Stack, db: Any, new_user: Any, sc: stripe.StripeClient) -> None:
    users = [new_user() for _ in range(3)]
    for user in users:
        db.collection("users").document(user.uid).set({"email": user.email})
        add_card(stack, sc, user, db)
        for k in range(2):
            _usage(db, user.uid, f"pub-{user.uid}-{k}", 1830, assistant=f"a-{k}")
    for user in users:
        wait_for(partial(lambda uid: read_aggregate(db, uid).totals.total_tokens == 3660, user.uid))
    period = "2026-10"
    db.collection("invoiceRuns").document(period).delete()
    # Stripe fails every add_lines of the first run (the SDK's own retries included)
    requests.post(f"{stack.stripe_url}/_fake/faults", json={"method": "POST", "path": "/v1/invoices/*/add_lines",
                                                            "status": 500, "count": 1000}, timeout=5)
    try:
        stack.publish("monthly-invoicing", {"period": period})
        first = wait_for(lambda: (d := db.collection("invoiceRuns").document(period).get().to_dict())
                         and d.get("completed") and d, timeout=60)
    finally:
        requests.delete(f"{stack.stripe_url}/_fake/faults", timeout=5)
    assert set(first["failedUsers"]) >= {u.uid for u in users}
    assert all(_invoice(db, u.uid)["status"] == "draft" for u in users)

    requests.delete(f"{stack.stripe_url}/_fake/idempotency", timeout=5)  # hours later: keys forgotten
    advance_stripe_clock(stack, 5 * 3600)  # and the drafts did not advance by themselves
    assert all(sc.v1.invoices.retrieve(_invoice(db, u.uid)["stripeInvoiceId"]).status == "draft" for u in users)
    stack.publish("monthly-invoicing", {"period": period})  # the operator publishes the run again

    for user in users:
        wait_for(partial(lambda uid: _invoice(db, uid).get("status") == "paid", user.uid), timeout=60)
        theirs = _stripe_invoices(db, sc, user.uid)
        charged = [i for i in theirs if i.status == "paid"]
        assert len(charged) == 1 and charged[0].amount_paid == _invoice(db, user.uid)["total"] == 2745
        assert sorted(line.metadata["line"] for line in sc.v1.invoices.line_items.list(charged[0].id).data) == [
            "0", "1"]


def test_a_renewal_that_fails_makes_the_subscription_past_due_and_stops_calls(stack: Stack, db: Any, ann: Any,
                                                                              sc: stripe.StripeClient) -> None:
    billing = stack.function_url("billing")
    add_card(stack, sc, ann, db)
    assert requests.post(billing + "/subscription", headers=ann.headers, timeout=10).status_code == 201
    setup = requests.post(billing + "/setup-intent", headers=ann.headers, timeout=10).json()
    card = sc.v1.setup_intents.confirm(setup["setupIntentId"], params={"payment_method": "pm_card_chargeDeclined"})
    wait_for(lambda: default_payment_method(sc, profile(db, ann.uid)["stripeCustomerId"]) == card.payment_method)

    advance_stripe_clock(stack, 32 * 86400)  # the next period begins; its invoice is declined

    wait_for(lambda: profile(db, ann.uid).get("subscriptionStatus") == "past_due", timeout=20)
    view = requests.get(billing + "/subscription", headers=ann.headers, timeout=10).json()
    assert view["status"] == "past_due" and view["isSubscribed"] is False


def test_an_incomplete_subscription_left_unpaid_expires_and_a_new_one_can_start(
        stack: Stack, db: Any, ann: Any, sc: stripe.StripeClient) -> None:
    billing = stack.function_url("billing")
    add_card(stack, sc, ann, db, card="pm_card_chargeDeclined")
    assert requests.post(billing + "/subscription", headers=ann.headers, timeout=10).status_code == 402
    first = profile(db, ann.uid)["stripeSubscriptionId"]

    advance_stripe_clock(stack, 24 * 3600)  # Stripe expires an unpaid incomplete subscription after 23 hours

    wait_for(lambda: profile(db, ann.uid).get("subscriptionStatus") == "incomplete_expired", timeout=20)
    setup = requests.post(billing + "/setup-intent", headers=ann.headers, timeout=10).json()
    card = sc.v1.setup_intents.confirm(setup["setupIntentId"], params={"payment_method": "pm_card_visa"})
    wait_for(lambda: default_payment_method(sc, profile(db, ann.uid)["stripeCustomerId"]) == card.payment_method)
    again = requests.post(billing + "/subscription", headers=ann.headers, timeout=10)
    assert again.status_code == 201, again.text
    assert again.json()["status"] == "active" and again.json()["subscriptionId"] != first


def test_a_5xx_stripe_kept_under_its_key_does_not_block_the_next_run(stack: Stack, db: Any, ann: Any,
                                                                      sc: stripe.StripeClient) -> None:
    _usage(db, ann.uid, f"k500-{ann.uid}", 1830)
    wait_for(lambda: read_aggregate(db, ann.uid).totals.total_tokens == 1830)
    requests.post(f"{stack.stripe_url}/_fake/faults", json={"method": "POST", "path": "/v1/invoices/*/add_lines",
                                                            "status": 500, "count": 1, "saved": True}, timeout=5)
    first = run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])
    assert first.counts == {"failed": 1}
    second = run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])
    assert second.counts == {"failed": 1}  # the same key: Stripe replays its 500 (for a day)

    third = run_period(firestore_billing(db, lambda: NOV, sc), "2026-10", [DEFAULT_RATE_CARD])

    assert third.counts == {"exists": 1}
    theirs = _stripe_invoices(db, sc, ann.uid)
    assert [(i.status, i.total) for i in theirs] == [("open", 1373)]


def test_subscribing_right_after_saving_a_card_does_not_wait_for_the_webhook(stack: Stack, db: Any, ann: Any,
                                                                             sc: stripe.StripeClient) -> None:
    billing = stack.function_url("billing")
    setup = requests.post(billing + "/setup-intent", headers=ann.headers, timeout=10).json()
    sc.v1.setup_intents.confirm(setup["setupIntentId"], params={"payment_method": "pm_card_visa"})

    subscribed = requests.post(billing + "/subscription", headers=ann.headers, timeout=10)

    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json()["status"] == "active"


def test_a_late_event_about_an_older_card_never_replaces_the_newer_one(stack: Stack, db: Any, ann: Any,
                                                                       sc: stripe.StripeClient) -> None:
    billing = stack.function_url("billing")
    add_card(stack, sc, ann, db)
    old_intent = profile(db, ann.uid)["setupIntentId"]
    advance_stripe_clock(stack, 60)  # a minute later, a new card
    setup = requests.post(billing + "/setup-intent", headers=ann.headers, timeout=10).json()
    newer = sc.v1.setup_intents.confirm(setup["setupIntentId"], params={"payment_method": "pm_card_visa"})
    customer = profile(db, ann.uid)["stripeCustomerId"]
    wait_for(lambda: default_payment_method(sc, customer) == newer.payment_method)

    # a day later: the old intent's idempotency key is forgotten, so only the ordering can stop it
    requests.delete(f"{stack.stripe_url}/_fake/idempotency", timeout=5)
    late = _post_event(stack, _event("setup_intent.succeeded", {"id": old_intent}, "evt_late_old_card"))

    assert late.status_code == 200 and late.json()["outcome"] == "processed"
    assert default_payment_method(sc, customer) == newer.payment_method


def test_stripe_refusing_our_key_while_applying_an_event_is_a_503_so_stripe_retries(
        stack: Stack, db: Any, ann: Any, sc: stripe.StripeClient) -> None:
    add_card(stack, sc, ann, db)
    intent = profile(db, ann.uid)["setupIntentId"]
    requests.post(f"{stack.stripe_url}/_fake/faults", json={"method": "GET", "path": "/v1/setup_intents/",
                                                            "status": 401, "count": 1}, timeout=5)

    refused = _post_event(stack, _event("setup_intent.succeeded", {"id": intent}, "evt_key_rotated"))

    assert refused.status_code == 503 and refused.json()["error"]["status"] == "UNAVAILABLE"
    assert not db.collection("stripeEvents").document("evt_key_rotated").get().exists
    assert _post_event(stack, _event("setup_intent.succeeded", {"id": intent}, "evt_key_rotated")).status_code == 200
