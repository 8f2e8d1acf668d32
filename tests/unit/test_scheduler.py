"""The local Cloud Scheduler: unix-cron parsing, next run times, and firing on an injected clock."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from devtools.manifest import load
from devtools.scheduler import (
    MONTH_DAYS,
    Cron,
    CronError,
    Job,
    Scheduler,
    emulator_publisher,
    job_from_command,
    jobs,
)
from devtools.stack import Stack

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def wall(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# -- parsing ----------------------------------------------------------------------------

def test_fields_lists_ranges_and_steps() -> None:
    cron = Cron.parse("0,15-17,*/20 */6 1-10/3 */5 1-5")
    assert cron.minutes == {0, 15, 16, 17, 20, 40}
    assert cron.hours == {0, 6, 12, 18}
    assert cron.days == {1, 4, 7, 10}
    assert cron.months == {1, 6, 11}
    assert cron.weekdays == {1, 2, 3, 4, 5}
    assert cron.days_restricted and cron.weekdays_restricted


def test_star_is_first_to_last() -> None:
    cron = Cron.parse("* * * * *")
    assert cron.minutes == set(range(60)) and cron.hours == set(range(24))
    assert cron.days == set(range(1, 32)) and cron.months == set(range(1, 13))
    assert cron.weekdays == set(range(7))
    assert not cron.days_restricted and not cron.weekdays_restricted


def test_names_and_seven_for_sunday() -> None:
    assert Cron.parse("0 0 * jan,Jul-SEP sun").months == {1, 7, 8, 9}
    assert Cron.parse("0 0 * * 7").weekdays == Cron.parse("0 0 * * SUN").weekdays == {0}
    assert Cron.parse("0 0 * * MON-FRI").weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert Cron.parse("0 0 * * 0-7").weekdays == set(range(7))


def test_whitespace_between_fields_is_free() -> None:
    assert Cron.parse("  0\t3  1 * *  ").expression == "0 3 1 * *"


@pytest.mark.parametrize("expression", [
    "* * * *",              # four fields
    "* * * * * *",          # six (no seconds, no year)
    "@daily",               # no macros
    "60 * * * *",           # minute out of range
    "* 24 * * *",
    "* * 0 * *",            # days start at 1
    "* * 32 * *",
    "* * * 13 *",
    "* * * 0 *",
    "* * * * 8",
    "5-1 * * * *",          # backwards
    "*/0 * * * *",          # step 0
    "5/15 * * * *",         # a step needs * or a range
    "*/x * * * *",
    "\u00b2 * * * *",         # digits are ASCII digits
    "1,,2 * * * *",         # empty list item
    "a * * * *",
    "-1 * * * *",
    "* * * foo *",
    "* * L * *",            # no last-day-of-month
    "0 0 30 2 *",           # never runs: no February 30th
    "0 0 31 4,6,9,11 *",
])
def test_invalid_expressions_are_refused(expression: str) -> None:
    with pytest.raises(CronError):
        Cron.parse(expression)


def test_a_restricted_weekday_makes_an_impossible_day_possible() -> None:
    # February 30th OR any Monday in February (Vixie): runs on February's Mondays
    cron = Cron.parse("0 0 30 2 MON")
    assert cron.next_after(wall("2026-01-01T00:00")) == wall("2026-02-02T00:00")


# -- next run: known answers ----------------------------------------------------------------

@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("* * * * *", "2026-11-26T12:00:30", "2026-11-26T12:01"),
    ("* * * * *", "2026-11-26T12:00:00", "2026-11-26T12:01"),      # strictly after
    ("* * * * *", "2026-12-31T23:59:59.9", "2027-01-01T00:00"),
    ("*/15 * * * *", "2026-11-26T10:44", "2026-11-26T10:45"),
    ("*/15 * * * *", "2026-11-26T10:45", "2026-11-26T11:00"),
    ("0 3 1 * *", "2026-01-15T00:00", "2026-02-01T03:00"),          # monthly-invoicing
    ("0 3 1 * *", "2026-12-01T03:00", "2027-01-01T03:00"),
    ("0 3 1 * *", "2026-12-01T02:59:59", "2026-12-01T03:00"),
    ("59 23 31 12 *", "2026-12-31T23:59", "2027-12-31T23:59"),
    ("0 9 * * MON-FRI", "2026-11-27T09:00", "2026-11-30T09:00"),    # Friday -> Monday
    ("0 0 29 2 *", "2097-03-01T00:00", "2104-02-29T00:00"),         # 2100 is no leap year
    ("0 0 31 * *", "2026-01-31T00:00", "2026-03-31T00:00"),         # February has none
    ("30 2-4/2 * * *", "2026-11-26T02:30", "2026-11-26T04:30"),
    ("0 0 1 jan,jul *", "2026-01-01T00:00", "2026-07-01T00:00"),
    # both day fields restricted: either matches (Thursday 26th -> Monday 30th, then Tuesday 1st)
    ("0 0 1 * MON", "2026-11-26T00:00", "2026-11-30T00:00"),
    ("0 0 1 * MON", "2026-11-30T00:00", "2026-12-01T00:00"),
    ("0 0 1 * MON", "2026-12-01T00:00", "2026-12-07T00:00"),
    # a field starting with `*` is unrestricted (Vixie), so both must match: an odd day AND a
    # Monday (OR would give Friday the 27th)
    ("0 0 */2 * MON", "2026-11-26T00:00", "2026-12-07T00:00"),
    # `*/7` is Sunday alone, yet unrestricted: the 13th AND a Sunday (Friday Nov 13th does not run)
    ("0 0 13 * */7", "2026-11-01T00:00", "2026-12-13T00:00"),
    ("0 0 13 * */7", "2026-12-13T00:00", "2027-06-13T00:00"),
])
def test_next_after_known_answers(expression: str, after: str, expected: str) -> None:
    assert Cron.parse(expression).next_after(wall(after)) == wall(expected)


def test_next_run_is_in_utc_and_strictly_later() -> None:
    cron = Cron.parse("0 3 1 * *")
    assert cron.next_run(at("2026-11-26T03:41:12")) == at("2026-12-01T03:00")
    with pytest.raises(ValueError):
        cron.next_run(wall("2026-11-26T03:41"))  # naive


def berlin() -> ZoneInfo:
    try:
        return ZoneInfo("Europe/Berlin")
    except ZoneInfoNotFoundError:
        pytest.skip("no time zone database")


def test_a_wall_time_skipped_by_dst_does_not_run() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day
    cron = Cron.parse("30 2 * * *")
    assert cron.next_run(at("2026-03-28T12:00"), berlin()) == at("2026-03-30T00:30")  # 02:30 CEST
    # every 15 minutes goes straight from 01:45 CET to 03:00 CEST (one real quarter hour)
    assert Cron.parse("*/15 * * * *").next_run(at("2026-03-29T00:45"), berlin()) == at("2026-03-29T01:00")


def test_a_wall_time_repeated_by_dst_runs_once() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, the job runs on the first
    cron = Cron.parse("30 2 * * *")
    first = cron.next_run(at("2026-10-24T12:00"), berlin())
    assert first == at("2026-10-25T00:30")  # 02:30 CEST
    assert cron.next_run(first, berlin()) == at("2026-10-26T01:30")  # 02:30 CET the next day


# -- next run: against a brute-force search on the sets the expression was built from ------

@dataclass
class Built:
    text: str
    values: set[int]
    starred: bool


def field_strategy(lo: int, hi: int) -> st.SearchStrategy[Built]:
    span = hi - lo + 1

    def star_step(step: int) -> Built:
        return Built(f"*/{step}" if step > 1 else "*", set(range(lo, hi + 1, step)), True)

    @st.composite
    def items(draw: st.DrawFn) -> Built:
        texts, values = [], set()
        for _ in range(draw(st.integers(1, 3))):
            a = draw(st.integers(lo, hi))
            kind = draw(st.sampled_from(["value", "range", "stepped"]))
            if kind == "value":
                texts.append(str(a))
                values.add(a)
                continue
            b = draw(st.integers(a, hi))
            step = draw(st.integers(2, span)) if kind == "stepped" else 1
            texts.append(f"{a}-{b}" + (f"/{step}" if kind == "stepped" else ""))
            values.update(range(a, b + 1, step))
        return Built(",".join(texts), values, False)

    return st.one_of(st.integers(1, span).map(star_step), items())


def brute_force_next(after: dt.datetime, fields: list[Built]) -> dt.datetime | None:
    minute, hour, day, month, weekday = fields
    weekdays = {d % 7 for d in weekday.values}
    date = after.date()
    for _ in range(366 * 9):
        if date.month in month.values:
            in_day, in_weekday = date.day in day.values, date.isoweekday() % 7 in weekdays
            if (in_day or in_weekday) if not (day.starred or weekday.starred) else (in_day and in_weekday):
                for h in sorted(hour.values):
                    for m in sorted(minute.values):
                        candidate = dt.datetime.combine(date, dt.time(h, m))
                        if candidate > after:
                            return candidate
        date += dt.timedelta(days=1)
    return None


@given(
    fields=st.tuples(field_strategy(0, 59), field_strategy(0, 23), field_strategy(1, 31),
                     field_strategy(1, 12), field_strategy(0, 7)),
    after=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 12, 31)),
)
def test_next_after_is_the_first_matching_minute(fields: tuple[Built, ...], after: dt.datetime) -> None:
    built = list(fields)
    _, _, day, month, weekday = built
    expression = " ".join(f.text for f in built)
    # only a restricted day of month with an unrestricted day of week can rule out every day
    possible = day.starred or not weekday.starred or any(
        d <= MONTH_DAYS[m - 1] for m in month.values for d in day.values)
    if not possible:
        with pytest.raises(CronError):
            Cron.parse(expression)
        return
    cron = Cron.parse(expression)
    expected = brute_force_next(after, built)
    assume(expected is not None)  # rarer than once in 9 years (a February 29th that is also a Sunday...)
    got = cron.next_after(after)
    assert got == expected
    assert cron.matches(got)


# -- the jobs `make deploy` configures --------------------------------------------------------

def test_the_jobs_are_deploy_tomls_schedules_with_the_deployed_message() -> None:
    scheduled = {fn.name: fn for fn in load().functions if fn.schedule}
    found = {job.name: job for job in jobs()}
    assert set(found) == set(scheduled) >= {"usage-rollup", "realtime-watchdog", "monthly-invoicing"}
    for name, job in found.items():
        assert job.topic == scheduled[name].topic
        assert job.cron.expression == scheduled[name].schedule
        assert job.time_zone == "UTC"        # `make deploy` passes --time-zone=UTC
        assert job.body == b"{}"             # and --message-body={}
        assert job.attributes == {}


def test_a_scheduler_command_is_read_flag_by_flag() -> None:
    job = job_from_command(["gcloud", "scheduler", "jobs", "create", "pubsub", "nightly", "--project=p",
                            "--location=us-central1", "--schedule=0 2 * * *", "--time-zone=Europe/Berlin",
                            "--topic=projects/p/topics/nightly-topic", '--message-body={"a": 1}',
                            "--attributes=kind=nightly,source=scheduler"])
    assert (job.name, job.topic, job.time_zone) == ("nightly", "nightly-topic", "Europe/Berlin")
    assert job.body == b'{"a": 1}'
    assert job.attributes == {"kind": "nightly", "source": "scheduler"}
    with pytest.raises(ValueError, match="does not support"):
        job_from_command(["gcloud", "scheduler", "jobs", "create", "pubsub", "x", "--schedule=* * * * *",
                          "--topic=t", "--message-body-from-file=body.json"])
    with pytest.raises(ValueError):
        job_from_command(["gcloud", "scheduler", "jobs", "create", "http", "x", "--schedule=* * * * *"])


def test_the_publisher_is_for_demo_projects_only() -> None:
    with pytest.raises(ValueError):
        emulator_publisher("127.0.0.1:8085", "my-real-project")


def test_the_stack_runs_no_scheduler_unless_asked() -> None:
    assert Stack(project="demo-x").run_scheduler is False
    assert Stack(project="demo-x", scheduler=True).run_scheduler is True


# -- the scheduler on a test clock -------------------------------------------------------------

class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now

    def set(self, now: dt.datetime) -> None:
        with self.lock:
            self.now = now


class Recorder:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.published: list[str] = []
        self.fail = fail or set()
        self.event = threading.Event()

    def __call__(self, job: Job) -> str:
        if job.name in self.fail:
            raise ConnectionRefusedError("emulator down")
        self.published.append(job.name)
        self.event.set()
        return str(len(self.published))


# today's scheduled jobs, fixed here so that a job added to deploy.toml changes no expectation below
JOBS = [Job("usage-rollup", "usage-rollup", Cron.parse("* * * * *"), "UTC", b"{}"),
        Job("realtime-watchdog", "realtime-watchdog", Cron.parse("* * * * *"), "UTC", b"{}"),
        Job("monthly-invoicing", "monthly-invoicing", Cron.parse("0 3 1 * *"), "UTC", b"{}")]


def make(now: str, publish: Recorder) -> tuple[Scheduler, Clock, list[str]]:
    clock, lines = Clock(at(now)), list[str]()
    return Scheduler(JOBS, publish, clock=clock, log=lines.append), clock, lines


def test_jobs_fire_when_due_and_only_then() -> None:
    publish = Recorder()
    scheduler, clock, lines = make("2026-11-30T02:58:30", publish)
    assert scheduler.next_runs == {"usage-rollup": at("2026-11-30T02:59"), "realtime-watchdog": at("2026-11-30T02:59"),
                                   "monthly-invoicing": at("2026-12-01T03:00")}
    assert scheduler.tick() == [] and publish.published == []
    clock.set(at("2026-11-30T02:59:00"))
    assert sorted(scheduler.tick()) == ["realtime-watchdog", "usage-rollup"]
    assert scheduler.tick() == []  # once a minute
    assert scheduler.next_runs["usage-rollup"] == at("2026-11-30T03:00")
    assert any("usage-rollup -> topic usage-rollup" in line for line in lines)
    clock.set(at("2026-12-01T03:00:00.2"))
    assert sorted(scheduler.tick()) == ["monthly-invoicing", "realtime-watchdog", "usage-rollup"]
    assert scheduler.next_runs["monthly-invoicing"] == at("2027-01-01T03:00")


def test_missed_runs_are_not_made_up() -> None:
    publish = Recorder()
    scheduler, clock, _ = make("2026-11-30T10:00:10", publish)
    clock.set(at("2026-11-30T10:42:30"))  # asleep for 42 minutes
    scheduler.tick()
    assert publish.published.count("usage-rollup") == 1
    assert scheduler.next_runs["usage-rollup"] == at("2026-11-30T10:43")


def test_a_failed_publish_is_logged_and_the_job_waits_for_its_next_time() -> None:
    publish = Recorder(fail={"usage-rollup"})
    scheduler, clock, lines = make("2026-11-30T10:00:10", publish)
    clock.set(at("2026-11-30T10:01:00"))
    assert scheduler.tick() == ["realtime-watchdog"]
    assert any("usage-rollup could not be published" in line for line in lines)
    assert scheduler.next_runs["usage-rollup"] == at("2026-11-30T10:02")


def test_fire_publishes_now_and_keeps_the_schedule() -> None:
    publish = Recorder()
    scheduler, _, _ = make("2026-11-30T10:00:10", publish)
    before = dict(scheduler.next_runs)
    scheduler.fire("monthly-invoicing")
    assert publish.published == ["monthly-invoicing"]
    assert scheduler.next_runs == before
    with pytest.raises(KeyError):
        scheduler.fire("token-usage")  # an HTTP function: no job


def test_the_thread_fires_on_the_clock_and_stops() -> None:
    publish = Recorder()
    clock = Clock(at("2026-11-30T10:00:10"))
    scheduler = Scheduler(JOBS, publish, clock=clock, log=lambda _: None, poll=0.01)
    scheduler.start()
    try:
        assert not publish.event.wait(0.1)
        clock.set(at("2026-11-30T10:01:00"))
        assert publish.event.wait(5)
    finally:
        scheduler.stop()
    assert scheduler._thread is None
    assert sorted(publish.published) == ["realtime-watchdog", "usage-rollup"]


def test_describe_lists_every_job_with_its_next_run() -> None:
    scheduler, _, _ = make("2026-11-30T10:00:10", Recorder())
    text = "\n".join(scheduler.describe())
    assert "monthly-invoicing" in text and "0 3 1 * *" in text and "next 2026-12-01 03:00 UTC" in text
    assert "usage-rollup" in text and "next 2026-11-30 10:01 UTC" in text
