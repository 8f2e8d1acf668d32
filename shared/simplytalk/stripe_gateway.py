"""Stripe: one lazily created client per instance (the official SDK), and its errors in our vocabulary.

The client speaks the API version the installed stripe-python pins (`stripe.api_version`);
the local Stripe (devtools/fake_stripe.py) refuses what that version refuses.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from simplytalk import logs
from simplytalk.config import settings
from simplytalk.errors import Aborted, ConfigError, FailedPrecondition, PaymentNeeded, Unavailable

if TYPE_CHECKING:
    import stripe

log = logs.get_logger("stripe")


@functools.cache
def stripe_client() -> stripe.StripeClient:
    import stripe

    cfg = settings()
    if not cfg.stripe_api_key:
        raise ConfigError("STRIPE_API_KEY is not set")
    extra = {"base_addresses": {"api": cfg.stripe_api_base}} if cfg.stripe_api_base else {}
    # Retries are safe: every create carries an idempotency key.
    return stripe.StripeClient(cfg.stripe_api_key, max_network_retries=2, **extra)  # type: ignore[arg-type]


def is_transient(exc: Exception) -> bool:
    """An error that trying again later may fix (network, Stripe's side, rate limits, a key in use)."""
    import stripe

    if isinstance(exc, stripe.IdempotencyError):
        return exc.http_status == 409  # another request with the key is in flight
    return isinstance(exc, stripe.APIConnectionError | stripe.APIError | stripe.RateLimitError)


def is_missing(exc: Exception) -> bool:
    """Stripe does not know the object (a 404 `resource_missing`)."""
    import stripe

    return isinstance(exc, stripe.InvalidRequestError) and (exc.code == "resource_missing" or exc.http_status == 404)


def is_refusal(exc: Exception) -> bool:
    """Stripe refused the request itself: trying again cannot help."""
    import stripe

    return isinstance(exc, stripe.InvalidRequestError) and not is_transient(exc)


def is_stripe_error(exc: Exception) -> bool:
    import stripe

    return isinstance(exc, stripe.StripeError)


@contextlib.contextmanager
def stripe_errors() -> Iterator[None]:
    """Every Stripe error class, on a user's request, in the contract's shape (never a bare 500)."""
    import stripe

    try:
        yield
    except stripe.CardError as exc:
        raise PaymentNeeded(exc.user_message or "the card was declined") from exc
    except stripe.IdempotencyError as exc:
        # a key reused with other parameters, or one still in use: the caller sends a new key or waits
        raise Aborted("a request with this Idempotency-Key is in progress or had other parameters; "
                      "retry later or use a new key") from exc
    except stripe.InvalidRequestError as exc:
        raise FailedPrecondition(f"Stripe refused the request: {exc.user_message or exc}") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        log.error("Stripe refused our credentials: %r", exc)  # an operator must fix the key
        raise Unavailable("payments are unavailable right now; try again later") from exc
    except stripe.StripeError as exc:  # connection, rate limit, Stripe's own errors
        raise Unavailable("payments are unavailable right now; try again") from exc
