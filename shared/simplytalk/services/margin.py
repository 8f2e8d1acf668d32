"""Margin per assistant and month: the reads behind `simplytalk.margin`, through repositories.

For a period (and optionally one user):
- the period's usage events (`MarginSources.period_events`, a page at a time), only the fields
  pricing needs; each is priced with the provider price table (`simplytalk.provider_prices`);
- for each user seen there: the counted usage (`BillableUsage.counted`, the period's figures per
  assistant, as invoicing reads them) and the lines of the user's invoices that bill usage of the
  period (`MarginSources.invoice_lines`), its revenue;
- the rate card in force for P (`card_for` over `RateCards.list`), for the minutes and the
  estimate of unbilled usage.
Users are found from the month's events, the source the counters and invoices are built from.

Nothing is written. A month read while events still arrive is a snapshot: an event whose
aggregation has not run yet is priced (cost) before it is counted (minutes, estimate).
The repositories and their production wiring: `services.billing_deps.MarginDeps`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from simplytalk.charges import card_for
from simplytalk.errors import FailedPrecondition, InvalidInput
from simplytalk.ids import valid_document_id
from simplytalk.margin import AssistantMonth, MarginReport, event_cost, margin_report
from simplytalk.pricing import valid_period
from simplytalk.repositories.billable_usage import CountedUsage
from simplytalk.repositories.margin_sources import PAGE, BilledLine

if TYPE_CHECKING:
    from simplytalk.services.billing_deps import MarginDeps

__all__ = ["PAGE", "TooManyEvents", "margin", "parse_query"]


class TooManyEvents(FailedPrecondition):
    """The month holds more events than this caller may read at once."""


def parse_query(period: str | None, user_id: str | None) -> tuple[str, str | None]:
    """The endpoint's `period` (required, YYYY-MM) and `userId` (optional), or InvalidInput."""
    if not period or not valid_period(period):
        raise InvalidInput.of("period", "must be YYYY-MM")
    if user_id is not None and (not user_id or not valid_document_id(user_id)):
        raise InvalidInput.of("userId", "not a user id")
    return period, user_id


def margin(deps: MarginDeps, period: str, user_id: str | None = None, max_events: int | None = None,
           page: int = PAGE, workers: int = 8) -> MarginReport:
    """The margin report for `period` ("YYYY-MM", already validated), all users or one.

    Each user's counters and invoices are read by `workers` threads. `max_events`: refuse
    (TooManyEvents) rather than read more than this many events, for callers with a deadline (the
    HTTP endpoint); the CLI reads any number, a page at a time."""
    card = card_for(period, deps.rate_cards.list())
    months: dict[tuple[str, str], AssistantMonth] = {}

    def month(uid: str, aid: str) -> AssistantMonth:
        return months.setdefault((uid, aid), AssistantMonth(uid, aid))

    users: set[str] = {user_id} if user_id else set()
    for count, (_event_id, data) in enumerate(deps.sources.period_events(period, user_id, page), start=1):
        if max_events is not None and count > max_events:
            raise TooManyEvents(f"{period} has more than {max_events} usage events: narrow it with userId, "
                                "or run python -m ops.margin")
        uid, aid = data.get("userId"), data.get("assistantId")
        if not isinstance(uid, str) or not isinstance(aid, str):
            continue  # never in usageEvents (unattributed usage is kept elsewhere)
        provider = data.get("provider") if isinstance(data.get("provider"), str) else None
        month(uid, aid).add_event(event_cost(data, deps.prices), provider)
        users.add(uid)

    def billed(uid: str) -> tuple[str, CountedUsage, list[BilledLine]]:
        return uid, deps.usage.counted(uid), deps.sources.invoice_lines(uid, period)

    with ThreadPoolExecutor(max(1, min(workers, len(users)))) as pool:  # a few reads a user, users at once
        for uid, counted, lines in pool.map(billed, sorted(users)):
            for aid, figures in (counted.period_assistants.get(period) or {}).items():
                m = month(uid, aid)
                m.figures = figures
                m.provider = m.provider or counted.providers.get(aid)
            for line, status, currency in lines:
                month(uid, line["assistantId"]).add_invoice_line(line, status, currency)
    return margin_report(period, card, months.values(), user_id)
