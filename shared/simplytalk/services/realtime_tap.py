"""The usage tap: a run that watches one call over its sideband connection and meters it.

A run (one `realtime-tap` delivery) holds the call's lease (`realtimeTaps/{callId}`),
connects the sideband and feeds every server event to a `CallWatcher`, carrying out
what it asks: record usage (exactly once: the event id is OpenAI's own id), put back
a session the browser changed, hang up (allowance, maximum length, idle, tampering).
A ticker thread renews the lease and asks the watcher about the clock.

Lives longer than one function timeout through generations: before its budget runs
out, a run publishes the next generation, which connects and takes the lease over
(a newer generation always wins); the old run sees that on its next renewal and
leaves. Both watch the call for a moment, which is harmless: every write is
idempotent. A dropped sideband is reconnected within the run; a run that cannot
reconnect raises (Pub/Sub redelivers); a run whose instance died stops renewing, and
the redelivered message (or the watchdog sweep) takes the lease over once it expires.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from simplytalk import logs
from simplytalk.errors import SimplyTalkError
from simplytalk.ids import valid_document_id
from simplytalk.openai_gateway import CallGone, Sideband, SidebandLost
from simplytalk.pricing import period_of
from simplytalk.realtime import (
    MAX_TRANSCRIPT_ENTRIES,
    Action,
    CallWatcher,
    EndReason,
    HangUp,
    RecordResponse,
    RecordTranscription,
    SendEvent,
    WatchPolicy,
    live_minutes,
)
from simplytalk.repositories.calls import CallRecord
from simplytalk.services.realtime_deps import RealtimeDeps

log = logs.get_logger("realtime-tap")


class TapOutcome(StrEnum):
    NO_SUCH_CALL = "no-such-call"
    ALREADY_ENDED = "already-ended"
    STALE = "stale"  # a newer generation watches the call
    BUSY = "busy"  # a live run of this generation watches it
    CALL_ENDED = "call-ended"
    HANDED_OVER = "handed-over"
    LEASE_LOST = "lease-lost"
    CONTINUED = "continued"  # budget spent; the next generation was started


@dataclass(frozen=True)
class TapSettings:
    run_seconds: float
    lease_seconds: float
    policy: WatchPolicy
    tick_seconds: float = 0.25
    handover_seconds: float = 20.0  # start the next generation this long before the budget ends
    reconnect_seconds: float = 30.0  # give up reconnecting (and let Pub/Sub retry) after this long
    counters_every_seconds: float = 5.0  # re-read the period's counters (other calls) this often
    drain_seconds: float = 2.0  # read on this long after deciding to stop: events in flight still count
    write_retry_seconds: float = 30.0  # retry recording a response this long before giving up

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.lease_seconds)


class _Stop(StrEnum):
    CALL_ENDED = "call-ended"
    LEASE_LOST = "lease-lost"
    BUDGET = "budget"


def run_tap(deps: RealtimeDeps, settings: TapSettings, call_id: str, generation: int, owner: str) -> TapOutcome:
    record = deps.calls.get(call_id)
    if record is None:
        return TapOutcome.NO_SUCH_CALL
    if not record.active:
        return TapOutcome.ALREADY_ENDED
    previous = deps.calls.lease(call_id)
    outcome = _acquire(deps, settings, call_id, generation, owner)
    if outcome is not None:
        return outcome
    seen = [record.call.started_at, record.call.last_event_at, previous.last_event_at if previous else None]
    last_seen = max(t for t in seen if t is not None)
    now = deps.clock()
    if previous is not None and (previous.renewed_at is None or now - previous.renewed_at > settings.lease):
        last_seen = now  # nobody watched for a while: silence nobody saw is no sign of an idle call
    run = _Run(deps, settings, record, generation, owner, last_seen)
    try:
        return run.watch()
    finally:
        run.finish()


def _acquire(deps: RealtimeDeps, settings: TapSettings, call_id: str, generation: int, owner: str) -> TapOutcome | None:
    """None once the lease is ours. A busy lease is waited out for one lease period: a live
    holder renews it (then this delivery is a duplicate); a dead one lets it expire."""
    give_up = time.monotonic() + settings.lease_seconds + 2 * settings.tick_seconds + 1
    while True:
        outcome = deps.calls.acquire_lease(call_id, owner, generation, deps.clock(), settings.lease)
        if outcome == "acquired":
            return None
        if outcome == "stale":
            return TapOutcome.STALE
        if time.monotonic() > give_up:
            return TapOutcome.BUSY
        time.sleep(min(1.0, settings.lease_seconds / 4))


class _Run:
    def __init__(self, deps: RealtimeDeps, settings: TapSettings, record: CallRecord, generation: int,
                 owner: str, last_seen: dt.datetime) -> None:
        self.deps, self.settings, self.record = deps, settings, record
        self.generation, self.owner = generation, owner
        self.call_id, self.uid = record.id, record.call.user_id
        self.started = time.monotonic()
        self.period = record.period
        card = deps.accounts.rate_card(record.period)
        self.watcher = CallWatcher(
            plan=record.plan, policy=settings.policy, card=card, started_at=record.call.started_at,
            last_event_at=last_seen, subscribed=deps.accounts.is_subscribed(self.uid),
            baseline=record.baseline_minutes, call_tokens=record.call.usage.total_tokens)
        self.entries = record.call.transcript_entries
        self.lock = threading.RLock()  # the watcher and the sideband are shared with the ticker
        self.stop_reason: _Stop | None = None
        self.stopped = threading.Event()
        self.sideband: Sideband | None = None
        self.connected_once = False
        self.continued = False
        self.greeted = record.greeted
        self.next_renewal = time.monotonic() + settings.lease_seconds / 3
        self.next_counters = 0.0

    # -- the run ---------------------------------------------------------------------------
    def watch(self) -> TapOutcome:
        ticker = threading.Thread(target=self._tick_loop, name=f"tap-ticker-{self.call_id}", daemon=True)
        ticker.start()
        try:
            self._watch_connections()
        finally:
            self.stopped.set()
            ticker.join(timeout=5)
        if self.stop_reason == _Stop.CALL_ENDED:
            return TapOutcome.CALL_ENDED
        if self.stop_reason == _Stop.LEASE_LOST:
            return TapOutcome.HANDED_OVER if self.continued else TapOutcome.LEASE_LOST
        self._continue()
        return TapOutcome.CONTINUED

    def finish(self) -> None:
        if self.stop_reason != _Stop.LEASE_LOST:
            with contextlib.suppress(Exception):
                self.deps.calls.release_lease(self.call_id, self.owner, self.deps.clock())

    def _continue(self) -> None:
        """Publish the next generation (once it has gone out, never again)."""
        if not self.continued:
            self.deps.taps.start(self.call_id, self.generation + 1)
            self.continued = True

    def _watch_connections(self) -> None:
        lost_since: float | None = None
        delay = 0.1
        while not self.stopped.is_set():
            try:
                sideband = self.deps.gateway.connect(self.call_id)
            except CallGone:
                self._gone()
                return
            except SidebandLost as exc:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > self.settings.reconnect_seconds:
                    raise SidebandLost(f"call {self.call_id}: no sideband for "
                                       f"{self.settings.reconnect_seconds:.0f} s: {exc}") from exc
                self.stopped.wait(delay)
                delay = min(2.0, delay * 2)
                continue
            opened = time.monotonic()
            with self.lock:
                self.sideband = sideband
                self.connected_once = True
                if self.stopped.is_set():  # stopped while connecting: nobody else will close it
                    self._close_later(sideband)
            try:
                for event in sideband.events():
                    self._on_event(event)
            except SidebandLost as exc:
                log.warning("call %s: %s; reconnecting", self.call_id, exc,
                            extra={"fields": {"callId": self.call_id}})
                lost_since = time.monotonic()
            finally:
                with self.lock:
                    self.sideband = None
                sideband.close()
            # Closed: OpenAI ended the call (the next connect is refused), closed this one sideband,
            # or this run closed it to stop. Back off unless the connection lived a while.
            if time.monotonic() - opened > 5:
                delay = 0.1
            elif not self.stopped.is_set():
                self.stopped.wait(delay)
                delay = min(2.0, delay * 2)

    def _gone(self) -> None:
        """OpenAI refuses a sideband to the call. Usually it ended; if OpenAI still hangs it up, it was
        up and unwatchable, and it is ended as that: a call nobody can watch must not run on."""
        try:
            was_up = self.deps.gateway.hang_up(self.call_id)
        except SimplyTalkError:
            was_up = False
        if was_up:
            self._ended(EndReason.NOT_WATCHED, self.deps.clock())
        else:  # a run that never saw it end takes the last sign of life as its end
            self._ended(EndReason.COMPLETED, self.deps.clock() if self.connected_once else self.watcher.last_event_at)

    def _stop(self, reason: _Stop) -> None:
        """Stop watching. The sideband is closed a moment later, so events already on their way (a
        response finishing as the call is hung up, or as the next generation takes over) still count."""
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            self.stopped.set()
            if self.sideband is not None:
                self._close_later(self.sideband)

    def _close_later(self, sideband: Sideband) -> None:
        timer = threading.Timer(self.settings.drain_seconds, sideband.close)
        timer.daemon = True
        timer.start()

    # -- events ----------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        now = self.deps.clock()
        with self.lock:
            actions = self.watcher.on_event(event, now)
        self._carry_out(actions, now)
        if event.get("type") == "session.created" and not self.greeted and not self.stopped.is_set():
            self._greet(now)

    def _greet(self, now: dt.datetime) -> None:
        greeting = self.record.plan.greeting()
        self.greeted = True
        if greeting is not None and self.deps.calls.mark_greeted(self.call_id, now):
            self._carry_out([SendEvent(greeting, "greet")], now)

    def _carry_out(self, actions: list[Action], now: dt.datetime) -> None:
        for action in actions:
            if isinstance(action, RecordResponse):
                self._record_response(action, now)
            elif isinstance(action, RecordTranscription):
                self._record_transcription(action, now)
            elif isinstance(action, SendEvent):
                self._send(action)
            elif isinstance(action, HangUp):
                self._hang_up(action.reason)

    def _durably(self, what: str, write: Callable[[], bool]) -> bool:
        """An idempotent write, retried through passing failures: the sideband never sends it again."""
        deadline, delay = time.monotonic() + self.settings.write_retry_seconds, 0.1
        while True:
            try:
                return write()
            except Exception:
                if time.monotonic() > deadline:
                    log.exception("call %s: %s not recorded: giving up", self.call_id, what)
                    raise
                log.warning("call %s: recording %s failed; retrying", self.call_id, what, exc_info=True)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _record_response(self, rec: RecordResponse, now: dt.datetime) -> None:
        if not valid_document_id(rec.response_id):
            log.error("call %s: response without a usable id; usage not recorded", self.call_id)
            return
        store = self.entries + len(rec.lines) <= MAX_TRANSCRIPT_ENTRIES
        if self._durably(f"response {rec.response_id}",
                         lambda: self.deps.calls.record_response(self.record, rec, now, store)):
            self.entries += len(rec.lines) if store else 0
            with self.lock:
                self.watcher.recorded(rec.usage)
                actions = self.watcher.check(now)
            self._carry_out(actions, now)

    def _record_transcription(self, rec: RecordTranscription, now: dt.datetime) -> None:
        if not valid_document_id(rec.item_id):
            log.error("call %s: transcription without a usable item id; not recorded", self.call_id)
            return
        store = self.entries < MAX_TRANSCRIPT_ENTRIES
        if self._durably(f"transcription {rec.item_id}",
                         lambda: self.deps.calls.record_transcription(self.record, rec, now, store)) \
                and store and rec.line.text:
            self.entries += 1

    def _send(self, action: SendEvent) -> None:
        with self.lock:
            sideband = self.sideband
        if sideband is None:
            return
        log.info("call %s: %s", self.call_id, action.why, extra={"fields": {"callId": self.call_id}})
        with contextlib.suppress(SidebandLost):  # a reconnect's session.created checks again
            sideband.send(action.event)

    def _hang_up(self, reason: EndReason) -> None:
        if reason == EndReason.ALLOWANCE_EXHAUSTED and self.deps.accounts.is_subscribed(self.uid):
            with self.lock:  # subscribed since the call started: no allowance applies
                self.watcher.subscribed, self.watcher.ending = True, None
            return
        now = self.deps.clock()
        try:
            self.deps.calls.request_end(self.call_id, reason)
            self.deps.gateway.hang_up(self.call_id)
        except SimplyTalkError as exc:
            log.error("call %s: hang-up (%s) failed, will retry: %s", self.call_id, reason, exc)
            with self.lock:
                self.watcher.ending = None
            return
        # an idle call ended when it last showed a sign of life, not when the silence ran out
        self._ended(reason, self.watcher.last_event_at if reason == EndReason.IDLE else now)

    def _ended(self, reason: EndReason, at: dt.datetime) -> None:
        done = self.deps.calls.end(self.call_id, reason, at)
        if done is not None:
            log.info("call %s ended: %s after %.1f s", self.call_id, done.call.ended_reason,
                     done.call.duration_seconds or 0,
                     extra={"fields": {"callId": self.call_id, "endedReason": done.call.ended_reason}})
        self._stop(_Stop.CALL_ENDED)

    # -- the clock -------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        while not self.stopped.wait(self.settings.tick_seconds):
            try:
                self._tick()
            except Exception:  # one bad tick must not stop the watching; the next one retries
                log.exception("call %s: tick failed", self.call_id)

    def _tick(self) -> None:
        mono, now = time.monotonic(), self.deps.clock()
        if mono >= self.next_renewal:
            with self.lock:
                last_seen = self.watcher.last_event_at
            if not self.deps.calls.renew_lease(self.call_id, self.owner, self.generation, now,
                                               self.settings.lease, last_seen):
                self._stop(_Stop.LEASE_LOST)
                return
            self.next_renewal = mono + self.settings.lease_seconds / 3
        if not self.watcher.subscribed and mono >= self.next_counters:
            self._refresh_counters(now)
            self.next_counters = mono + self.settings.counters_every_seconds
        with self.lock:
            actions = self.watcher.check(now)
        self._carry_out(actions, now)
        elapsed = mono - self.started
        if elapsed >= self.settings.run_seconds - self.settings.handover_seconds:
            self._continue()
        if elapsed >= self.settings.run_seconds:
            self._stop(_Stop.BUDGET)

    def _refresh_counters(self, now: dt.datetime) -> None:
        """What the period's counters hold, plus calls of the user's that no counter holds yet."""
        period = period_of(now)
        if period != self.period:
            card = self.deps.accounts.rate_card(period)
            with self.lock:
                self.watcher.new_period(card, now)
            self.period = period
        card = self.watcher.card
        others = [c.call.started_at for c in self.deps.calls.active_for_user(self.uid) if c.id != self.call_id] \
            if card.openai_basis == "call-duration" else []
        minutes = self.deps.accounts.period_usage(self.uid, period).minutes(card) + live_minutes(card, others, now)
        with self.lock:
            self.watcher.counted_minutes = minutes


# -- the watchdog --------------------------------------------------------------------------------

@dataclass
class SweepReport:
    active: int = 0
    restarted: int = 0
    ended: int = 0


def sweep_calls(deps: RealtimeDeps, settings: TapSettings, page: int = 200,
                budget_seconds: float = 90.0) -> SweepReport:
    """The safety net (Cloud Scheduler, every minute): a call whose tap lease has lapsed gets a
    new tap run; a call past its maximum length that nobody ended is hung up and ended. Pages
    through every active call (within the budget; the next sweep goes on where this one could not)."""
    report = SweepReport()
    grace = dt.timedelta(seconds=max(30.0, settings.lease_seconds * 2))
    give_up = time.monotonic() + budget_seconds
    after: str | None = None
    while time.monotonic() < give_up:
        records = deps.calls.active(page, after)
        for record in records:
            _sweep_one(deps, settings, record, grace, report)
        if len(records) < page:
            break
        after = records[-1].id
    return report


def _sweep_one(deps: RealtimeDeps, settings: TapSettings, record: CallRecord, grace: dt.timedelta,
               report: SweepReport) -> None:
    now = deps.clock()
    report.active += 1
    age = now - record.call.started_at
    if age.total_seconds() > settings.policy.max_call_seconds + grace.total_seconds():
        deps.calls.request_end(record.id, EndReason.MAX_DURATION)
        with contextlib.suppress(SimplyTalkError):
            deps.gateway.hang_up(record.id)
        if deps.calls.end(record.id, EndReason.MAX_DURATION, now) is not None:
            report.ended += 1
        return
    lease = deps.calls.lease(record.id)
    if age > grace and (lease is None or lease.lease_until < now - grace):
        deps.taps.start(record.id, lease.generation if lease else 0)
        report.restarted += 1
