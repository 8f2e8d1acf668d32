"""The usage services on the in-memory counters, a fake clock and a fake sleep: counting, the
mirrors' rollups (throttle, lease, precondition, month turn), the sweep, the rebuild and the
token-usage view. No emulator; the emulator suite keeps the triggers and Firestore's own guarantees."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from simplytalk.errors import InvalidInput, NotFound
from simplytalk.models import UsageEvent
from simplytalk.paging import decode_token
from simplytalk.pricing import DEFAULT_RATE_CARD, UsageFigures
from simplytalk.repositories.usage import LEASE_SECONDS, Applied, InMemoryUsage
from simplytalk.services.aggregation import (
    MIRROR_PATIENCE,
    ROLLUP_INTERVAL,
    FollowUps,
    Rollup,
    mirror_after_counting,
)
from simplytalk.services.usage import parse_grouping, parse_period
from simplytalk.services.usage_deps import UsageDeps

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    """Time stands still until a test (or a sleep) moves it."""

    def __init__(self, start: dt.datetime = NOW) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def usage(clock: FakeClock) -> InMemoryUsage:
    store = InMemoryUsage(clock=clock)
    store.assistants.update({
        "o-sup": {"userId": "ann", "name": "Support", "provider": "openai"},
        "v-sales": {"userId": "ann", "name": "Sales", "provider": "vapi"},
        "o-bob": {"userId": "bob", "name": "Bob's", "provider": "openai"},
    })
    return store


@pytest.fixture
def deps(usage: InMemoryUsage, clock: FakeClock) -> UsageDeps:
    return UsageDeps(usage=usage, clock=clock, cards=lambda: [DEFAULT_RATE_CARD], sleep=clock.sleep)


def response(tokens: int, when: dt.datetime = NOW, uid: str = "ann", assistant: str = "o-sup",
             call: str | None = None) -> dict[str, Any]:
    inputs = tokens - tokens // 3
    data = {"userId": uid, "assistantId": assistant, "provider": "openai", "kind": "response", "occurredAt": when,
            "usage": {"totalTokens": tokens, "inputTokens": inputs, "outputTokens": tokens - inputs}}
    return {**data, "callId": call} if call else data


def vapi_call(seconds: float, when: dt.datetime = NOW, uid: str = "ann", assistant: str = "v-sales") -> dict[str, Any]:
    return {"userId": uid, "assistantId": assistant, "provider": "vapi", "occurredAt": when, "callSeconds": seconds}


def deliver(deps: UsageDeps, event_id: str, fields: dict[str, Any]) -> Applied:
    """The event is written and its trigger counts it (the rollup is the test's to run)."""
    assert isinstance(deps.usage, InMemoryUsage)
    deps.usage.events[event_id] = fields
    return deps.usage.apply(event_id, UsageEvent.model_validate(fields), deps.clock())


def summary(usage: InMemoryUsage, uid: str = "ann") -> dict[str, Any]:
    return usage.summaries.get(uid) or {}


# -- counting -------------------------------------------------------------------------------

def test_an_event_counted_twice_is_counted_once(deps: UsageDeps, clock: FakeClock) -> None:
    first = deliver(deps, "resp_1", response(90))
    clock.advance(5)
    again = deliver(deps, "resp_1", response(90))
    assert first == Applied(True, NOW)
    assert again == Applied(False, NOW)  # the first count's commit time
    assert deps.usage.read_aggregate("ann").totals == UsageFigures(90, 60, 30)


def test_events_are_counted_into_totals_months_and_assistants(deps: UsageDeps) -> None:
    deliver(deps, "resp_1", response(90))
    deliver(deps, "resp_old", response(30, dt.datetime(2025, 12, 31, 23, 0, tzinfo=dt.UTC)))
    deliver(deps, "vcall_1", vapi_call(90.5))
    aggregate = deps.usage.read_aggregate("ann")
    assert aggregate.totals == UsageFigures(120, 80, 40, 0, 90_500)
    assert aggregate.periods["2025-12"].total_tokens == 30 and aggregate.periods["2026-11"].total_tokens == 90
    assert aggregate.providers == {"o-sup": "openai", "v-sales": "vapi"}
    assert deps.usage.assistant_totals("ann")["v-sales"].vapi_call_millis == 90_500
    assert deps.usage.read_aggregate("bob").read_time is None


# -- rollups --------------------------------------------------------------------------------

def test_a_burst_s_rollups_are_throttled_to_one_an_interval_and_the_last_is_covered_after_a_follow_up_wait(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    outcomes = []
    last = None
    for n in range(30):  # 30 events, one every 0.1 s: 3 s of burst
        clock.advance(0.1 if n else 0)
        last = deliver(deps, f"resp_{n}", response(10))
        outcomes.append(deps.rollup("ann", last.commit_time))
    assert outcomes[0] == Rollup.ROLLED_UP
    assert set(outcomes) == {Rollup.ROLLED_UP, Rollup.DEFERRED}
    assert outcomes.count(Rollup.ROLLED_UP) <= 3 * int(1 / ROLLUP_INTERVAL) + 1  # at most one an interval
    assert clock.slept == []  # a trigger never waits
    assert summary(usage)["totalTokens"] < 300  # the last events are not mirrored yet

    assert last is not None and last.commit_time is not None
    follow_up = deps.rollup("ann", last.commit_time, patience=MIRROR_PATIENCE)  # mirror-usage
    assert follow_up == Rollup.ROLLED_UP
    assert 0 < sum(clock.slept) <= ROLLUP_INTERVAL + 0.05
    assert summary(usage)["totalTokens"] == 300
    assert summary(usage)["rollupCount"] == outcomes.count(Rollup.ROLLED_UP) + 1
    assert deps.rollup("ann", last.commit_time) == Rollup.COVERED


def test_one_follow_up_covers_every_later_event_of_the_burst_it_was_asked_for(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    """What one instance's triggers do (`mirror_after_counting`, as the handler calls it): the first
    deferred event asks for a follow-up due an interval after its commit; the events before that
    due time ask for nothing and are covered by it."""
    follow_ups = FollowUps()
    asked: list[dt.datetime] = []

    def ask(uid: str, due: dt.datetime) -> bool:
        asked.append(due)
        return True

    def counted(event_id: str, tokens: int) -> str:
        commit = deliver(deps, event_id, response(tokens)).commit_time
        return mirror_after_counting("ann", commit, follow_ups, deps.rollup, ask)

    assert counted("resp_0", 10) == Rollup.ROLLED_UP
    outcomes = []
    for n in range(1, 9):  # 0.1 s apart: all inside the first interval
        clock.advance(0.1)
        outcomes.append(counted(f"resp_{n}", 10))
    assert outcomes == [Rollup.DEFERRED] + ["follow-up pending"] * 7
    assert len(asked) == 1  # one follow-up for the eight deferred events

    assert deps.follow_up("ann", asked[0], patience=MIRROR_PATIENCE) == Rollup.ROLLED_UP
    assert clock() >= asked[0]  # it waited until due before rolling up
    assert summary(usage)["totalTokens"] == 90  # every event of the burst is mirrored
    clock.advance(ROLLUP_INTERVAL)
    assert counted("resp_late", 10) == Rollup.ROLLED_UP  # past due and past the interval: rolled up at once


def test_a_follow_up_that_could_not_be_published_is_asked_for_again(deps: UsageDeps, clock: FakeClock) -> None:
    follow_ups = FollowUps()
    tries: list[dt.datetime] = []

    def refused(uid: str, due: dt.datetime) -> bool:
        tries.append(due)
        return False

    deliver(deps, "resp_0", response(10))
    assert mirror_after_counting("ann", clock(), follow_ups, deps.rollup, lambda uid, due: True) == Rollup.ROLLED_UP
    for n in range(1, 3):
        clock.advance(0.1)
        commit = deliver(deps, f"resp_{n}", response(10)).commit_time
        mirror_after_counting("ann", commit, follow_ups, deps.rollup, refused)
    assert len(tries) == 2  # Pub/Sub refused the first: the next event asks again, not "pending"


def test_a_follow_up_that_finds_its_event_covered_does_nothing(deps: UsageDeps, usage: InMemoryUsage,
                                                               clock: FakeClock) -> None:
    applied = deliver(deps, "resp_1", response(10))
    assert deps.rollup("ann", applied.commit_time) == Rollup.ROLLED_UP
    clock.advance(3)
    assert deps.rollup("ann", applied.commit_time, patience=MIRROR_PATIENCE) == Rollup.COVERED
    assert summary(usage)["rollupCount"] == 1


def test_a_user_without_counters_has_nothing_to_roll_up(deps: UsageDeps, usage: InMemoryUsage) -> None:
    assert deps.rollup("ann", None) == Rollup.NOTHING
    assert usage.summaries == {} and usage.leases["ann"]["until"] < NOW  # the lease was released


def test_a_held_lease_defers_an_expired_one_is_taken_over_and_a_released_one_is_free(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    deliver(deps, "resp_1", response(10))
    held = usage.claim_lease("ann", None, clock())
    assert held is not None
    assert usage.claim_lease("ann", None, clock()) is None  # one holder at a time
    assert deps.rollup("ann", None) == Rollup.DEFERRED  # another rollup is under way
    clock.advance(LEASE_SECONDS + 0.1)  # its holder died
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP

    deliver(deps, "resp_2", response(10))
    clock.advance(2)
    over = usage.summary("ann").mirrored.read_time
    lease = usage.claim_lease("ann", over, clock())
    assert lease is not None
    usage.release_lease(lease)
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP  # released: free at once
    assert summary(usage)["totalTokens"] == 20


def test_a_lease_taken_over_is_not_released_by_its_old_holder(usage: InMemoryUsage, clock: FakeClock) -> None:
    old = usage.claim_lease("ann", None, clock())
    clock.advance(LEASE_SECONDS + 1)
    new = usage.claim_lease("ann", None, clock())
    assert old is not None and new is not None
    usage.release_lease(old)
    assert usage.claim_lease("ann", None, clock()) is None  # still the new holder's


def test_a_lease_that_follows_an_older_rollup_does_not_hold_up_the_next(deps: UsageDeps, usage: InMemoryUsage,
                                                                        clock: FakeClock) -> None:
    deliver(deps, "resp_1", response(10))
    assert usage.claim_lease("ann", None, clock()) is not None  # taken before the first rollup...
    clock.advance(LEASE_SECONDS + 1)
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP  # ...lapsed; this one rolled up (and holds it)
    clock.advance(2)
    deliver(deps, "resp_2", response(10))
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP  # a newer summary frees the lease at once


def test_the_summary_is_written_only_if_it_is_still_as_read(deps: UsageDeps, usage: InMemoryUsage,
                                                            clock: FakeClock) -> None:
    deliver(deps, "resp_1", response(10))
    seen = usage.summary("ann")
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP  # another rollup wrote meanwhile
    done = summary(usage)
    from simplytalk.services.aggregation import _roll_up

    assert _roll_up(usage, "ann", seen, clock, deps.cards) == Rollup.LOST
    assert summary(usage) == done


def test_a_rollup_that_loses_the_race_looks_again_and_finds_its_event_covered(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    applied = deliver(deps, "resp_1", response(10))
    writes = usage.write_mirrors

    def racing(uid: str, seen: Any, mirrors: Any) -> bool:
        usage.write_mirrors = writes  # type: ignore[method-assign]
        assert writes(uid, seen, mirrors)  # a concurrent rollup lands first
        return writes(uid, seen, mirrors)

    usage.write_mirrors = racing  # type: ignore[method-assign]
    assert deps.rollup("ann", applied.commit_time) == Rollup.COVERED
    assert summary(usage)["rollupCount"] == 1


def test_the_mirrors_show_totals_this_month_s_cost_history_and_each_openai_assistant(
        deps: UsageDeps, usage: InMemoryUsage) -> None:
    deliver(deps, "resp_1", response(1830, call="rtc_1"))
    deliver(deps, "vcall_1", vapi_call(90))
    deliver(deps, "resp_bob", response(60, uid="bob", assistant="o-bob"))
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP
    doc = summary(usage)
    assert (doc["totalTokens"], doc["vapiCallMillis"]) == (1830, 90_000)
    assert doc["currentPeriod"]["id"] == "2026-11"
    assert doc["currentPeriod"]["totalMinutes"] == "32" and doc["currentPeriod"]["estimatedCost"] == {
        "amount": 1440, "currency": "usd"}  # 30.5 token minutes + 1.5 call minutes at 45 cents
    assert set(doc["currentPeriod"]["assistants"]) == {"o-sup", "v-sales"}
    assert {h["description"] for h in doc["usageHistory"]} == {
        "Response from Support: 1,830 tokens (1,220 in, 610 out)", "vapi call with Sales, 1 min 30 s"}
    assert usage.assistant_mirrors == {"o-sup": {
        "tokenUsage": {"totalTokens": 1830, "inputTokens": 1220, "outputTokens": 610},
        "currentPeriod": doc["currentPeriod"]["assistants"]["o-sup"]}}  # vapi assistants have no mirror


def test_an_assistant_s_mirror_is_written_only_when_its_figures_changed(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    usage.assistants["o-two"] = {"userId": "ann", "name": "Two", "provider": "openai"}
    deliver(deps, "r1", response(10))
    deliver(deps, "r2", response(10, assistant="o-two"))
    deps.rollup("ann", None)
    usage.writes = 0
    clock.advance(2)
    deliver(deps, "r3", response(10))
    deps.rollup("ann", None)
    assert usage.writes == 2  # o-sup and the summary, not o-two


def test_the_month_turning_moves_current_period_to_zero_while_totals_and_history_stay(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    november = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.UTC)
    clock.now = november
    deliver(deps, "resp_nov_1", response(600, november))
    deliver(deps, "resp_nov_2", response(600, november))
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP
    assert summary(usage)["currentPeriod"]["id"] == "2026-11"

    clock.now = dt.datetime(2026, 12, 1, 0, 5, tzinfo=dt.UTC)  # nothing happens at midnight...
    assert summary(usage)["currentPeriod"]["id"] == "2026-11"
    assert deps.sweep(clock() - dt.timedelta(minutes=10)) == {"ann": Rollup.COVERED}  # ...nor on the sweep
    assert summary(usage)["currentPeriod"]["id"] == "2026-11"
    assert deps.rollup("ann", None) == Rollup.ROLLED_UP  # the month's first rollup moves it
    doc = summary(usage)
    assert doc["currentPeriod"]["id"] == "2026-12"
    assert (doc["currentPeriod"]["totalTokens"], doc["currentPeriod"]["totalMinutes"]) == (0, "0")
    assert doc["totalTokens"] == 1200 and len(doc["usageHistory"]) == 2
    assert usage.assistant_mirrors["o-sup"]["currentPeriod"]["id"] == "2026-12"
    assert usage.assistant_mirrors["o-sup"]["currentPeriod"]["totalTokens"] == 0
    assert usage.assistant_mirrors["o-sup"]["tokenUsage"]["totalTokens"] == 1200

    clock.advance(5)
    deliver(deps, "resp_dec_1", response(60, clock()))
    deps.rollup("ann", None)
    current = summary(usage)["currentPeriod"]
    assert (current["totalTokens"], current["totalMinutes"]) == (60, "1")


def test_the_sweep_rolls_up_the_users_whose_counters_changed(deps: UsageDeps, usage: InMemoryUsage,
                                                            clock: FakeClock) -> None:
    deliver(deps, "r1", response(10))
    deliver(deps, "r2", response(10, uid="bob", assistant="o-bob"))
    assert deps.rollup("bob", None) == Rollup.ROLLED_UP
    clock.advance(2)
    assert deps.sweep(NOW - dt.timedelta(minutes=10)) == {"ann": Rollup.ROLLED_UP, "bob": Rollup.COVERED}
    assert summary(usage, "ann")["totalTokens"] == 10
    clock.advance(20 * 60)
    assert deps.sweep(clock() - dt.timedelta(minutes=10)) == {}


# -- rebuilding from the raw events -----------------------------------------------------------

def test_lost_counters_are_found_by_the_check_and_restored_by_the_rebuild(
        deps: UsageDeps, usage: InMemoryUsage, clock: FakeClock) -> None:
    for n in range(12):
        deliver(deps, f"r{n}", response(n + 1, NOW - dt.timedelta(days=40 * n)))
    usage.events["bad"] = {"userId": "ann", "provider": "nobody"}
    assert deps.check("ann").matches
    lost = next(iter(usage.shards["ann"]))
    del usage.shards["ann"][lost]  # a bad deploy loses a shard
    report = deps.check("ann")
    assert not report.matches and report.events == 12 and report.malformed == ["bad"]
    rebuilt = deps.rebuild("ann")
    assert rebuilt.matches and rebuilt.recomputed.totals.total_tokens == sum(range(1, 13))
    assert summary(usage)["totalTokens"] == sum(range(1, 13))


# -- the token-usage view ---------------------------------------------------------------------

@pytest.fixture
def history(deps: UsageDeps, usage: InMemoryUsage) -> UsageDeps:
    usage.realtime_calls["rtc_1"] = {"userId": "ann", "responses": 2,
                                     "usage": {"totalTokens": 120, "inputTokens": 80, "outputTokens": 40}}
    start = NOW - dt.timedelta(minutes=10)
    for n, tokens in enumerate((50, 70)):
        deliver(deps, f"resp_{n}", {**response(tokens, start + dt.timedelta(seconds=n + 1), call="rtc_1"),
                                    "usage": {"totalTokens": tokens, "inputTokens": tokens - 20, "outputTokens": 20}})
    deliver(deps, "rtc_1", {"userId": "ann", "assistantId": "o-sup", "provider": "openai", "kind": "call",
                            "callId": "rtc_1", "occurredAt": start + dt.timedelta(seconds=125), "callSeconds": 125.2})
    deliver(deps, "vcall_1", vapi_call(90, start + dt.timedelta(minutes=5)))
    deliver(deps, "resp_old", response(60, dt.datetime(2026, 10, 3, tzinfo=dt.UTC)))
    deliver(deps, "resp_bob", response(600, uid="bob", assistant="o-bob"))
    return deps


def test_the_token_usage_view_for_a_period_totals_its_figures_and_each_assistant(history: UsageDeps) -> None:
    view = history.view("ann", "2026-11", None, 20, None)
    assert view["userId"] == "ann"
    assert view["totals"] == {"totalTokens": 180, "inputTokens": 120, "outputTokens": 60}
    period = view["period"]
    assert (period["id"], period["totalTokens"], period["vapiMinutes"]) == ("2026-11", 120, "1.5")
    assert view["byAssistant"] == [{"assistantId": "o-sup", "provider": "openai", "totalTokens": 120, "minutes": "2"},
                                   {"assistantId": "v-sales", "provider": "vapi", "totalTokens": 0, "minutes": "1.5"}]
    october = history.view("ann", "2026-10", None, 20, None)
    assert october["period"]["totalTokens"] == 60 and october["totals"] == view["totals"]


def test_the_view_for_one_assistant_narrows_figures_and_history(history: UsageDeps) -> None:
    view = history.view("ann", "2026-11", "v-sales", 20, None)
    assert view["totals"] == {"totalTokens": 0, "inputTokens": 0, "outputTokens": 0}
    assert [row["assistantId"] for row in view["byAssistant"]] == ["v-sales"]
    assert [h["eventId"] for h in view["history"]] == ["vcall_1"]


def test_history_reads_as_words_newest_first(history: UsageDeps) -> None:
    entries = history.view("ann", "2026-11", None, 20, None)["history"]
    assert [(h["eventId"], h["description"], h["minutes"], h["cost"]["amount"]) for h in entries] == [
        ("vcall_1", "vapi call with Sales, 1 min 30 s", "1.5", 68),
        ("rtc_1", "Call with Support: 2 responses, 2 min 05 s", "0", 0),
        ("resp_1", "Response from Support: 70 tokens (50 in, 20 out)", "1.166667", 53),
        ("resp_0", "Response from Support: 50 tokens (30 in, 20 out)", "0.833333", 38),
        ("resp_old", "Response from Support: 60 tokens (40 in, 20 out)", "1", 45),
    ]
    assert entries[0]["occurredAt"] == "2026-11-25T11:55:00Z"
    assert (entries[0]["kind"], entries[0]["callId"], entries[1]["kind"]) == ("call", "vcall_1", "call")


def test_history_pages_by_token_through_every_entry(history: UsageDeps) -> None:
    seen, token = [], None
    while True:
        view = history.view("ann", "2026-11", None, 2, token)
        seen += [h["eventId"] for h in view["history"]]
        token = view["nextPageToken"]
        if token is None:
            break
        assert decode_token(token, ("occurredAt", "id"))
    assert seen == ["vcall_1", "rtc_1", "resp_1", "resp_0", "resp_old"]


def test_history_grouped_per_call_has_one_entry_a_call_with_the_call_s_figures(history: UsageDeps,
                                                                            usage: InMemoryUsage) -> None:
    calls = history.view("ann", "2026-11", None, 20, None, "call")["history"]
    assert [(h["callId"], h["description"], h["totalTokens"], h["cost"]["amount"]) for h in calls] == [
        ("vcall_1", "vapi call with Sales, 1 min 30 s", 0, 68),
        ("rtc_1", "Call with Support: 2 responses, 120 tokens, 2 min 05 s", 120, 90),
    ]
    first = history.view("ann", "2026-11", None, 1, None, "call")
    rest = history.view("ann", "2026-11", None, 1, first["nextPageToken"], "call")
    assert [h["callId"] for h in first["history"] + rest["history"]] == ["vcall_1", "rtc_1"]
    del usage.assistants["o-sup"]
    after = history.view("ann", "2026-11", None, 20, None, "call")["history"]
    assert after[1]["description"].startswith("Call with a deleted assistant:")


def test_another_user_s_assistant_is_not_found_and_its_name_never_shows(history: UsageDeps,
                                                                      usage: InMemoryUsage) -> None:
    with pytest.raises(NotFound):
        history.view("ann", "2026-11", "o-bob", 20, None)
    usage.events["resp_x"] = response(5, NOW, assistant="o-bob")  # a stray event naming bob's assistant
    names = {h["eventId"]: h["assistantName"] for h in history.view("ann", "2026-11", None, 20, None)["history"]}
    assert names["resp_x"] == "a deleted assistant" and names["resp_1"] == "Support"


def test_a_deleted_assistant_with_usage_is_still_the_caller_s(history: UsageDeps, usage: InMemoryUsage) -> None:
    del usage.assistants["v-sales"]
    assert history.view("ann", "2026-11", "v-sales", 20, None)["byAssistant"][0]["minutes"] == "1.5"


def test_an_unnamed_assistant_reads_as_unnamed(history: UsageDeps, usage: InMemoryUsage) -> None:
    usage.assistants["o-sup"]["name"] = "  "
    entries = history.view("ann", "2026-11", "o-sup", 20, None)["history"]
    assert entries[0]["description"] == "Call with an unnamed assistant: 2 responses, 2 min 05 s"


def test_an_event_without_a_timestamp_never_breaks_the_history(history: UsageDeps, usage: InMemoryUsage) -> None:
    usage.events["broken"] = {**response(5), "occurredAt": "yesterday"}
    assert "broken" not in [h["eventId"] for h in history.view("ann", "2026-11", None, 20, None)["history"]]


@pytest.mark.parametrize(("call", "field"), [
    (lambda deps: parse_grouping("minute"), "groupBy"),
    (lambda deps: parse_period("2026-13", NOW), "period"),
    (lambda deps: parse_period("last month", NOW), "period"),
    (lambda deps: deps.view("ann", "2026-11", "not/an id", 20, None), "assistantId"),
    (lambda deps: deps.view("ann", "2026-11", None, 20, "garbage"), "pageToken"),
])
def test_a_bad_group_by_period_assistant_id_or_token_is_invalid_input_naming_the_field(
        deps: UsageDeps, call: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call(deps)
    assert [d.field for d in caught.value.details] == [field]


def test_no_period_means_this_month_and_no_grouping_means_per_event() -> None:
    assert parse_period(None, NOW) == parse_period("", NOW) == "2026-11"
    assert parse_grouping(None) == parse_grouping("") == "event" and parse_grouping("call") == "call"


def test_a_rate_card_s_cost_follows_its_own_month(history: UsageDeps) -> None:
    card = replace(DEFAULT_RATE_CARD, id="cheap-2026-11", effective_from=dt.date(2026, 11, 1),
                   cents_per_minute=DEFAULT_RATE_CARD.cents_per_minute / 3)
    cheaper = replace(history, cards=lambda: [DEFAULT_RATE_CARD, card])
    entries = {h["eventId"]: h for h in cheaper.view("ann", "2026-11", None, 20, None)["history"]}
    assert (entries["resp_old"]["rateCardId"], entries["resp_old"]["cost"]["amount"]) == ("default-2026-01", 45)
    assert (entries["vcall_1"]["rateCardId"], entries["vcall_1"]["cost"]["amount"]) == ("cheap-2026-11", 23)


def test_a_malformed_stored_event_never_breaks_the_mirrors_or_the_history(deps: UsageDeps, usage: InMemoryUsage,
                                                                         clock: FakeClock) -> None:
    applied = deliver(deps, "resp_ok", response(10))
    usage.events["bad_1"] = {"userId": "ann", "assistantId": "o-sup", "provider": "openai", "kind": "response",
                             "occurredAt": NOW, "usage": {"totalTokens": "12abc", "inputTokens": 2.9}}
    usage.events["bad_2"] = {"userId": "ann", "assistantId": "o-sup", "provider": "openai", "occurredAt": NOW,
                             "usage": "oops"}

    assert deps.rollup("ann", applied.commit_time) == Rollup.ROLLED_UP
    entries = {h["eventId"]: h for h in summary(usage)["usageHistory"]}
    assert entries["bad_1"]["totalTokens"] == 0 and entries["bad_1"]["inputTokens"] == 0
    assert entries["bad_2"]["totalTokens"] == 0
    assert summary(usage)["totalTokens"] == 10


def test_a_follow_up_whose_rollup_read_before_it_was_due_rolls_up_again(usage: InMemoryUsage,
                                                                        clock: FakeClock) -> None:
    """The instance's clock 5 s ahead of Firestore's: the follow-up wakes before its due time (by
    Firestore's clock) and its first rollup reads too early; it must not call the due time covered."""
    ahead = UsageDeps(usage=usage, clock=lambda: clock() + dt.timedelta(seconds=5),
                      cards=lambda: [DEFAULT_RATE_CARD], sleep=clock.sleep)
    first = deliver(ahead, "resp_0", response(10))
    assert first.commit_time is not None and ahead.rollup("ann", first.commit_time) == Rollup.ROLLED_UP
    clock.advance(0.2)
    second = deliver(ahead, "resp_1", response(20))
    assert second.commit_time is not None
    due = FollowUps.due_for(second.commit_time)

    assert ahead.follow_up("ann", due, patience=MIRROR_PATIENCE) == Rollup.ROLLED_UP
    assert usage.summary("ann").mirrored.read_time >= due
    assert summary(usage)["totalTokens"] == 30
