"""Every Stripe error class a user's request can meet becomes the contract's error, never a 500."""

from __future__ import annotations

import pytest
import stripe
from simplytalk.errors import Aborted, ApiError, FailedPrecondition, PaymentNeeded, Unavailable
from simplytalk.http import status_of
from simplytalk.stripe_gateway import is_missing, is_refusal, is_transient, stripe_errors

CASES = [
    (stripe.CardError("Your card was declined.", "card", "card_declined", http_status=402), PaymentNeeded, 402),
    (stripe.IdempotencyError("Keys for idempotent requests can only be used with the same parameters",
                             http_status=400), Aborted, 409),
    (stripe.IdempotencyError("There is currently another in-progress request using this Idempotent Key",
                             http_status=409), Aborted, 409),
    (stripe.InvalidRequestError("Received unknown parameter: x", "x", code="parameter_unknown", http_status=400),
     FailedPrecondition, 400),
    (stripe.AuthenticationError("Invalid API Key provided", http_status=401), Unavailable, 503),
    (stripe.PermissionError("The provided key does not have access", http_status=403), Unavailable, 503),
    (stripe.RateLimitError("Too many requests", http_status=429), Unavailable, 503),
    (stripe.APIConnectionError("connection reset"), Unavailable, 503),
    (stripe.APIError("Something went wrong on Stripe's end", http_status=500), Unavailable, 503),
    (stripe.StripeError("anything else"), Unavailable, 503),
]


@pytest.mark.parametrize(("raised", "expected", "status"), CASES)
def test_stripe_errors_map_to_the_contract(raised: stripe.StripeError, expected: type[ApiError],
                                           status: int) -> None:
    with pytest.raises(expected) as caught, stripe_errors():
        raise raised

    assert status_of(caught.value)[0] == status


def test_only_passing_troubles_are_retried_and_a_missing_object_is_told_apart() -> None:
    assert is_transient(stripe.APIConnectionError("reset"))
    assert is_transient(stripe.IdempotencyError("in progress", http_status=409))
    assert not is_transient(stripe.IdempotencyError("other parameters", http_status=400))
    assert not is_transient(stripe.InvalidRequestError("No such invoice", "id", code="resource_missing",
                                                       http_status=404))
    assert is_missing(stripe.InvalidRequestError("No such invoice", "id", code="resource_missing", http_status=404))
    assert not is_missing(stripe.CardError("declined", "card", "card_declined", http_status=402))
    assert is_refusal(stripe.InvalidRequestError("Received unknown parameter: x", "x", http_status=400))
    assert not is_refusal(stripe.AuthenticationError("Invalid API Key provided", http_status=401))
