"""An invoice's link to its Stripe invoice: the fields pushing it to Stripe writes on `invoices/{id}`.

`stripeInvoiceId` (recorded before any line exists), `replacingStripeInvoice` (the Stripe invoice
being voided to be reissued, so its `invoice.voided` webhook changes nothing), `stripeReissues` and
`replacedStripeInvoices` (webhooks about those change nothing), `stripeKeyAttempt` (idempotency keys
are fresh after a failure Stripe replays). Plain updates, as each is one field's news.

The rest of `invoices/{id}` is `repositories/invoices.py`'s; these writes belong with it and live
here only until that module takes them (the payments slice could add nothing but `move_status` there).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col
from simplytalk.repositories.invoices import InMemoryInvoices

if TYPE_CHECKING:
    from google.cloud.firestore import Client


class StripeLinks(Protocol):
    def link(self, invoice_id: str, stripe_invoice_id: str, now: dt.datetime) -> None:
        """The Stripe invoice just created for ours."""
        ...

    def replacing(self, invoice_id: str, stripe_invoice_id: str) -> None:
        """The Stripe invoice about to be voided to reissue ours."""
        ...

    def reissued(self, invoice_id: str, replaced: str, reissues: int, now: dt.datetime) -> None:
        """The Stripe invoice `replaced` is no longer ours; the next push creates the `reissues`th."""
        ...

    def fresh_keys(self, invoice_id: str) -> None:
        """The next push uses fresh idempotency keys (`stripeKeyAttempt` + 1)."""
        ...


class FirestoreStripeLinks:
    def __init__(self, db: Client) -> None:
        self.db = db

    def _update(self, invoice_id: str, fields: dict[str, Any]) -> None:
        self.db.collection(col.INVOICES).document(invoice_id).update(fields)

    def link(self, invoice_id: str, stripe_invoice_id: str, now: dt.datetime) -> None:
        self._update(invoice_id, {"stripeInvoiceId": stripe_invoice_id, "updatedAt": now})

    def replacing(self, invoice_id: str, stripe_invoice_id: str) -> None:
        self._update(invoice_id, {"replacingStripeInvoice": stripe_invoice_id})

    def reissued(self, invoice_id: str, replaced: str, reissues: int, now: dt.datetime) -> None:
        from google.cloud.firestore import ArrayUnion

        self._update(invoice_id, {"stripeInvoiceId": None, "stripeReissues": reissues,
                                  "replacedStripeInvoices": ArrayUnion([replaced]),
                                  "replacingStripeInvoice": None, "updatedAt": now})

    def fresh_keys(self, invoice_id: str) -> None:
        from google.cloud.firestore import Increment

        self._update(invoice_id, {"stripeKeyAttempt": Increment(1)})


@dataclass
class InMemoryStripeLinks:
    """The same writes on an `InMemoryInvoices`' invoices (KeyError for a missing one, as an update's NotFound)."""

    invoices: InMemoryInvoices

    def _change(self, invoice_id: str, **changes: Any) -> None:
        with self.invoices.lock:
            self.invoices.invoices[invoice_id] = replace(self.invoices.invoices[invoice_id], **changes)

    def link(self, invoice_id: str, stripe_invoice_id: str, now: dt.datetime) -> None:
        self._change(invoice_id, stripe_invoice_id=stripe_invoice_id, updated_at=now)

    def replacing(self, invoice_id: str, stripe_invoice_id: str) -> None:
        self._change(invoice_id, replacing_stripe_invoice=stripe_invoice_id)

    def reissued(self, invoice_id: str, replaced: str, reissues: int, now: dt.datetime) -> None:
        with self.invoices.lock:
            before = self.invoices.invoices[invoice_id].replaced_stripe_invoices
            self._change(invoice_id, stripe_invoice_id=None, stripe_reissues=reissues, replacing_stripe_invoice=None,
                         replaced_stripe_invoices=before + ([] if replaced in before else [replaced]), updated_at=now)

    def fresh_keys(self, invoice_id: str) -> None:
        with self.invoices.lock:
            self._change(invoice_id, stripe_key_attempt=self.invoices.invoices[invoice_id].stripe_key_attempt + 1)
