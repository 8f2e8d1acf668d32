"""Usage history: the raw events, newest first, in words a person can read (see usage_history)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from simplytalk.charges import card_for
from simplytalk.clock import rfc3339
from simplytalk.ids import valid_document_id
from simplytalk.paging import cursor_time, decode_token, next_page_token
from simplytalk.pricing import RateCard, format_minutes, period_of
from simplytalk.repositories.usage import UsageCounters
from simplytalk.usage_history import DELETED, UNNAMED, Described, count_of, describe_call, describe_event

RECENT_HISTORY = 20


def history_entry(event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """The stored fields as they are, the counts only when they are counts (an event the trigger
    refused as malformed still lists here, and must never break the history or the mirrors)."""
    stored = data.get("usage")
    usage: dict[str, Any] = stored if isinstance(stored, dict) else {}
    return {
        "eventId": event_id,
        "assistantId": data.get("assistantId"),
        "provider": data.get("provider"),
        "model": data.get("model"),
        "occurredAt": data.get("occurredAt"),
        "totalTokens": count_of(usage.get("totalTokens")),
        "inputTokens": count_of(usage.get("inputTokens")),
        "outputTokens": count_of(usage.get("outputTokens")),
        "callSeconds": data.get("callSeconds"),
    }


def recent_history(usage: UsageCounters, uid: str, cards: list[RateCard],
                   limit: int = RECENT_HISTORY) -> list[dict[str, Any]]:
    """The newest entries, in words, for the `tokenUsage/{uid}.usageHistory` mirror (times stay timestamps)."""
    return readable(usage, uid, usage.events_page(uid, None, False, None, limit), cards)


def history_page(usage: UsageCounters, uid: str, cards: list[RateCard], assistant_id: str | None, size: int,
                 token: str | None, group_by: str) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the raw events, newest first, each in words; grouped per call: one entry a call
    (an OpenAI call's end event with the call's figures, or a vapi call's event)."""
    cursor = decode_token(token, ("occurredAt", "id"), times=("occurredAt",), ids=("id",))
    after = (cursor_time(cursor["occurredAt"]), cursor["id"]) if cursor else None
    docs = usage.events_page(uid, assistant_id, group_by == "call", after, size + 1)
    entries = readable(usage, uid, docs[:size], cards, group_by)
    next_token = next_page_token(docs, size, lambda doc: {"occurredAt": rfc3339(doc[1]["occurredAt"]), "id": doc[0]})
    for entry in entries:
        if isinstance(entry["occurredAt"], dt.datetime):
            entry["occurredAt"] = rfc3339(entry["occurredAt"])
    return entries, next_token


def readable(usage: UsageCounters, uid: str, page: list[tuple[str, dict[str, Any]]], cards: list[RateCard],
             group_by: str = "event") -> list[dict[str, Any]]:
    """Raw events (id, fields) as history entries in words, priced at their month's card: one
    batched read for the assistants' names and one for the calls on the page."""
    names = _assistant_names(usage, uid, {data.get("assistantId") for _, data in page})
    calls = usage.calls(uid, _ids({data.get("callId") for _, data in page
                                   if data.get("provider") == "openai" and data.get("kind") == "call"}))
    entries = []
    for event_id, data in page:
        entry = history_entry(event_id, data)
        card = card_for(period_of(entry["occurredAt"]), cards)  # the query keeps timestamps only
        name = names.get(str(data.get("assistantId")), DELETED)
        call = calls.get(str(data.get("callId")))
        described: Described = (describe_call(data, name, card, call) if group_by == "call"
                                else describe_event(data, name, card, call))
        if group_by == "call" and call is not None:
            entry.update(_call_counts(call))
        entry.update({
            "kind": data.get("kind") if isinstance(data.get("kind"), str) else (
                "call" if data.get("provider") == "vapi" else None),
            "callId": data.get("callId") if isinstance(data.get("callId"), str) else (
                event_id if data.get("provider") == "vapi" else None),
            "assistantName": name,
            "description": described.description,
            "minutes": format_minutes(described.minutes),
            "cost": {"amount": described.cost_cents, "currency": card.currency},
            "rateCardId": card.id,
        })
        entries.append(entry)
    return entries


def _ids(ids: set[Any]) -> list[str]:
    return sorted(i for i in ids if isinstance(i, str) and valid_document_id(i))


def _assistant_names(usage: UsageCounters, uid: str, ids: set[Any]) -> dict[str, str]:
    """The caller's assistants' names, both providers: another user's assistant (or a deleted one)
    has no name here; one without a usable name is UNNAMED."""
    wanted = _ids(ids)
    if not wanted:
        return {}
    return {aid: name.strip() if isinstance(name, str) and name.strip() else UNNAMED
            for aid, name in usage.assistant_names(uid, wanted).items()}


def _call_counts(call: dict[str, Any]) -> dict[str, int]:
    usage = call.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    return {name: value if isinstance(value := usage.get(name), int) and value >= 0 else 0
            for name in ("totalTokens", "inputTokens", "outputTokens")}
