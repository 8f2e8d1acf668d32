"""The local Cloud Scheduler on the real stack: a due job is published to the Pub/Sub emulator with
the message `make deploy` configures, and the real function runs (usage-rollup writes the mirror)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simplytalk.models import UsageEvent
from simplytalk.services.aggregation import apply_event

from devtools.manifest import ROOT
from devtools.scheduler import Scheduler, emulator_publisher, jobs
from devtools.stack import Stack
from tests.emulator.conftest import wait_for

UID = "u-scheduled"


def counted_not_rolled_up(db: Any, seconds: float) -> None:
    """Usage in the user's counters (the write path of aggregate-token-usage) with no mirror yet:
    only a rollup writes `tokenUsage/{uid}`, and nothing but usage-rollup's sweep will run one."""
    event = UsageEvent(user_id=UID, assistant_id="vapi-scheduled", provider="vapi",
                       occurred_at=dt.datetime.now(dt.UTC), call_seconds=seconds)
    assert apply_event(db, "call-scheduled", event, dt.datetime.now(dt.UTC)).applied


def mirror(db: Any) -> dict[str, Any] | None:
    return db.collection("tokenUsage").document(UID).get().to_dict()


_probes = itertools.count()


@pytest.fixture
def probe(stack: Stack) -> Iterator[Any]:
    """A pull subscription on usage-rollup's topic, beside the functions host's push one: what
    was published there, as the function receives it."""
    base = f"http://{stack.pubsub_host}/v1/projects/{stack.project}"
    name = f"{base}/subscriptions/scheduler-probe-{next(_probes)}-{time.time_ns()}"
    requests.put(name, json={"topic": f"projects/{stack.project}/topics/usage-rollup"},
                 timeout=10).raise_for_status()

    def pull() -> list[dict[str, Any]]:
        answer = requests.post(f"{name}:pull", json={"maxMessages": 10, "returnImmediately": True}, timeout=10)
        answer.raise_for_status()
        return [m["message"] for m in answer.json().get("receivedMessages", [])]

    yield pull
    requests.delete(name, timeout=10)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_test_stack_runs_no_scheduler(stack: Stack) -> None:
    assert not stack.run_scheduler and stack.scheduler is None


def test_a_due_job_is_published_and_its_function_runs(stack: Stack, db: Any, probe: Any) -> None:
    counted_not_rolled_up(db, 90.5)
    scheduled = [job for job in jobs(stack.manifest) if job.name in ("usage-rollup", "monthly-invoicing")]
    clock = Clock(dt.datetime(2026, 11, 30, 23, 58, 30, tzinfo=dt.UTC))
    scheduler = Scheduler(scheduled, emulator_publisher(stack.pubsub_host, stack.project), clock=clock,
                          log=lambda _: None)

    assert scheduler.tick() == []  # 23:58:30: nothing due yet
    time.sleep(1)
    assert mirror(db) is None and probe() == []

    clock.now = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.UTC)
    assert scheduler.tick() == ["usage-rollup"]  # monthly-invoicing waits for 03:00 on the 1st

    wait_for(lambda: (mirror(db) or {}).get("vapiCallMillis") == 90_500, timeout=20)
    messages = wait_for(probe, timeout=10)
    assert len(messages) == 1
    assert base64.b64decode(messages[0]["data"]) == b"{}"  # make deploy's --message-body={}
    assert not messages[0].get("attributes")


def test_fire_publishes_to_the_running_stack_by_hand(stack: Stack, db: Any, probe: Any) -> None:
    counted_not_rolled_up(db, 12.0)
    # the environment names the stack (PUBSUB_EMULATOR_HOST, SIMPLYTALK_PROJECT), as in a shell
    # pointed at it; `make run`'s own ports are the default
    fired = subprocess.run([sys.executable, "-m", "devtools.scheduler", "fire", "usage-rollup"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)

    assert fired.returncode == 0, fired.stderr
    assert "usage-rollup -> topic usage-rollup" in fired.stdout
    wait_for(lambda: (mirror(db) or {}).get("vapiCallMillis") == 12_000, timeout=20)
    assert [base64.b64decode(m["data"]) for m in wait_for(probe, timeout=10)] == [b"{}"]


def test_fire_names_the_jobs_when_the_job_is_unknown(stack: Stack) -> None:
    fired = subprocess.run([sys.executable, "-m", "devtools.scheduler", "fire", "token-usage"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)

    assert fired.returncode == 2
    assert "usage-rollup" in fired.stderr and "monthly-invoicing" in fired.stderr
