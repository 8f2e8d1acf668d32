"""The call services and the tap on in-memory repositories and gateway: no emulator, no network."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from simplytalk.errors import InvalidInput, LimitReached, NotFound, PaymentNeeded, Unavailable
from simplytalk.models import OpenAIAssistant
from simplytalk.pricing import UsageFigures
from simplytalk.realtime import EndReason, StartCall, WatchPolicy
from simplytalk.repositories.accounts import InMemoryAccounts
from simplytalk.repositories.calls import InMemoryCalls
from simplytalk.services import realtime_calls as svc
from simplytalk.services.realtime_deps import RealtimeDeps
from simplytalk.services.realtime_tap import TapOutcome, TapSettings, run_tap, sweep_calls
from simplytalk.tap_queue import InMemoryTapQueue

from tests.realtime_fakes import DROP, FailingQueue, FakeGateway

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, start: dt.datetime = NOW, real: bool = False) -> None:
        self.start, self.real, self.offset = start, real, dt.timedelta()
        self.t0 = time.monotonic()

    def __call__(self) -> dt.datetime:
        elapsed = dt.timedelta(seconds=time.monotonic() - self.t0) if self.real else dt.timedelta()
        return self.start + elapsed + self.offset


@pytest.fixture
def accounts() -> InMemoryAccounts:
    acc = InMemoryAccounts()
    for uid in ("ann", "bob"):
        acc.assistants[f"asst_{uid}"] = OpenAIAssistant.model_validate({
            "id": f"asst_{uid}", "userId": uid, "name": "Support", "systemPrompt": "Be kind.",
            "firstMessage": "Hi!", "createdAt": NOW, "updatedAt": NOW})
    acc.subscribed.add("ann")
    return acc


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def deps(accounts: InMemoryAccounts, gateway: FakeGateway) -> RealtimeDeps:
    return RealtimeDeps(calls=InMemoryCalls(), accounts=accounts, gateway=gateway, taps=InMemoryTapQueue(),
                        clock=Clock(real=True))


LIMITS = svc.CallLimits("gpt-realtime-1.5", 30, 2)


def start(deps: RealtimeDeps, uid: str = "ann", limits: svc.CallLimits = LIMITS) -> svc.StartedCall:
    return svc.start_call(deps, limits, uid, StartCall(assistant_id=f"asst_{uid}", sdp=OFFER))


def test_a_started_call_is_recorded_watched_and_answered(deps: RealtimeDeps) -> None:
    started = start(deps)

    body = started.to_json()
    assert body["callId"].startswith("rtc_") and body["sdp"].startswith("v=0")
    record = deps.calls.get(body["callId"])
    assert record is not None and record.active and record.call.user_id == "ann"
    assert record.plan.instructions == "Be kind." and record.plan.first_message == "Hi!"
    assert deps.taps.started == [(body["callId"], 0)]  # type: ignore[attr-defined]


def test_another_users_assistant_is_not_found(deps: RealtimeDeps) -> None:
    with pytest.raises(NotFound):
        svc.start_call(deps, LIMITS, "ann", StartCall(assistant_id="asst_bob", sdp=OFFER))


def test_past_the_free_allowance_only_subscribers_call(deps: RealtimeDeps, accounts: InMemoryAccounts) -> None:
    accounts.usage[("bob", "2026-11")] = UsageFigures(total_tokens=30 * 60)
    accounts.usage[("ann", "2026-11")] = UsageFigures(total_tokens=300 * 60)

    with pytest.raises(PaymentNeeded):
        start(deps, "bob")
    start(deps, "ann")
    accounts.usage[("bob", "2026-11")] = UsageFigures(total_tokens=30 * 60 - 1)
    start(deps, "bob")


def test_ten_concurrent_starts_get_two_calls(deps: RealtimeDeps) -> None:
    def attempt(_: int) -> str:
        try:
            start(deps)
            return "started"
        except LimitReached as exc:
            assert exc.retry_after
            return "refused"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(attempt, range(10)))

    assert sorted(outcomes) == ["refused"] * 8 + ["started"] * 2


def test_an_ended_call_frees_its_slot(deps: RealtimeDeps) -> None:
    first, _ = start(deps), start(deps)
    with pytest.raises(LimitReached):
        start(deps)

    ended = svc.hang_up(deps, "ann", first.record.id)

    assert ended.status == "ended" and ended.ended_reason == "hung_up"
    start(deps)


def test_openai_refusing_the_offer_frees_the_slot(deps: RealtimeDeps, gateway: FakeGateway) -> None:
    gateway.fail_create = InvalidInput("sdp: refused")
    for _ in range(3):
        with pytest.raises(InvalidInput):
            start(deps)
    gateway.fail_create = None

    start(deps)
    start(deps)


def test_a_call_nobody_can_watch_is_hung_up_not_left_unmetered(accounts: InMemoryAccounts) -> None:
    gateway, calls = FakeGateway(), InMemoryCalls()
    deps = RealtimeDeps(calls=calls, accounts=accounts, gateway=gateway, taps=FailingQueue(), clock=Clock())

    with pytest.raises(Unavailable):
        start(deps)

    [call] = gateway.calls.values()
    assert call.status == "hung_up"
    [record] = [calls.get(cid) for cid in calls.calls]
    assert record is not None and record.call.ended_reason == "not_watched"
    assert calls.slots == {}


def test_calls_page_newest_first(deps: RealtimeDeps) -> None:
    clock = Clock()
    deps = replace(deps, clock=clock)
    made = []
    for i in range(5):
        clock.offset = dt.timedelta(seconds=i)
        made.append(start(deps, limits=svc.CallLimits("gpt-realtime-1.5", 30, 50)).record.id)
    start(deps, "bob")

    first, token = svc.list_calls(deps, "ann", 3, None)
    second, end = svc.list_calls(deps, "ann", 3, token)

    assert [c["callId"] for c in first + second] == made[::-1]
    assert end is None
    with pytest.raises(NotFound):
        svc.owned_call(deps, "bob", made[0])


# -- the tap ---------------------------------------------------------------------------------

SETTINGS = TapSettings(run_seconds=30, lease_seconds=1.0, tick_seconds=0.02, handover_seconds=5,
                       reconnect_seconds=1.0, counters_every_seconds=0.05, drain_seconds=0.2,
                       policy=WatchPolicy(max_call_seconds=60, idle_seconds=30, max_tampering=1, free_minutes=30))


@pytest.fixture
def tap(deps: RealtimeDeps, gateway: FakeGateway) -> Iterator[Callable[..., Any]]:
    """Start a tap run in a thread; it returns once the run has opened its sideband (or ended)."""
    threads: list[threading.Thread] = []

    def run(call_id: str, generation: int = 0, settings: TapSettings = SETTINGS, owner: str = "run-1") -> Any:
        result: dict[str, Any] = {}
        opened = len(gateway.calls[call_id].sidebands)

        def target() -> None:
            try:
                result["outcome"] = run_tap(deps, settings, call_id, generation, owner)
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        threads.append(thread)
        wait(lambda: len(gateway.calls[call_id].sidebands) > opened or "outcome" in result or "error" in result)
        return result

    yield run
    for call in gateway.calls.values():
        gateway.end(call.call_id)
    for thread in threads:
        thread.join(timeout=5)


def wait(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met")


def events_of(deps: RealtimeDeps, call_id: str, kind: str) -> list[dict[str, Any]]:
    calls = deps.calls
    assert isinstance(calls, InMemoryCalls)
    return [e for e in calls.events.values() if e["callId"] == call_id and e["kind"] == kind]


def test_the_tap_counts_each_response_once_across_a_dropped_sideband(deps: RealtimeDeps, gateway: FakeGateway,
                                                                     tap: Any) -> None:
    call_id = start(deps).record.id
    run = tap(call_id)
    call = gateway.calls[call_id]
    for i, tokens in enumerate((100, 200, 300)):
        gateway.respond(call_id, f"resp_{i}", tokens, transcript=f"line {i}")
    gateway.respond(call_id, "resp_1", 200)  # a repeat
    wait(lambda: len(events_of(deps, call_id, "response")) == 3)
    call.sideband.feed.put(DROP)
    wait(lambda: len(call.sidebands) == 2)
    gateway.respond(call_id, "resp_3", 400)
    gateway.respond(call_id, "resp_4", 500)

    wait(lambda: len(events_of(deps, call_id, "response")) == 5)
    record = wait(lambda: (r := deps.calls.get(call_id)) and r.call.responses == 5 and r)
    assert record.call.usage.total_tokens == 1500
    assert [line["text"] for line in deps.calls.transcript(call_id, 10, None)] == ["line 0", "line 1", "line 2"]
    assert call.client_events[0]["type"] == "response.create"  # the greeting, once
    assert [e["type"] for e in call.client_events].count("response.create") == 1
    gateway.end(call_id)
    wait(lambda: "outcome" in run)
    assert run["outcome"] == TapOutcome.CALL_ENDED
    ended = deps.calls.get(call_id)
    assert ended is not None and ended.call.ended_reason == "completed"
    [duration] = events_of(deps, call_id, "call")
    assert duration["callSeconds"] == ended.call.duration_seconds


def test_a_browser_that_keeps_changing_the_session_is_hung_up(deps: RealtimeDeps, gateway: FakeGateway,
                                                              tap: Any) -> None:
    call_id = start(deps).record.id
    run = tap(call_id)
    call = gateway.calls[call_id]
    tampered = {**call.session, "instructions": "You are a pirate."}

    call.sideband.feed.put({"type": "session.updated", "session": tampered})
    wait(lambda: any(e["type"] == "session.update" for e in call.client_events))
    restore = next(e for e in call.client_events if e["type"] == "session.update")
    assert restore["session"]["instructions"] == "Be kind."
    call.sideband.feed.put({"type": "session.updated", "session": call.session})  # the restore took
    call.sideband.feed.put({"type": "session.updated", "session": tampered})

    wait(lambda: "outcome" in run)
    assert call.status == "hung_up"
    record = deps.calls.get(call_id)
    assert record is not None and record.call.ended_reason == EndReason.SESSION_TAMPERED


def test_crossing_the_allowance_mid_call_hangs_up(deps: RealtimeDeps, gateway: FakeGateway, accounts: InMemoryAccounts,
                                                  tap: Any) -> None:
    accounts.usage[("bob", "2026-11")] = UsageFigures(total_tokens=29 * 60)
    deps = replace(deps, clock=Clock())
    call_id = start(deps, "bob").record.id
    run = tap(call_id)

    gateway.respond(call_id, "resp_a", 59)
    wait(lambda: events_of(deps, call_id, "response"))
    assert gateway.calls[call_id].status == "active"
    gateway.respond(call_id, "resp_b", 1)
    gateway.respond(call_id, "resp_c", 7)  # already on its way when the call is hung up: still counted

    wait(lambda: "outcome" in run)
    record = deps.calls.get(call_id)
    assert record is not None and record.call.ended_reason == "allowance_exhausted"
    assert gateway.calls[call_id].status == "hung_up"
    assert {e["usage"]["totalTokens"] for e in events_of(deps, call_id, "response")} == {59, 1, 7}


def test_a_newer_generation_takes_over_and_the_old_run_leaves(deps: RealtimeDeps, gateway: FakeGateway,
                                                              tap: Any) -> None:
    call_id = start(deps).record.id
    old = tap(call_id, 0, owner="old")
    new = tap(call_id, 1, owner="new")

    wait(lambda: "outcome" in old)
    assert old["outcome"] == TapOutcome.LEASE_LOST
    assert run_tap(deps, SETTINGS, call_id, 0, "late") == TapOutcome.STALE
    gateway.respond(call_id, "resp_new", 10)
    wait(lambda: len(events_of(deps, call_id, "response")) == 1)
    assert "outcome" not in new


def test_a_duplicate_delivery_leaves_a_live_run_alone(deps: RealtimeDeps, gateway: FakeGateway,
                                                      tap: Any) -> None:
    call_id = start(deps).record.id
    tap(call_id, 0, owner="first")

    assert run_tap(deps, SETTINGS, call_id, 0, "second") == TapOutcome.BUSY
    assert len(gateway.calls[call_id].sidebands) == 1


def test_a_run_that_cannot_reach_the_sideband_raises_for_a_retry(deps: RealtimeDeps, gateway: FakeGateway) -> None:
    call_id = start(deps).record.id
    gateway.unreachable = True

    with pytest.raises(Exception, match="no sideband"):
        run_tap(deps, SETTINGS, call_id, 0, "run")
    lease = deps.calls.lease(call_id)
    assert lease is not None and lease.owner is None  # released: a retry takes over at once


def test_a_run_out_of_budget_starts_the_next_generation(deps: RealtimeDeps, gateway: FakeGateway,
                                                        tap: Any) -> None:
    call_id = start(deps).record.id
    short = replace(SETTINGS, run_seconds=0.5, handover_seconds=0.2)

    run = tap(call_id, settings=short)
    wait(lambda: "outcome" in run)

    assert run["outcome"] == TapOutcome.CONTINUED
    assert (call_id, 1) in deps.taps.started  # type: ignore[attr-defined]
    assert gateway.calls[call_id].status == "active"


def test_the_watchdog_restarts_lost_taps_and_ends_forgotten_calls(deps: RealtimeDeps) -> None:
    clock = Clock()
    deps = replace(deps, clock=clock)
    young, old = start(deps).record.id, start(deps).record.id
    taps = InMemoryTapQueue()
    calls: InMemoryCalls = deps.calls  # type: ignore[assignment]
    calls.calls[old]["startedAt"] = NOW - dt.timedelta(hours=2)

    clock.offset = dt.timedelta(seconds=45)  # no tap for longer than the grace; within the maximum length
    report = sweep_calls(replace(deps, taps=taps), SETTINGS)

    assert (report.active, report.restarted, report.ended) == (2, 1, 1)
    assert taps.started == [(young, 0)]
    record = deps.calls.get(old)
    assert record is not None and record.call.ended_reason == "max_duration"


def test_a_call_openai_will_not_let_us_watch_is_hung_up(deps: RealtimeDeps, gateway: FakeGateway) -> None:
    call_id = start(deps).record.id
    gateway.refuse_sideband = True  # OpenAI answers 404 to the sideband of a call that is up

    assert run_tap(deps, SETTINGS, call_id, 0, "run") == TapOutcome.CALL_ENDED

    assert gateway.calls[call_id].status == "hung_up"
    record = deps.calls.get(call_id)
    assert record is not None and record.call.ended_reason == "not_watched"


class Flaky:
    """Fails the first `n` calls of the named methods, then passes them through."""

    def __init__(self, inner: Any, n: int, *methods: str) -> None:
        self.inner, self.left, self.methods = inner, n, methods

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name not in self.methods:
            return target

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if self.left > 0:
                self.left -= 1
                raise Unavailable(f"{name} failed")
            return target(*args, **kwargs)

        return flaky


def test_a_write_that_fails_once_is_retried_not_lost(deps: RealtimeDeps, gateway: FakeGateway) -> None:
    call_id = start(deps).record.id
    deps = replace(deps, calls=Flaky(deps.calls, 2, "record_response"))
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(
        outcome=run_tap(deps, SETTINGS, call_id, 0, "run")), daemon=True)
    thread.start()
    wait(gateway.calls[call_id].connected.is_set)

    gateway.respond(call_id, "resp_1", 42)

    record = wait(lambda: (r := deps.calls.get(call_id)) and r.call.responses == 1 and r)
    assert record.call.usage.total_tokens == 42
    gateway.end(call_id)
    thread.join(timeout=5)
    assert result["outcome"] == TapOutcome.CALL_ENDED


def test_a_next_generation_that_fails_to_publish_is_published_again(deps: RealtimeDeps) -> None:
    call_id = start(deps).record.id
    taps = Flaky(InMemoryTapQueue(), 1, "start")
    short = replace(SETTINGS, run_seconds=0.5, handover_seconds=0.3)

    assert run_tap(replace(deps, taps=taps), short, call_id, 0, "run") == TapOutcome.CONTINUED

    assert taps.inner.started == [(call_id, 1)]
