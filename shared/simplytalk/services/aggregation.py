"""Exactly-once usage aggregation, as events are written.

Write path, per `usageEvents/{eventId}` (the provider's own id): ONE atomic
batch that creates a marker `tokenUsage/{uid}/applied/{eventId}` and adds the
event's figures with Increment transforms to one of SHARDS counter documents
of the event's year, `tokenUsage/{uid}/usageShards/{YYYY}-{k}` (YYYY the year of
the event's period, i.e. of occurredAt in UTC; k from the event id). A repeated
delivery fails the marker's create, so the whole batch is refused: counted once,
no transaction, no read. Order does not matter (sums commute).

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

import contextlib
import datetime as dt
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.billing import RateCard, UsageFigures, period_of, seconds_to_millis
from simplytalk.clock import rfc3339, utcnow
from simplytalk.ids import valid_document_id
from simplytalk.models import UsageEvent
from simplytalk.usage_views import counts_json, period_json

if TYPE_CHECKING:
    from google.cloud.firestore import Client

SHARDS = 10
ROLLUP_INTERVAL = 1.0  # seconds
MIRROR_PATIENCE = 2.5 * ROLLUP_INTERVAL  # how long a follow-up waits for the mirrors to cover its event
LEASE_SECONDS = 10.0  # a rollup takes well under a second; a dead holder's lease lapses after this
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LEASE_POLL = 0.1  # seconds between looks while another rollup holds the lease
FIGURE_FIELDS = ("totalTokens", "inputTokens", "outputTokens", "openaiCallMillis", "vapiCallMillis")


def shard_of(event_id: str, shards: int = SHARDS) -> int:
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) % shards


def shard_id(event_id: str, period: str, shards: int = SHARDS) -> str:
    """The counter document an event of `period` ("YYYY-MM") adds to: `{YYYY}-{k}`."""
    return f"{period[:4]}-{shard_of(event_id, shards)}"


def figures_of(event: UsageEvent) -> UsageFigures:
    millis = seconds_to_millis(event.call_seconds) if event.call_seconds is not None else 0
    usage = event.usage
    return UsageFigures(
        total_tokens=usage.total_tokens if usage else 0,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        openai_call_millis=millis if event.provider == "openai" else 0,
        vapi_call_millis=millis if event.provider == "vapi" else 0,
    )


# No call of either provider is this long (vapi stops at 12 h, OpenAI Realtime at 60 min)...
MAX_CALL_SECONDS = 7 * 24 * 3600
# ...and no single event adds this much to a counter (Firestore integers stop at 2**63 - 1).
MAX_FIGURE = 10**15


def uncountable(event: UsageEvent, vapi_max_call_seconds: int) -> str | None:
    """Why this (valid) event can never be counted, or None: the trigger acknowledges such an
    event instead of retrying it forever."""
    seconds = event.call_seconds
    if seconds is not None:
        limit = vapi_max_call_seconds if event.provider == "vapi" else MAX_CALL_SECONDS
        if not math.isfinite(seconds) or seconds > limit:
            return f"callSeconds {seconds!r} is over {limit}"
    try:
        figures = figures_of(event)
    except (ValueError, ArithmeticError) as exc:
        return f"figures cannot be computed: {exc}"
    if any(not 0 <= value <= MAX_FIGURE for value in figures.astuple()):
        return f"a figure is outside 0..{MAX_FIGURE}"
    return None


def _as_fields(figures: UsageFigures) -> dict[str, int]:
    return dict(zip(FIGURE_FIELDS, figures.astuple(), strict=True))


def _from_fields(data: Any) -> UsageFigures:
    if not isinstance(data, dict):
        return UsageFigures()
    return UsageFigures(*(int(data.get(name) or 0) for name in FIGURE_FIELDS))


def shard_delta(event: UsageEvent) -> dict[str, Any]:
    """The nested counters one event adds to its shard (values to wrap in Increment)."""
    figures = _as_fields(figures_of(event))
    period = period_of(event.occurred_at)
    return {
        "totals": figures,
        "assistants": {event.assistant_id: {**figures, "provider": event.provider}},
        "periods": {period: {**figures, "assistants": {event.assistant_id: dict(figures)}}},
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


@dataclass
class Applied:
    applied: bool  # False: this event had been counted already
    commit_time: dt.datetime | None


def apply_event(db: Client, event_id: str, event: UsageEvent, now: dt.datetime) -> Applied:
    from google.api_core import exceptions as gexc

    user_doc = db.collection(col.TOKEN_USAGE).document(event.user_id)
    batch = db.batch()
    period = period_of(event.occurred_at)
    marker = {"appliedAt": now, "assistantId": event.assistant_id, "period": period}
    batch.create(user_doc.collection(col.APPLIED_EVENTS).document(event_id), marker)
    from google.cloud.firestore import SERVER_TIMESTAMP

    batch.set(user_doc.collection(col.USAGE_SHARDS).document(shard_id(event_id, period)),
              {**_increments(shard_delta(event)), "changedAt": SERVER_TIMESTAMP}, merge=True)
    try:
        results = batch.commit()
    except gexc.AlreadyExists:
        marker = user_doc.collection(col.APPLIED_EVENTS).document(event_id).get()
        return Applied(False, marker.create_time if marker.exists else None)
    return Applied(True, results[0].update_time if results else None)


# -- reading the aggregate ----------------------------------------------------------

@dataclass
class Aggregate:
    totals: UsageFigures = field(default_factory=UsageFigures)
    assistants: dict[str, UsageFigures] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    periods: dict[str, UsageFigures] = field(default_factory=dict)
    period_assistants: dict[str, dict[str, UsageFigures]] = field(default_factory=dict)
    read_time: dt.datetime | None = None

    def add_shard(self, data: dict[str, Any]) -> None:
        self.totals += _from_fields(data.get("totals"))
        for aid, figures in (data.get("assistants") or {}).items():
            self.assistants[aid] = self.assistants.get(aid, UsageFigures()) + _from_fields(figures)
            if isinstance(figures, dict) and isinstance(figures.get("provider"), str):
                self.providers[aid] = figures["provider"]
        for period, figures in (data.get("periods") or {}).items():
            self.periods[period] = self.periods.get(period, UsageFigures()) + _from_fields(figures)
            per = self.period_assistants.setdefault(period, {})
            for aid, a_figures in ((figures or {}).get("assistants") or {}).items():
                per[aid] = per.get(aid, UsageFigures()) + _from_fields(a_figures)


def read_aggregate(db: Client, uid: str) -> Aggregate:
    """Every counter document of the user, summed: the year shards (`{YYYY}-{k}`) and any written
    before the year roll-over (`{k}`, `legacy`), which need no migration.

    Reads grow with the user's history: one per counter document, so up to SHARDS (10) more for
    each calendar year with usage (plus the pre-roll-over ones). The all-time totals and the late
    usage invoicing looks for both need every year, so no year is skipped here."""
    aggregate = Aggregate()
    for snap in db.collection(col.TOKEN_USAGE).document(uid).collection(col.USAGE_SHARDS).stream():
        aggregate.add_shard(snap.to_dict() or {})
        aggregate.read_time = snap.read_time
    return aggregate


def assistant_totals(db: Client, uid: str) -> dict[str, UsageFigures]:
    """Each assistant's all-time figures from the counters (exact, never behind like a mirror):
    one query over the user's counter documents, only their `assistants` maps."""
    totals: dict[str, UsageFigures] = {}
    shards = db.collection(col.TOKEN_USAGE).document(uid).collection(col.USAGE_SHARDS)
    for snap in shards.select(["assistants"]).stream():
        for aid, figures in ((snap.to_dict() or {}).get("assistants") or {}).items():
            totals[aid] = totals.get(aid, UsageFigures()) + _from_fields(figures)
    return totals


def fold_events(events: list[UsageEvent]) -> Aggregate:
    """The aggregate computed straight from raw events (the source of truth)."""
    aggregate = Aggregate()
    for event in events:
        aggregate.add_shard(shard_delta(event))
    return aggregate


# -- mirrors ------------------------------------------------------------------------

def rollup(db: Client, uid: str, covering: dt.datetime | None,
           now: Callable[[], dt.datetime] = utcnow, cards: Callable[[], list[RateCard]] | None = None,
           patience: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> str:
    """Bring the mirrors up to a shard read at or after `covering` (a commit time).

    One rollup at a time per user (a lease), at most one every ROLLUP_INTERVAL. When the last
    rollup is too recent or another is under way, wait (up to `patience` seconds in all) and
    look again; past that, "deferred". Outcomes: covered, rolled-up, deferred, nothing (no
    counters), gave-up.
    """
    from simplytalk.services.rate_cards import cached_cards

    load_cards = cards or (lambda: cached_cards(db))
    summary_ref = db.collection(col.TOKEN_USAGE).document(uid)
    waited = 0.0
    for _ in range(100):
        summary = summary_ref.get()
        state = (summary.to_dict() or {}).get("rollup") or {}
        last = state.get("readTime")
        if covering is not None and isinstance(last, dt.datetime) and last >= covering:
            return "covered"
        wait = 0.0
        if isinstance(last, dt.datetime) and (age := (now() - last).total_seconds()) < ROLLUP_INTERVAL:
            wait = ROLLUP_INTERVAL - max(age, 0.0) + random.uniform(0, 0.05)  # too recent
        else:
            lease = _claim(db, uid, last, now)
            if lease is None:  # another rollup is under way: see what it covers
                wait = LEASE_POLL + random.uniform(0, LEASE_POLL)
            else:
                outcome = "lost"
                try:
                    outcome = _roll_up(db, summary, state, now, load_cards)
                finally:
                    if outcome != "rolled-up":
                        _release(db, lease)  # the next rollup need not wait for it to lapse
                if outcome != "lost":
                    return outcome
                continue  # the summary changed under us: look again
        if waited + wait > patience:
            return "deferred"  # a follow-up (mirror-usage) or the sweep will
        sleep(wait)
        waited += wait
    return "gave-up"


def _roll_up(db: Client, summary: Any, state: dict[str, Any], now: Callable[[], dt.datetime],
             load_cards: Callable[[], list[RateCard]]) -> str:
    """One rollup, under the lease: read the counters, write the assistants' and the summary's
    mirrors. "lost" when the summary changed since it was read."""
    from google.api_core import exceptions as gexc
    from google.cloud.firestore import Increment

    from simplytalk.invoicing import card_for
    from simplytalk.services.history import recent_history

    uid = summary.id
    aggregate = read_aggregate(db, uid)
    if aggregate.read_time is None:
        return "nothing"
    all_cards = load_cards()
    period = period_of(now())
    card = card_for(period, all_cards)
    this_month = aggregate.period_assistants.get(period, {})
    doc = {
        "userId": uid,
        **_as_fields(aggregate.totals),
        "currentPeriod": {**period_json(period, aggregate.periods.get(period, UsageFigures()), card),
                          "assistants": {aid: period_json(period, f, card) for aid, f in this_month.items()}},
        "usageHistory": recent_history(db, uid, all_cards),
        "updatedAt": aggregate.read_time,
        "rollup": {"readTime": aggregate.read_time,
                   "assistants": {aid: _as_fields(f) for aid, f in aggregate.assistants.items()},
                   "period": period,
                   "periodAssistants": {aid: _as_fields(f) for aid, f in this_month.items()}},
        "rollupCount": Increment(1),  # how often the mirrors were written (<= about 1/s)
    }
    # assistants first: if this fails, the summary still says "not covered" and a retry redoes it
    _mirror_assistants(db, aggregate, state, period, card)
    summary_ref = summary.reference
    try:
        if summary.exists:
            summary_ref.update(doc, option=db.write_option(last_update_time=summary.update_time))
        else:
            summary_ref.create({**doc, "createdAt": aggregate.read_time})
    except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Aborted):
        return "lost"
    return "rolled-up"


def _lease_ref(db: Client, uid: str) -> Any:
    return db.collection(col.TOKEN_USAGE).document(uid).collection(col.ROLLUP_LEASES).document("current")


def _claim(db: Client, uid: str, last: Any, now: Callable[[], dt.datetime]) -> Any:
    """Take the user's rollup lease (`tokenUsage/{uid}/rollupLease/current`), so concurrent
    triggers and follow-ups do not all read the counters and write the assistants only for all but
    one to lose the summary's precondition. The lease names the rollup it follows (`over`, the
    summary's readTime when taken): a newer summary releases it, and a holder that died loses it
    after LEASE_SECONDS. Returns the lease's write time (None: another holds it)."""
    from google.api_core import exceptions as gexc

    ref = _lease_ref(db, uid)
    snap = ref.get()
    lease = snap.to_dict() or {}
    until = lease.get("until")
    if isinstance(until, dt.datetime) and until > now() and lease.get("over") == last:
        return None
    fields = {"until": now() + dt.timedelta(seconds=LEASE_SECONDS), "over": last}
    try:
        if snap.exists:
            result = ref.update(fields, option=db.write_option(last_update_time=snap.update_time))
        else:
            result = ref.create(fields)
    except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Aborted, gexc.NotFound):
        return None  # another rollup claimed it first
    return (uid, result.update_time)


def _release(db: Client, lease: tuple[str, Any]) -> None:
    from google.api_core import exceptions as gexc

    uid, taken = lease
    with contextlib.suppress(gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):  # taken over or gone
        _lease_ref(db, uid).update({"until": EPOCH}, option=db.write_option(last_update_time=taken))


MIRROR_TOPIC = "usage-mirrors"


def mirror_message(uid: str, covering: dt.datetime) -> dict[str, str]:
    """Asks the `mirror-usage` function to see that the mirrors cover a commit time."""
    return {"userId": uid, "covering": rfc3339(covering)}


def parse_mirror_message(message: dict[str, Any]) -> tuple[str, dt.datetime] | None:
    uid, covering = message.get("userId"), message.get("covering")
    if not isinstance(uid, str) or not valid_document_id(uid) or not isinstance(covering, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(covering.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (uid, moment) if moment.tzinfo is not None else None


def _mirror_assistants(db: Client, aggregate: Aggregate, state: dict[str, Any], period: str,
                       card: RateCard) -> None:
    """Each OpenAI assistant's `tokenUsage` (all time) and `currentPeriod`, written only where they
    differ from what the last rollup mirrored (`state`): at most one write an assistant, and
    none for the assistants a burst did not touch (but the first rollup of a month moves them all)."""
    from google.api_core import exceptions as gexc

    lifetime: dict[str, Any] = state.get("assistants") or {}
    same_period = state.get("period") == period
    in_period: dict[str, Any] = (state.get("periodAssistants") or {}) if same_period else {}
    this_month = aggregate.period_assistants.get(period, {})
    for aid, figures in aggregate.assistants.items():
        if aggregate.providers.get(aid) != "openai":
            continue
        month = this_month.get(aid, UsageFigures())
        if same_period and _from_fields(lifetime.get(aid)) == figures and _from_fields(in_period.get(aid)) == month:
            continue
        with contextlib.suppress(gexc.NotFound):  # a deleted assistant's usage stays in shards and events
            db.collection(col.OPENAI_ASSISTANTS).document(aid).update({
                "tokenUsage": counts_json(figures), "currentPeriod": period_json(period, month, card)})


def sweep(db: Client, since: dt.datetime) -> dict[str, str]:
    """Roll up every user whose counters changed since `since` and are ahead of their mirrors."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    changed: dict[str, dt.datetime] = {}
    query = db.collection_group(col.USAGE_SHARDS).where(filter=FieldFilter("changedAt", ">=", since))
    for snap in query.select(["changedAt"]).stream():
        user_ref = snap.reference.parent.parent
        at = (snap.to_dict() or {}).get("changedAt")
        if user_ref is None or not isinstance(at, dt.datetime):
            continue
        if user_ref.id not in changed or at > changed[user_ref.id]:
            changed[user_ref.id] = at
    return {uid: rollup(db, uid, at) for uid, at in changed.items()}


# -- rebuilding from the raw events ---------------------------------------------------

def user_events(db: Client, uid: str, page: int = 500) -> Any:
    """Every raw usage event of a user, paged by document id (no composite index needed)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    base = db.collection(col.USAGE_EVENTS).where(filter=FieldFilter("userId", "==", uid)).order_by("__name__")
    last = None
    while True:
        query = base.start_after({"__name__": last}) if last else base
        docs = list(query.limit(page).stream())
        for doc in docs:
            yield doc.id, doc.to_dict() or {}
        if len(docs) < page:
            return
        last = docs[-1].id


@dataclass
class RebuildReport:
    events: int
    malformed: list[str]
    stored: Aggregate
    recomputed: Aggregate

    @property
    def matches(self) -> bool:
        s, r = self.stored, self.recomputed
        return (s.totals, s.assistants, s.periods, s.period_assistants) == (
            r.totals, r.assistants, r.periods, r.period_assistants)


def check_user(db: Client, uid: str) -> RebuildReport:
    """Recompute a user's aggregates from the raw events and compare with the counters."""
    from pydantic import ValidationError

    events: list[UsageEvent] = []
    malformed: list[str] = []
    for event_id, data in user_events(db, uid):
        try:
            events.append(UsageEvent.model_validate(data))
        except ValidationError:
            malformed.append(event_id)
    return RebuildReport(len(events), malformed, read_aggregate(db, uid), fold_events(events))


def rebuild_user(db: Client, uid: str, now: dt.datetime) -> RebuildReport:
    """Replace a user's counters with ones recomputed from the raw events, then roll up.

    Run it while the user is quiet: an event arriving during the rebuild can be
    counted twice or not at all; the report's check (run again after) tells.
    """
    from pydantic import ValidationError

    user_doc = db.collection(col.TOKEN_USAGE).document(uid)
    for sub in (col.USAGE_SHARDS, col.APPLIED_EVENTS):
        while True:
            docs = list(user_doc.collection(sub).limit(500).stream())
            if not docs:
                break
            batch = db.batch()
            for doc in docs:
                batch.delete(doc.reference)
            batch.commit()
    for event_id, data in user_events(db, uid):
        try:
            apply_event(db, event_id, UsageEvent.model_validate(data), now)
        except ValidationError:
            continue
    rollup(db, uid, None, now=lambda: now + dt.timedelta(days=1))
    return check_user(db, uid)
