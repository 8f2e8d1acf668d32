"""The local Cloud Scheduler: every scheduled job of deploy.toml, published to the Pub/Sub emulator.

In production `make deploy` creates one Cloud Scheduler job per function with a `schedule`
(`gcloud scheduler jobs create pubsub NAME --schedule=... --time-zone=... --topic=...
--message-body=...`). The jobs here are read from those very commands (`devtools.deploy.commands`),
so the local topic, cron, time zone, body and attributes are the deployed ones by construction.

Cron is Cloud Scheduler's unix-cron: five fields, minute hour day-of-month month day-of-week,
each `*`, a value, a range `a-b`, a step after `*` or a range (`*/15`, `0-23/2`), or a list of
those; months JAN-DEC and days SUN-SAT by name too, day-of-week 0 or 7 for Sunday. As in Vixie
cron, when both day fields are restricted a day matches either one (OR); a field that starts with
`*` (`*/2` too) counts as unrestricted, and then both must match. Times are evaluated on the
job's wall clock (UTC unless the job says otherwise); a wall time a DST change skips does not
run, one it repeats runs once, on its first pass. A run missed while the process was stopped or
asleep is not made up: the next one is the next cron time after now, as Cloud Scheduler does.

`make run` (`python -m devtools.stack run`) starts a `Scheduler` with the stack; the test stack
does not (`Stack(scheduler=True)` turns it on). By hand, against the running local stack:

    python -m devtools.scheduler list               # the jobs and their next run
    python -m devtools.scheduler fire usage-rollup  # publish one job's message now (make fire JOB=...)
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devtools.manifest import Manifest, load

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
# A cron that cannot run within this many years of a time never runs (Feb 29 needs at most 8).
SEARCH_YEARS = 30
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # most days each month can have


class CronError(ValueError):
    pass


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_field(text: str, what: str, lo: int, hi: int, names: tuple[str, ...] = (),
                 first_name: int = 0) -> frozenset[int]:
    def number(token: str) -> int:
        if token.upper() in names:
            return names.index(token.upper()) + first_name
        if not _digits(token):
            raise CronError(f"{what}: {token!r} is not a number" + (f" or one of {'/'.join(names)}" if names else ""))
        value = int(token)
        if not lo <= value <= hi:
            raise CronError(f"{what}: {value} is outside {lo}-{hi}")
        return value

    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        if slash and (not _digits(step_text) or int(step_text) == 0):
            raise CronError(f"{what}: the step in {part!r} is not a positive number")
        step = int(step_text) if slash else 1
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = number(a), number(b)
            if start > end:
                raise CronError(f"{what}: the range {base!r} runs backwards")
        elif slash:
            raise CronError(f"{what}: a step follows `*` or a range, not {base!r}")
        else:
            start = end = number(base)
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed unix-cron expression; `next_after` gives its next time on a wall clock."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r}: a schedule has 5 fields (minute hour day-of-month month "
                            f"day-of-week), not {len(fields)}")
        minute, hour, day, month, weekday = fields
        weekdays = _parse_field(weekday, "day of week", 0, 7, DAY_NAMES)
        cron = cls(
            expression=" ".join(fields),
            minutes=_parse_field(minute, "minute", 0, 59),
            hours=_parse_field(hour, "hour", 0, 23),
            days=_parse_field(day, "day of month", 1, 31),
            months=_parse_field(month, "month", 1, 12, MONTH_NAMES, first_name=1),
            weekdays=frozenset(d % 7 for d in weekdays),
            # Vixie cron: a field starting with `*` is unrestricted, whatever follows it
            days_restricted=not day.startswith("*"),
            weekdays_restricted=not weekday.startswith("*"),
        )
        if cron.days_restricted and not cron.weekdays_restricted and not any(
                d <= MONTH_DAYS[m - 1] for m in cron.months for d in cron.days):
            raise CronError(f"{expression!r} never runs: no month has those days")
        return cron

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def matches(self, wall: dt.datetime) -> bool:
        """Whether the cron runs in this minute of its wall clock."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.day_matches(wall.date())

    def next_after(self, wall: dt.datetime) -> dt.datetime:
        """The first minute strictly after `wall` that the cron runs in (naive wall-clock times)."""
        t = wall.replace(second=0, microsecond=0, tzinfo=None) + MINUTE
        limit = t.year + SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = dt.datetime(t.year + t.month // 12, t.month % 12 + 1, 1)
            elif not self.day_matches(t.date()):
                t = dt.datetime.combine(t.date() + dt.timedelta(days=1), dt.time())
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += MINUTE
            else:
                return t
        raise CronError(f"{self.expression!r} does not run within {SEARCH_YEARS} years of {wall}")

    def next_run(self, after: dt.datetime, zone: dt.tzinfo = UTC) -> dt.datetime:
        """The first run strictly after the aware time `after`, in UTC, the cron read on `zone`'s
        wall clock: a wall time the zone skips never runs, one it repeats runs on its first pass."""
        if after.tzinfo is None:
            raise ValueError("next_run needs an aware datetime")
        wall = after.astimezone(zone).replace(tzinfo=None)
        while True:
            wall = self.next_after(wall)
            moment = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: a repeated time's first pass
            if moment.astimezone(zone).replace(tzinfo=None) != wall:
                continue  # in a gap: this wall time does not exist today
            if moment > after:
                return moment


# -- jobs: what `make deploy` configures ------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One Cloud Scheduler job with a Pub/Sub target."""

    name: str
    topic: str
    cron: Cron
    time_zone: str = "Etc/UTC"
    body: bytes = b""
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def zone(self) -> dt.tzinfo:
        return UTC if self.time_zone in ("UTC", "Etc/UTC") else ZoneInfo(self.time_zone)

    def next_run(self, after: dt.datetime) -> dt.datetime:
        return self.cron.next_run(after, self.zone)


SCHEDULER_CREATE = ["gcloud", "scheduler", "jobs", "create", "pubsub"]


def job_from_command(cmd: list[str]) -> Job:
    """A Job from a `gcloud scheduler jobs create pubsub NAME --flag=value ...` command."""
    if cmd[:5] != SCHEDULER_CREATE or len(cmd) < 6:
        raise ValueError(f"not a Pub/Sub scheduler job: {cmd}")
    flags: dict[str, str] = {}
    for arg in cmd[6:]:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"{cmd[5]}: unsupported argument {arg!r} (only --flag=value)")
        key, _, value = arg[2:].partition("=")
        flags[key] = value
    unsupported = set(flags) - {"project", "location", "schedule", "time-zone", "topic", "message-body",
                                "attributes", "description"}
    if unsupported:
        raise ValueError(f"{cmd[5]}: the local scheduler does not support {sorted(unsupported)}")
    attributes = dict(pair.split("=", 1) for pair in flags["attributes"].split(",")) if flags.get(
        "attributes") else {}
    return Job(name=cmd[5], topic=flags["topic"].rsplit("/", 1)[-1], cron=Cron.parse(flags["schedule"]),
               time_zone=flags.get("time-zone", "Etc/UTC"), body=flags.get("message-body", "").encode(),
               attributes=attributes)


def jobs(manifest: Manifest | None = None) -> list[Job]:
    """The Cloud Scheduler jobs `make deploy` would create for this manifest."""
    from devtools.deploy import PLACEHOLDER_PROJECT, commands

    manifest = manifest or load()
    return [job_from_command(cmd) for cmd in commands(manifest, PLACEHOLDER_PROJECT, Path(manifest.source))
            if cmd[:5] == SCHEDULER_CREATE]


# -- publishing to the emulator ----------------------------------------------------------

def emulator_publisher(pubsub_host: str, project: str) -> Callable[[Job], str]:
    """Publish a job's message to the Pub/Sub emulator's REST API; answers the message id."""
    if not project.startswith("demo-"):
        raise ValueError("the local scheduler publishes to demo- projects only")

    def publish(job: Job) -> str:
        message: dict[str, Any] = {"data": base64.b64encode(job.body).decode()}
        if job.attributes:
            message["attributes"] = job.attributes
        req = urllib.request.Request(
            f"http://{pubsub_host}/v1/projects/{project}/topics/{job.topic}:publish",
            json.dumps({"messages": [message]}).encode(), {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(json.loads(resp.read())["messageIds"][0])

    return publish


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class Scheduler:
    """Publishes each job on its cron. `tick()` fires what is due at the clock's time (tests drive
    it with their own clock); `start()` ticks in a thread until `stop()`."""

    def __init__(self, jobs: Iterable[Job], publish: Callable[[Job], str],
                 clock: Callable[[], dt.datetime] = utcnow, log: Callable[[str], None] | None = None,
                 poll: float = 1.0) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.publish = publish
        self.clock = clock
        self.log = log or (lambda line: print(line, flush=True))
        self.poll = poll  # the longest the thread sleeps: a changed wall clock is noticed within it
        now = clock()
        self.next_runs = {job.name: job.next_run(now) for job in self.jobs.values()}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def fire(self, name: str) -> str:
        """Publish one job's message now (its schedule is unchanged)."""
        job = self.jobs[name]
        message_id = self.publish(job)
        self.log(f"scheduler: {job.name} -> topic {job.topic} (message {message_id})")
        return message_id

    def tick(self) -> list[str]:
        """Fire every job whose run time has come; each then waits for its next cron time after
        now (runs missed meanwhile are not made up). Answers the names fired."""
        now = self.clock()
        fired = []
        for name, due in sorted(self.next_runs.items(), key=lambda item: item[1]):
            if due > now:
                continue
            self.next_runs[name] = self.jobs[name].next_run(now)
            try:
                self.fire(name)
            except (OSError, ValueError, KeyError) as exc:  # the emulator is down or answered oddly
                self.log(f"scheduler: {name} could not be published: {exc}")
                continue
            fired.append(name)
        return fired

    def describe(self) -> list[str]:
        return [f"{job.name:<19} {job.cron.expression:<13} {job.time_zone:<8} -> topic {job.topic:<19} "
                f"next {self.next_runs[job.name]:%Y-%m-%d %H:%M} UTC"
                for job in sorted(self.jobs.values(), key=lambda j: (self.next_runs[j.name], j.name))]

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="local-cloud-scheduler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.tick()
            if not self.next_runs:
                return
            wait = (min(self.next_runs.values()) - self.clock()).total_seconds()
            self._stopping.wait(min(max(wait, 0.01), self.poll))

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


# -- the CLI -----------------------------------------------------------------------------

def _target(args: argparse.Namespace) -> tuple[str, str]:
    """The Pub/Sub emulator and project to publish to: the flags, else the environment
    (PUBSUB_EMULATOR_HOST, SIMPLYTALK_PROJECT), else `make run`'s defaults."""
    from devtools.stack import LOOPBACK, Ports

    host = args.pubsub_host or os.environ.get("PUBSUB_EMULATOR_HOST") or f"{LOOPBACK}:{Ports().pubsub}"
    project = args.project or os.environ.get("SIMPLYTALK_PROJECT") or "demo-simplytalk"
    return host, project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the jobs of deploy.toml and their next run")
    p_fire = sub.add_parser("fire", help="publish a job's message now to the running local stack")
    p_fire.add_argument("job", help="the job (its function's name), e.g. usage-rollup")
    p_fire.add_argument("--pubsub-host", help="host:port of the Pub/Sub emulator (default: PUBSUB_EMULATOR_HOST, "
                                              "else the one `make run` starts)")
    p_fire.add_argument("--project", help="the demo- project (default: SIMPLYTALK_PROJECT, else demo-simplytalk)")
    args = parser.parse_args(argv)
    known = jobs()
    if args.command == "list":
        for line in Scheduler(known, publish=lambda job: "").describe():
            print(line)
        return 0
    names = sorted(job.name for job in known)
    if args.job not in names:
        print(f"no scheduled job {args.job!r}; deploy.toml schedules: {', '.join(names)}", file=sys.stderr)
        return 2
    host, project = _target(args)
    try:
        publish = emulator_publisher(host, project)
        Scheduler(known, publish).fire(args.job)
    except urllib.error.HTTPError as exc:
        print(f"the Pub/Sub emulator at {host} refused it ({exc.code} {exc.reason}): "
              f"is `make run` running for {project}?", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"could not publish to the Pub/Sub emulator at {host} ({exc}): is `make run` running?",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
