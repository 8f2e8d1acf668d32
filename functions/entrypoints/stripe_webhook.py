"""Stripe events: signature verified on the raw body, then applied.

A signed event that can never be applied (not JSON, no id, no object, an object Stripe
does not know) is acknowledged (200) and logged, so Stripe stops retrying it; when Stripe
or Firestore fail for now the answer is 503 and Stripe retries.
"""

from __future__ import annotations

import json

from simplytalk import logs
from simplytalk.api_models import StripeEvent, StripeReceived
from simplytalk.config import settings
from simplytalk.errors import ConfigError, InvalidInput
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.services.payments import EventOutcome, process_event
from simplytalk.services.payments_deps import firestore_payments
from simplytalk.stripe_gateway import stripe_client

api = Api("stripe-webhook", max_body_bytes=1024 * 1024, cors=False)
log = logs.get_logger("stripe-webhook")
TOLERANCE_SECONDS = 300


# authenticated by Stripe's signature
@api.route("POST", "/", public=True, summary="Stripe events (invoice status, subscription state)",
           body=StripeEvent, response=StripeReceived, errors=(503,), security=(("stripeSignature",),))
def receive(req: ApiRequest) -> Reply:
    import stripe

    secret = settings().stripe_webhook_secret
    if not secret:  # fail closed: never verify against an empty secret
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set")
    try:
        payload = req.body().decode("utf-8")
        stripe.WebhookSignature.verify_header(payload, req.raw.headers.get("Stripe-Signature", ""), secret,
                                              tolerance=TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise InvalidInput("invalid Stripe signature") from exc
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        event = None
    outcome = process_event(firestore_payments(stripe_client=stripe_client()), event)
    fields = {"stripeEventId": event.get("id"), "type": event.get("type")} if isinstance(event, dict) else {}
    fields = {k: v if isinstance(v, str) else repr(v)[:100] for k, v in fields.items()}
    if outcome == EventOutcome.MALFORMED:
        log.error("signed stripe event is malformed: acknowledged, not applied", extra={"fields": fields})
    else:
        log.info("stripe event %s %s: %s", fields.get("stripeEventId"), fields.get("type"), outcome,
                 extra={"fields": {**fields, "outcome": outcome}})
    return Reply(200, {"received": True, "outcome": outcome})
