from __future__ import annotations

from simplytalk import api_models as shapes
from simplytalk.config import settings
from simplytalk.errors import PermissionDenied
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.margin import report_json
from simplytalk.paging import page_size
from simplytalk.rate_limits import rate_limiter
from simplytalk.services import invoicing, margin, payments, rate_cards
from simplytalk.services.billing_deps import firestore_billing, firestore_margin
from simplytalk.services.payments_deps import firestore_payments

api = Api("billing")
# GET /margin reads at most this many usage events within the function's 30 s (a larger month: the CLI)
MARGIN_MAX_EVENTS = 20_000


@api.route("GET", "/invoices", summary="The caller's invoices, newest period first", query=shapes.PageQuery,
           response=shapes.InvoicePage)
def list_invoices(req: ApiRequest) -> Reply:
    items, token = invoicing.list_invoices(firestore_billing(), req.uid, page_size(req.query("pageSize")),
                                           req.query("pageToken"))
    return Reply(200, {"invoices": items, "nextPageToken": token})


@api.route("GET", "/invoices/{invoice_id}", summary="One of the caller's invoices", response=shapes.Invoice)
def get_invoice(req: ApiRequest) -> Reply:
    return Reply(200, invoicing.get_invoice(firestore_billing(), req.uid, req.params["invoice_id"]))


@api.route("GET", "/rate-cards", summary="Every rate card, oldest first", response=shapes.RateCardList)
def list_rate_cards(req: ApiRequest) -> Reply:
    cards = firestore_billing().rate_cards.list()
    return Reply(200, {"rateCards": [rate_cards.card_json(c) for c in cards]})


@api.route("POST", "/rate-cards", summary="Add a rate card from a month not yet begun (admin claim)",
           body=rate_cards.RateCardInput, response=shapes.RateCard, status=201, errors=(403, 409))
def add_rate_card(req: ApiRequest) -> Reply:
    if req.caller is None or not req.caller.is_admin:
        raise PermissionDenied("adding a rate card needs the admin claim")
    req.require_current_account()  # a disabled admin or a revoked token loses the power at once
    billing = firestore_billing()
    card = rate_cards.add_card(billing.rate_cards, req.parse(rate_cards.RateCardInput), req.uid, billing.clock())
    return Reply(201, rate_cards.card_json(card))


@api.route("GET", "/margin", summary="Margin per assistant for a month: minutes, revenue, provider cost (admin claim)",
           query=shapes.MarginQuery, response=shapes.MarginReport, errors=(403,))
def get_margin(req: ApiRequest) -> Reply:
    if req.caller is None or not req.caller.is_admin:
        raise PermissionDenied("the margin report needs the admin claim")
    req.require_current_account()  # a disabled admin or a revoked token loses the power at once
    period, user_id = margin.parse_query(req.query("period"), req.query("userId"))
    report = margin.margin(firestore_margin(), period, user_id, max_events=MARGIN_MAX_EVENTS)
    return Reply(200, report_json(report))


@api.route("POST", "/setup-intent", summary="A Stripe SetupIntent to save the caller's card",
           response=shapes.SetupIntent, status=201, errors=(400, 402, 409, 429, 503))
def setup_intent(req: ApiRequest) -> Reply:
    """A SetupIntent for Stripe.js to save the caller's card: the caller's open one while it is unused."""
    from simplytalk.stripe_gateway import stripe_client, stripe_errors

    req.require_current_account()
    rate_limiter().take(req.uid, "setup-intent")
    with stripe_errors():
        result = payments.create_setup_intent(firestore_payments(stripe_client=stripe_client()), req.uid)
    return Reply(201, result)


@api.route("GET", "/subscription", summary="The caller's subscription state", response=shapes.Subscription)
def get_subscription(req: ApiRequest) -> Reply:
    return Reply(200, payments.subscription_view(firestore_payments(), req.uid))


@api.route("POST", "/subscription", summary="Subscribe (needs a saved card)", response=shapes.Subscription,
           status=201, errors=(400, 402, 409, 503))
def subscribe(req: ApiRequest) -> Reply:
    from simplytalk.stripe_gateway import stripe_client, stripe_errors

    req.require_current_account()
    with stripe_errors():
        view = payments.subscribe(firestore_payments(stripe_client=stripe_client()), req.uid,
                                  settings().stripe_price_id)
    return Reply(201, view)


@api.route("DELETE", "/subscription", summary="Cancel the subscription", response=shapes.Subscription,
           errors=(400, 404, 409, 503))
def cancel(req: ApiRequest) -> Reply:
    from simplytalk.stripe_gateway import stripe_client, stripe_errors

    req.require_current_account()
    with stripe_errors():
        return Reply(200, payments.cancel_subscription(firestore_payments(stripe_client=stripe_client()), req.uid))
