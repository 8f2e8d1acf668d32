"""The usage view for `token-usage`: totals, a period, per assistant, history."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.billing import RateCard, UsageFigures, cost_cents, format_minutes, period_of, valid_period
from simplytalk.clock import rfc3339
from simplytalk.errors import FieldViolation, InvalidArgument, NotFound
from simplytalk.ids import valid_document_id
from simplytalk.paging import cursor_time, decode_token, encode_token
from simplytalk.services.aggregation import Aggregate, history_entry, history_query, read_aggregate

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


def usage_view(db: Client, uid: str, card: RateCard, period: str, assistant_id: str | None,
               size: int, token: str | None) -> dict[str, Any]:
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

    history, next_token = _history(db, uid, assistant_id, size, token)
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


def _history(db: Client, uid: str, assistant_id: str | None, size: int,
             token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    cursor = decode_token(token, ("occurredAt", "id"), times=("occurredAt",), ids=("id",))
    query = history_query(db, uid)
    if assistant_id is not None:
        query = query.where(filter=FieldFilter("assistantId", "==", assistant_id))
    if cursor:
        query = query.start_after({"occurredAt": cursor_time(cursor["occurredAt"]),
                                   "__name__": cursor["id"]})
    docs = list(query.limit(size + 1).stream())
    entries = [history_entry(d.id, d.to_dict() or {}) for d in docs[:size]]
    next_token = None
    if len(docs) > size:
        last = entries[-1]
        next_token = encode_token({"occurredAt": last["occurredAt"].isoformat(), "id": last["eventId"]})
    for entry in entries:
        if isinstance(entry["occurredAt"], dt.datetime):
            entry["occurredAt"] = rfc3339(entry["occurredAt"])
    return entries, next_token
