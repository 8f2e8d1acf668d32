"""OpenAI assistants: create, list, read, update, delete, and the list of both providers.

`users/{uid}.openaiAssistants` mirrors the caller's documents in
`openaiAssistants`. Create and delete change both in one atomic batch. A create
also enforces the per-user limit, so its batch carries a precondition on the
user document's update time (optimistic concurrency): when another create or
delete got there first, the batch is refused as a whole and retried on a fresh
read. No transaction, so no lock waits; concurrent creates cannot overshoot the
limit or leave an orphan.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.assistant_input import AssistantCreate, AssistantPatch
from simplytalk.errors import Aborted, NotFound, ResourceExhausted
from simplytalk.models import OpenAIAssistant, TokenCounts
from simplytalk.paging import decode_token, encode_token

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentSnapshot

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
            raise ResourceExhausted(
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
    return _from_doc(snap.id, _owned(snap, uid))


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
    return _from_doc(assistant_id, {**current, **changes})


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
    items = [_from_doc(d.id, d.to_dict() or {}) for d in docs[:size]]
    next_token = None
    if len(docs) > size:
        last = items[-1]
        next_token = encode_token({"createdAt": last.created_at.isoformat(), "id": last.id})
    return Page([a.to_json() for a in items], next_token)


# -- both providers ---------------------------------------------------------------

def _parse_time(value: Any) -> dt.datetime:
    """createdAt as stored by either provider's documents: timestamp, RFC 3339, epoch s or ms."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        except ValueError:
            return EPOCH
    if isinstance(value, int | float) and value >= 0:
        seconds = value / 1000 if value > 1e11 else value
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return EPOCH
    return EPOCH


def _rfc3339(value: dt.datetime) -> str:
    """Fixed width (microseconds, Z) so the strings sort as the times do."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _summary(provider: str, doc_id: str, data: dict[str, Any]) -> dict[str, Any]:
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
        item["tokenUsage"] = TokenCounts.model_validate(data.get("tokenUsage") or {}).to_json()
        item["isSubscribed"] = data.get("isSubscribed") is True
    else:
        seconds = data.get("callSeconds")
        item["callSeconds"] = seconds if isinstance(seconds, int | float) and seconds >= 0 else 0
    return item


def _sort_key(item: dict[str, Any]) -> tuple[str, str, str]:
    return (item["createdAt"], item["provider"], item["id"])


MAX_VAPI_ASSISTANTS = 1000


def list_all_assistants(db: Client, uid: str, size: int, token: str | None) -> Page:
    """Both providers, newest first, paged by (createdAt, provider, id).

    OpenAI assistants page through a query. vapi assistants are existing
    documents of another shape (createdAt may be a string, a number or
    missing, and a document without the ordered field would drop out of an
    ordered query), so the caller's are read whole (bounded) and sorted here.
    """
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter

    cursor = decode_token(token, ("createdAt", "provider", "id"), times=("createdAt",), ids=("id",))
    after = (cursor["createdAt"], cursor["provider"], cursor["id"]) if cursor else None

    openai_query = (db.collection(col.OPENAI_ASSISTANTS)
                    .where(filter=FieldFilter("userId", "==", uid))
                    .order_by("createdAt", direction=Query.DESCENDING)
                    .order_by("__name__", direction=Query.DESCENDING))
    if after:
        # inclusive here; exact ordering (with provider as tie-break) is applied below
        openai_query = openai_query.start_at({"createdAt": _parse_time(after[0]), "__name__": after[2]})
    openai_items = [_summary("openai", d.id, d.to_dict() or {})
                    for d in openai_query.limit(size + 2).stream()]
    vapi_docs = (db.collection(col.VAPI_ASSISTANTS).where(filter=FieldFilter("userId", "==", uid))
                 .limit(MAX_VAPI_ASSISTANTS).stream())
    vapi_items = [_summary("vapi", d.id, d.to_dict() or {}) for d in vapi_docs]

    merged = sorted(openai_items + vapi_items, key=_sort_key, reverse=True)
    if after:
        merged = [i for i in merged if _sort_key(i) < after]
    page = merged[:size]
    next_token = None
    if len(merged) > size:
        last = page[-1]
        next_token = encode_token({"createdAt": last["createdAt"], "provider": last["provider"],
                                   "id": last["id"]})
    return Page(page, next_token)
