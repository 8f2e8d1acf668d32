"""The invoice, from pricing to Stripe: one user's bill for one period. Pure, no I/O.

`invoices/{uid}_{period}` holds it; `Invoice.to_firestore` / `Invoice.from_firestore` is its
one codec (display strings such as a line's `minutes` are written for readers and derived
from the exact figures, never read back as data). Its status only moves forward:
draft -> open -> failed -> paid | void | carried | review, the last four final; a late or
out-of-order change that would move it back leaves it where it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from simplytalk.clock import rfc3339
from simplytalk.pricing import RateCard, format_minutes

if TYPE_CHECKING:
    from simplytalk.charges import PricedInvoice


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    FAILED = "failed"
    PAID = "paid"
    VOID = "void"
    CARRIED = "carried"
    REVIEW = "review"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def final(self) -> bool:
        return self.rank == _FINAL_RANK

    def can_move_to(self, status: InvoiceStatus) -> bool:
        """Never back, never out of a final status (staying where it is is no move)."""
        return status != self and not self.final and status.rank >= self.rank

    def after(self, requested: InvoiceStatus) -> InvoiceStatus:
        """The status once `requested` is applied: `requested`, or this one when that would move back."""
        return requested if self.can_move_to(requested) else self


_RANK = {InvoiceStatus.DRAFT: 0, InvoiceStatus.OPEN: 1, InvoiceStatus.FAILED: 2, InvoiceStatus.PAID: 3,
         InvoiceStatus.VOID: 3, InvoiceStatus.CARRIED: 3, InvoiceStatus.REVIEW: 3}
_FINAL_RANK = 3


def invoice_id(uid: str, period: str) -> str:
    """One invoice per user and period: a rerun's create of the same id fails."""
    return f"{uid}_{period}"


@dataclass(frozen=True)
class InvoiceLine:
    assistant_id: str
    provider: str
    usage_period: str
    minutes: Fraction  # exact
    amount: int  # cents; the lines add up to the invoice's total
    rate_card_id: str

    @property
    def minutes_display(self) -> str:
        return format_minutes(self.minutes)


class StatusRefused(ValueError):
    """A status change that would move an invoice back (or out of a final status)."""


@dataclass
class Invoice:
    id: str
    user_id: str
    period: str
    currency: str
    total: int
    lines: list[InvoiceLine]
    rate_card_id: str  # the card of the invoice's own period
    created_at: dt.datetime
    updated_at: dt.datetime
    status: InvoiceStatus = InvoiceStatus.DRAFT
    status_reason: str | None = None
    # what pushing it to Stripe and Stripe's webhooks add
    stripe_invoice_id: str | None = None
    hosted_invoice_url: str | None = None
    amount_due: int | None = None
    amount_paid: int | None = None
    starting_balance: int | None = None
    review_reason: str | None = None
    stripe_key_attempt: int = 0  # idempotency keys are fresh after a failure Stripe replays
    stripe_reissues: int = 0
    replacing_stripe_invoice: str | None = None
    replaced_stripe_invoices: list[str] = field(default_factory=list)

    @classmethod
    def draft(cls, uid: str, period: str, priced: PricedInvoice, period_card: RateCard,
              now: dt.datetime) -> Invoice:
        lines = [InvoiceLine(line.assistant_id, line.provider, line.usage_period, line.minutes, line.amount,
                             line.rate_card_id) for line in priced.lines]
        return cls(id=invoice_id(uid, period), user_id=uid, period=period, currency=priced.currency,
                   total=priced.total, lines=lines, rate_card_id=period_card.id, created_at=now, updated_at=now)

    def move_to(self, status: InvoiceStatus, now: dt.datetime | None = None) -> None:
        """Change the status; StatusRefused if that would move it back or out of a final status."""
        if not self.status.can_move_to(status):
            raise StatusRefused(f"invoice {self.id}: {self.status} cannot become {status}")
        self.status = status
        if now is not None:
            self.updated_at = now

    def carry(self, reason: str) -> None:
        """Not sent to Stripe (under its minimum charge): final, the usage left for the next invoice."""
        self.move_to(InvoiceStatus.CARRIED)
        self.status_reason = reason

    # -- the Firestore codec ----------------------------------------------------------------

    def to_firestore(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "userId": self.user_id, "period": self.period, "status": str(self.status),
            "currency": self.currency, "total": self.total,
            "lines": [{"assistantId": line.assistant_id, "provider": line.provider,
                       "usagePeriod": line.usage_period, "minutes": line.minutes_display,
                       "minutesExact": f"{line.minutes.numerator}/{line.minutes.denominator}",
                       "amount": line.amount, "rateCardId": line.rate_card_id} for line in self.lines],
            "rateCardId": self.rate_card_id,
            "stripeInvoiceId": self.stripe_invoice_id,
            "hostedInvoiceUrl": self.hosted_invoice_url,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }
        optional = {"statusReason": self.status_reason, "amountDue": self.amount_due,
                    "amountPaid": self.amount_paid, "startingBalance": self.starting_balance,
                    "reviewReason": self.review_reason, "replacingStripeInvoice": self.replacing_stripe_invoice,
                    "stripeKeyAttempt": self.stripe_key_attempt or None,
                    "stripeReissues": self.stripe_reissues or None,
                    "replacedStripeInvoices": list(self.replaced_stripe_invoices) or None}
        doc.update({k: v for k, v in optional.items() if v is not None})
        return doc

    @classmethod
    def from_firestore(cls, data: dict[str, Any]) -> Invoice:
        def optional_int(key: str) -> int | None:
            value = data.get(key)
            return int(value) if value is not None else None

        return cls(
            id=str(data["id"]), user_id=str(data["userId"]), period=str(data["period"]),
            currency=str(data.get("currency") or "usd"), total=int(data["total"]),
            lines=[_line(line) for line in data.get("lines") or []],
            rate_card_id=str(data.get("rateCardId") or ""),
            created_at=data["createdAt"], updated_at=data.get("updatedAt") or data["createdAt"],
            status=InvoiceStatus(data.get("status") or "draft"), status_reason=data.get("statusReason"),
            stripe_invoice_id=data.get("stripeInvoiceId"), hosted_invoice_url=data.get("hostedInvoiceUrl"),
            amount_due=optional_int("amountDue"), amount_paid=optional_int("amountPaid"),
            starting_balance=optional_int("startingBalance"), review_reason=data.get("reviewReason"),
            stripe_key_attempt=int(data.get("stripeKeyAttempt") or 0),
            stripe_reissues=int(data.get("stripeReissues") or 0),
            replacing_stripe_invoice=data.get("replacingStripeInvoice"),
            replaced_stripe_invoices=list(data.get("replacedStripeInvoices") or []))

    # -- the API shape ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "userId": self.user_id, "period": self.period, "status": str(self.status),
            "statusReason": self.status_reason, "currency": self.currency, "total": self.total,
            "rateCardId": self.rate_card_id, "stripeInvoiceId": self.stripe_invoice_id,
            "hostedInvoiceUrl": self.hosted_invoice_url, "amountDue": self.amount_due,
            "amountPaid": self.amount_paid, "startingBalance": self.starting_balance,
            "lines": [{"assistantId": line.assistant_id, "provider": line.provider,
                       "usagePeriod": line.usage_period, "minutes": line.minutes_display, "amount": line.amount,
                       "rateCardId": line.rate_card_id} for line in self.lines],
            "createdAt": _time(self.created_at), "updatedAt": _time(self.updated_at),
        }


def _line(data: dict[str, Any]) -> InvoiceLine:
    exact = data.get("minutesExact")
    minutes = Fraction(str(exact)) if exact else Fraction(str(data.get("minutes") or "0"))
    return InvoiceLine(str(data["assistantId"]), str(data.get("provider") or "openai"), str(data["usagePeriod"]),
                       minutes, int(data["amount"]), str(data.get("rateCardId") or ""))


def _time(value: Any) -> str | None:
    return rfc3339(value) if isinstance(value, dt.datetime) else None
