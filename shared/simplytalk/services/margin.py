"""Margin per assistant and month, from Firestore: the reads behind `simplytalk.margin`.

For a period (and optionally one user):
- the period's usage events, read in pages of `page` by an `occurredAt` range (newest first, by
  `occurredAt` then id: the composite index `usageEvents (userId, occurredAt desc, __name__ desc)`
  serves the one-user query, the automatic single-field index the all-users one), only the fields
  pricing needs; each is priced with the provider price table (`simplytalk.provider_prices`);
- for each user seen there: the usage counters (`read_aggregate`, the period's figures per
  assistant, as invoicing reads them) and the invoices from that period on (`invoices`, userId +
  period >= P, the index the invoice list uses), whose lines for usage period P are its revenue;
- the rate card in force for P (`card_for`), for the minutes and the estimate of unbilled usage.
Users are found from the month's events, the source the counters and invoices are built from.

Nothing is written. A month read while events still arrive is a snapshot: an event whose
aggregation has not run yet is priced (cost) before it is counted (minutes, estimate).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.charges import card_for
from simplytalk.errors import FailedPrecondition, InvalidInput
from simplytalk.ids import valid_document_id
from simplytalk.margin import AssistantMonth, MarginReport, event_cost, margin_report
from simplytalk.pricing import valid_period
from simplytalk.provider_prices import PriceTable, default_table
from simplytalk.services.aggregation import Aggregate, read_aggregate
from simplytalk.services.rate_cards import list_cards

if TYPE_CHECKING:
    from google.cloud.firestore import Client

EVENT_FIELDS = ["userId", "assistantId", "provider", "kind", "model", "occurredAt", "usage", "transcription",
                "vapi.cost", "callSeconds"]
PAGE = 500


class TooManyEvents(FailedPrecondition):
    """The month holds more events than this caller may read at once."""


def parse_query(period: str | None, user_id: str | None) -> tuple[str, str | None]:
    """The endpoint's `period` (required, YYYY-MM) and `userId` (optional), or InvalidInput."""
    if not period or not valid_period(period):
        raise InvalidInput.of("period", "must be YYYY-MM")
    if user_id is not None and (not user_id or not valid_document_id(user_id)):
        raise InvalidInput.of("userId", "not a user id")
    return period, user_id


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """[first instant, first instant of the next month) in UTC, for "YYYY-MM"."""
    year, month = int(period[:4]), int(period[5:7])
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def period_events(db: Client, period: str, user_id: str | None = None,
                  page: int = PAGE) -> Iterator[tuple[str, dict[str, Any]]]:
    """The period's usage events (id, the pricing fields), paged: at most `page` in memory."""
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter

    start, end = period_bounds(period)
    query: Any = db.collection(col.USAGE_EVENTS)
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


def invoice_lines(db: Client, uid: str, period: str) -> Iterator[tuple[dict[str, Any], str | None, str | None]]:
    """(line, invoice status, invoice currency) for every line of the user's invoices that bills
    usage of `period` (its own invoice's, and later invoices' late usage)."""
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (db.collection(col.INVOICES).where(filter=FieldFilter("userId", "==", uid))
             .where(filter=FieldFilter("period", ">=", period))
             .order_by("period", direction=Query.DESCENDING)
             .order_by("__name__", direction=Query.DESCENDING))
    for snap in query.stream():
        data = snap.to_dict() or {}
        for line in data.get("lines") or []:
            if (isinstance(line, dict) and line.get("usagePeriod") == period
                    and isinstance(line.get("assistantId"), str)):
                yield line, data.get("status"), data.get("currency")


def margin(db: Client, period: str, user_id: str | None = None, table: PriceTable | None = None,
           max_events: int | None = None, page: int = PAGE, workers: int = 8) -> MarginReport:
    """The margin report for `period` ("YYYY-MM", already validated), all users or one.

    Each user's counters and invoices are read by `workers` threads. `max_events`: refuse
    (TooManyEvents) rather than read more than this many events, for callers with a deadline (the
    HTTP endpoint); the CLI reads any number, a page at a time."""
    table = table or default_table()
    card = card_for(period, list_cards(db))
    months: dict[tuple[str, str], AssistantMonth] = {}

    def month(uid: str, aid: str) -> AssistantMonth:
        return months.setdefault((uid, aid), AssistantMonth(uid, aid))

    users: set[str] = {user_id} if user_id else set()
    for count, (_event_id, data) in enumerate(period_events(db, period, user_id, page), start=1):
        if max_events is not None and count > max_events:
            raise TooManyEvents(f"{period} has more than {max_events} usage events: narrow it with userId, "
                                "or run python -m ops.margin")
        uid, aid = data.get("userId"), data.get("assistantId")
        if not isinstance(uid, str) or not isinstance(aid, str):
            continue  # never in usageEvents (unattributed usage is kept elsewhere)
        provider = data.get("provider") if isinstance(data.get("provider"), str) else None
        month(uid, aid).add_event(event_cost(data, table), provider)
        users.add(uid)

    def billed(uid: str) -> tuple[str, Aggregate, list[tuple[dict[str, Any], str | None, str | None]]]:
        return uid, read_aggregate(db, uid), list(invoice_lines(db, uid, period))

    with ThreadPoolExecutor(max(1, min(workers, len(users)))) as pool:  # a few reads a user, users at once
        for uid, aggregate, lines in pool.map(billed, sorted(users)):
            for aid, figures in (aggregate.period_assistants.get(period) or {}).items():
                m = month(uid, aid)
                m.figures = figures
                m.provider = m.provider or aggregate.providers.get(aid)
            for line, status, currency in lines:
                month(uid, line["assistantId"]).add_invoice_line(line, status, currency)
    return margin_report(period, card, months.values(), user_id)
