"""Payments on in-memory repositories: the users' Stripe state, invoice statuses and webhook events.

Here Stripe is only the objects a webhook re-fetches (`StripeObjects`); the flows that change
Stripe (customers, SetupIntents, subscriptions, pushing invoices) run on `InMemoryStripe` in
test_payment_flows.py, and against the local Stripe in tests/emulator/test_payments.py.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from simplytalk.errors import Conflict, FailedPrecondition, NotFound
from simplytalk.invoice import Invoice, InvoiceStatus
from simplytalk.repositories.customers import InMemoryCustomers
from simplytalk.repositories.invoices import InMemoryInvoices
from simplytalk.repositories.stripe_events import InMemoryStripeEvents
from simplytalk.repositories.stripe_links import InMemoryStripeLinks
from simplytalk.services import payments as svc
from simplytalk.services.payments import EventOutcome, Superseded
from simplytalk.services.payments_deps import PaymentsDeps
from simplytalk.stripe_port import SdkStripeGateway

NOV = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
LATER = NOV + dt.timedelta(hours=1)


class StripeObjects:
    """The Stripe objects a webhook re-fetches, by id, and the calls that would change Stripe."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.retrieved: Counter[str] = Counter()
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.v1 = SimpleNamespace(invoices=SimpleNamespace(retrieve=self.retrieve),
                                  subscriptions=SimpleNamespace(retrieve=self.retrieve),
                                  setup_intents=SimpleNamespace(retrieve=self.retrieve),
                                  customers=SimpleNamespace(update=self.update_customer))

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        return obj

    def retrieve(self, object_id: str) -> dict[str, Any]:
        import stripe

        self.retrieved[object_id] += 1
        if object_id not in self.objects:
            raise stripe.InvalidRequestError("No such object", "id", code="resource_missing", http_status=404)
        return dict(self.objects[object_id])

    def update_customer(self, customer_id: str, params: dict[str, Any], options: dict[str, Any]) -> None:
        self.updates.append((customer_id, params))


class Payments:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.events = InMemoryStripeEvents()
        self.invoices = InMemoryInvoices()
        self.stripe = StripeObjects()
        self.now = NOV

    def deps(self) -> PaymentsDeps:
        return PaymentsDeps(customers=self.customers, events=self.events, invoices=self.invoices,
                            links=InMemoryStripeLinks(self.invoices), stripe=SdkStripeGateway(self.stripe),
                            clock=lambda: self.now)

    def user(self, uid: str, customer: str | None = None, **fields: Any) -> None:
        self.customers.add_user(uid, email=f"{uid}@example.com", **fields)
        if customer:
            self.customers.link_customer(uid, customer, NOV)

    def invoice(self, invoice_id: str = "u1_2026-10", total: int = 1823, status: InvoiceStatus = InvoiceStatus.OPEN,
                stripe_invoice_id: str | None = "in_1", **fields: Any) -> Invoice:
        invoice = Invoice(id=invoice_id, user_id="u1", period="2026-10", currency="usd", total=total, lines=[],
                          rate_card_id="default", created_at=NOV, updated_at=NOV, status=status,
                          stripe_invoice_id=stripe_invoice_id, **fields)
        self.invoices.create(invoice)
        return invoice

    def status(self, invoice_id: str = "u1_2026-10") -> Invoice:
        found = self.invoices.get(invoice_id)
        assert found is not None
        return found


@pytest.fixture
def p() -> Payments:
    return Payments()


def stripe_invoice(status: str, total: int = 1823, stripe_id: str = "in_1", invoice_id: str = "u1_2026-10",
                   **fields: Any) -> dict[str, Any]:
    return {"id": stripe_id, "object": "invoice", "status": status, "total": total, "amount_due": total,
            "amount_paid": total if status == "paid" else 0, "starting_balance": 0, "attempt_count": 0,
            "hosted_invoice_url": f"https://stripe.test/{stripe_id}", "metadata": {"invoiceId": invoice_id},
            **fields}


def event(event_id: str, kind: str, object_id: str) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "data": {"object": {"id": object_id}}}


# -- cards ---------------------------------------------------------------------------------------------

def intent(created: int, intent_id: str = "seti_1", customer: str = "cus_1", pm: str = "pm_1") -> dict[str, Any]:
    return {"id": intent_id, "object": "setup_intent", "status": "succeeded", "customer": customer,
            "payment_method": pm, "created": created}


def test_a_succeeded_setup_intent_makes_its_card_the_default(p: Payments) -> None:
    p.user("u1", "cus_1")

    assert svc.apply_setup_intent(p.deps(), intent(100)) == "u1"

    assert p.stripe.updates == [("cus_1", {"invoice_settings": {"default_payment_method": "pm_1"}})]
    profile = p.customers.profile("u1")
    assert profile.has_payment_method and profile.payment_method_from == 100


def test_a_late_event_about_an_older_card_never_replaces_the_newer_one(p: Payments) -> None:
    p.user("u1", "cus_1")
    svc.apply_setup_intent(p.deps(), intent(200, "seti_new", pm="pm_new"))

    assert svc.apply_setup_intent(p.deps(), intent(100, "seti_old", pm="pm_old")) == "u1"

    assert [params["invoice_settings"]["default_payment_method"] for _, params in p.stripe.updates] == ["pm_new"]
    assert p.customers.profile("u1").payment_method_from == 200


def test_a_setup_intent_not_succeeded_or_of_another_customer_changes_nothing(p: Payments) -> None:
    p.user("u1", "cus_1")

    assert svc.apply_setup_intent(p.deps(), {**intent(100), "status": "requires_action"}) is None
    assert svc.apply_setup_intent(p.deps(), intent(100, customer="cus_stranger")) is None

    assert p.stripe.updates == [] and not p.customers.profile("u1").has_payment_method


# -- subscriptions ---------------------------------------------------------------------------------------

def subscription(status: str, sub_id: str = "sub_1", customer: str = "cus_1") -> dict[str, Any]:
    return {"id": sub_id, "object": "subscription", "status": status, "customer": customer}


@pytest.mark.parametrize(("status", "subscribed"), [
    ("active", True), ("trialing", True), ("past_due", False), ("unpaid", False), ("paused", False),
    ("incomplete", False), ("incomplete_expired", False), ("canceled", False)])
def test_subscription_states_map_to_is_subscribed_active_and_trialing_only(p: Payments, status: str,
                                                                            subscribed: bool) -> None:
    p.user("u1", "cus_1", openaiAssistants=["a-1", "a-2"])

    assert svc.apply_subscription(p.deps(), subscription(status)) == "u1"

    assert svc.subscription_view(p.deps(), "u1") == {
        "isSubscribed": subscribed, "status": status, "subscriptionId": "sub_1", "hasPaymentMethod": False,
        "customerId": "cus_1"}
    assert p.customers.assistants == {"a-1": subscribed, "a-2": subscribed}


def test_a_deleted_assistant_is_not_recreated_by_a_subscription_change(p: Payments) -> None:
    p.user("u1", "cus_1", openaiAssistants=["a-1", "a-gone"])
    del p.customers.assistants["a-gone"]

    svc.apply_subscription(p.deps(), subscription("active"))

    assert p.customers.assistants == {"a-1": True}


def test_news_about_an_older_subscription_leaves_the_current_one_deciding(p: Payments) -> None:
    p.user("u1", "cus_1")
    svc.apply_subscription(p.deps(), subscription("active", "sub_new"))

    svc.apply_subscription(p.deps(), subscription("canceled", "sub_old"))

    view = svc.subscription_view(p.deps(), "u1")
    assert view["subscriptionId"] == "sub_new" and view["isSubscribed"] is True


def test_a_subscription_event_for_an_unknown_customer_is_acknowledged(p: Payments) -> None:
    p.stripe.put(subscription("active", "sub_x", customer="cus_unknown"))

    outcome = svc.process_event(p.deps(), event("evt_1", "customer.subscription.updated", "sub_x"))

    assert outcome == EventOutcome.PROCESSED == "processed"
    assert p.events.markers["evt_1"]["result"] is None and p.customers.users == {}


def test_cancelling_without_a_subscription_is_not_found(p: Payments) -> None:
    p.user("u1", "cus_1")
    with pytest.raises(NotFound):
        svc.cancel_subscription(p.deps(), "u1")
    p.customers.set_subscription(p.customers.profile("u1"), "sub_1", "canceled", False)
    with pytest.raises(NotFound):
        svc.cancel_subscription(p.deps(), "u1")


def test_subscribing_twice_is_a_conflict(p: Payments) -> None:
    p.user("u1", "cus_1", hasPaymentMethod=True)
    svc.apply_subscription(p.deps(), subscription("past_due"))

    with pytest.raises(Conflict):
        svc.subscribe(p.deps(), "u1", "price_1")


def test_subscribing_without_a_card_needs_one_first(p: Payments) -> None:
    p.user("u1", "cus_1")

    with pytest.raises(FailedPrecondition):
        svc.subscribe(p.deps(), "u1", "price_1")


# -- invoice statuses ---------------------------------------------------------------------------------------

def test_invoice_statuses_never_move_back(p: Payments) -> None:
    p.invoice("inv-rank", status=InvoiceStatus.OPEN)
    p.invoice("inv-fail", status=InvoiceStatus.FAILED)
    deps = p.deps()

    assert svc.set_invoice_status(deps, "inv-rank", InvoiceStatus.PAID, {}) == InvoiceStatus.PAID
    assert svc.set_invoice_status(deps, "inv-rank", InvoiceStatus.OPEN, {}) == "paid"
    assert svc.set_invoice_status(deps, "inv-rank", InvoiceStatus.FAILED, {}) == "paid"
    assert svc.set_invoice_status(deps, "inv-fail", InvoiceStatus.OPEN, {}) == "failed"
    assert svc.set_invoice_status(deps, "inv-fail", InvoiceStatus.PAID, {}) == "paid"
    assert svc.set_invoice_status(deps, "no-such-invoice", InvoiceStatus.PAID, {}) is None
    assert p.status("inv-rank").status == InvoiceStatus.PAID


def test_a_paid_stripe_invoice_is_recorded_with_its_amounts(p: Payments) -> None:
    p.invoice()
    p.now = LATER

    outcome = svc.apply_invoice(p.deps(), stripe_invoice("paid"), "invoice.paid")

    assert outcome == InvoiceStatus.PAID
    ours = p.status()
    assert (ours.status, ours.amount_paid, ours.amount_due, ours.updated_at) == (InvoiceStatus.PAID, 1823, 1823, LATER)
    assert ours.hosted_invoice_url == "https://stripe.test/in_1"


def test_a_failed_payment_marks_an_open_invoice_failed(p: Payments) -> None:
    p.invoice()

    assert svc.apply_invoice(p.deps(), stripe_invoice("open"), "invoice.payment_failed") == InvoiceStatus.FAILED
    assert svc.apply_invoice(p.deps(), stripe_invoice("open"), "invoice.finalized") == InvoiceStatus.FAILED


def test_news_about_a_replaced_stripe_invoice_changes_nothing(p: Payments) -> None:
    p.invoice(stripe_invoice_id="in_new", replaced_stripe_invoices=["in_old"])

    outcome = svc.apply_invoice(p.deps(), stripe_invoice("paid", stripe_id="in_old"), "invoice.paid")

    assert outcome is Superseded.SUPERSEDED and outcome == "superseded"
    ours = p.status()
    assert ours.status == InvoiceStatus.OPEN and ours.amount_paid is None and ours.updated_at == NOV


def test_the_void_of_the_stripe_invoice_being_replaced_changes_nothing(p: Payments) -> None:
    p.invoice(replacing_stripe_invoice="in_1")

    assert svc.apply_invoice(p.deps(), stripe_invoice("void"), "invoice.voided") == InvoiceStatus.OPEN
    assert p.status().status == InvoiceStatus.OPEN and p.status().updated_at == NOV


def test_a_paid_stripe_invoice_with_another_total_goes_to_review(p: Payments) -> None:
    p.invoice(total=1823)

    outcome = svc.apply_invoice(p.deps(), stripe_invoice("paid", total=900), "invoice.paid")

    assert outcome == InvoiceStatus.REVIEW
    ours = p.status()
    assert ours.status == InvoiceStatus.REVIEW
    assert ours.review_reason == "Stripe invoice in_1 (paid) bills 900, not 1823"


def test_an_open_stripe_invoice_with_another_total_is_left_to_the_push(p: Payments) -> None:
    p.invoice(status=InvoiceStatus.DRAFT, total=1823)

    assert svc.apply_invoice(p.deps(), stripe_invoice("open", total=900), "invoice.finalized") == InvoiceStatus.DRAFT
    assert p.status().status == InvoiceStatus.DRAFT and p.status().updated_at == NOV


def test_a_stripe_invoice_not_ours_is_skipped(p: Payments) -> None:
    assert svc.apply_invoice(p.deps(), {**stripe_invoice("paid"), "metadata": {}}, "invoice.paid") is None


# -- webhook events -------------------------------------------------------------------------------------------

def test_a_duplicate_stripe_event_is_processed_once(p: Payments) -> None:
    p.invoice()
    p.stripe.put(stripe_invoice("paid"))
    paid = event("evt_paid", "invoice.paid", "in_1")

    assert svc.process_event(p.deps(), paid) == EventOutcome.PROCESSED
    assert svc.process_event(p.deps(), paid) == EventOutcome.DUPLICATE == "duplicate"

    assert p.stripe.retrieved["in_1"] == 1
    assert p.events.markers["evt_paid"] == {"type": "invoice.paid", "processedAt": NOV, "result": "paid",
                                            "outcome": "processed"}
    assert type(p.events.markers["evt_paid"]["result"]) is str  # plain strings in Firestore, as before


def test_an_event_stripe_does_not_know_the_object_of_is_acknowledged(p: Payments) -> None:
    outcome = svc.process_event(p.deps(), event("evt_gone", "invoice.paid", "in_gone"))

    assert outcome == EventOutcome.UNKNOWN_OBJECT == "unknown-object"
    assert p.events.seen("evt_gone")


@pytest.mark.parametrize("raw", [None, "text", {}, {"id": "evt_1"}, {"id": "a/b", "type": "invoice.paid"},
                                 {"id": "evt_1", "type": "invoice.paid", "data": {"object": {}}}])
def test_a_signed_event_that_can_never_apply_is_malformed(p: Payments, raw: Any) -> None:
    assert svc.process_event(p.deps(), raw) == EventOutcome.MALFORMED == "malformed"
    assert p.events.markers == {}


def test_an_event_type_we_do_not_handle_is_ignored_and_not_marked(p: Payments) -> None:
    assert svc.process_event(p.deps(), event("evt_c", "customer.created", "cus_1")) == EventOutcome.IGNORED
    assert p.events.markers == {} and not p.stripe.retrieved


def test_a_setup_intent_event_saves_the_card(p: Payments) -> None:
    p.user("u1", "cus_1")
    p.stripe.put(intent(100))

    assert svc.process_event(p.deps(), event("evt_si", "setup_intent.succeeded", "seti_1")) == "processed"

    assert p.customers.profile("u1").has_payment_method
    assert p.events.markers["evt_si"]["result"] == "u1"
