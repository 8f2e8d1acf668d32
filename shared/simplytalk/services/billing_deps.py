"""What the billing services work with (invoices and the ledger, the counted usage, rate cards,
the clock, the Stripe step), and its production wiring: in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from simplytalk.invoice import Invoice
from simplytalk.provider_prices import PriceTable
from simplytalk.repositories.billable_usage import BillableUsage
from simplytalk.repositories.invoices import Invoices
from simplytalk.repositories.margin_sources import MarginSources
from simplytalk.repositories.rate_cards import RateCards

if TYPE_CHECKING:
    from google.cloud.firestore import Client

    from simplytalk.services.payments_deps import PaymentsDeps

Settle = Callable[[Invoice], str]  # the Stripe step for an invoice created or found (idempotent)


@dataclass(frozen=True)
class BillingDeps:
    invoices: Invoices
    usage: BillableUsage
    rate_cards: RateCards
    clock: Callable[[], dt.datetime]
    settle: Settle | None = None

    def settling(self, settle: Settle | None) -> BillingDeps:
        return replace(self, settle=settle)


class StripeSettlement:
    """`settle` in production: a draft invoice becomes a finalized Stripe invoice (push_invoice is
    idempotent); one with nothing to collect is marked paid; any other status is left to Stripe."""

    def __init__(self, payments: PaymentsDeps) -> None:
        self.payments = payments

    def __call__(self, invoice: Invoice) -> str:
        from simplytalk.invoice import InvoiceStatus
        from simplytalk.services.payments import push_invoice, set_invoice_status

        if invoice.status != InvoiceStatus.DRAFT:
            return "settled"
        if invoice.total == 0:
            set_invoice_status(self.payments, invoice.id, InvoiceStatus.PAID, {})  # nothing to collect
            return "nothing-due"
        return push_invoice(self.payments, invoice)


def firestore_billing(db: Client | None = None, clock: Callable[[], dt.datetime] | None = None,
                      stripe_client: Any = None) -> BillingDeps:
    """Firestore repositories and the counters; with `stripe_client`, invoices are pushed to Stripe."""
    from simplytalk.clock import utcnow
    from simplytalk.firestore import firestore_client
    from simplytalk.repositories.billable_usage import CounterUsage
    from simplytalk.repositories.invoices import FirestoreInvoices
    from simplytalk.services.payments_deps import firestore_payments
    from simplytalk.services.rate_cards import shared_rate_cards

    db = db if db is not None else firestore_client()
    clock = clock or utcnow
    settle = StripeSettlement(firestore_payments(db, stripe_client, clock)) if stripe_client is not None else None
    return BillingDeps(invoices=FirestoreInvoices(db), usage=CounterUsage(db), rate_cards=shared_rate_cards(db),
                       clock=clock, settle=settle)


# -- the margin report --------------------------------------------------------------------------

@dataclass(frozen=True)
class MarginDeps:
    """What `services.margin` reads: the month's events and invoice lines, the counted usage, the
    rate cards, the provider price table; and the clock."""

    sources: MarginSources
    usage: BillableUsage
    rate_cards: RateCards
    prices: PriceTable
    clock: Callable[[], dt.datetime]


def firestore_margin(db: Client | None = None, clock: Callable[[], dt.datetime] | None = None,
                     prices: PriceTable | None = None) -> MarginDeps:
    """Firestore repositories, the counters and the shipped price table (GET /billing/margin, ops.margin)."""
    from simplytalk.clock import utcnow
    from simplytalk.firestore import firestore_client
    from simplytalk.provider_prices import default_table
    from simplytalk.repositories.billable_usage import CounterUsage
    from simplytalk.repositories.margin_sources import FirestoreMarginSources
    from simplytalk.services.rate_cards import shared_rate_cards

    db = db if db is not None else firestore_client()
    return MarginDeps(sources=FirestoreMarginSources(db), usage=CounterUsage(db), rate_cards=shared_rate_cards(db),
                      prices=prices or default_table(), clock=clock or utcnow)
