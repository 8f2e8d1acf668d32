"""Stripe: customers, payment method setup, subscription state, invoices, webhook events.

Every create carries an idempotency key derived from what it is for (the user,
the invoice and its line), so a retry or a rerun returns the object the first
attempt made. Webhook handlers re-fetch the object from Stripe and apply its
current state, so duplicate and out-of-order deliveries converge.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk import logs
from simplytalk.errors import Conflict, FailedPrecondition, NotFound, PaymentRequired, Unavailable

if TYPE_CHECKING:
    import stripe
    from google.cloud.firestore import Client

log = logs.get_logger("payments")
SUBSCRIBED_STATUSES = {"active", "trialing"}


def _plain(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return result


@contextlib.contextmanager
def stripe_errors() -> Iterator[None]:
    """Stripe's errors on a user's request, in the contract's shape (never a bare 500)."""
    import stripe

    try:
        yield
    except stripe.CardError as exc:
        raise PaymentRequired(exc.user_message or "the card was declined") from exc
    except stripe.InvalidRequestError as exc:
        raise FailedPrecondition(f"Stripe refused the request: {exc.user_message or exc}") from exc
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
        raise Unavailable("payments are unavailable right now; try again") from exc


# -- customers --------------------------------------------------------------------------

def ensure_customer(db: Client, client: stripe.StripeClient, uid: str, now: dt.datetime) -> str:
    """The user's Stripe customer, created once even when requests race (one idempotency key per user)."""
    user_ref = db.collection(col.USERS).document(uid)
    profile = user_ref.get().to_dict() or {}
    existing = profile.get("stripeCustomerId")
    if isinstance(existing, str) and existing:
        return existing
    params: dict[str, Any] = {"metadata": {"uid": uid}}
    if isinstance(profile.get("email"), str):
        params["email"] = profile["email"]
    customer = client.v1.customers.create(params=params,  # type: ignore[arg-type]
                                          options={"idempotency_key": f"customer-{uid}"})
    batch = db.batch()
    batch.set(user_ref, {"stripeCustomerId": customer.id}, merge=True)
    batch.set(db.collection(col.STRIPE_CUSTOMERS).document(customer.id), {"userId": uid, "createdAt": now})
    batch.commit()
    return customer.id


def user_of_customer(db: Client, customer_id: str | None) -> str | None:
    if not customer_id:
        return None
    snap = db.collection(col.STRIPE_CUSTOMERS).document(customer_id).get()
    uid = (snap.to_dict() or {}).get("userId") if snap.exists else None
    return uid if isinstance(uid, str) else None


def create_setup_intent(db: Client, client: stripe.StripeClient, uid: str, now: dt.datetime,
                        request_key: str | None) -> dict[str, Any]:
    """A SetupIntent the frontend confirms with Stripe.js to save a card for automatic charges."""
    customer_id = ensure_customer(db, client, uid, now)
    key = f"setup-intent-{uid}-{request_key or uuid.uuid4().hex}"
    intent = client.v1.setup_intents.create(params={  # type: ignore[arg-type]
        "customer": customer_id, "usage": "off_session", "payment_method_types": ["card"],
        "metadata": {"uid": uid}}, options={"idempotency_key": key})
    return {"setupIntentId": intent.id, "clientSecret": intent.client_secret, "customerId": customer_id}


# -- subscriptions -------------------------------------------------------------------------

def subscribe(db: Client, client: stripe.StripeClient, uid: str, price_id: str, now: dt.datetime) -> dict[str, Any]:
    customer_id = ensure_customer(db, client, uid, now)
    profile = db.collection(col.USERS).document(uid).get().to_dict() or {}
    if profile.get("stripeSubscriptionId") and profile.get("subscriptionStatus") != "canceled":
        raise Conflict(f"a subscription exists ({profile.get('subscriptionStatus')}); cancel it first")
    if not profile.get("hasPaymentMethod"):
        raise FailedPrecondition("add a payment method first (POST /setup-intent)")
    attempt = int(profile.get("subscriptionAttempts") or 0) + 1
    subscription = client.v1.subscriptions.create(params={
        "customer": customer_id, "items": [{"price": price_id}], "metadata": {"uid": uid}},
        options={"idempotency_key": f"subscription-{uid}-{attempt}"})
    db.collection(col.USERS).document(uid).set({"subscriptionAttempts": attempt}, merge=True)
    apply_subscription(db, _plain(subscription))
    return subscription_view(db, uid)


def cancel_subscription(db: Client, client: stripe.StripeClient, uid: str) -> dict[str, Any]:
    profile = db.collection(col.USERS).document(uid).get().to_dict() or {}
    subscription_id = profile.get("stripeSubscriptionId")
    if not subscription_id or profile.get("subscriptionStatus") == "canceled":
        raise NotFound("no subscription")
    apply_subscription(db, _plain(client.v1.subscriptions.cancel(subscription_id)))
    return subscription_view(db, uid)


def subscription_view(db: Client, uid: str) -> dict[str, Any]:
    profile = db.collection(col.USERS).document(uid).get().to_dict() or {}
    return {"isSubscribed": profile.get("isSubscribed") is True,
            "status": profile.get("subscriptionStatus"),
            "subscriptionId": profile.get("stripeSubscriptionId"),
            "hasPaymentMethod": profile.get("hasPaymentMethod") is True,
            "customerId": profile.get("stripeCustomerId")}


def apply_subscription(db: Client, subscription: dict[str, Any]) -> str | None:
    """Set the user's subscription state, and their assistants' isSubscribed, from Stripe's object."""
    uid = user_of_customer(db, subscription.get("customer"))
    if uid is None:
        return None
    user_ref = db.collection(col.USERS).document(uid)
    profile = user_ref.get().to_dict() or {}
    current = profile.get("stripeSubscriptionId")
    status = subscription.get("status")
    if current and current != subscription["id"] and status not in SUBSCRIBED_STATUSES:
        return uid  # news about an older subscription: the current one decides
    from google.api_core import exceptions as gexc

    subscribed = status in SUBSCRIBED_STATUSES
    user_ref.set({"stripeSubscriptionId": subscription["id"], "subscriptionStatus": status,
                  "isSubscribed": subscribed}, merge=True)
    for assistant_id in profile.get("openaiAssistants") or []:
        # one update each: a deleted assistant is skipped, never recreated as a stub
        with contextlib.suppress(gexc.NotFound, ValueError):
            db.collection(col.OPENAI_ASSISTANTS).document(assistant_id).update({"isSubscribed": subscribed})
    return uid


def apply_setup_intent(db: Client, client: stripe.StripeClient, intent: dict[str, Any]) -> str | None:
    if intent.get("status") != "succeeded" or not intent.get("payment_method"):
        return None
    uid = user_of_customer(db, intent.get("customer"))
    if uid is None:
        return None
    client.v1.customers.update(intent["customer"], params={
        "invoice_settings": {"default_payment_method": intent["payment_method"]}},
        options={"idempotency_key": f"default-pm-{intent['id']}"})
    db.collection(col.USERS).document(uid).set({"hasPaymentMethod": True}, merge=True)
    return uid


# -- invoices ---------------------------------------------------------------------------------

def push_invoice(db: Client, client: stripe.StripeClient, invoice: dict[str, Any], now: dt.datetime) -> str:
    """Make our invoice a finalized Stripe invoice, charged automatically. Safe to repeat, even
    after Stripe's idempotency keys expire: the Stripe invoice is created first (pending items
    of the customer excluded) and its id stored before any line exists; lines are added to that
    invoice only where its current lines lack them; then it is finalized."""
    invoice_id = invoice["id"]
    ref = db.collection(col.INVOICES).document(invoice_id)
    if invoice["total"] == 0:
        set_invoice_status(db, invoice_id, "paid", {}, now)  # nothing to collect
        return "nothing-due"
    metadata = {"invoiceId": invoice_id, "period": invoice["period"], "userId": invoice["userId"]}
    customer_id = ensure_customer(db, client, invoice["userId"], now)
    if invoice.get("stripeInvoiceId"):
        stripe_invoice = client.v1.invoices.retrieve(invoice["stripeInvoiceId"])
    else:
        stripe_invoice = client.v1.invoices.create(params={
            "customer": customer_id, "collection_method": "charge_automatically", "auto_advance": True,
            "pending_invoice_items_behavior": "exclude", "currency": invoice["currency"], "metadata": metadata},
            options={"idempotency_key": f"invoice-{invoice_id}"})
        ref.update({"stripeInvoiceId": stripe_invoice.id, "updatedAt": now})
    if stripe_invoice.status == "draft":
        lines = client.v1.invoices.line_items.list(stripe_invoice.id, params={"limit": 100}).data
        present = {(_plain(line).get("metadata") or {}).get("line") for line in lines}
        for i, line in enumerate(invoice["lines"]):
            if str(i) in present:
                continue
            client.v1.invoice_items.create(params={
                "customer": customer_id, "invoice": stripe_invoice.id, "amount": line["amount"],
                "currency": invoice["currency"],
                "description": f"{line['provider']} assistant {line['assistantId']}: {line['minutes']} min "
                               f"({line['usagePeriod']})",
                "metadata": {**metadata, "line": str(i), "assistantId": line["assistantId"],
                             "usagePeriod": line["usagePeriod"]}},
                options={"idempotency_key": f"invoice-item-{invoice_id}-{i}"})
        stripe_invoice = client.v1.invoices.finalize_invoice(
            stripe_invoice.id, options={"idempotency_key": f"finalize-{invoice_id}"})
    if stripe_invoice.total != invoice["total"]:
        log.error("stripe invoice %s total %s differs from %s", stripe_invoice.id, stripe_invoice.total,
                  invoice["total"])
    apply_invoice(db, _plain(stripe_invoice), None, now)
    return "pushed"


STATUS_RANK = {"draft": 0, "open": 1, "failed": 2, "paid": 3, "void": 3}


def set_invoice_status(db: Client, invoice_id: str, status: str, fields: dict[str, Any],
                       now: dt.datetime) -> str | None:
    """Write a status, never moving it back (paid and void are final; a late "open" after
    "failed" or "paid" changes nothing). One transaction on the invoice document."""
    from google.cloud import firestore

    ref = db.collection(col.INVOICES).document(invoice_id)

    @firestore.transactional
    def run(tx: Any) -> str | None:
        snap = ref.get(transaction=tx)
        if not snap.exists:
            return None
        current = (snap.to_dict() or {}).get("status", "draft")
        keep = STATUS_RANK.get(status, 0) < STATUS_RANK.get(current, 0) or current in ("paid", "void")
        final = current if keep else status
        tx.update(ref, {**fields, "status": final, "updatedAt": now})
        return str(final)

    result: str | None = run(db.transaction())
    return result


def _status(stripe_invoice: dict[str, Any], event_type: str | None) -> str:
    status = stripe_invoice.get("status")
    if status == "paid":
        return "paid"
    if status == "void":
        return "void"
    if status == "uncollectible":
        return "failed"
    if status == "open":
        failed = event_type == "invoice.payment_failed" or int(stripe_invoice.get("attempt_count") or 0) > 0
        return "failed" if failed else "open"
    return "draft"


def apply_invoice(db: Client, stripe_invoice: dict[str, Any], event_type: str | None,
                  now: dt.datetime) -> str | None:
    invoice_id = (stripe_invoice.get("metadata") or {}).get("invoiceId")
    if not invoice_id:
        return None  # not one of ours
    return set_invoice_status(db, invoice_id, _status(stripe_invoice, event_type), {
        "stripeInvoiceId": stripe_invoice["id"], "hostedInvoiceUrl": stripe_invoice.get("hosted_invoice_url"),
        "amountPaid": int(stripe_invoice.get("amount_paid") or 0)}, now)


# -- webhook events ------------------------------------------------------------------------------

HANDLED = {"invoice.paid", "invoice.payment_failed", "invoice.finalized", "invoice.payment_succeeded",
           "invoice.voided", "invoice.marked_uncollectible", "customer.subscription.created",
           "customer.subscription.updated", "customer.subscription.deleted", "setup_intent.succeeded"}


def process_event(db: Client, client: stripe.StripeClient, event: dict[str, Any], now: dt.datetime) -> str:
    """Apply one verified Stripe event. Raises on failure (the endpoint answers 5xx: Stripe retries)."""
    from google.api_core import exceptions as gexc

    kind = event.get("type", "")
    marker = db.collection(col.STRIPE_EVENTS).document(event["id"])
    if marker.get().exists:
        return "duplicate"
    if kind not in HANDLED:
        return "ignored"
    obj = (event.get("data") or {}).get("object") or {}
    # Re-fetch: events can arrive late and out of order; the object's state now decides.
    if kind.startswith("invoice."):
        result = apply_invoice(db, _plain(client.v1.invoices.retrieve(obj["id"])), kind, now)
    elif kind.startswith("customer.subscription."):
        result = apply_subscription(db, _plain(client.v1.subscriptions.retrieve(obj["id"])))
    else:
        result = apply_setup_intent(db, client, _plain(client.v1.setup_intents.retrieve(obj["id"])))
    with contextlib.suppress(gexc.AlreadyExists):  # processed concurrently: same outcome
        marker.create({"type": kind, "processedAt": now, "result": result})
    return "processed"
