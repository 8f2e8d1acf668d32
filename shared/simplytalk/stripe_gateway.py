"""One lazily created Stripe client per instance (the official SDK)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from simplytalk.config import settings
from simplytalk.errors import ConfigError

if TYPE_CHECKING:
    import stripe


@functools.cache
def stripe_client() -> stripe.StripeClient:
    import stripe

    cfg = settings()
    if not cfg.stripe_api_key:
        raise ConfigError("STRIPE_API_KEY is not set")
    extra = {"base_addresses": {"api": cfg.stripe_api_base}} if cfg.stripe_api_base else {}
    # Retries are safe: every create carries an idempotency key.
    return stripe.StripeClient(cfg.stripe_api_key, max_network_retries=2, **extra)  # type: ignore[arg-type]
