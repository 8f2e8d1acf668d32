"""The usage counters, their mirrors and the raw events they are counted from.

Documents:
- `usageEvents/{eventId}`: the raw events (the source of truth), read here for history and rebuilds.
- `tokenUsage/{uid}/applied/{eventId}`: a counted-once marker; created in ONE batch with the
  event's Increment transforms on `tokenUsage/{uid}/usageShards/{YYYY}-{k}` (see usage_counters),
  so a repeat fails the create and the whole batch is refused.
- `tokenUsage/{uid}`: the summary mirror; its `rollup` map says what the last rollup mirrored, and
  its update time is the precondition of the next rollup's write.
- `tokenUsage/{uid}/rollupLease/current`: `{until, over}`, one rollup at a time per user.
- `openaiAssistants/{id}`: `tokenUsage` and `currentPeriod` mirrors (and, with `assistants/{id}`,
  the names and owners history shows).

`FirestoreUsage` is production; `InMemoryUsage` the fake with the same semantics (a duplicate
apply refused, the summary's precondition, a lease held, expired or released).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col
from simplytalk.models import UsageEvent
from simplytalk.pricing import UsageFigures, period_of
from simplytalk.usage_counters import Aggregate, from_fields, merge_deltas, shard_delta, shard_id, to_fields

if TYPE_CHECKING:
    from google.cloud.firestore import Client

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LEASE_SECONDS = 10.0  # a rollup takes well under a second; a dead holder's lease lapses after this


@dataclass
class Applied:
    applied: bool  # False: this event had been counted already
    commit_time: dt.datetime | None


@dataclass(frozen=True)
class Mirrored:
    """What the last rollup mirrored (the summary's `rollup` map)."""

    read_time: Any = None  # the counters' read time it covered (a datetime, when there was one)
    assistants: dict[str, UsageFigures] = field(default_factory=dict)
    period: str | None = None
    period_assistants: dict[str, UsageFigures] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    """`tokenUsage/{uid}` as a rollup reads it."""

    exists: bool
    version: Any  # opaque (the document's update time): the precondition of the next write
    mirrored: Mirrored


@dataclass(frozen=True)
class Mirrors:
    """One rollup's writes: the summary (`tokenUsage/{uid}`) and the OpenAI assistants' mirrors."""

    read_time: dt.datetime
    totals: UsageFigures
    current_period: dict[str, Any]
    history: list[dict[str, Any]]
    mirrored: Mirrored
    assistants: dict[str, dict[str, Any]]  # id -> {"tokenUsage": ..., "currentPeriod": ...}, only those to write


@dataclass(frozen=True)
class Lease:
    uid: str
    taken: Any  # opaque (the lease document's write time)


class UsageCounters(Protocol):
    """The counters, the mirrors rolled up from them and the raw events behind them."""

    def apply(self, event_id: str, event: UsageEvent, now: dt.datetime) -> Applied:
        """Count the event once: the marker and its shard's increments, together or not at all."""
        ...

    def read_aggregate(self, uid: str) -> Aggregate:
        """Every counter document of the user, summed (read_time None: no counters)."""
        ...

    def assistant_totals(self, uid: str) -> dict[str, UsageFigures]: ...

    def summary(self, uid: str) -> Summary: ...

    def claim_lease(self, uid: str, over: Any, now: dt.datetime) -> Lease | None:
        """The user's rollup lease, or None while another rollup holds it (one that follows the same
        rollup, `over`, and has not expired)."""
        ...

    def release_lease(self, lease: Lease) -> None:
        """Free the lease, unless it has been taken over since."""
        ...

    def write_mirrors(self, uid: str, seen: Summary, mirrors: Mirrors) -> bool:
        """The assistants' mirrors, then the summary if it is still as `seen` (False: it changed)."""
        ...

    def changed_since(self, since: dt.datetime) -> dict[str, dt.datetime]:
        """Users whose counters changed at or after `since`, with the latest change."""
        ...

    def user_events(self, uid: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every raw usage event of the user (id, fields)."""
        ...

    def clear_counters(self, uid: str) -> None:
        """Delete the user's counters and counted-once markers (a rebuild recounts them)."""
        ...

    def events_page(self, uid: str, assistant_id: str | None, by_call: bool,
                    after: tuple[dt.datetime, str] | None, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """The user's raw events with a timestamp occurredAt, newest first (occurredAt, id), after a
        cursor; by_call: only those that stand for a whole call (an OpenAI call's end, a vapi call)."""
        ...

    def assistant_names(self, uid: str, ids: list[str]) -> dict[str, Any]:
        """The stored names of those of `ids` that are the user's assistants (either provider)."""
        ...

    def calls(self, uid: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The user's Realtime calls among `ids` (userId, responses, usage)."""
        ...

    def owns_assistant(self, uid: str, assistant_id: str) -> bool: ...


# -- documents ----------------------------------------------------------------------------

def mirrored_of(data: Any) -> Mirrored:
    state = data if isinstance(data, dict) else {}
    period = state.get("period")
    return Mirrored(read_time=state.get("readTime"), assistants=_figures_map(state.get("assistants")),
                    period=period if isinstance(period, str) else None,
                    period_assistants=_figures_map(state.get("periodAssistants")))


def _figures_map(data: Any) -> dict[str, UsageFigures]:
    return {key: from_fields(f) for key, f in data.items()} if isinstance(data, dict) else {}


def summary_doc(uid: str, mirrors: Mirrors) -> dict[str, Any]:
    """The summary's fields (but `rollupCount`, which each store increments its own way)."""
    m = mirrors.mirrored
    return {
        "userId": uid,
        **to_fields(mirrors.totals),
        "currentPeriod": mirrors.current_period,
        "usageHistory": mirrors.history,
        "updatedAt": mirrors.read_time,
        "rollup": {"readTime": m.read_time,
                   "assistants": {aid: to_fields(f) for aid, f in m.assistants.items()},
                   "period": m.period,
                   "periodAssistants": {aid: to_fields(f) for aid, f in m.period_assistants.items()}},
    }


def _increments(delta: dict[str, Any]) -> dict[str, Any]:
    from google.cloud.firestore import Increment

    out: dict[str, Any] = {}
    for key, value in delta.items():
        if isinstance(value, dict):
            out[key] = _increments(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = Increment(value)
        else:
            out[key] = value
    return out


def _marker(event: UsageEvent, now: dt.datetime) -> dict[str, Any]:
    return {"appliedAt": now, "assistantId": event.assistant_id, "period": period_of(event.occurred_at)}


def _named(uid: str, data: dict[str, Any]) -> bool:
    return data.get("userId") == uid


# -- Firestore ----------------------------------------------------------------------------

class FirestoreUsage:
    def __init__(self, db: Client) -> None:
        self.db = db

    def _user(self, uid: str) -> Any:
        return self.db.collection(col.TOKEN_USAGE).document(uid)

    def apply(self, event_id: str, event: UsageEvent, now: dt.datetime) -> Applied:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore import SERVER_TIMESTAMP

        user_doc = self._user(event.user_id)
        batch = self.db.batch()
        batch.create(user_doc.collection(col.APPLIED_EVENTS).document(event_id), _marker(event, now))
        batch.set(user_doc.collection(col.USAGE_SHARDS).document(shard_id(event_id, period_of(event.occurred_at))),
                  {**_increments(shard_delta(event)), "changedAt": SERVER_TIMESTAMP}, merge=True)
        try:
            results = batch.commit()
        except gexc.AlreadyExists:
            marker = user_doc.collection(col.APPLIED_EVENTS).document(event_id).get()
            return Applied(False, marker.create_time if marker.exists else None)
        return Applied(True, results[0].update_time if results else None)

    def read_aggregate(self, uid: str) -> Aggregate:
        """Reads grow with the user's history: one per counter document, so up to SHARDS (10) more for
        each calendar year with usage (plus the pre-roll-over `{k}` and `legacy` ones). The all-time
        totals and the late usage invoicing looks for both need every year, so none is skipped."""
        aggregate = Aggregate()
        for snap in self._user(uid).collection(col.USAGE_SHARDS).stream():
            aggregate.add_shard(snap.to_dict() or {})
            aggregate.read_time = snap.read_time
        return aggregate

    def assistant_totals(self, uid: str) -> dict[str, UsageFigures]:
        """One query over the user's counter documents, only their `assistants` maps."""
        totals: dict[str, UsageFigures] = {}
        for snap in self._user(uid).collection(col.USAGE_SHARDS).select(["assistants"]).stream():
            for aid, figures in ((snap.to_dict() or {}).get("assistants") or {}).items():
                totals[aid] = totals.get(aid, UsageFigures()) + from_fields(figures)
        return totals

    def summary(self, uid: str) -> Summary:
        snap = self._user(uid).get()
        return Summary(snap.exists, snap.update_time if snap.exists else None,
                       mirrored_of((snap.to_dict() or {}).get("rollup")))

    def _lease(self, uid: str) -> Any:
        return self._user(uid).collection(col.ROLLUP_LEASES).document("current")

    def claim_lease(self, uid: str, over: Any, now: dt.datetime) -> Lease | None:
        """The lease names the rollup it follows (`over`, the summary's readTime when taken): a newer
        summary frees it, and a holder that died loses it after LEASE_SECONDS."""
        from google.api_core import exceptions as gexc

        ref = self._lease(uid)
        snap = ref.get()
        lease = snap.to_dict() or {}
        until = lease.get("until")
        if isinstance(until, dt.datetime) and until > now and lease.get("over") == over:
            return None
        fields = {"until": now + dt.timedelta(seconds=LEASE_SECONDS), "over": over}
        try:
            if snap.exists:
                result = ref.update(fields, option=self.db.write_option(last_update_time=snap.update_time))
            else:
                result = ref.create(fields)
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Aborted, gexc.NotFound):
            return None  # another rollup claimed it first
        return Lease(uid, result.update_time)

    def release_lease(self, lease: Lease) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):  # taken over or gone
            self._lease(lease.uid).update({"until": EPOCH},
                                          option=self.db.write_option(last_update_time=lease.taken))

    def write_mirrors(self, uid: str, seen: Summary, mirrors: Mirrors) -> bool:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore import Increment

        for aid, fields in mirrors.assistants.items():
            with contextlib.suppress(gexc.NotFound):  # a deleted assistant's usage stays in shards and events
                self.db.collection(col.OPENAI_ASSISTANTS).document(aid).update(fields)
        doc = {**summary_doc(uid, mirrors), "rollupCount": Increment(1)}  # how often the mirrors were written
        ref = self._user(uid)
        try:
            if seen.exists:
                ref.update(doc, option=self.db.write_option(last_update_time=seen.version))
            else:
                ref.create({**doc, "createdAt": mirrors.read_time})
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Aborted):
            return False
        return True

    def changed_since(self, since: dt.datetime) -> dict[str, dt.datetime]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        changed: dict[str, dt.datetime] = {}
        query = self.db.collection_group(col.USAGE_SHARDS).where(filter=FieldFilter("changedAt", ">=", since))
        for snap in query.select(["changedAt"]).stream():
            user_ref = snap.reference.parent.parent
            at = (snap.to_dict() or {}).get("changedAt")
            if user_ref is None or not isinstance(at, dt.datetime):
                continue
            if user_ref.id not in changed or at > changed[user_ref.id]:
                changed[user_ref.id] = at
        return changed

    def user_events(self, uid: str, page: int = 500) -> Iterator[tuple[str, dict[str, Any]]]:
        """Paged by document id (no composite index needed)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        base = (self.db.collection(col.USAGE_EVENTS).where(filter=FieldFilter("userId", "==", uid))
                .order_by("__name__"))
        last = None
        while True:
            query = base.start_after({"__name__": last}) if last else base
            docs = list(query.limit(page).stream())
            for doc in docs:
                yield doc.id, doc.to_dict() or {}
            if len(docs) < page:
                return
            last = docs[-1].id

    def clear_counters(self, uid: str) -> None:
        for sub in (col.USAGE_SHARDS, col.APPLIED_EVENTS):
            while True:
                docs = list(self._user(uid).collection(sub).limit(500).stream())
                if not docs:
                    break
                batch = self.db.batch()
                for doc in docs:
                    batch.delete(doc.reference)
                batch.commit()

    def events_page(self, uid: str, assistant_id: str | None, by_call: bool,
                    after: tuple[dt.datetime, str] | None, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """The range filter keeps only timestamp occurredAt values (a range matches one type), so a
        malformed event can never break paging."""
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter, Or

        query = self.db.collection(col.USAGE_EVENTS).where(filter=FieldFilter("userId", "==", uid))
        if assistant_id is not None:
            query = query.where(filter=FieldFilter("assistantId", "==", assistant_id))
        if by_call:
            query = query.where(filter=Or([FieldFilter("kind", "==", "call"), FieldFilter("provider", "==", "vapi")]))
        query = (query.where(filter=FieldFilter("occurredAt", ">=", EPOCH))
                 .order_by("occurredAt", direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        if after is not None:
            query = query.start_after({"occurredAt": after[0], "__name__": after[1]})
        return [(d.id, d.to_dict() or {}) for d in query.limit(limit).stream()]

    def assistant_names(self, uid: str, ids: list[str]) -> dict[str, Any]:
        """One batched read a provider's collection."""
        names: dict[str, Any] = {}
        for collection in (col.OPENAI_ASSISTANTS, col.VAPI_ASSISTANTS):
            refs = [self.db.collection(collection).document(i) for i in ids if i not in names]
            for snap in self.db.get_all(refs, field_paths=["name", "userId"]) if refs else ():
                data = snap.to_dict() or {} if snap.exists else {}
                if _named(uid, data):
                    names[snap.id] = data.get("name")
        return names

    def calls(self, uid: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        refs = [self.db.collection(col.REALTIME_CALLS).document(i) for i in ids]
        found = {}
        for snap in self.db.get_all(refs, field_paths=["userId", "responses", "usage"]):
            data = snap.to_dict() or {} if snap.exists else {}
            if _named(uid, data):
                found[snap.id] = data
        return found

    def owns_assistant(self, uid: str, assistant_id: str) -> bool:
        for collection in (col.OPENAI_ASSISTANTS, col.VAPI_ASSISTANTS):
            snap = self.db.collection(collection).document(assistant_id).get()
            if snap.exists and _named(uid, snap.to_dict() or {}):
                return True
        return False


# -- thin functions, for callers that hold a client (invoicing, margin, assistants, tests) --------

def read_aggregate(db: Client, uid: str) -> Aggregate:
    """Every counter document of the user, summed: the year shards (`{YYYY}-{k}`) and any written
    before the year roll-over (`{k}`, `legacy`), which need no migration."""
    return FirestoreUsage(db).read_aggregate(uid)


def assistant_totals(db: Client, uid: str) -> dict[str, UsageFigures]:
    """Each assistant's all-time figures from the counters (exact, never behind like a mirror)."""
    return FirestoreUsage(db).assistant_totals(uid)


def apply_event(db: Client, event_id: str, event: UsageEvent, now: dt.datetime) -> Applied:
    return FirestoreUsage(db).apply(event_id, event, now)


# -- in memory ----------------------------------------------------------------------------

@dataclass
class InMemoryUsage:
    """The same semantics in memory. `clock` stamps commits and reads (a fake clock in tests).
    Assistants are `{id: {"userId", "name", "provider"}}`; raw events and calls are their fields."""

    clock: Callable[[], dt.datetime]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    assistants: dict[str, dict[str, Any]] = field(default_factory=dict)
    realtime_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    markers: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    shards: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    changed: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    assistant_mirrors: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0

    def _bump(self, key: str) -> int:
        self.versions[key] = self.versions.get(key, 0) + 1
        return self.versions[key]

    def apply(self, event_id: str, event: UsageEvent, now: dt.datetime) -> Applied:
        key = (event.user_id, event_id)
        if key in self.markers:
            return Applied(False, self.markers[key])
        delta = shard_delta(event)  # computed before anything is stored: a refusal leaves nothing
        at = self.clock()
        sid = shard_id(event_id, period_of(event.occurred_at))
        shard = self.shards.setdefault(event.user_id, {}).setdefault(sid, {})
        shard.update(merge_deltas([shard, delta]))
        self.changed[(event.user_id, sid)] = at
        self.markers[key] = at
        return Applied(True, at)

    def read_aggregate(self, uid: str) -> Aggregate:
        aggregate = Aggregate()
        for shard in self.shards.get(uid, {}).values():
            aggregate.add_shard(shard)
            aggregate.read_time = self.clock()
        return aggregate

    def assistant_totals(self, uid: str) -> dict[str, UsageFigures]:
        return dict(self.read_aggregate(uid).assistants)

    def summary(self, uid: str) -> Summary:
        doc = self.summaries.get(uid)
        return Summary(doc is not None, self.versions.get(f"summary/{uid}") if doc is not None else None,
                       mirrored_of((doc or {}).get("rollup")))

    def claim_lease(self, uid: str, over: Any, now: dt.datetime) -> Lease | None:
        held = self.leases.get(uid)
        if held and held["until"] > now and held["over"] == over:
            return None
        taken = self._bump(f"lease/{uid}")
        self.leases[uid] = {"until": now + dt.timedelta(seconds=LEASE_SECONDS), "over": over, "version": taken}
        return Lease(uid, taken)

    def release_lease(self, lease: Lease) -> None:
        held = self.leases.get(lease.uid)
        if held and held["version"] == lease.taken:
            held.update(until=EPOCH, version=self._bump(f"lease/{lease.uid}"))

    def write_mirrors(self, uid: str, seen: Summary, mirrors: Mirrors) -> bool:
        for aid, fields in mirrors.assistants.items():
            if aid in self.assistants:  # an update: a deleted assistant's mirror is not written
                self.assistant_mirrors[aid] = {**self.assistant_mirrors.get(aid, {}), **fields}
                self.writes += 1
        current = self.summary(uid)
        if current.exists != seen.exists or current.version != seen.version:
            return False
        doc = summary_doc(uid, mirrors)
        before = self.summaries.get(uid)
        self.summaries[uid] = ({**before, **doc, "rollupCount": int(before.get("rollupCount") or 0) + 1}
                               if before is not None else {**doc, "rollupCount": 1, "createdAt": mirrors.read_time})
        self._bump(f"summary/{uid}")
        self.writes += 1
        return True

    def changed_since(self, since: dt.datetime) -> dict[str, dt.datetime]:
        changed: dict[str, dt.datetime] = {}
        for (uid, _), at in self.changed.items():
            if at >= since and (uid not in changed or at > changed[uid]):
                changed[uid] = at
        return changed

    def user_events(self, uid: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for event_id in sorted(self.events):
            if self.events[event_id].get("userId") == uid:
                yield event_id, self.events[event_id]

    def clear_counters(self, uid: str) -> None:
        self.shards.pop(uid, None)
        for key in [k for k in self.markers if k[0] == uid]:
            del self.markers[key]
        for key in [k for k in self.changed if k[0] == uid]:
            del self.changed[key]

    def events_page(self, uid: str, assistant_id: str | None, by_call: bool,
                    after: tuple[dt.datetime, str] | None, limit: int) -> list[tuple[str, dict[str, Any]]]:
        def wanted(data: dict[str, Any]) -> bool:
            return (data.get("userId") == uid and isinstance(data.get("occurredAt"), dt.datetime)
                    and (assistant_id is None or data.get("assistantId") == assistant_id)
                    and (not by_call or data.get("kind") == "call" or data.get("provider") == "vapi"))

        found = sorted(((d["occurredAt"], i) for i, d in self.events.items() if wanted(d)), reverse=True)
        if after is not None:
            found = [key for key in found if key < after]
        return [(i, self.events[i]) for _, i in found[:limit]]

    def assistant_names(self, uid: str, ids: Iterable[str]) -> dict[str, Any]:
        return {i: self.assistants[i].get("name") for i in ids
                if i in self.assistants and _named(uid, self.assistants[i])}

    def calls(self, uid: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: self.realtime_calls[i] for i in ids if _named(uid, self.realtime_calls.get(i) or {})}

    def owns_assistant(self, uid: str, assistant_id: str) -> bool:
        return _named(uid, self.assistants.get(assistant_id) or {})
