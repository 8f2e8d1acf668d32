"""The assistants aggregate: the caller's OpenAI assistants and the listing of their vapi ones.

Documents:
- `openaiAssistants/{id}`: one OpenAI assistant (models.OpenAIAssistant), owned by `userId`.
- `users/{uid}.openaiAssistants`: the ids of the user's OpenAI assistants. Create and delete
  change it and the assistant in ONE atomic batch, so it never names a missing assistant nor
  misses one. A create enforces the per-user limit: its batch carries a precondition on the
  user document's update time, so when another create or delete got there first the batch is
  refused as a whole and retried on a fresh read (`optimistic`). No transaction, no lock waits;
  concurrent creates cannot overshoot the limit or leave an orphan.
- `assistants/{id}`: vapi's assistants (written by vapi's side, `createdAt` in several shapes),
  listed here by `listedAt`, a timestamp the `vapi-listed-at` trigger keeps equal to their
  parsed `createdAt` (`sync_listed_at`).

`FirestoreAssistants` is the production implementation, `InMemoryAssistants` the same contract in
memory (the limit, ownership, ordering, cursors and precondition retries) for the unit tests.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from simplytalk import collections as col
from simplytalk.assistant_input import AssistantPatch
from simplytalk.errors import Aborted, NotFound
from simplytalk.models import OpenAIAssistant
from simplytalk.repositories.retry import Again, optimistic

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentSnapshot, Query

MAX_ATTEMPTS = 40
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Provider = Literal["openai", "vapi"]
PROVIDERS: tuple[Provider, ...] = ("openai", "vapi")
# where each provider's assistants live and the field they are listed by
_LISTING: dict[Provider, tuple[str, str]] = {"openai": (col.OPENAI_ASSISTANTS, "createdAt"),
                                            "vapi": (col.VAPI_ASSISTANTS, "listedAt")}
# the merged list's cursor: (time as the service formats it, provider, id); the list is descending
ListCursor = tuple[str, str, str]


# -- codecs --------------------------------------------------------------------------------

def parse_time(value: Any) -> dt.datetime:
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


def listed_at(created: Any) -> dt.datetime:
    """A vapi assistant's `listedAt`: its `createdAt` (any stored shape) as a timestamp (UTC, to the
    microsecond, as Firestore keeps them and the API shows them); EPOCH when missing or unreadable."""
    t = parse_time(created)
    return dt.datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=dt.UTC)


def listed_at_is_current(fields: dict[str, Any]) -> bool:
    """True when the document's `listedAt` is exactly the one its `createdAt` gives."""
    have = fields.get("listedAt")
    return isinstance(have, dt.datetime) and have.tzinfo is not None and have == listed_at(fields.get("createdAt"))


class ListedAtOutcome(StrEnum):
    SET = "set"
    UP_TO_DATE = "up-to-date"
    GONE = "gone"


@dataclass(frozen=True)
class ListedAssistant:
    """One entry of the merged list, read from either provider's document (any stored shape)."""

    provider: Provider
    id: str
    listed_at: dt.datetime  # the field its provider's query orders by: createdAt (openai), listedAt (vapi)
    created_at: dt.datetime
    updated_at: dt.datetime | None
    name: str
    is_subscribed: bool = False  # openai
    call_seconds: int | float = 0  # vapi


def _listed(provider: Provider, doc_id: str, data: dict[str, Any]) -> ListedAssistant:
    updated = data.get("updatedAt")
    seconds = data.get("callSeconds")
    return ListedAssistant(
        provider=provider, id=doc_id, listed_at=parse_time(data.get(_LISTING[provider][1])),
        created_at=parse_time(data.get("createdAt")), updated_at=parse_time(updated) if updated else None,
        name=data["name"] if isinstance(data.get("name"), str) else "",
        is_subscribed=data.get("isSubscribed") is True,
        call_seconds=seconds if isinstance(seconds, int | float) and seconds >= 0 else 0)


def _assistant(doc_id: str, data: dict[str, Any]) -> OpenAIAssistant:
    return OpenAIAssistant.model_validate({**data, "id": doc_id})


def _owned_fields(data: dict[str, Any] | None, uid: str) -> dict[str, Any]:
    if not data or data.get("userId") != uid:
        raise NotFound("assistant not found")  # another user's looks the same as none
    return data


def _count(profile: dict[str, Any]) -> int:
    existing = profile.get("openaiAssistants")
    return len(existing) if isinstance(existing, list) else 0


def _changes(patch: AssistantPatch, now: dt.datetime) -> dict[str, Any]:
    return {**patch.document_fields(only_set=True), "updatedAt": now}


DELETE_GAVE_UP = "the assistant is changing too often to delete; try again"


# -- the contract ------------------------------------------------------------------------------

class Assistants(Protocol):
    def create(self, uid: str, limit: int, build: Callable[[bool], OpenAIAssistant]) -> OpenAIAssistant | None:
        """Store `build(is_subscribed)` (called again, for a fresh id, on each attempt) and add it to
        the user's array, creating the user's profile when there is none; None when the user has
        `limit` OpenAI assistants already. Aborted when concurrent changes keep winning."""
        ...

    def owned(self, uid: str, assistant_id: str) -> OpenAIAssistant:
        """The caller's OpenAI assistant; NotFound for a missing one and for another user's."""
        ...

    def update(self, uid: str, assistant_id: str, patch: AssistantPatch, now: dt.datetime) -> OpenAIAssistant:
        """Change the fields the patch sets (and updatedAt), keep the others; NotFound as `owned`."""
        ...

    def delete(self, uid: str, assistant_id: str) -> None:
        """Delete it and take it out of the user's array, in one batch; NotFound as `owned`."""
        ...

    def page(self, uid: str, limit: int, after: tuple[dt.datetime, str] | None) -> list[OpenAIAssistant]:
        """The caller's OpenAI assistants, newest first (createdAt desc, id desc), after a cursor."""
        ...

    def listed(self, uid: str, provider: Provider, limit: int, after: ListCursor | None) -> list[ListedAssistant]:
        """One provider's assistants of the caller in the merged order ((listed time, provider, id)
        desc), from just after `after`, which may be the other provider's entry. vapi assistants
        without a `listedAt` timestamp are not listed."""
        ...

    def sync_listed_at(self, assistant_id: str) -> ListedAtOutcome:
        """Bring `assistants/{id}.listedAt` in line with the document as it is now."""
        ...


def _after(query: Query, field_name: str, provider: str, cursor: ListCursor) -> Query:
    """`query` (one provider's, ordered by `field` desc, __name__ desc) from just after the cursor
    in the merged order. The cursor may be the other provider's item: at the cursor's very time,
    this provider's items all come after it (a lower provider) or all before it (a higher one)."""
    when = parse_time(cursor[0])
    if cursor[1] == provider:
        return query.start_after({field_name: when, "__name__": cursor[2]})
    if provider < cursor[1]:
        return query.start_at({field_name: when})
    return query.start_after({field_name: when})


def _is_after(provider: str, when: dt.datetime, doc_id: str, cursor: ListCursor) -> bool:
    """The in-memory `_after`: does (when, provider, doc_id) come after the cursor (descending)?"""
    at = parse_time(cursor[0])
    if cursor[1] == provider:
        return (when, doc_id) < (at, cursor[2])
    if provider < cursor[1]:
        return when <= at
    return when < at


# -- Firestore ---------------------------------------------------------------------------------

class FirestoreAssistants:
    def __init__(self, db: Client, attempts: int = MAX_ATTEMPTS) -> None:
        self.db = db
        self.attempts = attempts

    def _openai(self, assistant_id: str) -> Any:
        return self.db.collection(col.OPENAI_ASSISTANTS).document(assistant_id)

    def _user(self, uid: str) -> Any:
        return self.db.collection(col.USERS).document(uid)

    def create(self, uid: str, limit: int, build: Callable[[bool], OpenAIAssistant]) -> OpenAIAssistant | None:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore import ArrayUnion

        user_ref = self._user(uid)

        def attempt() -> OpenAIAssistant | None:
            user = user_ref.get()
            profile = user.to_dict() or {}
            if _count(profile) >= limit:
                return None
            assistant = build(profile.get("isSubscribed") is True)
            batch = self.db.batch()
            batch.create(self._openai(assistant.id), assistant.to_firestore())
            if user.exists:
                batch.update(user_ref, {"openaiAssistants": ArrayUnion([assistant.id])},
                             option=self.db.write_option(last_update_time=user.update_time))
            else:  # no profile yet: create it (init-user then adds tokenUsage)
                batch.create(user_ref, {"openaiAssistants": [assistant.id], "vapiAssistants": [],
                                        "createdAt": assistant.created_at})
            try:
                batch.commit()
            except gexc.AlreadyExists as exc:  # the profile (or the id) was created meanwhile
                raise Again() from exc
            return assistant

        return optimistic(attempt, self.attempts, "this user's assistants")

    def _owned(self, snap: DocumentSnapshot, uid: str) -> dict[str, Any]:
        return _owned_fields(snap.to_dict() if snap.exists else None, uid)

    def owned(self, uid: str, assistant_id: str) -> OpenAIAssistant:
        snap = self._openai(assistant_id).get()
        return _assistant(snap.id, self._owned(snap, uid))

    def update(self, uid: str, assistant_id: str, patch: AssistantPatch, now: dt.datetime) -> OpenAIAssistant:
        from google.api_core import exceptions as gexc

        ref = self._openai(assistant_id)
        current = self._owned(ref.get(), uid)
        changes = _changes(patch, now)
        try:
            ref.update(changes)
        except gexc.NotFound as exc:  # deleted in between
            raise NotFound("assistant not found") from exc
        return _assistant(assistant_id, {**current, **changes})

    def delete(self, uid: str, assistant_id: str) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore import ArrayRemove

        ref = self._openai(assistant_id)
        user_ref = self._user(uid)

        def attempt() -> None:
            snap = ref.get()
            self._owned(snap, uid)
            batch = self.db.batch()
            batch.delete(ref, option=self.db.write_option(last_update_time=snap.update_time))
            batch.update(user_ref, {"openaiAssistants": ArrayRemove([assistant_id])})
            try:
                batch.commit()  # changed (or deleted) since the read: refused, look again
            except gexc.NotFound:  # no profile document: nothing references the assistant
                ref.delete(option=self.db.write_option(last_update_time=snap.update_time))

        try:
            optimistic(attempt, self.attempts, "this assistant")
        except Aborted:
            raise Aborted(DELETE_GAVE_UP) from None

    def page(self, uid: str, limit: int, after: tuple[dt.datetime, str] | None) -> list[OpenAIAssistant]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self.db.collection(col.OPENAI_ASSISTANTS)
                 .where(filter=FieldFilter("userId", "==", uid))
                 .order_by("createdAt", direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        if after:
            query = query.start_after({"createdAt": after[0], "__name__": after[1]})
        return [_assistant(d.id, d.to_dict() or {}) for d in query.limit(limit).stream()]

    def listed(self, uid: str, provider: Provider, limit: int, after: ListCursor | None) -> list[ListedAssistant]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter

        field_name = _LISTING[provider][1]
        source = self.db.collection(col.OPENAI_ASSISTANTS) if provider == "openai" else \
            self.db.collection(col.VAPI_ASSISTANTS)
        query = (source
                 .where(filter=FieldFilter("userId", "==", uid))
                 .order_by(field_name, direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        if after:
            query = _after(query, field_name, provider, after)
        return [_listed(provider, d.id, d.to_dict() or {}) for d in query.limit(limit).stream()]

    def sync_listed_at(self, assistant_id: str) -> ListedAtOutcome:
        """Reads the current document (an event's copy may be old: events come repeated and out of
        order) and writes only when listedAt differs, so this write's own event changes nothing.
        The write carries a precondition on the update time read: if the document changed
        meanwhile, read again. A deleted document is left alone (an update never recreates it)."""
        from google.api_core import exceptions as gexc

        ref = self.db.collection(col.VAPI_ASSISTANTS).document(assistant_id)

        def attempt() -> ListedAtOutcome:
            snap = ref.get()
            if not snap.exists:
                return ListedAtOutcome.GONE
            fields = snap.to_dict() or {}
            if listed_at_is_current(fields):
                return ListedAtOutcome.UP_TO_DATE
            try:  # written since the read: FailedPrecondition, look again
                ref.update({"listedAt": listed_at(fields.get("createdAt"))},
                           option=self.db.write_option(last_update_time=snap.update_time))
            except gexc.NotFound:
                return ListedAtOutcome.GONE
            return ListedAtOutcome.SET

        try:
            return optimistic(attempt, self.attempts, f"assistants/{assistant_id}")
        except Aborted:
            raise Aborted(f"assistants/{assistant_id} changes too often to set listedAt; try again") from None


# -- in memory ---------------------------------------------------------------------------------

@dataclass
class InMemoryAssistants:
    """The same contract in memory. Documents are kept in their stored shape (the Firestore codec's
    output), each with a version standing in for its update time; `meanwhile(path)` runs between
    an attempt's read and its write, so a test can play a concurrent change there."""

    openai: dict[str, dict[str, Any]] = field(default_factory=dict)
    vapi: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: int = MAX_ATTEMPTS
    meanwhile: Callable[[str], None] | None = None
    versions: dict[str, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def _bump(self, path: str) -> None:
        self.versions[path] = self.versions.get(path, 0) + 1

    def _between(self, path: str) -> None:
        if self.meanwhile is not None:
            self.meanwhile(path)

    def put_vapi(self, assistant_id: str, fields: dict[str, Any]) -> None:
        """A vapi assistant as vapi's side writes it (the trigger is `sync_listed_at`)."""
        with self.lock:
            self.vapi[assistant_id] = dict(fields)
            self._bump(f"{col.VAPI_ASSISTANTS}/{assistant_id}")

    def create(self, uid: str, limit: int, build: Callable[[bool], OpenAIAssistant]) -> OpenAIAssistant | None:
        path = f"{col.USERS}/{uid}"

        def attempt() -> OpenAIAssistant | None:
            with self.lock:
                seen = self.versions.get(path, 0)
                profile = dict(self.users.get(uid) or {})
            if _count(profile) >= limit:
                return None
            assistant = build(profile.get("isSubscribed") is True)
            self._between(path)
            with self.lock:
                if self.versions.get(path, 0) != seen or assistant.id in self.openai:
                    raise Again()
                self.openai[assistant.id] = assistant.to_firestore()
                self._bump(f"{col.OPENAI_ASSISTANTS}/{assistant.id}")
                if uid in self.users:
                    ids = self.users[uid].get("openaiAssistants")
                    ids = list(ids) if isinstance(ids, list) else []
                    self.users[uid]["openaiAssistants"] = [*ids, *([] if assistant.id in ids else [assistant.id])]
                else:
                    self.users[uid] = {"openaiAssistants": [assistant.id], "vapiAssistants": [],
                                       "createdAt": assistant.created_at}
                self._bump(path)
            return assistant

        return optimistic(attempt, self.attempts, "this user's assistants")

    def owned(self, uid: str, assistant_id: str) -> OpenAIAssistant:
        with self.lock:
            return _assistant(assistant_id, dict(_owned_fields(self.openai.get(assistant_id), uid)))

    def update(self, uid: str, assistant_id: str, patch: AssistantPatch, now: dt.datetime) -> OpenAIAssistant:
        with self.lock:
            current = dict(_owned_fields(self.openai.get(assistant_id), uid))
        self._between(f"{col.OPENAI_ASSISTANTS}/{assistant_id}")
        changes = _changes(patch, now)
        with self.lock:
            if assistant_id not in self.openai:  # deleted in between
                raise NotFound("assistant not found")
            self.openai[assistant_id] = {**self.openai[assistant_id], **changes}
            self._bump(f"{col.OPENAI_ASSISTANTS}/{assistant_id}")
        return _assistant(assistant_id, {**current, **changes})

    def delete(self, uid: str, assistant_id: str) -> None:
        path = f"{col.OPENAI_ASSISTANTS}/{assistant_id}"

        def attempt() -> None:
            with self.lock:
                _owned_fields(self.openai.get(assistant_id), uid)
                seen = self.versions.get(path, 0)
            self._between(path)
            with self.lock:
                if assistant_id not in self.openai or self.versions.get(path, 0) != seen:
                    raise Again()
                del self.openai[assistant_id]
                self._bump(path)
                if uid in self.users:
                    ids = self.users[uid].get("openaiAssistants")
                    self.users[uid]["openaiAssistants"] = [i for i in (ids if isinstance(ids, list) else [])
                                                           if i != assistant_id]
                    self._bump(f"{col.USERS}/{uid}")

        try:
            optimistic(attempt, self.attempts, "this assistant")
        except Aborted:
            raise Aborted(DELETE_GAVE_UP) from None

    def page(self, uid: str, limit: int, after: tuple[dt.datetime, str] | None) -> list[OpenAIAssistant]:
        with self.lock:
            keys = sorted(((d["createdAt"], aid) for aid, d in self.openai.items() if d.get("userId") == uid),
                          reverse=True)
            if after:
                keys = [k for k in keys if k < after]
            return [_assistant(aid, dict(self.openai[aid])) for _, aid in keys[:limit]]

    def listed(self, uid: str, provider: Provider, limit: int, after: ListCursor | None) -> list[ListedAssistant]:
        _, field_name = _LISTING[provider]
        with self.lock:
            docs = self.openai if provider == "openai" else self.vapi
            keys = sorted(((d[field_name], aid) for aid, d in docs.items()
                           if d.get("userId") == uid and isinstance(d.get(field_name), dt.datetime)),
                          reverse=True)
            if after:
                keys = [(when, aid) for when, aid in keys if _is_after(provider, when, aid, after)]
            return [_listed(provider, aid, dict(docs[aid])) for _, aid in keys[:limit]]

    def sync_listed_at(self, assistant_id: str) -> ListedAtOutcome:
        path = f"{col.VAPI_ASSISTANTS}/{assistant_id}"

        def attempt() -> ListedAtOutcome:
            with self.lock:
                fields = self.vapi.get(assistant_id)
                seen = self.versions.get(path, 0)
            if fields is None:
                return ListedAtOutcome.GONE
            if listed_at_is_current(fields):
                return ListedAtOutcome.UP_TO_DATE
            self._between(path)
            with self.lock:
                if assistant_id not in self.vapi:
                    return ListedAtOutcome.GONE
                if self.versions.get(path, 0) != seen:
                    raise Again()
                self.vapi[assistant_id] = {**self.vapi[assistant_id], "listedAt": listed_at(fields.get("createdAt"))}
                self._bump(path)
            return ListedAtOutcome.SET

        try:
            return optimistic(attempt, self.attempts, f"assistants/{assistant_id}")
        except Aborted:
            raise Aborted(f"assistants/{assistant_id} changes too often to set listedAt; try again") from None
