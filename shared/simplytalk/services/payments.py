"""Stripe: customers, payment method setup, subscription state, invoices, webhook events.

Every create carries an idempotency key derived from what it is for (the user,
the invoice and its line), so a retry or a rerun returns the object the first
attempt made. Webhook handlers re-fetch the object from Stripe and apply its
current state, so duplicate and out-of-order deliveries converge.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk import logs
from simplytalk.charges import StripeLine, below_minimum, stripe_lines
from simplytalk.errors import Conflict, FailedPrecondition, NotFound, PaymentNeeded, Unavailable
from simplytalk.ids import valid_document_id
from simplytalk.invoice import Invoice, InvoiceStatus
from simplytalk.stripe_gateway import is_missing, is_refusal, is_stripe_error

if TYPE_CHECKING:
    import stripe
    from google.cloud.firestore import Client

log = logs.get_logger("payments")
# Stripe's subscription statuses that may start calls. `past_due` (renewal failing, Stripe
# retrying), `unpaid`, `paused`, `incomplete` (first payment failed) and the ended ones may not.
SUBSCRIBED_STATUSES = frozenset({"active", "trialing"})
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
OPEN_SETUP_STATUSES = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})
LINES_PER_REQUEST = 100  # invoice lines added per `add_lines` call


def _plain(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return result


def _id_of(value: Any) -> str | None:
    """A Stripe reference, expanded (an object) or not (its id)."""
    if isinstance(value, str):
        return value
    return getattr(value, "id", None) or (value.get("id") if isinstance(value, dict) else None)


# -- customers --------------------------------------------------------------------------

def _profile(db: Client, uid: str) -> dict[str, Any]:
    return db.collection(col.USERS).document(uid).get().to_dict() or {}


def ensure_customer(db: Client, client: stripe.StripeClient, uid: str, now: dt.datetime,
                    profile: dict[str, Any] | None = None) -> str:
    """The user's Stripe customer, created once even when requests race (one idempotency key per user)."""
    profile = _profile(db, uid) if profile is None else profile
    existing = profile.get("stripeCustomerId")
    if isinstance(existing, str) and existing:
        return existing
    params: dict[str, Any] = {"metadata": {"uid": uid}}
    if isinstance(profile.get("email"), str):
        params["email"] = profile["email"]
    customer = client.v1.customers.create(params=params,  # type: ignore[arg-type]
                                          options={"idempotency_key": f"customer-{uid}"})
    batch = db.batch()
    batch.set(db.collection(col.USERS).document(uid), {"stripeCustomerId": customer.id}, merge=True)
    batch.set(db.collection(col.STRIPE_CUSTOMERS).document(customer.id), {"userId": uid, "createdAt": now})
    batch.commit()
    profile["stripeCustomerId"] = customer.id
    return customer.id


def user_of_customer(db: Client, customer_id: str | None) -> str | None:
    if not customer_id or not valid_document_id(customer_id):
        return None
    snap = db.collection(col.STRIPE_CUSTOMERS).document(customer_id).get()
    uid = (snap.to_dict() or {}).get("userId") if snap.exists else None
    return uid if isinstance(uid, str) else None


# -- saving a card ----------------------------------------------------------------------

def create_setup_intent(db: Client, client: stripe.StripeClient, uid: str, now: dt.datetime) -> dict[str, Any]:
    """A SetupIntent for Stripe.js to save a card for automatic charges. The user's open
    intent is handed out again until it is used; a new one is made only after it succeeded
    or was canceled. Payment methods come from the account's settings (automatic payment
    methods): the API version we speak no longer takes `payment_method_types`."""
    profile = _profile(db, uid)
    customer_id = ensure_customer(db, client, uid, now, profile)
    previous = profile.get("setupIntentId")
    if isinstance(previous, str) and previous:
        try:
            intent = client.v1.setup_intents.retrieve(previous)
        except Exception as exc:
            if not is_missing(exc):
                raise
        else:
            if intent.status in OPEN_SETUP_STATUSES and _id_of(intent.customer) == customer_id:
                return _setup_view(intent, customer_id)
    # Concurrent first requests share the key, so they get the same intent.
    intent = client.v1.setup_intents.create(params={
        "customer": customer_id, "usage": "off_session",
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": {"uid": uid}}, options={"idempotency_key": f"setup-intent-{uid}-after-{previous or 'none'}"})
    db.collection(col.USERS).document(uid).set({"setupIntentId": intent.id}, merge=True)
    return _setup_view(intent, customer_id)


def _setup_view(intent: Any, customer_id: str) -> dict[str, Any]:
    return {"setupIntentId": intent.id, "clientSecret": intent.client_secret, "customerId": customer_id,
            "status": intent.status}


def apply_setup_intent(db: Client, client: stripe.StripeClient, intent: dict[str, Any]) -> str | None:
    if intent.get("status") != "succeeded" or not intent.get("payment_method"):
        return None
    uid = user_of_customer(db, _id_of(intent.get("customer")))
    if uid is None:
        return None
    # A late or retried event about an older card never replaces a newer one.
    created = int(intent.get("created") or 0)
    applied = _profile(db, uid).get("paymentMethodFrom")
    if isinstance(applied, int) and created < applied:
        return uid
    payment_method = _id_of(intent["payment_method"])
    client.v1.customers.update(_id_of(intent["customer"]) or "", params={
        "invoice_settings": {"default_payment_method": payment_method or ""}},
        options={"idempotency_key": f"default-pm-{intent['id']}"})
    db.collection(col.USERS).document(uid).set({"hasPaymentMethod": True, "paymentMethodFrom": created}, merge=True)
    return uid


def _settle_setup_intent(db: Client, client: stripe.StripeClient, uid: str, profile: dict[str, Any]) -> dict[str, Any]:
    """Apply the user's last SetupIntent now if it succeeded (its webhook may not have arrived yet)."""
    intent_id = profile.get("setupIntentId")
    if not isinstance(intent_id, str) or not intent_id:
        return profile
    intent = _plain(client.v1.setup_intents.retrieve(intent_id))
    if apply_setup_intent(db, client, intent) is None:
        return profile
    return _profile(db, uid)


# -- subscriptions -------------------------------------------------------------------------

def subscribe(db: Client, client: stripe.StripeClient, uid: str, price_id: str, now: dt.datetime) -> dict[str, Any]:
    """Start the subscription; a first payment that fails leaves it `incomplete` (Stripe's default
    `allow_incomplete`), and subscribing again after a new card retries that payment."""
    profile = _profile(db, uid)
    customer_id = ensure_customer(db, client, uid, now, profile)
    current, status = profile.get("stripeSubscriptionId"), profile.get("subscriptionStatus")
    if current and status == "incomplete":
        _settle_setup_intent(db, client, uid, profile)  # the new card, before paying again
        return _retry_first_payment(db, client, uid, current)
    if current and status not in ENDED_STATUSES:
        raise Conflict(f"a subscription exists ({status}); cancel it first")
    if not profile.get("hasPaymentMethod"):
        profile = _settle_setup_intent(db, client, uid, profile)
    if not profile.get("hasPaymentMethod"):
        raise FailedPrecondition("add a payment method first (POST /setup-intent)")
    attempt = int(profile.get("subscriptionAttempts") or 0) + 1
    subscription = client.v1.subscriptions.create(params={
        "customer": customer_id, "items": [{"price": price_id}], "metadata": {"uid": uid}},
        options={"idempotency_key": f"subscription-{uid}-{attempt}"})
    db.collection(col.USERS).document(uid).set({"subscriptionAttempts": attempt}, merge=True)
    apply_subscription(db, _plain(subscription))
    if subscription.status == "incomplete":
        raise PaymentNeeded("the first payment failed; add another card, then subscribe again")
    return subscription_view(db, uid)


def _retry_first_payment(db: Client, client: stripe.StripeClient, uid: str, subscription_id: str) -> dict[str, Any]:
    import stripe

    subscription = client.v1.subscriptions.retrieve(subscription_id)
    invoice_id = _id_of(subscription.latest_invoice)
    declined = None
    if subscription.status == "incomplete" and invoice_id:
        try:
            client.v1.invoices.pay(invoice_id)
        except stripe.CardError as exc:
            declined = exc
        subscription = client.v1.subscriptions.retrieve(subscription_id)
    apply_subscription(db, _plain(subscription))
    if subscription.status == "incomplete":
        raise PaymentNeeded("the first payment failed again; add another card, then subscribe again") from declined
    return subscription_view(db, uid)


def cancel_subscription(db: Client, client: stripe.StripeClient, uid: str) -> dict[str, Any]:
    profile = _profile(db, uid)
    subscription_id = profile.get("stripeSubscriptionId")
    if not subscription_id or profile.get("subscriptionStatus") in ENDED_STATUSES:
        raise NotFound("no subscription")
    apply_subscription(db, _plain(client.v1.subscriptions.cancel(subscription_id)))
    return subscription_view(db, uid)


def subscription_view(db: Client, uid: str) -> dict[str, Any]:
    profile = _profile(db, uid)
    return {"isSubscribed": profile.get("isSubscribed") is True,
            "status": profile.get("subscriptionStatus"),
            "subscriptionId": profile.get("stripeSubscriptionId"),
            "hasPaymentMethod": profile.get("hasPaymentMethod") is True,
            "customerId": profile.get("stripeCustomerId")}


def apply_subscription(db: Client, subscription: dict[str, Any]) -> str | None:
    """Set the user's subscription state, and their assistants' isSubscribed, from Stripe's object."""
    uid = user_of_customer(db, _id_of(subscription.get("customer")))
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


# -- invoices ---------------------------------------------------------------------------------

def push_invoice(db: Client, client: stripe.StripeClient, invoice: Invoice, now: dt.datetime) -> str:
    """Make our invoice a finalized Stripe invoice, charged automatically, exactly once.

    The Stripe invoice is created as a draft that does not advance by itself (and without the
    customer's discounts), its id stored before any line exists; all lines are added (in
    batches; on a retry only those missing), and it is finalized with automatic collection
    only if its total is ours. A Stripe invoice that stopped being a draft with another
    total (finalized before all lines were added) is never taken as ours: an open one is
    voided, then reissued; a paid one (or a draft that will not add up) is flagged for review.
    Calls on a month after the first (customer known): create, add lines, finalize.
    """
    import stripe

    invoice_id = invoice.id
    if invoice.total == 0 or below_minimum(invoice.total, invoice.currency):
        raise ValueError(f"invoice {invoice_id} has nothing Stripe would collect")
    try:
        return _push(db, client, invoice, now)
    except stripe.StripeError as exc:
        if _replayed_failure(exc):
            # Stripe keeps a 5xx under its key for a day: the next attempt uses fresh keys
            # (safe: what is missing is worked out from Stripe's own state each time)
            from google.cloud.firestore import Increment

            db.collection(col.INVOICES).document(invoice_id).update({"stripeKeyAttempt": Increment(1)})
        raise


def _push(db: Client, client: stripe.StripeClient, invoice: Invoice, now: dt.datetime) -> str:
    import stripe

    invoice_id = invoice.id
    customer_id = ensure_customer(db, client, invoice.user_id, now)
    for _ in range(3):
        stripe_invoice, fresh = _stripe_draft(db, client, invoice, customer_id, now)
        if stripe_invoice.status == "draft":
            stripe_invoice = _complete(client, invoice, stripe_invoice, fresh)
        if stripe_invoice.total == invoice.total:
            apply_invoice(db, _plain(stripe_invoice), None, now)
            return "pushed"
        log.error("stripe invoice %s (%s) bills %s, ours %s bills %s", stripe_invoice.id, stripe_invoice.status,
                  stripe_invoice.total, invoice_id, invoice.total,
                  extra={"fields": {"invoiceId": invoice_id, "stripeInvoiceId": stripe_invoice.id}})
        if stripe_invoice.status in ("paid", "draft"):
            reason = _review_reason(stripe_invoice.id, stripe_invoice.status, stripe_invoice.total, invoice.total)
            _move(db, invoice_id, "review", {"reviewReason": reason}, now)
            return "review"
        if stripe_invoice.status in ("open", "uncollectible"):
            # recorded first, so its invoice.voided webhook changes nothing; the id is kept until
            # the void succeeds, so a failed void is retried and a charge meanwhile is seen
            db.collection(col.INVOICES).document(invoice_id).update({"replacingStripeInvoice": stripe_invoice.id})
            try:
                client.v1.invoices.void_invoice(stripe_invoice.id, options={
                    "idempotency_key": _key(invoice, f"void-{stripe_invoice.id}")})
            except stripe.InvalidRequestError:
                continue  # no longer open (paid meanwhile?): look again
        invoice = _reissue(db, invoice, stripe_invoice.id, now)
    raise RuntimeError(f"could not push invoice {invoice_id}: Stripe's invoice keeps differing")


def _review_reason(stripe_id: str, status: str, theirs: Any, ours: Any) -> str:
    return f"Stripe invoice {stripe_id} ({status}) bills {theirs}, not {ours}"


def _replayed_failure(exc: Exception) -> bool:
    headers = getattr(exc, "headers", None) or {}
    replayed = any(k.lower() == "idempotent-replayed" and str(v).lower() == "true" for k, v in headers.items())
    return replayed and int(getattr(exc, "http_status", 0) or 0) >= 500


def _key(invoice: Invoice, base: str) -> str:
    """An idempotency key for one step of pushing `invoice` (fresh after a replayed failure)."""
    attempt = invoice.stripe_key_attempt
    return f"{base}-a{attempt}" if attempt else base


def _stripe_draft(db: Client, client: stripe.StripeClient, invoice: Invoice, customer_id: str,
                  now: dt.datetime) -> tuple[Any, bool]:
    """Stripe's invoice for ours, and whether it was just created (so it has no lines yet)."""
    if invoice.stripe_invoice_id:
        return client.v1.invoices.retrieve(invoice.stripe_invoice_id), False
    reissue = invoice.stripe_reissues
    key = _key(invoice, f"invoice-{invoice.id}" + (f"-r{reissue}" if reissue else ""))
    created = client.v1.invoices.create(params={
        "customer": customer_id, "collection_method": "charge_automatically", "auto_advance": False,
        "pending_invoice_items_behavior": "exclude", "currency": invoice.currency, "discounts": "",
        "metadata": {"invoiceId": invoice.id, "period": invoice.period, "userId": invoice.user_id}},
        options={"idempotency_key": key})
    db.collection(col.INVOICES).document(invoice.id).update({"stripeInvoiceId": created.id, "updatedAt": now})
    invoice.stripe_invoice_id = created.id
    return created, True


def _present_lines(client: stripe.StripeClient, stripe_invoice_id: str) -> set[str]:
    present: set[str] = set()
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = client.v1.invoices.line_items.list(stripe_invoice_id, params=params)  # type: ignore[arg-type]
        for line in page.data:
            present.add(str((_plain(line).get("metadata") or {}).get("line")))
        if not page.has_more or not page.data:
            return present
        params["starting_after"] = page.data[-1].id


def _complete(client: stripe.StripeClient, invoice: Invoice, stripe_invoice: Any, fresh: bool) -> Any:
    """Add the lines a draft lacks; finalize it with automatic collection if it then bills our total."""
    present = set() if fresh else _present_lines(client, stripe_invoice.id)
    missing = [line for line in stripe_lines(invoice.lines) if line.key not in present]
    for start in range(0, len(missing), LINES_PER_REQUEST):
        batch = missing[start:start + LINES_PER_REQUEST]
        lines: list[Any] = [_line_params(invoice, line) for line in batch]
        stripe_invoice = client.v1.invoices.add_lines(stripe_invoice.id, params={"lines": lines}, options={
            "idempotency_key": _key(invoice, _lines_key(stripe_invoice.id, batch))})
    if stripe_invoice.total != invoice.total:
        return stripe_invoice  # never finalize a total that is not ours
    return client.v1.invoices.finalize_invoice(stripe_invoice.id, params={"auto_advance": True}, options={
        "idempotency_key": _key(invoice, f"finalize-{stripe_invoice.id}")})


def _line_params(invoice: Invoice, line: StripeLine) -> dict[str, Any]:
    return {"amount": line.amount, "description": line.description,
            "metadata": {"invoiceId": invoice.id, "period": invoice.period, **line.metadata}}


def _lines_key(stripe_invoice_id: str, batch: list[StripeLine]) -> str:
    digest = hashlib.sha256(",".join(line.key for line in batch).encode()).hexdigest()[:24]
    return f"lines-{stripe_invoice_id}-{digest}"


def _reissue(db: Client, invoice: Invoice, replaced: str, now: dt.datetime) -> Invoice:
    from google.cloud.firestore import ArrayUnion

    reissues = invoice.stripe_reissues + 1
    db.collection(col.INVOICES).document(invoice.id).update({
        "stripeInvoiceId": None, "stripeReissues": reissues, "replacedStripeInvoices": ArrayUnion([replaced]),
        "replacingStripeInvoice": None, "updatedAt": now})
    return replace(invoice, stripe_invoice_id=None, stripe_reissues=reissues)


def set_invoice_status(db: Client, invoice_id: str, status: str, fields: dict[str, Any],
                       now: dt.datetime) -> str | None:
    """Write a status, never moving it back (paid, void, carried and review are final; a late
    "open" after "failed" or "paid" changes nothing). One transaction on the invoice document."""
    return _move(db, invoice_id, status, fields, now)


def _move(db: Client, invoice_id: str, status: str, fields: dict[str, Any], now: dt.datetime,
          stripe_invoice: dict[str, Any] | None = None) -> str | None:
    from google.cloud import firestore

    ref = db.collection(col.INVOICES).document(invoice_id)

    @firestore.transactional
    def run(tx: Any) -> str | None:
        snap = ref.get(transaction=tx)
        if not snap.exists:
            return None
        data = snap.to_dict() or {}
        current = data.get("status", "draft")
        final, update = status, dict(fields)
        if stripe_invoice is not None:
            if data.get("stripeInvoiceId") != stripe_invoice["id"]:
                return "superseded"  # news about a Stripe invoice we replaced (or have not recorded)
            if final == "void" and data.get("replacingStripeInvoice") == stripe_invoice["id"]:
                return str(current)  # we voided it to reissue ours
            if final != "void" and int(stripe_invoice.get("total") or 0) != data.get("total"):
                if final != "paid":
                    return str(current)  # Stripe's invoice bills something else: the push reissues it
                final = "review"
                update["reviewReason"] = _review_reason(stripe_invoice["id"], "paid", stripe_invoice.get("total"),
                                                        data.get("total"))
        final = InvoiceStatus(current).after(InvoiceStatus(final)).value  # never back, never out of a final one
        tx.update(ref, {**update, "status": final, "updatedAt": now})
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
    if not isinstance(invoice_id, str) or not valid_document_id(invoice_id):
        return None  # not one of ours
    # amountDue differs from our total when Stripe applied the customer's balance (a credit, or
    # an amount Stripe itself carried from an invoice under its minimum charge)
    fields = {"hostedInvoiceUrl": stripe_invoice.get("hosted_invoice_url"),
              "amountPaid": int(stripe_invoice.get("amount_paid") or 0),
              "amountDue": int(stripe_invoice.get("amount_due") or 0),
              "startingBalance": int(stripe_invoice.get("starting_balance") or 0)}
    return _move(db, invoice_id, _status(stripe_invoice, event_type), fields, now, stripe_invoice)


# -- webhook events ------------------------------------------------------------------------------

HANDLED = {"invoice.paid", "invoice.payment_failed", "invoice.finalized", "invoice.payment_succeeded",
           "invoice.voided", "invoice.marked_uncollectible", "customer.subscription.created",
           "customer.subscription.updated", "customer.subscription.deleted", "setup_intent.succeeded"}


def process_event(db: Client, client: stripe.StripeClient, event: Any, now: dt.datetime) -> str:
    """Apply one verified Stripe event and say what became of it.

    Raises `Unavailable` when Stripe or Firestore failed for now (the endpoint answers 503
    and Stripe retries); an event that can never be applied (no id, no object, an object
    Stripe does not know) is acknowledged with its outcome, so Stripe stops retrying it."""
    from google.api_core import exceptions as gexc

    if not isinstance(event, dict):
        return "malformed"
    event_id, kind = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not valid_document_id(event_id) or not isinstance(kind, str):
        return "malformed"
    marker = db.collection(col.STRIPE_EVENTS).document(event_id)
    if marker.get().exists:
        return "duplicate"
    if kind not in HANDLED:
        return "ignored"
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    object_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(object_id, str) or not object_id:
        return "malformed"
    try:
        # Re-fetch: events arrive late and out of order; the object's state now decides.
        if kind.startswith("invoice."):
            result = apply_invoice(db, _plain(client.v1.invoices.retrieve(object_id)), kind, now)
        elif kind.startswith("customer.subscription."):
            result = apply_subscription(db, _plain(client.v1.subscriptions.retrieve(object_id)))
        else:
            result = apply_setup_intent(db, client, _plain(client.v1.setup_intents.retrieve(object_id)))
        outcome = "processed"
    except Exception as exc:
        if is_missing(exc):
            result, outcome = None, "unknown-object"
        elif is_refusal(exc):
            log.error("stripe event %s (%s) refused by Stripe: %r", event_id, kind, exc)
            result, outcome = None, "refused"
        elif is_stripe_error(exc):  # network, Stripe's side, our key refused: Stripe retries the event
            raise Unavailable("Stripe is unavailable; retry the event") from exc
        else:
            raise
    with contextlib.suppress(gexc.AlreadyExists):  # processed concurrently: same outcome
        marker.create({"type": kind, "processedAt": now, "result": result, "outcome": outcome})
    return outcome
