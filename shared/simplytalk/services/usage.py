"""The usage view for `token-usage`: totals, a period, per assistant, history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from simplytalk.charges import card_for
from simplytalk.errors import InvalidInput, NotFound
from simplytalk.ids import valid_document_id
from simplytalk.pricing import RateCard, UsageFigures, format_minutes, period_of, valid_period
from simplytalk.repositories.usage import UsageCounters
from simplytalk.services.history import history_page
from simplytalk.usage_counters import Aggregate
from simplytalk.usage_views import counts_json, period_json


def parse_period(raw: str | None, now: dt.datetime) -> str:
    if raw is None or raw == "":
        return period_of(now)
    if not valid_period(raw):
        raise InvalidInput.of("period", "must be YYYY-MM")
    return raw


def _owns(usage: UsageCounters, uid: str, assistant_id: str, aggregate: Aggregate) -> bool:
    # usage in the caller's own counters (deleted ones too), or one of the caller's assistants
    return assistant_id in aggregate.assistants or usage.owns_assistant(uid, assistant_id)


GROUPINGS = ("event", "call")


def parse_grouping(raw: str | None) -> str:
    if raw is None or raw == "":
        return "event"
    if raw not in GROUPINGS:
        message = "must be event or call"
        raise InvalidInput.of("groupBy", message)
    return raw


def usage_view(usage: UsageCounters, uid: str, cards: list[RateCard], period: str, assistant_id: str | None,
               size: int, token: str | None, group_by: str = "event") -> dict[str, Any]:
    """`cards`: every rate card; the period's figures and each history entry are priced at the card
    of their own month, as invoicing prices them."""
    card = card_for(period, cards)
    if assistant_id is not None and not valid_document_id(assistant_id):
        raise InvalidInput.of("assistantId", "not an assistant id")
    aggregate = usage.read_aggregate(uid)
    if assistant_id is not None and not _owns(usage, uid, assistant_id, aggregate):
        raise NotFound("assistant not found")

    per_assistant = aggregate.period_assistants.get(period, {})
    if assistant_id is None:
        totals = aggregate.totals
        in_period = aggregate.periods.get(period, UsageFigures())
        assistant_ids = sorted(per_assistant)
    else:
        totals = aggregate.assistants.get(assistant_id, UsageFigures())
        in_period = per_assistant.get(assistant_id, UsageFigures())
        assistant_ids = [assistant_id]

    by_assistant: list[dict[str, Any]] = []
    for aid in assistant_ids:
        figures = per_assistant.get(aid, UsageFigures())
        by_assistant.append({"assistantId": aid, "provider": aggregate.providers.get(aid, "openai"),
                             "totalTokens": figures.total_tokens,
                             "minutes": format_minutes(figures.minutes(card))})
    by_assistant.sort(key=lambda row: (-row["totalTokens"], row["assistantId"]))

    history, next_token = history_page(usage, uid, cards, assistant_id, size, token, group_by)
    return {
        "userId": uid,
        "totals": counts_json(totals),
        "period": period_json(period, in_period, card),
        "byAssistant": by_assistant,
        "history": history,
        "nextPageToken": next_token,
    }
