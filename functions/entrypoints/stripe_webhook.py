"""Stripe events: signature verified on the raw body; 5xx when processing fails (Stripe retries)."""

from __future__ import annotations

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.errors import ConfigError, InvalidArgument
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.services.payments import process_event
from simplytalk.stripe_gateway import stripe_client

api = Api("stripe-webhook", max_body_bytes=1024 * 1024)
log = logs.get_logger("stripe-webhook")
TOLERANCE_SECONDS = 300


@api.route("POST", "/", public=True)  # authenticated by Stripe's signature
def receive(req: ApiRequest) -> Reply:
    import stripe

    secret = settings().stripe_webhook_secret
    if not secret:  # fail closed: never verify against an empty secret
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set")
    payload = req.body()
    try:
        event = stripe.Webhook.construct_event(payload.decode("utf-8"), req.raw.headers.get("Stripe-Signature", ""),
                                               secret, tolerance=TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("invalid Stripe signature or payload") from exc
    data = event.to_dict()
    outcome = process_event(firestore_client(), stripe_client(), data, utcnow())
    log.info("stripe event %s %s: %s", data.get("id"), data.get("type"), outcome,
             extra={"fields": {"stripeEventId": data.get("id"), "type": data.get("type"), "outcome": outcome}})
    return Reply(200, {"received": True, "outcome": outcome})
