"""OpenAI assistants: create, list, read, update, delete, and the list of both providers.

`users/{uid}.openaiAssistants` mirrors the caller's documents in
`openaiAssistants`. Create and delete change both in one atomic batch. A create
also enforces the per-user limit, so its batch carries a precondition on the
user document's update time (optimistic concurrency): when another create or
delete got there first, the batch is refused as a whole and retried on a fresh
read. No transaction, so no lock waits; concurrent creates cannot overshoot the
limit or leave an orphan.

The list of both providers pages vapi assistants (`assistants`, existing documents
whose `createdAt` comes in several shapes) by `listedAt`, a timestamp the
`vapi-listed-at` trigger keeps equal to their parsed `createdAt` (`sync_listed_at`).
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.assistant_input import AssistantCreate, AssistantPatch
from simplytalk.billing import UsageFigures
from simplytalk.errors import Aborted, LimitReached, NotFound
from simplytalk.models import OpenAIAssistant, TokenCounts
from simplytalk.paging import decode_token, encode_token
from simplytalk.services.aggregation import assistant_totals

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentSnapshot, Query

MAX_ATTEMPTS = 40
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def new_assistant_id() -> str:
    return "asst_" + secrets.token_hex(12)


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))


def _retryable() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as gexc

    return (gexc.FailedPrecondition, gexc.Aborted, gexc.AlreadyExists)


def create_assistant(db: Client, uid: str, data: AssistantCreate, now: dt.datetime, limit: int,
                     new_id: Callable[[], str] = new_assistant_id) -> OpenAIAssistant:
    users = db.collection(col.USERS)
    user_ref = users.document(uid)
    for attempt in range(MAX_ATTEMPTS):
        user = user_ref.get()
        profile = user.to_dict() or {}
        existing = profile.get("openaiAssistants")
        count = len(existing) if isinstance(existing, list) else 0
        if count >= limit:
            raise LimitReached(
                f"assistant limit reached: {limit} OpenAI assistants per user; delete one to create another")
        assistant = OpenAIAssistant.model_validate({
            **data.document_fields(), "id": new_id(), "userId": uid,
            "isSubscribed": profile.get("isSubscribed") is True, "createdAt": now, "updatedAt": now,
        })
        batch = db.batch()
        batch.create(db.collection(col.OPENAI_ASSISTANTS).document(assistant.id), assistant.to_firestore())
        if user.exists:
            from google.cloud.firestore import ArrayUnion

            batch.update(user_ref, {"openaiAssistants": ArrayUnion([assistant.id])},
                         option=db.write_option(last_update_time=user.update_time))
        else:  # no profile yet: create it (init-user then adds tokenUsage)
            batch.create(user_ref, {"openaiAssistants": [assistant.id], "vapiAssistants": [],
                                    "createdAt": now})
        try:
            batch.commit()
            return assistant
        except _retryable():
            _backoff(attempt)
    raise Aborted("too many concurrent changes to this user's assistants; try again")


def _owned(snap: DocumentSnapshot, uid: str) -> dict[str, Any]:
    data = snap.to_dict() if snap.exists else None
    if not data or data.get("userId") != uid:
        raise NotFound("assistant not found")  # another user's looks the same as none
    return data


def get_assistant(db: Client, uid: str, assistant_id: str) -> OpenAIAssistant:
    snap = db.collection(col.OPENAI_ASSISTANTS).document(assistant_id).get()
    found = _from_doc(snap.id, _owned(snap, uid))
    return _with_usage(found, assistant_totals(db, uid))


def update_assistant(db: Client, uid: str, assistant_id: str, patch: AssistantPatch,
                     now: dt.datetime) -> OpenAIAssistant:
    from google.api_core import exceptions as gexc

    ref = db.collection(col.OPENAI_ASSISTANTS).document(assistant_id)
    current = _owned(ref.get(), uid)
    changes = {**patch.document_fields(only_set=True), "updatedAt": now}
    try:
        ref.update(changes)
    except gexc.NotFound as exc:  # deleted in between
        raise NotFound("assistant not found") from exc
    return _with_usage(_from_doc(assistant_id, {**current, **changes}), assistant_totals(db, uid))


def delete_assistant(db: Client, uid: str, assistant_id: str) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore import ArrayRemove

    ref = db.collection(col.OPENAI_ASSISTANTS).document(assistant_id)
    user_ref = db.collection(col.USERS).document(uid)
    for attempt in range(MAX_ATTEMPTS):
        snap = ref.get()
        _owned(snap, uid)
        batch = db.batch()
        batch.delete(ref, option=db.write_option(last_update_time=snap.update_time))
        batch.update(user_ref, {"openaiAssistants": ArrayRemove([assistant_id])})
        try:
            batch.commit()
            return
        except gexc.NotFound:  # no profile document: nothing references the assistant
            ref.delete(option=db.write_option(last_update_time=snap.update_time))
            return
        except _retryable():  # changed (or deleted) since the read: look again
            _backoff(attempt)
    raise Aborted("the assistant is changing too often to delete; try again")


def _from_doc(doc_id: str, data: dict[str, Any]) -> OpenAIAssistant:
    return OpenAIAssistant.model_validate({**data, "id": doc_id})


def _counts(figures: UsageFigures | None) -> TokenCounts:
    figures = figures or UsageFigures()
    return TokenCounts(total_tokens=figures.total_tokens, input_tokens=figures.input_tokens,
                       output_tokens=figures.output_tokens)


def _with_usage(assistant: OpenAIAssistant, totals: dict[str, UsageFigures]) -> OpenAIAssistant:
    """The assistant with its token usage from the counters, as token-usage reports it (the
    document's `tokenUsage` is a mirror, rolled up about a second behind)."""
    return assistant.model_copy(update={"token_usage": _counts(totals.get(assistant.id))})


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_page_token: str | None


def list_openai_assistants(db: Client, uid: str, size: int, token: str | None) -> Page:
    """The caller's OpenAI assistants, newest first (createdAt desc, id desc)."""
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter

    cursor = decode_token(token, ("createdAt", "id"), times=("createdAt",), ids=("id",))
    query = (db.collection(col.OPENAI_ASSISTANTS)
             .where(filter=FieldFilter("userId", "==", uid))
             .order_by("createdAt", direction=Query.DESCENDING)
             .order_by("__name__", direction=Query.DESCENDING))
    if cursor:
        query = query.start_after({"createdAt": _parse_time(cursor["createdAt"]), "__name__": cursor["id"]})
    docs = list(query.limit(size + 1).stream())
    totals = assistant_totals(db, uid) if docs else {}
    items = [_with_usage(_from_doc(d.id, d.to_dict() or {}), totals) for d in docs[:size]]
    next_token = None
    if len(docs) > size:
        last = items[-1]
        next_token = encode_token({"createdAt": last.created_at.isoformat(), "id": last.id})
    return Page([a.to_json() for a in items], next_token)


# -- both providers ---------------------------------------------------------------

def _parse_time(value: Any) -> dt.datetime:
    """createdAt as stored by either provider's documents: timestamp, RFC 3339, epoch s or ms.

    Always UTC; EPOCH for anything else, and for a time outside the years 1-9999 in UTC."""
    parsed = EPOCH
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return EPOCH
    elif isinstance(value, int | float) and value >= 0:
        seconds = value / 1000 if value > 1e11 else value
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return EPOCH
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # "0001-01-01T00:00:00+01:00" is before the year 1 in UTC
        return EPOCH


def _rfc3339(value: dt.datetime) -> str:
    """Fixed width (microseconds, Z) so the strings sort as the times do."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def listed_at(created: Any) -> dt.datetime:
    """A vapi assistant's `listedAt`: its `createdAt` (any stored shape) as a timestamp (UTC, to the
    microsecond, as Firestore keeps them and the API shows them); EPOCH when missing or unreadable."""
    t = _parse_time(created)
    return dt.datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=dt.UTC)


def listed_at_is_current(fields: dict[str, Any]) -> bool:
    """True when the document's `listedAt` is exactly the one its `createdAt` gives."""
    have = fields.get("listedAt")
    return isinstance(have, dt.datetime) and have.tzinfo is not None and have == listed_at(fields.get("createdAt"))


class ListedAtOutcome(StrEnum):
    SET = "set"
    UP_TO_DATE = "up-to-date"
    GONE = "gone"


def sync_listed_at(db: Client, assistant_id: str) -> ListedAtOutcome:
    """Bring `assistants/{id}.listedAt` in line with the document as it is now.

    Reads the current document (an event's copy may be old: events come repeated and out of
    order) and writes only when listedAt differs, so this write's own event changes nothing.
    The write carries a precondition on the update time read: if the document changed
    meanwhile, read again. A deleted document is left alone (an update never recreates it)."""
    from google.api_core import exceptions as gexc

    ref = db.collection(col.VAPI_ASSISTANTS).document(assistant_id)
    for attempt in range(MAX_ATTEMPTS):
        snap = ref.get()
        if not snap.exists:
            return ListedAtOutcome.GONE
        fields = snap.to_dict() or {}
        if listed_at_is_current(fields):
            return ListedAtOutcome.UP_TO_DATE
        try:
            ref.update({"listedAt": listed_at(fields.get("createdAt"))},
                       option=db.write_option(last_update_time=snap.update_time))
            return ListedAtOutcome.SET
        except gexc.NotFound:
            return ListedAtOutcome.GONE
        except gexc.FailedPrecondition:  # written since the read: look again
            _backoff(attempt)
    raise Aborted(f"assistants/{assistant_id} changes too often to set listedAt; try again")


def _summary(provider: str, doc_id: str, data: dict[str, Any],
             totals: dict[str, UsageFigures]) -> dict[str, Any]:
    created = _parse_time(data.get("createdAt"))
    updated = data.get("updatedAt")
    item: dict[str, Any] = {
        "id": doc_id,
        "provider": provider,
        "name": data.get("name") if isinstance(data.get("name"), str) else "",
        "createdAt": _rfc3339(created),
        "updatedAt": _rfc3339(_parse_time(updated)) if updated else None,
    }
    if provider == "openai":
        item["tokenUsage"] = _counts(totals.get(doc_id)).to_json()
        item["isSubscribed"] = data.get("isSubscribed") is True
    else:
        seconds = data.get("callSeconds")
        item["callSeconds"] = seconds if isinstance(seconds, int | float) and seconds >= 0 else 0
    return item


SortKey = tuple[str, str, str]  # (time as _rfc3339, provider, id); the list is in descending order
PROVIDERS = (("openai", col.OPENAI_ASSISTANTS, "createdAt"), ("vapi", col.VAPI_ASSISTANTS, "listedAt"))


def _after(query: Query, field: str, provider: str, cursor: SortKey) -> Query:
    """`query` (one provider's, ordered by `field` desc, __name__ desc) from just after the cursor
    in the merged order. The cursor may be the other provider's item: at the cursor's very time,
    this provider's items all come after it (a lower provider) or all before it (a higher one)."""
    when = _parse_time(cursor[0])
    if cursor[1] == provider:
        return query.start_after({field: when, "__name__": cursor[2]})
    if provider < cursor[1]:
        return query.start_at({field: when})
    return query.start_after({field: when})


def list_all_assistants(db: Client, uid: str, size: int, token: str | None) -> Page:
    """Both providers, newest first, paged by (createdAt, provider, id).

    Each provider's assistants come from a query in that order, from the cursor on, `size + 1`
    of them, merged: a page reads at most 2 * (size + 1) documents, however many the caller
    has. OpenAI assistants are ordered by their `createdAt` timestamp, vapi assistants by
    `listedAt`, which the `vapi-listed-at` trigger sets from their `createdAt` (any stored
    shape). A vapi document the trigger has not reached yet (just written; or from before the
    trigger, until migration 003 has run) has no listedAt and is missing from the list until
    it has one; one whose createdAt just changed keeps its old place until then.
    """
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter

    cursor = decode_token(token, ("createdAt", "provider", "id"), times=("createdAt",), ids=("id",))
    after: SortKey | None = (cursor["createdAt"], cursor["provider"], cursor["id"]) if cursor else None
    keyed: list[tuple[SortKey, dict[str, Any]]] = []
    totals = assistant_totals(db, uid)
    for provider, collection, field in PROVIDERS:
        query = (db.collection(collection)
                 .where(filter=FieldFilter("userId", "==", uid))
                 .order_by(field, direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        if after:
            query = _after(query, field, provider, after)
        for doc in query.limit(size + 1).stream():
            data = doc.to_dict() or {}
            # keyed by the field the query orders by, so pages follow the queries even while
            # the trigger has yet to move a vapi listedAt after a change of createdAt
            keyed.append(((_rfc3339(_parse_time(data.get(field))), provider, doc.id),
                          _summary(provider, doc.id, data, totals)))

    keyed.sort(key=lambda pair: pair[0], reverse=True)
    if after:  # the queries start there already; this only guards the merge
        keyed = [pair for pair in keyed if pair[0] < after]
    page = keyed[:size]
    next_token = None
    if len(keyed) > size:
        last = page[-1][0]
        next_token = encode_token({"createdAt": last[0], "provider": last[1], "id": last[2]})
    return Page([item for _, item in page], next_token)
