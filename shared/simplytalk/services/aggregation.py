"""Exactly-once usage aggregation, as events are written, and the mirrors rolled up from it.

Write path, per `usageEvents/{eventId}` (the provider's own id): ONE atomic
batch that creates a marker `tokenUsage/{uid}/applied/{eventId}` and adds the
event's figures with Increment transforms to one of SHARDS counter documents
of the event's year, `tokenUsage/{uid}/usageShards/{YYYY}-{k}` (YYYY the year of
the event's period, i.e. of occurredAt in UTC; k from the event id). A repeated
delivery fails the marker's create, so the whole batch is refused: counted once,
no transaction, no read. Order does not matter (sums commute). The fold itself is
pure (`usage_counters`); the documents are `repositories.usage`'s.

Year roll-over: a shard document holds one year's `totals`, `assistants` and
`periods` (at most 12 periods), so no counter document grows without bound; a
new year starts new documents, and late usage for an earlier year lands in that
year's documents. Documents written before the roll-over (`{k}`, and m001's
`legacy`) hold every period of their time and are summed like any other.

The shards are the source of truth (the API sums them). A user's events spread
over SHARDS documents a year, so a busy user stays under about one write per
second per document up to about SHARDS events per second.

Mirrors for readers of the documents themselves (`tokenUsage/{uid}`: totals,
`currentPeriod` with this month's figures and estimated cost, recent
`usageHistory` in words; `openaiAssistants/{id}.tokenUsage` and `.currentPeriod`)
are rolled up from the shards by the trigger at most about once per
ROLLUP_INTERVAL per user (a rollup writes with a precondition on the summary's
update time, so concurrent rollups do not both write). An event whose trigger
finds a rollup under ROLLUP_INTERVAL old that does not cover it publishes
`mirror_message` to MIRROR_TOPIC; the `mirror-usage` function waits the interval
out and looks again (up to MIRROR_PATIENCE): by then a later rollup covers the
event or it rolls up itself, so the mirrors are exact about ROLLUP_INTERVAL after
the last event of a burst. (The trigger does not wait itself: the Firestore
emulator delivers events one at a time, so a waiting trigger would hold up every
later event.) The `usage-rollup` sweep (Cloud Scheduler, every minute) stays as
the safety net for a follow-up that was lost. `currentPeriod`
moves to a new month on the first rollup of that month (no write burst at
midnight): until then its `id` says which month it shows.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from simplytalk import logs
from simplytalk.charges import card_for
from simplytalk.clock import rfc3339
from simplytalk.ids import valid_document_id
from simplytalk.models import UsageEvent
from simplytalk.pricing import RateCard, UsageFigures, period_of
from simplytalk.repositories.usage import (
    LEASE_SECONDS,
    Applied,
    Mirrored,
    Mirrors,
    Summary,
    UsageCounters,
    apply_event,
    assistant_totals,
    read_aggregate,
)
from simplytalk.services.history import recent_history
from simplytalk.usage_counters import (
    FIGURE_FIELDS,
    SHARDS,
    Aggregate,
    figures_of,
    fold_events,
    shard_delta,
    shard_id,
    shard_of,
    uncountable,
)
from simplytalk.usage_views import counts_json, period_json

# The counters' names stay importable from here (other services, the trigger, benches and tests use them).
__all__ = [
    "FIGURE_FIELDS", "LEASE_POLL", "LEASE_SECONDS", "MIRROR_PATIENCE", "MIRROR_TOPIC", "ROLLUP_INTERVAL",
    "SHARDS", "Aggregate", "Applied", "RebuildReport", "Rollup", "apply_event", "assistant_mirrors",
    "assistant_totals", "check_user", "count_events", "figures_of", "fold_events", "mirror_message",
    "parse_mirror_message", "read_aggregate", "rebuild_user", "rollup", "shard_delta", "shard_id", "shard_of",
    "sweep", "uncountable",
]

ROLLUP_INTERVAL = 1.0  # seconds
MIRROR_PATIENCE = 2.5 * ROLLUP_INTERVAL  # how long a follow-up waits for the mirrors to cover its event
LEASE_POLL = 0.1  # seconds between looks while another rollup holds the lease


log = logs.get_logger("aggregation")


class Rollup(StrEnum):
    COVERED = "covered"  # a rollup at or after the commit time had run already
    ROLLED_UP = "rolled-up"
    DEFERRED = "deferred"  # too recent or under way, past the patience: a follow-up or the sweep will
    NOTHING = "nothing"  # no counters yet
    GAVE_UP = "gave-up"
    LOST = "lost"  # the summary changed under this rollup (never returned: it looks again)


Clock = Callable[[], dt.datetime]
Cards = Callable[[], list[RateCard]]


def rollup(usage: UsageCounters, uid: str, covering: dt.datetime | None, *, now: Clock, cards: Cards,
           patience: float = 0.0, sleep: Callable[[float], None]) -> Rollup:
    """Bring the mirrors up to a shard read at or after `covering` (a commit time).

    One rollup at a time per user (a lease), at most one every ROLLUP_INTERVAL. When the last
    rollup is too recent or another is under way, wait (up to `patience` seconds in all) and
    look again; past that, DEFERRED.
    """
    waited = 0.0
    for _ in range(100):
        summary = usage.summary(uid)
        last = summary.mirrored.read_time
        if covering is not None and isinstance(last, dt.datetime) and last >= covering:
            return Rollup.COVERED
        wait = 0.0
        if isinstance(last, dt.datetime) and (age := (now() - last).total_seconds()) < ROLLUP_INTERVAL:
            wait = ROLLUP_INTERVAL - max(age, 0.0) + random.uniform(0, 0.05)  # too recent
        else:
            lease = usage.claim_lease(uid, last, now())
            if lease is None:  # another rollup is under way: see what it covers
                wait = LEASE_POLL + random.uniform(0, LEASE_POLL)
            else:
                outcome = Rollup.LOST
                try:
                    outcome = _roll_up(usage, uid, summary, now, cards)
                finally:
                    if outcome != Rollup.ROLLED_UP:
                        usage.release_lease(lease)  # the next rollup need not wait for it to lapse
                if outcome != Rollup.LOST:
                    return outcome
                continue  # the summary changed under us: look again
        if waited + wait > patience:
            return Rollup.DEFERRED
        sleep(wait)
        waited += wait
    return Rollup.GAVE_UP


def _roll_up(usage: UsageCounters, uid: str, summary: Summary, now: Clock, cards: Cards) -> Rollup:
    """One rollup, under the lease: read the counters, write the assistants' and the summary's
    mirrors (assistants first: if that fails, the summary still says "not covered" and a retry
    redoes it). LOST when the summary changed since it was read."""
    aggregate = usage.read_aggregate(uid)
    if aggregate.read_time is None:
        return Rollup.NOTHING
    all_cards = cards()
    period = period_of(now())
    card = card_for(period, all_cards)
    this_month = aggregate.period_assistants.get(period, {})
    mirrors = Mirrors(
        read_time=aggregate.read_time,
        totals=aggregate.totals,
        current_period={**period_json(period, aggregate.periods.get(period, UsageFigures()), card),
                        "assistants": {aid: period_json(period, f, card) for aid, f in this_month.items()}},
        history=recent_history(usage, uid, all_cards),
        mirrored=Mirrored(aggregate.read_time, dict(aggregate.assistants), period, dict(this_month)),
        assistants=assistant_mirrors(aggregate, summary.mirrored, period, card),
    )
    return Rollup.ROLLED_UP if usage.write_mirrors(uid, summary, mirrors) else Rollup.LOST


def assistant_mirrors(aggregate: Aggregate, last: Mirrored, period: str, card: RateCard) -> dict[str, dict[str, Any]]:
    """Each OpenAI assistant's `tokenUsage` (all time) and `currentPeriod`, only where they differ
    from what the last rollup mirrored: at most one write an assistant, and none for the assistants
    a burst did not touch (but the first rollup of a month moves them all)."""
    same_period = last.period == period
    in_period = last.period_assistants if same_period else {}
    this_month = aggregate.period_assistants.get(period, {})
    writes: dict[str, dict[str, Any]] = {}
    for aid, figures in aggregate.assistants.items():
        if aggregate.providers.get(aid) != "openai":
            continue
        month = this_month.get(aid, UsageFigures())
        if (same_period and last.assistants.get(aid, UsageFigures()) == figures
                and in_period.get(aid, UsageFigures()) == month):
            continue
        writes[aid] = {"tokenUsage": counts_json(figures), "currentPeriod": period_json(period, month, card)}
    return writes


MIRROR_TOPIC = "usage-mirrors"
FOLLOW_UP_MARGIN = 0.05  # seconds a follow-up waits past its due time (clocks of instances differ a little)


def mirror_message(uid: str, covering: dt.datetime) -> dict[str, str]:
    """Asks the `mirror-usage` function to see that the mirrors cover every commit before `covering`."""
    return {"userId": uid, "covering": rfc3339(covering)}


class FollowUps:
    """The follow-ups one instance has asked `mirror-usage` for, per user.

    A follow-up is due ROLLUP_INTERVAL after the commit that asked for it and rolls up no
    earlier (`follow_up`), so it covers every commit before its due time: a burst's later
    events on this instance need neither a rollup attempt nor a follow-up of their own.
    """

    def __init__(self, keep: dt.timedelta = dt.timedelta(minutes=1)) -> None:
        self._due: dict[str, dt.datetime] = {}
        self._keep = keep
        self._lock = threading.Lock()

    @staticmethod
    def due_for(commit: dt.datetime) -> dt.datetime:
        return commit + dt.timedelta(seconds=ROLLUP_INTERVAL)

    def pending(self, uid: str, commit: dt.datetime) -> bool:
        """A follow-up already asked for will cover this commit."""
        with self._lock:
            due = self._due.get(uid)
        return due is not None and commit < due

    def asked(self, uid: str, due: dt.datetime) -> None:
        with self._lock:
            self._due[uid] = max(due, self._due.get(uid, due))
            if len(self._due) > 1000:  # forget those long past: they have rolled up
                self._due = {u: d for u, d in self._due.items() if d > due - self._keep}


def mirror_after_counting(uid: str, commit: dt.datetime | None, follow_ups: FollowUps,
                          roll_up: Callable[[str, dt.datetime | None], Rollup],
                          ask: Callable[[str, dt.datetime], bool]) -> str:
    """What the trigger does for the mirrors once an event is counted: nothing when a follow-up
    this instance asked for covers it; else a rollup, and when that is deferred, ask for a
    follow-up due an interval after the commit (`ask` publishes it; False: it could not, and the
    sweep will cover the event)."""
    if commit is not None and follow_ups.pending(uid, commit):
        return "follow-up pending"
    outcome = roll_up(uid, commit)
    if outcome == Rollup.DEFERRED and commit is not None:
        due = FollowUps.due_for(commit)
        if ask(uid, due):
            follow_ups.asked(uid, due)
    return str(outcome)


def follow_up(usage: UsageCounters, uid: str, due: dt.datetime, *, now: Clock, cards: Cards,
              sleep: Callable[[float], None], patience: float = 0.0) -> Rollup:
    """`mirror-usage`: wait until the follow-up is due, so any rollup from then on reads every
    commit before it, then see that one covers it."""
    sleep(max(0.0, (due - now()).total_seconds()) + FOLLOW_UP_MARGIN)
    outcome = Rollup.GAVE_UP
    for _ in range(5):
        outcome = rollup(usage, uid, due, now=now, cards=cards, patience=patience, sleep=sleep)
        read = usage.summary(uid).mirrored.read_time
        if outcome != Rollup.ROLLED_UP or not isinstance(read, dt.datetime) or read >= due:
            return outcome
        # this instance's clock ran behind Firestore's: the rollup read before `due`, so events the
        # instance left to this follow-up may be missing; wait the gap out and roll up again
        sleep((due - read).total_seconds() + FOLLOW_UP_MARGIN)
    return outcome


def parse_mirror_message(message: dict[str, Any]) -> tuple[str, dt.datetime] | None:
    uid, covering = message.get("userId"), message.get("covering")
    if not isinstance(uid, str) or not valid_document_id(uid) or not isinstance(covering, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(covering.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (uid, moment) if moment.tzinfo is not None else None


def sweep(usage: UsageCounters, since: dt.datetime, *, now: Clock, cards: Cards,
          sleep: Callable[[float], None]) -> dict[str, Rollup]:
    """Roll up every user whose counters changed since `since` and are ahead of their mirrors; one
    user's failure is logged and does not stop the others."""
    outcomes: dict[str, Rollup] = {}
    for uid, at in usage.changed_since(since).items():
        try:
            outcomes[uid] = rollup(usage, uid, at, now=now, cards=cards, sleep=sleep)
        except Exception:
            log.exception("usage-rollup: the mirrors of %s failed", uid, extra={"fields": {"uid": uid}})
            outcomes[uid] = Rollup.GAVE_UP
    return outcomes


# -- rebuilding from the raw events ---------------------------------------------------

@dataclass
class RebuildReport:
    events: int
    malformed: list[str]
    stored: Aggregate
    recomputed: Aggregate

    @property
    def matches(self) -> bool:
        return self.stored.figures() == self.recomputed.figures()


def check_user(usage: UsageCounters, uid: str) -> RebuildReport:
    """Recompute a user's aggregates from the raw events and compare with the counters."""
    events: list[UsageEvent] = []
    malformed: list[str] = []
    for event_id, data in usage.user_events(uid):
        try:
            events.append(UsageEvent.model_validate(data))
        except ValidationError:
            malformed.append(event_id)
    return RebuildReport(len(events), malformed, usage.read_aggregate(uid), fold_events(events))


def count_events(usage: UsageCounters, uid: str, now: dt.datetime, cards: Cards,
                 malformed: Callable[[str, ValidationError], None] = lambda _id, _exc: None) -> None:
    """Count every raw event of the user (the trigger's own path: each once), then roll up as if a
    day later (past any interval)."""
    for event_id, data in usage.user_events(uid):
        try:
            usage.apply(event_id, UsageEvent.model_validate(data), now)
        except ValidationError as exc:
            malformed(event_id, exc)
    later = now + dt.timedelta(days=1)
    rollup(usage, uid, None, now=lambda: later, cards=cards, sleep=lambda _s: None)


def rebuild_user(usage: UsageCounters, uid: str, now: dt.datetime, cards: Cards) -> RebuildReport:
    """Replace a user's counters with ones recomputed from the raw events, then roll up.

    Run it while the user is quiet: an event arriving during the rebuild can be
    counted twice or not at all; the report's check (run again after) tells.
    """
    usage.clear_counters(uid)
    count_events(usage, uid, now, cards)
    return check_user(usage, uid)
