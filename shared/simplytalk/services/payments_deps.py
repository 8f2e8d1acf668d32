"""What the payments services work with (the users' Stripe state, the processed-event markers, the
invoices' statuses and Stripe links, the Stripe gateway, the clock), and its production wiring."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from simplytalk.repositories.customers import Customers
from simplytalk.repositories.invoices import Invoices
from simplytalk.repositories.stripe_events import StripeEvents
from simplytalk.repositories.stripe_links import StripeLinks
from simplytalk.stripe_port import SdkStripeGateway, StripeGateway

if TYPE_CHECKING:
    from google.cloud.firestore import Client


@dataclass(frozen=True)
class PaymentsDeps:
    customers: Customers
    events: StripeEvents
    invoices: Invoices
    links: StripeLinks
    stripe: StripeGateway  # SdkStripeGateway in production, InMemoryStripe in unit tests; None where no Stripe
    # call is made
    clock: Callable[[], dt.datetime]


def firestore_payments(db: Client | None = None, stripe_client: Any = None,
                       clock: Callable[[], dt.datetime] | None = None) -> PaymentsDeps:
    """Firestore repositories and `stripe_client` (a stripe.StripeClient, or anything with its `v1`) behind
    the SDK gateway (None for what calls no Stripe: reading the subscription)."""
    from simplytalk.clock import utcnow
    from simplytalk.firestore import firestore_client
    from simplytalk.repositories.customers import FirestoreCustomers
    from simplytalk.repositories.invoices import FirestoreInvoices
    from simplytalk.repositories.stripe_events import FirestoreStripeEvents
    from simplytalk.repositories.stripe_links import FirestoreStripeLinks

    db = db if db is not None else firestore_client()
    gateway = SdkStripeGateway(stripe_client) if stripe_client is not None else cast(StripeGateway, None)
    return PaymentsDeps(customers=FirestoreCustomers(db), events=FirestoreStripeEvents(db),
                        invoices=FirestoreInvoices(db), links=FirestoreStripeLinks(db), stripe=gateway,
                        clock=clock or utcnow)
