"""Realtime calls: the call documents, their transcripts, the usage events they write,
each user's concurrent-call slots and the lease of the tap run watching each call.

Documents:
- `realtimeCalls/{callId}`: the call (public fields, see models.RealtimeCall) plus what
  the tap needs: the session plan, the slot, the billing period and the minutes the
  user had used in it when the call started.
- `realtimeCalls/{callId}/transcript/{itemId}`: one line each (bounded per call).
- `usageEvents/{id}`: written with the call's running usage in ONE batch whose
  `create` of the event fails on a repeat, so a response is counted once however
  often (and by however many tap runs) it is seen.
- `realtimeCallSlots/{uid}/slots/{k}` (k < the user's limit): `create` takes a slot,
  so concurrent starts cannot exceed the limit; ending the call deletes it.
- `realtimeTaps/{callId}`: `{owner, generation, leaseUntil}`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, Protocol

from simplytalk import collections as col
from simplytalk.models import RealtimeCall, TokenCounts
from simplytalk.realtime import CallStatus, EndReason, RecordResponse, RecordTranscription, SessionPlan
from simplytalk.repositories.retry import Again, optimistic

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentSnapshot

RESERVATION_TTL = dt.timedelta(seconds=60)  # a slot reserved for a start that never finished
LeaseOutcome = Literal["acquired", "busy", "stale"]


@dataclass
class CallRecord:
    call: RealtimeCall
    plan: SessionPlan
    period: str
    baseline_minutes: Fraction
    slot: str | None = None
    greeted: bool = False

    @property
    def id(self) -> str:
        return self.call.id

    @property
    def active(self) -> bool:
        return self.call.status == CallStatus.ACTIVE


@dataclass(frozen=True)
class Lease:
    owner: str | None
    generation: int
    lease_until: dt.datetime
    last_event_at: dt.datetime | None = None  # the call's last sign of life, as its tap last saw it
    renewed_at: dt.datetime | None = None  # when a run last showed it was watching


class CallRepository(Protocol):
    def reserve_slot(self, uid: str, limit: int, now: dt.datetime) -> str | None:
        """A free slot of the user's `limit` (reclaiming stale ones), or None when all are taken."""
        ...

    def release_slot(self, uid: str, slot: str, call_id: str | None) -> None: ...

    def add(self, record: CallRecord) -> None: ...

    def get(self, call_id: str) -> CallRecord | None: ...

    def page(self, uid: str, size: int, after: tuple[dt.datetime, str] | None) -> list[CallRecord]:
        """The user's calls, newest first (startedAt, id), after a cursor."""
        ...

    def record_response(self, record: CallRecord, rec: RecordResponse, now: dt.datetime,
                        store_lines: bool) -> bool:
        """The response's usage event and the call's running usage; False if already recorded."""
        ...

    def record_transcription(self, record: CallRecord, rec: RecordTranscription, now: dt.datetime,
                             store_line: bool) -> bool: ...

    def request_end(self, call_id: str, reason: EndReason) -> None:
        """Say why the call is about to be hung up, before hanging up: whoever then sees it end
        (a tap finding the sideband closed, say) ends it with this reason."""
        ...

    def end(self, call_id: str, reason: EndReason, now: dt.datetime) -> CallRecord | None:
        """End an active call (its duration event, its slot freed); None if it had ended already.
        A reason requested earlier (`request_end`) wins over `reason`."""
        ...

    def mark_greeted(self, call_id: str, now: dt.datetime) -> bool:
        """True for the one caller that marks the call greeted first."""
        ...

    def transcript(self, call_id: str, size: int, after: tuple[dt.datetime, str] | None) -> list[dict[str, Any]]:
        ...

    def lease(self, call_id: str) -> Lease | None: ...

    def acquire_lease(self, call_id: str, owner: str, generation: int, now: dt.datetime,
                      ttl: dt.timedelta) -> LeaseOutcome:
        """`acquired` when free, expired, ours, or of an older generation; `stale` when a newer
        generation holds it; `busy` when another live run of this generation does."""
        ...

    def renew_lease(self, call_id: str, owner: str, generation: int, now: dt.datetime,
                    ttl: dt.timedelta, last_event_at: dt.datetime | None = None) -> bool:
        """False when the lease is no longer ours (a newer run took over)."""
        ...

    def release_lease(self, call_id: str, owner: str, now: dt.datetime) -> None: ...

    def active(self, limit: int, after: str | None = None) -> list[CallRecord]:
        """Active calls of every user, in id order after `after` (the watchdog pages through them)."""
        ...

    def active_for_user(self, uid: str) -> list[CallRecord]: ...


# -- documents ----------------------------------------------------------------------------

def call_doc(record: CallRecord) -> dict[str, Any]:
    return {**record.call.to_firestore(), "session": record.plan.to_doc(), "slot": record.slot,
            "period": record.period, "baselineMinutes": str(record.baseline_minutes), "greeted": record.greeted}


def record_from(call_id: str, data: dict[str, Any]) -> CallRecord:
    return CallRecord(call=RealtimeCall.model_validate({**data, "id": call_id}),
                      plan=SessionPlan.from_doc(data["session"]), period=str(data.get("period") or ""),
                      baseline_minutes=Fraction(str(data.get("baselineMinutes") or "0")),
                      slot=data.get("slot"), greeted=data.get("greeted") is True)


def response_event(record: CallRecord, rec: RecordResponse, now: dt.datetime) -> dict[str, Any]:
    c = record.call
    event = {"userId": c.user_id, "assistantId": c.assistant_id, "provider": "openai", "kind": "response",
             "callId": c.id, "model": c.model, "occurredAt": now, "usage": rec.usage, "responseStatus": rec.status}
    if rec.unreadable_usage is not None:
        event["unreadableUsage"] = rec.unreadable_usage
    return event


def transcription_event(record: CallRecord, rec: RecordTranscription, now: dt.datetime) -> dict[str, Any]:
    c = record.call
    return {"userId": c.user_id, "assistantId": c.assistant_id, "provider": "openai", "kind": "transcription",
            "callId": c.id, "model": record.plan.transcription.get("model"), "occurredAt": now, "usage": None,
            "transcription": rec.usage}


def call_event(record: CallRecord) -> dict[str, Any]:
    c = record.call
    return {"userId": c.user_id, "assistantId": c.assistant_id, "provider": "openai", "kind": "call",
            "callId": c.id, "model": c.model, "occurredAt": c.ended_at, "callSeconds": c.duration_seconds}


def ended(record: CallRecord, reason: EndReason, now: dt.datetime) -> CallRecord:
    at = max(now, record.call.started_at)
    seconds = (at - record.call.started_at) // dt.timedelta(milliseconds=1) / 1000
    call = record.call.model_copy(update={"status": CallStatus.ENDED.value, "ended_at": at,
                                          "ended_reason": reason.value, "duration_seconds": seconds})
    return replace(record, call=call)


def _line(uid: str, role: str, text: str, at: dt.datetime, response_id: str | None) -> dict[str, Any]:
    return {"userId": uid, "role": role, "text": text, "at": at, "responseId": response_id}


def _usage_increments(usage: dict[str, Any] | None) -> dict[str, int]:
    counts: dict[str, int] = TokenCounts.model_validate(usage or {}).to_firestore()
    return counts


class _Recording:
    """Recording a response or a transcription: one usage event (created once: a repeat
    changes nothing), the call's counters and its transcript lines, atomically (`_record`)."""

    def _record(self, record: CallRecord, event_id: str, event: dict[str, Any], counters: dict[str, int],
                lines: list[tuple[str, dict[str, Any]]]) -> bool:
        raise NotImplementedError

    def record_response(self, record: CallRecord, rec: RecordResponse, now: dt.datetime,
                        store_lines: bool) -> bool:
        counters = {f"usage.{k}": v for k, v in _usage_increments(rec.usage).items()}
        counters["responses"] = 1
        lines = [(line.item_id, _line(record.call.user_id, line.role, line.text, now, rec.response_id))
                 for line in rec.lines] if store_lines else []
        return self._record(record, rec.response_id, response_event(record, rec, now), counters, lines)

    def record_transcription(self, record: CallRecord, rec: RecordTranscription, now: dt.datetime,
                             store_line: bool) -> bool:
        line = rec.line
        lines = [(line.item_id, _line(record.call.user_id, line.role, line.text, now, None))] \
            if store_line and line.text else []
        return self._record(record, rec.item_id, transcription_event(record, rec, now), {"transcriptions": 1},
                            lines)


# -- Firestore ------------------------------------------------------------------------------

class FirestoreCalls(_Recording):
    def __init__(self, db: Client) -> None:
        self.db = db

    def _call(self, call_id: str) -> Any:
        return self.db.collection(col.REALTIME_CALLS).document(call_id)

    def _slot(self, uid: str, slot: str) -> Any:
        return self.db.collection(col.CALL_SLOTS).document(uid).collection(col.SLOTS).document(slot)

    def _lease(self, call_id: str) -> Any:
        return self.db.collection(col.TAP_LEASES).document(call_id)

    # slots
    def reserve_slot(self, uid: str, limit: int, now: dt.datetime) -> str | None:
        from google.api_core import exceptions as gexc

        for k in range(limit):
            try:
                self._slot(uid, str(k)).create({"callId": None, "reservedAt": now})
                return str(k)
            except gexc.AlreadyExists:
                continue
        for k in range(limit):  # all taken: free the stale ones, then try those again
            ref = self._slot(uid, str(k))
            snap = ref.get()
            if snap.exists and self._stale(snap, now):
                try:
                    ref.delete(option=self.db.write_option(last_update_time=snap.update_time))
                    ref.create({"callId": None, "reservedAt": now})
                    return str(k)
                except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound):
                    continue
        return None

    def _stale(self, snap: DocumentSnapshot, now: dt.datetime) -> bool:
        data = snap.to_dict() or {}
        call_id = data.get("callId")
        if not call_id:
            reserved = data.get("reservedAt")
            return not isinstance(reserved, dt.datetime) or now - reserved > RESERVATION_TTL
        call = self._call(str(call_id)).get()
        return not call.exists or (call.to_dict() or {}).get("status") != CallStatus.ACTIVE

    def release_slot(self, uid: str, slot: str, call_id: str | None) -> None:
        from google.api_core import exceptions as gexc

        ref = self._slot(uid, slot)
        snap = ref.get()
        if snap.exists and (snap.to_dict() or {}).get("callId") == call_id:
            with contextlib.suppress(gexc.FailedPrecondition, gexc.NotFound):  # taken over or gone
                ref.delete(option=self.db.write_option(last_update_time=snap.update_time))

    # calls
    def add(self, record: CallRecord) -> None:
        batch = self.db.batch()
        batch.create(self._call(record.id), call_doc(record))
        if record.slot is not None:
            batch.update(self._slot(record.call.user_id, record.slot), {"callId": record.id})
        batch.commit()

    def get(self, call_id: str) -> CallRecord | None:
        snap = self._call(call_id).get()
        return record_from(call_id, snap.to_dict() or {}) if snap.exists else None

    def page(self, uid: str, size: int, after: tuple[dt.datetime, str] | None) -> list[CallRecord]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self.db.collection(col.REALTIME_CALLS).where(filter=FieldFilter("userId", "==", uid))
                 .order_by("startedAt", direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        if after:
            query = query.start_after({"startedAt": after[0], "__name__": after[1]})
        return [record_from(s.id, s.to_dict() or {}) for s in query.limit(size).stream()]

    def _record(self, record: CallRecord, event_id: str, event: dict[str, Any], counters: dict[str, int],
                lines: list[tuple[str, dict[str, Any]]]) -> bool:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore import Increment

        batch = self.db.batch()
        batch.create(self.db.collection(col.USAGE_EVENTS).document(event_id), event)
        for item_id, line in lines:
            batch.set(self._call(record.id).collection(col.CALL_TRANSCRIPT).document(item_id), line)
        update: dict[str, Any] = {k: Increment(v) for k, v in counters.items() if v}
        if lines:
            update["transcriptEntries"] = Increment(len(lines))
        update["lastEventAt"] = event["occurredAt"]
        batch.update(self._call(record.id), update)
        try:
            batch.commit()
        except gexc.AlreadyExists:
            return False
        return True

    def request_end(self, call_id: str, reason: EndReason) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.NotFound):
            self._call(call_id).update({"endRequested": reason.value})

    def end(self, call_id: str, reason: EndReason, now: dt.datetime) -> CallRecord | None:
        from google.api_core import exceptions as gexc

        ref = self._call(call_id)

        def attempt() -> CallRecord | None:
            snap = ref.get()
            if not snap.exists:
                return None
            data = snap.to_dict() or {}
            record = record_from(call_id, data)
            if not record.active:
                return None
            done = ended(record, _requested(data) or reason, now)
            batch = self.db.batch()
            batch.update(ref, {"status": done.call.status, "endedAt": done.call.ended_at,
                               "endedReason": done.call.ended_reason,
                               "durationSeconds": done.call.duration_seconds},
                         option=self.db.write_option(last_update_time=snap.update_time))
            batch.create(self.db.collection(col.USAGE_EVENTS).document(call_id), call_event(done))
            if record.slot is not None:
                slot_ref = self._slot(record.call.user_id, record.slot)
                slot = slot_ref.get()
                if slot.exists and (slot.to_dict() or {}).get("callId") == call_id:
                    batch.delete(slot_ref, option=self.db.write_option(last_update_time=slot.update_time))
            try:
                batch.commit()
            except gexc.AlreadyExists as exc:  # ended by another run in between: look again
                raise Again() from exc
            return done

        return optimistic(attempt, what=f"call {call_id}")

    def mark_greeted(self, call_id: str, now: dt.datetime) -> bool:
        def attempt() -> bool:
            snap = self._call(call_id).get()
            data = snap.to_dict() or {}
            if not snap.exists or data.get("greeted") is True or data.get("status") != CallStatus.ACTIVE:
                return False
            self._call(call_id).update({"greeted": True, "greetedAt": now},
                                       option=self.db.write_option(last_update_time=snap.update_time))
            return True

        return optimistic(attempt, what=f"call {call_id}")

    def transcript(self, call_id: str, size: int, after: tuple[dt.datetime, str] | None) -> list[dict[str, Any]]:
        query = self._call(call_id).collection(col.CALL_TRANSCRIPT).order_by("at").order_by("__name__")
        if after:
            query = query.start_after({"at": after[0], "__name__": after[1]})
        return [{**(s.to_dict() or {}), "itemId": s.id} for s in query.limit(size).stream()]

    # leases
    def lease(self, call_id: str) -> Lease | None:
        snap = self._lease(call_id).get()
        return _lease_from(snap.to_dict() or {}) if snap.exists else None

    def acquire_lease(self, call_id: str, owner: str, generation: int, now: dt.datetime,
                      ttl: dt.timedelta) -> LeaseOutcome:
        ref = self._lease(call_id)
        doc = {"owner": owner, "generation": generation, "leaseUntil": now + ttl, "renewedAt": now}

        def attempt() -> LeaseOutcome:
            snap = ref.get()
            if not snap.exists:
                ref.create(doc)
                return "acquired"
            outcome = lease_decision(_lease_from(snap.to_dict() or {}), owner, generation, now)
            if outcome == "acquired":
                ref.update(doc, option=self.db.write_option(last_update_time=snap.update_time))
            return outcome

        return optimistic(_creating(attempt), what=f"the tap lease of {call_id}")

    def renew_lease(self, call_id: str, owner: str, generation: int, now: dt.datetime,
                    ttl: dt.timedelta, last_event_at: dt.datetime | None = None) -> bool:
        ref = self._lease(call_id)

        def attempt() -> bool:
            snap = ref.get()
            current = _lease_from(snap.to_dict() or {}) if snap.exists else None
            if current is None or current.owner != owner or current.generation != generation:
                return False
            ref.update({"leaseUntil": now + ttl, "renewedAt": now, "lastEventAt": last_event_at},
                       option=self.db.write_option(last_update_time=snap.update_time))
            return True

        return optimistic(attempt, what=f"the tap lease of {call_id}")

    def release_lease(self, call_id: str, owner: str, now: dt.datetime) -> None:
        ref = self._lease(call_id)

        def attempt() -> None:
            snap = ref.get()
            current = _lease_from(snap.to_dict() or {}) if snap.exists else None
            if current is not None and current.owner == owner:
                ref.update({"leaseUntil": now, "owner": None},
                           option=self.db.write_option(last_update_time=snap.update_time))

        optimistic(attempt, what=f"the tap lease of {call_id}")

    def active(self, limit: int, after: str | None = None) -> list[CallRecord]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self.db.collection(col.REALTIME_CALLS)
                 .where(filter=FieldFilter("status", "==", CallStatus.ACTIVE.value)).order_by("__name__"))
        if after:
            query = query.start_after({"__name__": self._call(after)})
        return [record_from(s.id, s.to_dict() or {}) for s in query.limit(limit).stream()]

    def active_for_user(self, uid: str) -> list[CallRecord]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self.db.collection(col.REALTIME_CALLS).where(filter=FieldFilter("userId", "==", uid))
                 .where(filter=FieldFilter("status", "==", CallStatus.ACTIVE.value)))
        return [record_from(s.id, s.to_dict() or {}) for s in query.stream()]


def _requested(data: dict[str, Any]) -> EndReason | None:
    try:
        return EndReason(data["endRequested"]) if data.get("endRequested") else None
    except ValueError:
        return None


def _creating(attempt: Any) -> Any:
    """A create that lost a race is just another round of the optimistic loop."""
    def run() -> Any:
        from google.api_core import exceptions as gexc

        try:
            return attempt()
        except gexc.AlreadyExists as exc:
            raise Again() from exc

    return run


def _lease_from(data: dict[str, Any]) -> Lease:
    until = data.get("leaseUntil")
    seen, renewed = data.get("lastEventAt"), data.get("renewedAt")
    return Lease(owner=data.get("owner"), generation=int(data.get("generation") or 0),
                 lease_until=until if isinstance(until, dt.datetime) else dt.datetime.min.replace(tzinfo=dt.UTC),
                 last_event_at=seen if isinstance(seen, dt.datetime) else None,
                 renewed_at=renewed if isinstance(renewed, dt.datetime) else None)


def lease_decision(current: Lease, owner: str, generation: int, now: dt.datetime) -> LeaseOutcome:
    if current.generation > generation:
        return "stale"
    if current.generation < generation or current.owner in (owner, None) or current.lease_until <= now:
        return "acquired"
    return "busy"


# -- in memory ---------------------------------------------------------------------------------

@dataclass
class InMemoryCalls(_Recording):
    """The same contract in memory (unit tests of the services and the tap)."""

    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    slots: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def reserve_slot(self, uid: str, limit: int, now: dt.datetime) -> str | None:
        with self.lock:
            for k in map(str, range(limit)):
                slot = self.slots.get((uid, k))
                if slot is None or self._stale(slot, now):
                    self.slots[(uid, k)] = {"callId": None, "reservedAt": now}
                    return k
            return None

    def _stale(self, slot: dict[str, Any], now: dt.datetime) -> bool:
        if slot["callId"] is None:
            return bool(now - slot["reservedAt"] > RESERVATION_TTL)
        call = self.calls.get(slot["callId"])
        return call is None or call["status"] != CallStatus.ACTIVE

    def release_slot(self, uid: str, slot: str, call_id: str | None) -> None:
        with self.lock:
            if (self.slots.get((uid, slot)) or {}).get("callId", "-") == call_id:
                del self.slots[(uid, slot)]

    def add(self, record: CallRecord) -> None:
        with self.lock:
            if record.id in self.calls:
                raise ValueError(f"call {record.id} exists")
            if record.slot is not None:
                self.slots[(record.call.user_id, record.slot)]["callId"] = record.id
            self.calls[record.id] = call_doc(record)

    def get(self, call_id: str) -> CallRecord | None:
        with self.lock:
            data = self.calls.get(call_id)
            return record_from(call_id, dict(data)) if data else None

    def page(self, uid: str, size: int, after: tuple[dt.datetime, str] | None) -> list[CallRecord]:
        with self.lock:
            keys = sorted(((d["startedAt"], cid) for cid, d in self.calls.items() if d["userId"] == uid),
                          reverse=True)
            if after:
                keys = [k for k in keys if k < after]
            return [record_from(cid, dict(self.calls[cid])) for _, cid in keys[:size]]

    def _record(self, record: CallRecord, event_id: str, event: dict[str, Any], counters: dict[str, int],
                lines: list[tuple[str, dict[str, Any]]]) -> bool:
        with self.lock:
            if event_id in self.events:
                return False
            self.events[event_id] = event
            doc = self.calls[record.id]
            for key, value in counters.items():
                if key.startswith("usage."):
                    usage = dict(doc["usage"])
                    usage[key[6:]] = usage.get(key[6:], 0) + value
                    doc["usage"] = usage
                else:
                    doc[key] = doc.get(key, 0) + value
            for item_id, line in lines:
                self.lines.setdefault(record.id, {})[item_id] = line
            doc["transcriptEntries"] = doc.get("transcriptEntries", 0) + len(lines)
            doc["lastEventAt"] = event["occurredAt"]
            return True

    def request_end(self, call_id: str, reason: EndReason) -> None:
        with self.lock:
            if call_id in self.calls:
                self.calls[call_id]["endRequested"] = reason.value

    def end(self, call_id: str, reason: EndReason, now: dt.datetime) -> CallRecord | None:
        with self.lock:
            record = self.get(call_id)
            if record is None or not record.active:
                return None
            done = ended(record, _requested(self.calls[call_id]) or reason, now)
            self.calls[call_id] = {**self.calls[call_id], **call_doc(done)}
            self.events[call_id] = call_event(done)
            if record.slot is not None:
                self.release_slot(record.call.user_id, record.slot, call_id)
            return done

    def mark_greeted(self, call_id: str, now: dt.datetime) -> bool:
        with self.lock:
            doc = self.calls.get(call_id)
            if not doc or doc.get("greeted") or doc["status"] != CallStatus.ACTIVE:
                return False
            doc["greeted"] = True
            return True

    def transcript(self, call_id: str, size: int, after: tuple[dt.datetime, str] | None) -> list[dict[str, Any]]:
        with self.lock:
            entries = sorted(((line["at"], item_id, line) for item_id, line in self.lines.get(call_id, {}).items()),
                             key=lambda t: (t[0], t[1]))
            if after:
                entries = [e for e in entries if (e[0], e[1]) > after]
            return [{**line, "itemId": item_id} for _, item_id, line in entries[:size]]

    def lease(self, call_id: str) -> Lease | None:
        with self.lock:
            return self.leases.get(call_id)

    def acquire_lease(self, call_id: str, owner: str, generation: int, now: dt.datetime,
                      ttl: dt.timedelta) -> LeaseOutcome:
        with self.lock:
            current = self.leases.get(call_id)
            outcome: LeaseOutcome = "acquired" if current is None else lease_decision(current, owner, generation, now)
            if outcome == "acquired":
                self.leases[call_id] = Lease(owner, generation, now + ttl, current.last_event_at if current else None,
                                             now)
            return outcome

    def renew_lease(self, call_id: str, owner: str, generation: int, now: dt.datetime,
                    ttl: dt.timedelta, last_event_at: dt.datetime | None = None) -> bool:
        with self.lock:
            current = self.leases.get(call_id)
            if current is None or current.owner != owner or current.generation != generation:
                return False
            self.leases[call_id] = Lease(owner, generation, now + ttl, last_event_at, now)
            return True

    def release_lease(self, call_id: str, owner: str, now: dt.datetime) -> None:
        with self.lock:
            current = self.leases.get(call_id)
            if current is not None and current.owner == owner:
                self.leases[call_id] = Lease(None, current.generation, now, current.last_event_at, current.renewed_at)

    def active(self, limit: int, after: str | None = None) -> list[CallRecord]:
        with self.lock:
            return [record_from(cid, dict(d)) for cid, d in sorted(self.calls.items())
                    if d["status"] == CallStatus.ACTIVE and (after is None or cid > after)][:limit]

    def active_for_user(self, uid: str) -> list[CallRecord]:
        with self.lock:
            return [record_from(cid, dict(d)) for cid, d in self.calls.items()
                    if d["status"] == CallStatus.ACTIVE and d["userId"] == uid]
