"""What the margin report reads besides the counters and the rate cards: a month's usage events
and the invoice lines that bill a month's usage. Nothing is written.

Documents:
- `usageEvents/{id}`: read by an `occurredAt` range over the month (newest first, by `occurredAt`
  then id: the composite index `usageEvents (userId, occurredAt desc, __name__ desc)` serves the
  one-user query, the automatic single-field index the all-users one), only the fields pricing
  needs, in pages (at most a page in memory);
- `invoices/{uid}_{period}`: a user's invoices from the period on (userId + period >= P, the index
  the invoice list uses); their lines for usage period P are that month's revenue (its own
  invoice's, and later invoices' late usage).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from simplytalk import collections as col
from simplytalk.invoice import Invoice

if TYPE_CHECKING:
    from google.cloud.firestore import Client

EVENT_FIELDS = ["userId", "assistantId", "provider", "kind", "model", "occurredAt", "usage", "transcription",
                "vapi.cost", "callSeconds"]
PAGE = 500


class BilledLine(NamedTuple):
    """A line of an invoice that bills usage of the period, with its invoice's status and currency."""

    line: dict[str, Any]
    status: str | None
    currency: str | None


class MarginSources(Protocol):
    def period_events(self, period: str, user_id: str | None = None,
                      page: int = PAGE) -> Iterator[tuple[str, dict[str, Any]]]:
        """The period's usage events (id, the pricing fields), newest first, read `page` at a time."""
        ...

    def invoice_lines(self, uid: str, period: str) -> list[BilledLine]:
        """Every line of the user's invoices that bills usage of `period` (with an assistant id)."""
        ...


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """[first instant, first instant of the next month) in UTC, for "YYYY-MM"."""
    year, month = int(period[:4]), int(period[5:7])
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def billed_lines(invoice: dict[str, Any], period: str) -> Iterator[BilledLine]:
    """A stored invoice's lines for usage of `period`, read leniently."""
    for line in invoice.get("lines") or []:
        if (isinstance(line, dict) and line.get("usagePeriod") == period
                and isinstance(line.get("assistantId"), str)):
            yield BilledLine(line, invoice.get("status"), invoice.get("currency"))


# -- Firestore --------------------------------------------------------------------------------------

class FirestoreMarginSources:
    def __init__(self, db: Client) -> None:
        self.db = db

    def period_events(self, period: str, user_id: str | None = None,
                      page: int = PAGE) -> Iterator[tuple[str, dict[str, Any]]]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter

        start, end = period_bounds(period)
        query: Any = self.db.collection(col.USAGE_EVENTS)
        if user_id is not None:
            query = query.where(filter=FieldFilter("userId", "==", user_id))
        query = (query.where(filter=FieldFilter("occurredAt", ">=", start))
                 .where(filter=FieldFilter("occurredAt", "<", end))
                 .order_by("occurredAt", direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING)
                 .select(EVENT_FIELDS))
        last = None
        while True:
            docs = list((query.start_after(last) if last is not None else query).limit(page).stream())
            for doc in docs:
                yield doc.id, doc.to_dict() or {}
            if len(docs) < page:
                return
            last = docs[-1]

    def invoice_lines(self, uid: str, period: str) -> list[BilledLine]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self.db.collection(col.INVOICES).where(filter=FieldFilter("userId", "==", uid))
                 .where(filter=FieldFilter("period", ">=", period))
                 .order_by("period", direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        return [line for snap in query.stream() for line in billed_lines(snap.to_dict() or {}, period)]


# -- in memory ----------------------------------------------------------------------------

def _select(data: dict[str, Any]) -> dict[str, Any]:
    """Only EVENT_FIELDS, as the Firestore read's projection (`vapi.cost` keeps `vapi` with only `cost`)."""
    picked = {k: data[k] for k in EVENT_FIELDS if "." not in k and k in data}
    vapi = data.get("vapi")
    if isinstance(vapi, dict) and "cost" in vapi:
        picked["vapi"] = {"cost": vapi["cost"]}
    return picked


@dataclass
class InMemoryMarginSources:
    """Events are `{id: fields}` as the tap and the vapi webhook store them; invoices are stored
    documents (`Invoice.to_firestore`, or any dict of that shape). `pages` counts the event pages read."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: int = 0

    def add_invoice(self, invoice: Invoice) -> None:
        self.invoices[invoice.id] = invoice.to_firestore()

    def period_events(self, period: str, user_id: str | None = None,
                      page: int = PAGE) -> Iterator[tuple[str, dict[str, Any]]]:
        start, end = period_bounds(period)

        def wanted(data: dict[str, Any]) -> bool:
            at = data.get("occurredAt")
            return (isinstance(at, dt.datetime) and start <= at < end
                    and (user_id is None or data.get("userId") == user_id))

        found = sorted(((d["occurredAt"], i) for i, d in self.events.items() if wanted(d)), reverse=True)
        for offset in range(0, len(found) + 1, page):
            chunk = found[offset:offset + page]
            self.pages += 1
            for _, event_id in chunk:
                yield event_id, _select(self.events[event_id])
            if len(chunk) < page:
                return

    def invoice_lines(self, uid: str, period: str) -> list[BilledLine]:
        mine = sorted(((d.get("period"), i) for i, d in self.invoices.items()
                       if d.get("userId") == uid and isinstance(d.get("period"), str) and d["period"] >= period),
                      reverse=True)
        return [line for _, i in mine for line in billed_lines(self.invoices[i], period)]
