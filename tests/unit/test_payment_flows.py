"""The Stripe flows of payments on in-memory repositories and the in-memory Stripe (`InMemoryStripe`):
saving a card, subscribing (and paying a declined first payment again), cancelling, pushing invoices.

What only the real SDK against the local Stripe can prove (API versions, the SDK's own objects,
Stripe's replayed failures) stays in tests/emulator/test_payments.py.
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import pytest
import stripe
from simplytalk.errors import PaymentNeeded, Unavailable
from simplytalk.invoice import Invoice, InvoiceLine, InvoiceStatus
from simplytalk.repositories.customers import InMemoryCustomers
from simplytalk.repositories.invoices import InMemoryInvoices
from simplytalk.repositories.stripe_events import InMemoryStripeEvents
from simplytalk.repositories.stripe_links import InMemoryStripeLinks
from simplytalk.services import payments as svc
from simplytalk.services.payments import EventOutcome, PushOutcome
from simplytalk.services.payments_deps import PaymentsDeps
from simplytalk.stripe_gateway import stripe_errors
from simplytalk.stripe_port import InMemoryStripe

NOV = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
PRICE = "price_monthly"
DECLINED = "pm_card_chargeDeclined"


class Payments:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.events = InMemoryStripeEvents()
        self.invoices = InMemoryInvoices()
        self.stripe = InMemoryStripe(price_amounts={PRICE: 2900})
        self.stripe.decline(DECLINED)

    def deps(self) -> PaymentsDeps:
        return PaymentsDeps(customers=self.customers, events=self.events, invoices=self.invoices,
                            links=InMemoryStripeLinks(self.invoices), stripe=self.stripe, clock=lambda: NOV)

    def user(self, uid: str = "u1") -> str:
        self.customers.add_user(uid, email=f"{uid}@example.com")
        return uid

    def save_card(self, uid: str, card: str) -> str:
        """What the app does: ask for a SetupIntent, and Stripe.js confirms it with the card."""
        setup = svc.create_setup_intent(self.deps(), uid)
        self.stripe.confirm_setup_intent(setup["setupIntentId"], card)
        return str(setup["setupIntentId"])

    def draft(self, uid: str = "u1", n: int = 5, amount: int = 45) -> Invoice:
        lines = [InvoiceLine(f"a-{i:03d}", "openai", "2026-10", Fraction(1), amount, "default") for i in range(n)]
        invoice = Invoice(id=f"{uid}_2026-10", user_id=uid, period="2026-10", currency="usd", total=amount * n,
                          lines=lines, rate_card_id="default", created_at=NOV, updated_at=NOV)
        self.invoices.create(invoice)
        return self.stored(invoice.id)

    def stored(self, invoice_id: str = "u1_2026-10") -> Invoice:
        found = self.invoices.get(invoice_id)
        assert found is not None
        return found


@pytest.fixture
def p() -> Payments:
    return Payments()


def line_keys(p: Payments, stripe_invoice_id: str) -> list[str]:
    return [line.metadata["line"] for line in p.stripe.lines_of(stripe_invoice_id)]


# -- customers and cards ------------------------------------------------------------------------------

def test_a_user_gets_one_stripe_customer_however_often_asked(p: Payments) -> None:
    uid = p.user()

    first = svc.ensure_customer(p.deps(), uid)

    assert svc.ensure_customer(p.deps(), uid) == first
    assert list(p.stripe.customers) == [first] and p.stripe.customers[first].metadata == {"uid": uid}
    assert p.customers.profile(uid).customer_id == first


def test_a_users_open_setup_intent_is_handed_out_again_until_used(p: Payments) -> None:
    uid = p.user()

    first = svc.create_setup_intent(p.deps(), uid)
    again = svc.create_setup_intent(p.deps(), uid)

    assert again == first and first["status"] == "requires_payment_method"
    assert first["clientSecret"] and first["customerId"] == p.customers.profile(uid).customer_id
    assert len(p.stripe.setup_intents) == 1

    p.stripe.confirm_setup_intent(first["setupIntentId"], "pm_card_visa")
    after = svc.create_setup_intent(p.deps(), uid)

    assert after["setupIntentId"] != first["setupIntentId"] and len(p.stripe.setup_intents) == 2


# -- subscriptions ---------------------------------------------------------------------------------------

def test_subscribing_with_a_card_is_active_and_marks_the_user_subscribed(p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, "pm_card_visa")

    view = svc.subscribe(p.deps(), uid, PRICE)

    assert view["isSubscribed"] is True and view["status"] == "active" and view["hasPaymentMethod"] is True
    subscription = p.stripe.subscriptions[view["subscriptionId"]]
    assert subscription.status == "active" and p.stripe.invoices[subscription.latest_invoice].status == "paid"
    customer = p.stripe.customers[view["customerId"]]
    assert customer.invoice_settings.default_payment_method == "pm_card_visa"


def test_a_declined_first_payment_is_incomplete_and_subscribing_again_after_a_new_card_pays_it(
        p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, DECLINED)

    with pytest.raises(PaymentNeeded):
        svc.subscribe(p.deps(), uid, PRICE)

    declined = svc.subscription_view(p.deps(), uid)
    assert declined["status"] == "incomplete" and declined["isSubscribed"] is False
    p.save_card(uid, "pm_card_visa")

    view = svc.subscribe(p.deps(), uid, PRICE)

    assert view["isSubscribed"] is True and view["status"] == "active"
    assert view["subscriptionId"] == declined["subscriptionId"] and len(p.stripe.subscriptions) == 1
    assert p.stripe.invoices[p.stripe.subscriptions[view["subscriptionId"]].latest_invoice].status == "paid"


def test_subscribing_again_with_the_declined_card_is_payment_needed_again(p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, DECLINED)
    with pytest.raises(PaymentNeeded):
        svc.subscribe(p.deps(), uid, PRICE)

    with pytest.raises(PaymentNeeded) as raised:
        svc.subscribe(p.deps(), uid, PRICE)

    assert isinstance(raised.value.__cause__, stripe.CardError)
    assert svc.subscription_view(p.deps(), uid)["status"] == "incomplete"


def test_cancelling_a_subscription_ends_it(p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, "pm_card_visa")
    subscription_id = svc.subscribe(p.deps(), uid, PRICE)["subscriptionId"]

    view = svc.cancel_subscription(p.deps(), uid)

    assert view["status"] == "canceled" and view["isSubscribed"] is False
    assert p.stripe.subscriptions[subscription_id].status == "canceled"


def test_a_declined_card_on_a_users_request_is_payment_needed(p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, DECLINED)
    with pytest.raises(PaymentNeeded):
        svc.subscribe(p.deps(), uid, PRICE)
    subscription_id = svc.subscription_view(p.deps(), uid)["subscriptionId"]
    invoice_id = p.stripe.subscriptions[subscription_id].latest_invoice

    with pytest.raises(PaymentNeeded), stripe_errors():
        p.stripe.pay_invoice(invoice_id)  # the SDK's CardError, mapped as in production


# -- Stripe failing ------------------------------------------------------------------------------------

def test_a_5xx_from_stripe_on_a_users_request_is_unavailable(p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, "pm_card_visa")
    p.stripe.fail_next("create_subscription")

    with pytest.raises(Unavailable), stripe_errors():
        svc.subscribe(p.deps(), uid, PRICE)

    assert svc.subscribe(p.deps(), uid, PRICE)["isSubscribed"] is True  # Stripe is back: it works


def test_a_5xx_while_refetching_a_webhooks_object_is_unavailable_and_not_marked(p: Payments) -> None:
    p.stripe.fail_next("retrieve_invoice")

    with pytest.raises(Unavailable):
        svc.process_event(p.deps(), {"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "in_x"}}})

    assert p.events.markers == {}
    outcome = svc.process_event(p.deps(), {"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "in_x"}}})
    assert outcome == EventOutcome.UNKNOWN_OBJECT  # Stripe is back, and does not know it


# -- invoices ------------------------------------------------------------------------------------------

def test_an_invoice_push_makes_a_draft_adds_every_line_once_and_finalizes(p: Payments) -> None:
    p.user()
    invoice = p.draft(n=5)

    assert svc.push_invoice(p.deps(), invoice) == PushOutcome.PUSHED == "pushed"

    stored = p.stored()
    theirs = p.stripe.invoices[stored.stripe_invoice_id or ""]
    assert theirs.status == "open" and theirs.total == invoice.total == 225 and theirs.auto_advance is True
    assert theirs.collection_method == "charge_automatically"
    assert theirs.metadata == {"invoiceId": invoice.id, "period": "2026-10", "userId": "u1"}
    assert line_keys(p, theirs.id) == ["0", "1", "2", "3", "4"]
    assert stored.status == InvoiceStatus.OPEN and stored.amount_due == 225
    assert p.stripe.calls.count("create_invoice") == 1 and p.stripe.calls.count("finalize_invoice") == 1


def test_pushing_again_changes_nothing_on_stripe(p: Payments) -> None:
    p.user()
    svc.push_invoice(p.deps(), p.draft(n=3))
    first = p.stored().stripe_invoice_id

    assert svc.push_invoice(p.deps(), p.stored()) == PushOutcome.PUSHED

    assert p.stored().stripe_invoice_id == first and len(p.stripe.invoices) == 1
    assert line_keys(p, first or "") == ["0", "1", "2"]


def test_a_push_retried_after_a_failure_adds_only_the_missing_lines(p: Payments,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svc, "LINES_PER_REQUEST", 2)
    p.user()
    invoice = p.draft(n=5)
    p.stripe.fail_next("add_invoice_lines", after=1)  # the second batch fails

    with pytest.raises(stripe.APIError):
        svc.push_invoice(p.deps(), invoice)

    stored = p.stored()
    assert stored.status == InvoiceStatus.DRAFT and stored.stripe_invoice_id
    assert p.stripe.invoices[stored.stripe_invoice_id].status == "draft"
    assert line_keys(p, stored.stripe_invoice_id) == ["0", "1"]

    assert svc.push_invoice(p.deps(), stored) == PushOutcome.PUSHED

    assert line_keys(p, stored.stripe_invoice_id) == ["0", "1", "2", "3", "4"]  # each once
    assert p.stripe.invoices[stored.stripe_invoice_id].status == "open" and len(p.stripe.invoices) == 1


def test_a_push_whose_finalize_failed_finalizes_on_the_retry(p: Payments) -> None:
    p.user()
    p.stripe.fail_next("finalize_invoice")
    with pytest.raises(stripe.APIError):
        svc.push_invoice(p.deps(), p.draft(n=2))

    assert svc.push_invoice(p.deps(), p.stored()) == PushOutcome.PUSHED

    theirs = p.stripe.invoices[p.stored().stripe_invoice_id or ""]
    assert theirs.status == "open" and line_keys(p, theirs.id) == ["0", "1"]


def test_a_stripe_invoice_whose_total_differs_is_voided_and_reissued(p: Payments) -> None:
    uid = p.user()
    customer = svc.ensure_customer(p.deps(), uid)
    invoice = p.draft(n=2)
    # Stripe finalized our invoice with one line of two (before all were added)
    half = p.stripe.create_invoice({"customer": customer, "auto_advance": False, "currency": "usd",
                                    "metadata": {"invoiceId": invoice.id}}, idempotency_key="half")
    p.stripe.add_invoice_lines(half.id, {"lines": [{"amount": 45, "metadata": {"line": "0"}}]},
                               idempotency_key="half-lines")
    p.stripe.finalize_invoice(half.id, {"auto_advance": True}, idempotency_key="half-finalize")
    InMemoryStripeLinks(p.invoices).link(invoice.id, half.id, NOV)

    assert svc.push_invoice(p.deps(), p.stored()) == PushOutcome.PUSHED

    stored = p.stored()
    assert p.stripe.invoices[half.id].status == "void"
    assert stored.stripe_invoice_id != half.id and stored.stripe_reissues == 1
    assert half.id in stored.replaced_stripe_invoices
    full = p.stripe.invoices[stored.stripe_invoice_id or ""]
    assert full.status == "open" and full.total == 90 and line_keys(p, full.id) == ["0", "1"]
    assert stored.status == InvoiceStatus.OPEN


def test_a_paid_stripe_invoice_with_another_total_is_flagged_for_review(p: Payments) -> None:
    uid = p.user()
    p.save_card(uid, "pm_card_visa")
    svc.subscribe(p.deps(), uid, PRICE)  # the card is the customer's default
    invoice = p.draft(n=2)
    customer = p.customers.profile(uid).customer_id or ""
    half = p.stripe.create_invoice({"customer": customer, "metadata": {"invoiceId": invoice.id}}, "half")
    p.stripe.add_invoice_lines(half.id, {"lines": [{"amount": 45}]}, "half-lines")
    p.stripe.finalize_invoice(half.id, {"auto_advance": True}, "half-finalize")
    p.stripe.pay_invoice(half.id)
    InMemoryStripeLinks(p.invoices).link(invoice.id, half.id, NOV)

    assert svc.push_invoice(p.deps(), p.stored()) == PushOutcome.REVIEW == "review"

    stored = p.stored()
    assert stored.status == InvoiceStatus.REVIEW and half.id in (stored.review_reason or "")
    assert p.stripe.invoices[half.id].status == "paid" and len(p.stripe.invoices_of(customer)) == 2


def test_the_fake_returns_the_first_result_for_a_key_used_again(p: Payments) -> None:
    params: dict[str, Any] = {"metadata": {"uid": "u9"}}
    first = p.stripe.create_customer(params, "customer-u9")

    assert p.stripe.create_customer(params, "customer-u9") == first and len(p.stripe.customers) == 1
    with pytest.raises(stripe.IdempotencyError):
        p.stripe.create_customer({"metadata": {"uid": "other"}}, "customer-u9")
