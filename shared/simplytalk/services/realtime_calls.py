"""Realtime calls for the `realtime-calls` API: start one (gated), list, read, hang up.

A call starts only through here: the server builds the session from the
assistant, creates the call with OpenAI, records it, and has a tap run watch it
(services/realtime_tap.py), so every call is metered. Gates, in order: the
assistant is the caller's (NotFound), the caller is subscribed or inside the
monthly free allowance (PaymentNeeded), a concurrent-call slot is free
(LimitReached; slots are documents created atomically, so concurrent
starts cannot overshoot).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from simplytalk import logs
from simplytalk.clock import rfc3339
from simplytalk.errors import LimitReached, NotFound, PaymentNeeded
from simplytalk.models import RealtimeCall
from simplytalk.paging import cursor_time, decode_token, next_page_token
from simplytalk.pricing import format_minutes, period_of
from simplytalk.realtime import CallStatus, EndReason, SessionPlan, StartCall, live_minutes
from simplytalk.repositories.calls import CallRecord
from simplytalk.services.realtime_deps import RealtimeDeps

log = logs.get_logger("realtime-calls")
SLOT_RETRY_AFTER_S = 30


@dataclass(frozen=True)
class CallLimits:
    model: str
    free_minutes: int
    max_concurrent: int


@dataclass(frozen=True)
class StartedCall:
    record: CallRecord
    answer_sdp: str

    def to_json(self) -> dict[str, Any]:
        call = self.record.call
        return {"callId": call.id, "assistantId": call.assistant_id, "sdp": self.answer_sdp,
                "startedAt": call.to_json()["startedAt"], "model": call.model, "status": call.status}


def start_call(deps: RealtimeDeps, limits: CallLimits, uid: str, request: StartCall) -> StartedCall:
    assistant = deps.accounts.owned_assistant(uid, request.assistant_id)
    now = deps.clock()
    period = period_of(now)
    card = deps.accounts.rate_card(period)
    used = deps.accounts.period_usage(uid, period).minutes(card)
    subscribed = deps.accounts.is_subscribed(uid)
    if not subscribed and card.openai_basis == "call-duration":  # calls going on count too
        used += live_minutes(card, [c.call.started_at for c in deps.calls.active_for_user(uid)], now)
    if not subscribed and used >= limits.free_minutes:
        raise PaymentNeeded(f"the free allowance of {limits.free_minutes} minutes this month is used "
                            f"({format_minutes(used)} minutes); subscribe to keep calling")
    slot = deps.calls.reserve_slot(uid, limits.max_concurrent, now)
    if slot is None:
        raise LimitReached(f"at most {limits.max_concurrent} calls at once; end one first",
                           retry_after=SLOT_RETRY_AFTER_S)
    plan = SessionPlan.for_assistant(assistant, limits.model)
    try:
        created = deps.gateway.create_call(request.sdp, plan.session())
    except BaseException:
        deps.calls.release_slot(uid, slot, None)
        raise
    started_at = deps.clock()  # the call exists from OpenAI's answer on
    record = CallRecord(
        call=RealtimeCall(id=created.call_id, user_id=uid, assistant_id=assistant.id, model=plan.model,
                          status=CallStatus.ACTIVE.value, started_at=started_at, last_event_at=started_at),
        plan=plan, period=period, baseline_minutes=used, slot=slot)
    try:
        deps.calls.add(record)
    except BaseException:
        _abandon(deps, record, recorded=False)
        raise
    try:
        deps.taps.start(record.id, 0)
    except BaseException:  # a call nobody watches would be unmetered: end it now
        _abandon(deps, record, recorded=True)
        raise
    log.info("call %s started for %s", record.id, uid,
             extra={"fields": {"callId": record.id, "uid": uid, "assistantId": assistant.id, "slot": slot}})
    return StartedCall(record, created.answer_sdp)


def _abandon(deps: RealtimeDeps, record: CallRecord, recorded: bool) -> None:
    if recorded:
        with contextlib.suppress(Exception):
            deps.calls.request_end(record.id, EndReason.NOT_WATCHED)
    with contextlib.suppress(Exception):
        deps.gateway.hang_up(record.id)
    with contextlib.suppress(Exception):
        if recorded:
            deps.calls.end(record.id, EndReason.NOT_WATCHED, deps.clock())
        elif record.slot is not None:
            deps.calls.release_slot(record.call.user_id, record.slot, None)


def owned_call(deps: RealtimeDeps, uid: str, call_id: str) -> CallRecord:
    record = deps.calls.get(call_id)
    if record is None or record.call.user_id != uid:
        raise NotFound("call not found")  # another user's looks the same as none
    return record


def hang_up(deps: RealtimeDeps, uid: str, call_id: str) -> RealtimeCall:
    record = owned_call(deps, uid, call_id)
    if record.active:
        deps.calls.request_end(call_id, EndReason.HUNG_UP)
        deps.gateway.hang_up(call_id)  # False: OpenAI had ended it already; ending it here is right either way
        done = deps.calls.end(call_id, EndReason.HUNG_UP, deps.clock())
        if done is not None:
            return done.call
    return owned_call(deps, uid, call_id).call


def list_calls(deps: RealtimeDeps, uid: str, size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    cursor = decode_token(token, ("startedAt", "id"), times=("startedAt",), ids=("id",))
    after = (cursor_time(cursor["startedAt"]), cursor["id"]) if cursor else None
    records = deps.calls.page(uid, size + 1, after)
    next_token = next_page_token(records, size, lambda r: {"startedAt": rfc3339(r.call.started_at), "id": r.id})
    return [r.call.to_json() for r in records[:size]], next_token


def transcript(deps: RealtimeDeps, uid: str, call_id: str, size: int,
               token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    owned_call(deps, uid, call_id)
    cursor = decode_token(token, ("at", "id"), times=("at",), ids=("id",))
    after = (cursor_time(cursor["at"]), cursor["id"]) if cursor else None
    entries = deps.calls.transcript(call_id, size + 1, after)
    lines = [{"itemId": e["itemId"], "role": e.get("role"), "text": e.get("text"),
              "at": e["at"], "responseId": e.get("responseId")} for e in entries[:size]]
    next_token = next_page_token(entries, size, lambda e: {"at": rfc3339(e["at"]), "id": e["itemId"]})
    for line in lines:
        line["at"] = rfc3339(line["at"])
    return lines, next_token

