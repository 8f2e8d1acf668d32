"""Usage history: the raw events, newest first, in words a person can read (see usage_history)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.billing import RateCard, format_minutes, period_of
from simplytalk.clock import rfc3339
from simplytalk.ids import valid_document_id
from simplytalk.invoicing import card_for
from simplytalk.paging import cursor_time, decode_token, encode_token
from simplytalk.usage_history import DELETED, UNNAMED, Described, describe_call, describe_event

if TYPE_CHECKING:
    from google.cloud.firestore import Client

RECENT_HISTORY = 20


def history_query(db: Client, uid: str, assistant_id: str | None = None, group_by: str = "event") -> Any:
    """The user's raw events, newest first. The range filter keeps only timestamp occurredAt
    values (a range matches one type), so a malformed event can never break paging. Grouped per
    call: only the events that stand for a whole call (an OpenAI call's end, a vapi call)."""
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter, Or

    query = db.collection(col.USAGE_EVENTS).where(filter=FieldFilter("userId", "==", uid))
    if assistant_id is not None:
        query = query.where(filter=FieldFilter("assistantId", "==", assistant_id))
    if group_by == "call":
        query = query.where(filter=Or([FieldFilter("kind", "==", "call"), FieldFilter("provider", "==", "vapi")]))
    return (query.where(filter=FieldFilter("occurredAt", ">=", dt.datetime(1970, 1, 1, tzinfo=dt.UTC)))
            .order_by("occurredAt", direction=Query.DESCENDING)
            .order_by("__name__", direction=Query.DESCENDING))


def history_entry(event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    usage = data.get("usage") or {}
    return {
        "eventId": event_id,
        "assistantId": data.get("assistantId"),
        "provider": data.get("provider"),
        "model": data.get("model"),
        "occurredAt": data.get("occurredAt"),
        "totalTokens": int(usage.get("totalTokens") or 0),
        "inputTokens": int(usage.get("inputTokens") or 0),
        "outputTokens": int(usage.get("outputTokens") or 0),
        "callSeconds": data.get("callSeconds"),
    }


def recent_history(db: Client, uid: str, cards: list[RateCard], limit: int = RECENT_HISTORY) -> list[dict[str, Any]]:
    """The newest entries, in words, for the `tokenUsage/{uid}.usageHistory` mirror (times stay timestamps)."""
    docs = history_query(db, uid).limit(limit).stream()
    return readable(db, uid, [(d.id, d.to_dict() or {}) for d in docs], cards)


def history_page(db: Client, uid: str, cards: list[RateCard], assistant_id: str | None, size: int,
             token: str | None, group_by: str) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the raw events, newest first, each in words; grouped per call: one entry a call
    (an OpenAI call's end event with the call's figures, or a vapi call's event)."""
    cursor = decode_token(token, ("occurredAt", "id"), times=("occurredAt",), ids=("id",))
    query = history_query(db, uid, assistant_id, group_by)
    if cursor:
        query = query.start_after({"occurredAt": cursor_time(cursor["occurredAt"]),
                                   "__name__": cursor["id"]})
    docs = list(query.limit(size + 1).stream())
    entries = readable(db, uid, [(d.id, d.to_dict() or {}) for d in docs[:size]], cards, group_by)
    next_token = None
    if len(docs) > size:
        last = entries[-1]
        next_token = encode_token({"occurredAt": last["occurredAt"].isoformat(), "id": last["eventId"]})
    for entry in entries:
        if isinstance(entry["occurredAt"], dt.datetime):
            entry["occurredAt"] = rfc3339(entry["occurredAt"])
    return entries, next_token


def readable(db: Client, uid: str, page: list[tuple[str, dict[str, Any]]], cards: list[RateCard],
             group_by: str = "event") -> list[dict[str, Any]]:
    """Raw events (id, fields) as history entries in words, priced at their month's card: one
    batched read for the assistants' names and one for the calls on the page."""
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
    return entries


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
