"""The usage view for `token-usage`: totals, a period, per assistant, history."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.billing import RateCard, UsageFigures, cost_cents, format_minutes, period_of, valid_period
from simplytalk.clock import rfc3339
from simplytalk.errors import FieldViolation, InvalidArgument, NotFound
from simplytalk.ids import valid_document_id
from simplytalk.invoicing import card_for
from simplytalk.paging import cursor_time, decode_token, encode_token
from simplytalk.services.aggregation import Aggregate, history_entry, history_query, read_aggregate
from simplytalk.usage_history import DELETED, UNNAMED, Described, describe_call, describe_event

if TYPE_CHECKING:
    from google.cloud.firestore import Client


def parse_period(raw: str | None, now: dt.datetime) -> str:
    if raw is None or raw == "":
        return period_of(now)
    if not valid_period(raw):
        raise InvalidArgument("period: must be YYYY-MM", [FieldViolation("period", "must be YYYY-MM")])
    return raw


def _owns(db: Client, uid: str, assistant_id: str, aggregate: Aggregate) -> bool:
    if assistant_id in aggregate.assistants:  # usage in the caller's own counters (deleted ones too)
        return True
    for collection in (col.OPENAI_ASSISTANTS, col.VAPI_ASSISTANTS):
        snap = db.collection(collection).document(assistant_id).get()
        if snap.exists and (snap.to_dict() or {}).get("userId") == uid:
            return True
    return False


def _counts(f: UsageFigures) -> dict[str, int]:
    return {"totalTokens": f.total_tokens, "inputTokens": f.input_tokens, "outputTokens": f.output_tokens}


GROUPINGS = ("event", "call")


def parse_grouping(raw: str | None) -> str:
    if raw is None or raw == "":
        return "event"
    if raw not in GROUPINGS:
        message = "must be event or call"
        raise InvalidArgument(f"groupBy: {message}", [FieldViolation("groupBy", message)])
    return raw


def usage_view(db: Client, uid: str, cards: list[RateCard], period: str, assistant_id: str | None,
               size: int, token: str | None, group_by: str = "event") -> dict[str, Any]:
    """`cards`: every rate card; the period's figures and each history entry are priced at the card
    of their own month, as invoicing prices them."""
    card = card_for(period, cards)
    if assistant_id is not None and not valid_document_id(assistant_id):
        raise InvalidArgument("assistantId: not an assistant id",
                              [FieldViolation("assistantId", "not an assistant id")])
    aggregate = read_aggregate(db, uid)
    if assistant_id is not None and not _owns(db, uid, assistant_id, aggregate):
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

    token_minutes = in_period.openai_minutes(card)
    vapi_minutes = in_period.vapi_minutes()
    by_assistant: list[dict[str, Any]] = []
    for aid in assistant_ids:
        figures = per_assistant.get(aid, UsageFigures())
        by_assistant.append({"assistantId": aid, "provider": aggregate.providers.get(aid, "openai"),
                             "totalTokens": figures.total_tokens,
                             "minutes": format_minutes(figures.minutes(card))})
    by_assistant.sort(key=lambda row: (-row["totalTokens"], row["assistantId"]))

    history, next_token = _history(db, uid, cards, assistant_id, size, token, group_by)
    return {
        "userId": uid,
        "totals": _counts(totals),
        "period": {
            "id": period,
            **_counts(in_period),
            "tokenMinutes": format_minutes(token_minutes),
            "vapiMinutes": format_minutes(vapi_minutes),
            "totalMinutes": format_minutes(token_minutes + vapi_minutes),
            "estimatedCost": {"amount": cost_cents(token_minutes + vapi_minutes, card),
                              "currency": card.currency},
            "rateCardId": card.id,
        },
        "byAssistant": by_assistant,
        "history": history,
        "nextPageToken": next_token,
    }


def _history(db: Client, uid: str, cards: list[RateCard], assistant_id: str | None, size: int,
             token: str | None, group_by: str) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the raw events, newest first, each in words; grouped per call: one entry a call
    (an OpenAI call's end event with the call's figures, or a vapi call's event)."""
    from google.cloud.firestore_v1.base_query import FieldFilter, Or

    cursor = decode_token(token, ("occurredAt", "id"), times=("occurredAt",), ids=("id",))
    query = history_query(db, uid)
    if assistant_id is not None:
        query = query.where(filter=FieldFilter("assistantId", "==", assistant_id))
    if group_by == "call":
        query = query.where(filter=Or([FieldFilter("kind", "==", "call"), FieldFilter("provider", "==", "vapi")]))
    if cursor:
        query = query.start_after({"occurredAt": cursor_time(cursor["occurredAt"]),
                                   "__name__": cursor["id"]})
    docs = list(query.limit(size + 1).stream())
    page = [(d.id, d.to_dict() or {}) for d in docs[:size]]
    names = _assistant_names(db, uid, {data.get("assistantId") for _, data in page})
    calls = _calls(db, uid, {data.get("callId") for _, data in page
                             if data.get("provider") == "openai" and data.get("kind") == "call"})
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
    next_token = None
    if len(docs) > size:
        last = entries[-1]
        next_token = encode_token({"occurredAt": last["occurredAt"].isoformat(), "id": last["eventId"]})
    for entry in entries:
        if isinstance(entry["occurredAt"], dt.datetime):
            entry["occurredAt"] = rfc3339(entry["occurredAt"])
    return entries, next_token


def _assistant_names(db: Client, uid: str, ids: set[Any]) -> dict[str, str]:
    """The caller's assistants' names, both providers, in one batched read each: another user's
    assistant (or a deleted one) has no name here."""
    wanted = sorted(i for i in ids if isinstance(i, str) and valid_document_id(i))
    names: dict[str, str] = {}
    if not wanted:
        return names
    for collection in (col.OPENAI_ASSISTANTS, col.VAPI_ASSISTANTS):
        refs = [db.collection(collection).document(i) for i in wanted if i not in names]
        for snap in db.get_all(refs, field_paths=["name", "userId"]) if refs else ():
            data = snap.to_dict() or {} if snap.exists else {}
            if data.get("userId") == uid:
                name = data.get("name")
                names[snap.id] = name.strip() if isinstance(name, str) and name.strip() else UNNAMED
    return names


def _calls(db: Client, uid: str, ids: set[Any]) -> dict[str, dict[str, Any]]:
    wanted = sorted(i for i in ids if isinstance(i, str) and valid_document_id(i))
    if not wanted:
        return {}
    refs = [db.collection(col.REALTIME_CALLS).document(i) for i in wanted]
    found = {}
    for snap in db.get_all(refs, field_paths=["userId", "responses", "usage"]):
        data = snap.to_dict() or {} if snap.exists else {}
        if data.get("userId") == uid:
            found[snap.id] = data
    return found


def _call_counts(call: dict[str, Any]) -> dict[str, int]:
    usage = call.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    return {name: value if isinstance(value := usage.get(name), int) and value >= 0 else 0
            for name in ("totalTokens", "inputTokens", "outputTokens")}
