"""Stripe: customers, payment method setup, subscription state, invoices, webhook events.

Every create carries an idempotency key derived from what it is for (the user,
the invoice and its line), so a retry or a rerun returns the object the first
attempt made. Webhook handlers re-fetch the object from Stripe and apply its
current state, so duplicate and out-of-order deliveries converge.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from simplytalk import logs
from simplytalk.charges import StripeLine, below_minimum, stripe_lines
from simplytalk.errors import Conflict, FailedPrecondition, NotFound, PaymentNeeded, Unavailable
from simplytalk.ids import valid_document_id
from simplytalk.invoice import Invoice, InvoiceStatus
from simplytalk.repositories.customers import StripeProfile
from simplytalk.repositories.invoices import StatusState
from simplytalk.stripe_gateway import is_missing, is_refusal, is_stripe_error

if TYPE_CHECKING:
    from simplytalk.services.payments_deps import PaymentsDeps
    from simplytalk.stripe_port import StripeGateway

log = logs.get_logger("payments")
# Stripe's subscription statuses that may start calls. `past_due` (renewal failing, Stripe
# retrying), `unpaid`, `paused`, `incomplete` (first payment failed) and the ended ones may not.
SUBSCRIBED_STATUSES = frozenset({"active", "trialing"})
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
OPEN_SETUP_STATUSES = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})
LINES_PER_REQUEST = 100  # invoice lines added per `add_lines` call


class EventOutcome(StrEnum):
    """What became of a Stripe event (the webhook's answer and log)."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"  # processed before
    IGNORED = "ignored"  # a type we do not handle
    MALFORMED = "malformed"  # no id, no type, no object: can never apply
    UNKNOWN_OBJECT = "unknown-object"  # Stripe does not know the object
    REFUSED = "refused"  # Stripe refused the re-fetch itself


class Superseded(StrEnum):
    """A status move that changed nothing because the news was about a Stripe invoice we replaced."""

    SUPERSEDED = "superseded"


# what a status move made of an invoice: its status after, Superseded, or None (no such invoice)
MoveOutcome = InvoiceStatus | Superseded | None


class PushOutcome(StrEnum):
    PUSHED = "pushed"  # a finalized Stripe invoice bills our total
    REVIEW = "review"  # a Stripe invoice bills another total and cannot be replaced: an operator looks


def _plain(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return result


def _id_of(value: Any) -> str | None:
    """A Stripe reference, expanded (an object) or not (its id)."""
    if isinstance(value, str):
        return value
    return getattr(value, "id", None) or (value.get("id") if isinstance(value, dict) else None)


# -- customers --------------------------------------------------------------------------

def ensure_customer(deps: PaymentsDeps, uid: str, profile: StripeProfile | None = None) -> str:
    """The user's Stripe customer, created once even when requests race (one idempotency key per user)."""
    profile = deps.customers.profile(uid) if profile is None else profile
    if profile.customer_id:
        return profile.customer_id
    params: dict[str, Any] = {"metadata": {"uid": uid}}
    if profile.email is not None:
        params["email"] = profile.email
    customer = deps.stripe.create_customer(params, idempotency_key=f"customer-{uid}")
    deps.customers.link_customer(uid, customer.id, deps.clock())
    return str(customer.id)


# -- saving a card ----------------------------------------------------------------------

def create_setup_intent(deps: PaymentsDeps, uid: str) -> dict[str, Any]:
    """A SetupIntent for Stripe.js to save a card for automatic charges. The user's open
    intent is handed out again until it is used; a new one is made only after it succeeded
    or was canceled. Payment methods come from the account's settings (automatic payment
    methods): the API version we speak no longer takes `payment_method_types`."""
    gateway = deps.stripe
    profile = deps.customers.profile(uid)
    customer_id = ensure_customer(deps, uid, profile)
    previous = profile.setup_intent_id
    if previous:
        try:
            intent = gateway.retrieve_setup_intent(previous)
        except Exception as exc:
            if not is_missing(exc):
                raise
        else:
            if intent.status in OPEN_SETUP_STATUSES and _id_of(intent.customer) == customer_id:
                return _setup_view(intent, customer_id)
    # Concurrent first requests share the key, so they get the same intent.
    intent = gateway.create_setup_intent({
        "customer": customer_id, "usage": "off_session",
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": {"uid": uid}}, idempotency_key=f"setup-intent-{uid}-after-{previous or 'none'}")
    deps.customers.set_setup_intent(uid, intent.id)
    return _setup_view(intent, customer_id)


def _setup_view(intent: Any, customer_id: str) -> dict[str, Any]:
    return {"setupIntentId": intent.id, "clientSecret": intent.client_secret, "customerId": customer_id,
            "status": intent.status}


def newer_card(profile: StripeProfile, created: int) -> bool:
    """A late or retried event about an older card never replaces a newer one."""
    return profile.payment_method_from is None or created >= profile.payment_method_from


def apply_setup_intent(deps: PaymentsDeps, intent: dict[str, Any]) -> str | None:
    """Make a succeeded SetupIntent's card the customer's default; the user's id, None when not ours."""
    if intent.get("status") != "succeeded" or not intent.get("payment_method"):
        return None
    uid = deps.customers.user_of(_id_of(intent.get("customer")))
    if uid is None:
        return None
    created = int(intent.get("created") or 0)
    if not newer_card(deps.customers.profile(uid), created):
        return uid
    payment_method = _id_of(intent["payment_method"])
    deps.stripe.update_customer(_id_of(intent["customer"]) or "", {
        "invoice_settings": {"default_payment_method": payment_method or ""}},
        idempotency_key=f"default-pm-{intent['id']}")
    deps.customers.set_payment_method(uid, created)
    return uid


def _settle_setup_intent(deps: PaymentsDeps, profile: StripeProfile) -> StripeProfile:
    """Apply the user's last SetupIntent now if it succeeded (its webhook may not have arrived yet)."""
    if not profile.setup_intent_id:
        return profile
    intent = _plain(deps.stripe.retrieve_setup_intent(profile.setup_intent_id))
    if apply_setup_intent(deps, intent) is None:
        return profile
    return deps.customers.profile(profile.uid)


# -- subscriptions -------------------------------------------------------------------------

def subscribe(deps: PaymentsDeps, uid: str, price_id: str) -> dict[str, Any]:
    """Start the subscription; a first payment that fails leaves it `incomplete` (Stripe's default
    `allow_incomplete`), and subscribing again after a new card retries that payment."""
    profile = deps.customers.profile(uid)
    customer_id = ensure_customer(deps, uid, profile)
    current, status = profile.subscription_id, profile.subscription_status
    if current and status == "incomplete":
        _settle_setup_intent(deps, profile)  # the new card, before paying again
        return _retry_first_payment(deps, uid, current)
    if current and status not in ENDED_STATUSES:
        raise Conflict(f"a subscription exists ({status}); cancel it first")
    if not profile.has_payment_method:
        profile = _settle_setup_intent(deps, profile)
    if not profile.has_payment_method:
        raise FailedPrecondition("add a payment method first (POST /setup-intent)")
    attempt = profile.subscription_attempts + 1
    subscription = deps.stripe.create_subscription({
        "customer": customer_id, "items": [{"price": price_id}], "metadata": {"uid": uid}},
        idempotency_key=f"subscription-{uid}-{attempt}")
    deps.customers.set_subscription_attempts(uid, attempt)
    apply_subscription(deps, _plain(subscription))
    if subscription.status == "incomplete":
        raise PaymentNeeded("the first payment failed; add another card, then subscribe again")
    return subscription_view(deps, uid)


def _retry_first_payment(deps: PaymentsDeps, uid: str, subscription_id: str) -> dict[str, Any]:
    import stripe

    gateway = deps.stripe
    subscription = gateway.retrieve_subscription(subscription_id)
    invoice_id = _id_of(subscription.latest_invoice)
    declined = None
    if subscription.status == "incomplete" and invoice_id:
        try:
            gateway.pay_invoice(invoice_id)
        except stripe.CardError as exc:
            declined = exc
        subscription = gateway.retrieve_subscription(subscription_id)
    apply_subscription(deps, _plain(subscription))
    if subscription.status == "incomplete":
        raise PaymentNeeded("the first payment failed again; add another card, then subscribe again") from declined
    return subscription_view(deps, uid)


def cancel_subscription(deps: PaymentsDeps, uid: str) -> dict[str, Any]:
    profile = deps.customers.profile(uid)
    if not profile.subscription_id or profile.subscription_status in ENDED_STATUSES:
        raise NotFound("no subscription")
    apply_subscription(deps, _plain(deps.stripe.cancel_subscription(profile.subscription_id)))
    return subscription_view(deps, uid)


def subscription_view(deps: PaymentsDeps, uid: str) -> dict[str, Any]:
    profile = deps.customers.profile(uid)
    return {"isSubscribed": profile.is_subscribed,
            "status": profile.subscription_status,
            "subscriptionId": profile.subscription_id,
            "hasPaymentMethod": profile.has_payment_method,
            "customerId": profile.customer_id}


def apply_subscription(deps: PaymentsDeps, subscription: dict[str, Any]) -> str | None:
    """Set the user's subscription state, and their assistants' isSubscribed, from Stripe's object;
    the user's id, None when the customer is not one of ours."""
    uid = deps.customers.user_of(_id_of(subscription.get("customer")))
    if uid is None:
        return None
    profile = deps.customers.profile(uid)
    status = subscription.get("status")
    if profile.subscription_id and profile.subscription_id != subscription["id"] \
            and status not in SUBSCRIBED_STATUSES:
        return uid  # news about an older subscription: the current one decides
    deps.customers.set_subscription(profile, subscription["id"], status, status in SUBSCRIBED_STATUSES)
    return uid


# -- invoices ---------------------------------------------------------------------------------

def push_invoice(deps: PaymentsDeps, invoice: Invoice) -> PushOutcome:
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
        return _push(deps, invoice)
    except stripe.StripeError as exc:
        if _replayed_failure(exc):
            # Stripe keeps a 5xx under its key for a day: the next attempt uses fresh keys
            # (safe: what is missing is worked out from Stripe's own state each time)
            deps.links.fresh_keys(invoice_id)
        raise


def _push(deps: PaymentsDeps, invoice: Invoice) -> PushOutcome:
    import stripe

    gateway = deps.stripe
    invoice_id = invoice.id
    customer_id = ensure_customer(deps, invoice.user_id)
    for _ in range(3):
        stripe_invoice, fresh = _stripe_draft(deps, invoice, customer_id)
        if stripe_invoice.status == "draft":
            stripe_invoice = _complete(gateway, invoice, stripe_invoice, fresh)
        if stripe_invoice.total == invoice.total:
            apply_invoice(deps, _plain(stripe_invoice), None)
            return PushOutcome.PUSHED
        log.error("stripe invoice %s (%s) bills %s, ours %s bills %s", stripe_invoice.id, stripe_invoice.status,
                  stripe_invoice.total, invoice_id, invoice.total,
                  extra={"fields": {"invoiceId": invoice_id, "stripeInvoiceId": stripe_invoice.id}})
        if stripe_invoice.status in ("paid", "draft"):
            reason = _review_reason(stripe_invoice.id, stripe_invoice.status, stripe_invoice.total, invoice.total)
            _move(deps, invoice_id, InvoiceStatus.REVIEW, {"reviewReason": reason})
            return PushOutcome.REVIEW
        if stripe_invoice.status in ("open", "uncollectible"):
            # recorded first, so its invoice.voided webhook changes nothing; the id is kept until
            # the void succeeds, so a failed void is retried and a charge meanwhile is seen
            deps.links.replacing(invoice_id, stripe_invoice.id)
            try:
                gateway.void_invoice(stripe_invoice.id, idempotency_key=_key(invoice, f"void-{stripe_invoice.id}"))
            except stripe.InvalidRequestError:
                continue  # no longer open (paid meanwhile?): look again
        invoice = _reissue(deps, invoice, stripe_invoice.id)
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


def _stripe_draft(deps: PaymentsDeps, invoice: Invoice, customer_id: str) -> tuple[Any, bool]:
    """Stripe's invoice for ours, and whether it was just created (so it has no lines yet)."""
    gateway = deps.stripe
    if invoice.stripe_invoice_id:
        return gateway.retrieve_invoice(invoice.stripe_invoice_id), False
    reissue = invoice.stripe_reissues
    key = _key(invoice, f"invoice-{invoice.id}" + (f"-r{reissue}" if reissue else ""))
    created = gateway.create_invoice({
        "customer": customer_id, "collection_method": "charge_automatically", "auto_advance": False,
        "pending_invoice_items_behavior": "exclude", "currency": invoice.currency, "discounts": "",
        "metadata": {"invoiceId": invoice.id, "period": invoice.period, "userId": invoice.user_id}},
        idempotency_key=key)
    deps.links.link(invoice.id, created.id, deps.clock())
    invoice.stripe_invoice_id = created.id
    return created, True


def _present_lines(gateway: StripeGateway, stripe_invoice_id: str) -> set[str]:
    present: set[str] = set()
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = gateway.list_invoice_lines(stripe_invoice_id, params)
        for line in page.data:
            present.add(str((_plain(line).get("metadata") or {}).get("line")))
        if not page.has_more or not page.data:
            return present
        params["starting_after"] = page.data[-1].id


def _complete(gateway: StripeGateway, invoice: Invoice, stripe_invoice: Any, fresh: bool) -> Any:
    """Add the lines a draft lacks; finalize it with automatic collection if it then bills our total."""
    present = set() if fresh else _present_lines(gateway, stripe_invoice.id)
    missing = [line for line in stripe_lines(invoice.lines) if line.key not in present]
    for start in range(0, len(missing), LINES_PER_REQUEST):
        batch = missing[start:start + LINES_PER_REQUEST]
        lines: list[Any] = [_line_params(invoice, line) for line in batch]
        stripe_invoice = gateway.add_invoice_lines(stripe_invoice.id, {"lines": lines},
                                                   idempotency_key=_key(invoice, _lines_key(stripe_invoice.id, batch)))
    if stripe_invoice.total != invoice.total:
        return stripe_invoice  # never finalize a total that is not ours
    return gateway.finalize_invoice(stripe_invoice.id, {"auto_advance": True},
                                    idempotency_key=_key(invoice, f"finalize-{stripe_invoice.id}"))


def _line_params(invoice: Invoice, line: StripeLine) -> dict[str, Any]:
    return {"amount": line.amount, "description": line.description,
            "metadata": {"invoiceId": invoice.id, "period": invoice.period, **line.metadata}}


def _lines_key(stripe_invoice_id: str, batch: list[StripeLine]) -> str:
    digest = hashlib.sha256(",".join(line.key for line in batch).encode()).hexdigest()[:24]
    return f"lines-{stripe_invoice_id}-{digest}"


def _reissue(deps: PaymentsDeps, invoice: Invoice, replaced: str) -> Invoice:
    reissues = invoice.stripe_reissues + 1
    deps.links.reissued(invoice.id, replaced, reissues, deps.clock())
    return replace(invoice, stripe_invoice_id=None, stripe_reissues=reissues)


def set_invoice_status(deps: PaymentsDeps, invoice_id: str, status: InvoiceStatus,
                       fields: dict[str, Any]) -> MoveOutcome:
    """Write a status, never moving it back (paid, void, carried and review are final; a late
    "open" after "failed" or "paid" changes nothing). One transaction on the invoice document."""
    return _move(deps, invoice_id, InvoiceStatus(status), fields)


def stripe_decision(state: StatusState, requested: InvoiceStatus, fields: dict[str, Any],
                    stripe_invoice: dict[str, Any] | None) -> tuple[InvoiceStatus, dict[str, Any]] | Superseded | None:
    """What a status move writes on the invoice as read: the status and fields; Superseded, or None
    (leave it), when the news must change nothing. Never back, never out of a final status."""
    final, update = requested, dict(fields)
    if stripe_invoice is not None:
        if state.stripe_invoice_id != stripe_invoice["id"]:
            return Superseded.SUPERSEDED  # news about a Stripe invoice we replaced (or have not recorded)
        if final == InvoiceStatus.VOID and state.replacing_stripe_invoice == stripe_invoice["id"]:
            return None  # we voided it to reissue ours
        if final != InvoiceStatus.VOID and int(stripe_invoice.get("total") or 0) != state.total:
            if final != InvoiceStatus.PAID:
                return None  # Stripe's invoice bills something else: the push reissues it
            final = InvoiceStatus.REVIEW
            update["reviewReason"] = _review_reason(stripe_invoice["id"], "paid", stripe_invoice.get("total"),
                                                    state.total)
    return state.status.after(final), update


def _move(deps: PaymentsDeps, invoice_id: str, status: InvoiceStatus, fields: dict[str, Any],
          stripe_invoice: dict[str, Any] | None = None) -> MoveOutcome:
    superseded = False

    def decide(state: StatusState) -> tuple[InvoiceStatus, dict[str, Any]] | None:
        nonlocal superseded
        decision = stripe_decision(state, status, fields, stripe_invoice)
        superseded = decision is Superseded.SUPERSEDED  # (each retry decides again)
        return None if isinstance(decision, Superseded) else decision

    moved = deps.invoices.move_status(invoice_id, decide, deps.clock())
    return Superseded.SUPERSEDED if superseded and moved is not None else moved


def _status(stripe_invoice: dict[str, Any], event_type: str | None) -> InvoiceStatus:
    status = stripe_invoice.get("status")
    if status == "paid":
        return InvoiceStatus.PAID
    if status == "void":
        return InvoiceStatus.VOID
    if status == "uncollectible":
        return InvoiceStatus.FAILED
    if status == "open":
        failed = event_type == "invoice.payment_failed" or int(stripe_invoice.get("attempt_count") or 0) > 0
        return InvoiceStatus.FAILED if failed else InvoiceStatus.OPEN
    return InvoiceStatus.DRAFT


def apply_invoice(deps: PaymentsDeps, stripe_invoice: dict[str, Any], event_type: str | None) -> MoveOutcome:
    invoice_id = (stripe_invoice.get("metadata") or {}).get("invoiceId")
    if not isinstance(invoice_id, str) or not valid_document_id(invoice_id):
        return None  # not one of ours
    # amountDue differs from our total when Stripe applied the customer's balance (a credit, or
    # an amount Stripe itself carried from an invoice under its minimum charge)
    fields = {"hostedInvoiceUrl": stripe_invoice.get("hosted_invoice_url"),
              "amountPaid": int(stripe_invoice.get("amount_paid") or 0),
              "amountDue": int(stripe_invoice.get("amount_due") or 0),
              "startingBalance": int(stripe_invoice.get("starting_balance") or 0)}
    return _move(deps, invoice_id, _status(stripe_invoice, event_type), fields, stripe_invoice)


# -- webhook events ------------------------------------------------------------------------------

HANDLED = {"invoice.paid", "invoice.payment_failed", "invoice.finalized", "invoice.payment_succeeded",
           "invoice.voided", "invoice.marked_uncollectible", "customer.subscription.created",
           "customer.subscription.updated", "customer.subscription.deleted", "setup_intent.succeeded"}


def process_event(deps: PaymentsDeps, event: Any) -> EventOutcome:
    """Apply one verified Stripe event and say what became of it.

    Raises `Unavailable` when Stripe or Firestore failed for now (the endpoint answers 503
    and Stripe retries); an event that can never be applied (no id, no object, an object
    Stripe does not know) is acknowledged with its outcome, so Stripe stops retrying it."""
    if not isinstance(event, dict):
        return EventOutcome.MALFORMED
    event_id, kind = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not valid_document_id(event_id) or not isinstance(kind, str):
        return EventOutcome.MALFORMED
    if deps.events.seen(event_id):
        return EventOutcome.DUPLICATE
    if kind not in HANDLED:
        return EventOutcome.IGNORED
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    object_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(object_id, str) or not object_id:
        return EventOutcome.MALFORMED
    gateway = deps.stripe
    result: str | None
    try:
        # Re-fetch: events arrive late and out of order; the object's state now decides.
        if kind.startswith("invoice."):
            result = apply_invoice(deps, _plain(gateway.retrieve_invoice(object_id)), kind)
        elif kind.startswith("customer.subscription."):
            result = apply_subscription(deps, _plain(gateway.retrieve_subscription(object_id)))
        else:
            result = apply_setup_intent(deps, _plain(gateway.retrieve_setup_intent(object_id)))
        outcome = EventOutcome.PROCESSED
    except Exception as exc:
        if is_missing(exc):
            result, outcome = None, EventOutcome.UNKNOWN_OBJECT
        elif is_refusal(exc):
            log.error("stripe event %s (%s) refused by Stripe: %r", event_id, kind, exc)
            result, outcome = None, EventOutcome.REFUSED
        elif is_stripe_error(exc):  # network, Stripe's side, our key refused: Stripe retries the event
            raise Unavailable("Stripe is unavailable; retry the event") from exc
        else:
            raise
    deps.events.record(event_id, kind, deps.clock(), result, outcome)
    return outcome
