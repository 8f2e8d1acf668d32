"""The local stack: Firestore, Auth and Pub/Sub emulators and the functions host.

`python -m devtools.stack run` (what `make run` calls) starts everything on the
ports of DESIGN.md, registers the Firestore triggers of deploy.toml with the
emulator, publishes the scheduled jobs on their cron as Cloud Scheduler does
(devtools/scheduler.py; `--no-scheduler` not), prints the URLs and the jobs' next
runs and waits; SIGINT or SIGTERM stops every process it started (each runs in
its own process group, so nothing is orphaned). The test suite uses the same
`Stack` on free ports, without the scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from devtools.manifest import ROOT, Function, Manifest, load
from devtools.scheduler import Scheduler, emulator_publisher
from devtools.scheduler import jobs as scheduler_jobs

FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
LOOPBACK = "127.0.0.1"
# Functions served by a host process of their own: long-running tap runs, as their own
# Cloud Run service in production; tests kill and restart it to play a dying instance.
OWN_HOST = ("realtime-tap",)


@dataclass(frozen=True)
class Ports:
    firestore: int = 8080
    auth: int = 9099
    pubsub: int = 8085
    functions: int = 5001
    hub: int = 4400
    logging: int = 4500
    stripe: int = 12111
    openai: int = 12112
    taps: int = 5002  # the realtime-tap function's own host (a service of its own, as deployed)

    @classmethod
    def free(cls) -> Ports:
        socks = []
        for _ in range(9):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return cls(*ports)


def sdk_root() -> Path:
    for candidate in (os.environ.get("CLOUDSDK_ROOT"), "/usr/lib/google-cloud-sdk",
                      "/usr/share/google-cloud-sdk", "/google-cloud-sdk"):
        if candidate and (Path(candidate) / "platform").is_dir():
            return Path(candidate)
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise RuntimeError("Google Cloud CLI not found (needed for its Firestore and Pub/Sub emulators)")
    out = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOOPBACK, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


@dataclass
class Service:
    name: str
    argv: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None


class Stack:
    def __init__(self, project: str = "demo-simplytalk", ports: Ports | None = None,
                 workdir: Path | None = None, quiet_host: bool = True,
                 manifest: Manifest | None = None, host_env: dict[str, str] | None = None,
                 host_args: list[str] | None = None, scheduler: bool = False) -> None:
        if not project.startswith("demo-"):
            raise ValueError("the local stack only runs demo- projects")
        self.project = project
        self.ports = ports or Ports()
        self.workdir = workdir or ROOT / ".stack"
        self.quiet_host = quiet_host
        self.manifest = manifest or load()
        self.services: list[Service] = []
        # Extra settings for the functions host. Scraping local pages is a
        # test-only allowance (refused by config outside demo- projects).
        self.host_env = {"SIMPLYTALK_SCRAPE_ALLOW_LOOPBACK": "1", **(host_env or {})}
        self.host_args = host_args or []
        self.started_in: float | None = None
        # The local Cloud Scheduler (devtools/scheduler.py): `make run` turns it on; tests leave it
        # off, so no scheduled function runs unless a test publishes to its topic.
        self.run_scheduler = scheduler
        self.scheduler: Scheduler | None = None

    # -- addresses -------------------------------------------------------
    @property
    def firestore_host(self) -> str:
        return f"{LOOPBACK}:{self.ports.firestore}"

    @property
    def auth_host(self) -> str:
        return f"{LOOPBACK}:{self.ports.auth}"

    @property
    def pubsub_host(self) -> str:
        return f"{LOOPBACK}:{self.ports.pubsub}"

    @property
    def functions_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.functions}"

    @property
    def taps_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.taps}"

    def trigger_url(self, fn: Function) -> str:
        """Where an event function is delivered (realtime-tap runs on a host of its own)."""
        base = self.taps_url if fn.name in OWN_HOST else self.functions_url
        return f"{base}/functions/projects/{self.project}/triggers/{fn.name}"

    def function_url(self, name: str) -> str:
        return f"{self.functions_url}/{self.project}/{self.manifest.region}/{name}"

    def client_env(self) -> dict[str, str]:
        """What a client (or the functions host) needs to talk to this stack."""
        return {
            "SIMPLYTALK_PROJECT": self.project,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "FIREBASE_AUTH_EMULATOR_HOST": self.auth_host,
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "STRIPE_API_BASE": self.stripe_url,
            "OPENAI_BASE_URL": f"{self.openai_url}/v1",
        }

    @property
    def stripe_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.stripe}"

    @property
    def openai_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.openai}"

    @contextlib.contextmanager
    def exported_env(self) -> Iterator[None]:
        """Point this process's clients at the stack, and restore the environment after."""
        saved = {k: os.environ.get(k) for k in self.client_env()}
        os.environ.update(self.client_env())
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # -- processes -------------------------------------------------------
    def _services(self) -> list[Service]:
        sdk = sdk_root() / "platform"
        firestore_jar = sdk / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
        pubsub_jars = sorted((sdk / "pubsub-emulator" / "lib").glob("cloud-pubsub-emulator-*.jar"))
        if not firestore_jar.exists() or not pubsub_jars:
            raise RuntimeError(f"emulator jars missing under {sdk}")
        firebase = ROOT / "node_modules" / ".bin" / "firebase"
        if not firebase.exists():
            raise RuntimeError("firebase-tools missing: run `make setup`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        auth_config = self.workdir / "firebase.auth.json"
        auth_config.write_text(json.dumps({"emulators": {
            "auth": {"host": LOOPBACK, "port": self.ports.auth},
            "hub": {"host": LOOPBACK, "port": self.ports.hub},
            "logging": {"host": LOOPBACK, "port": self.ports.logging},
            "ui": {"enabled": False},
            "singleProjectMode": True,
        }}))
        p = self.ports
        return [
            Service("firestore", [
                "java", "-cp", str(firestore_jar), FIRESTORE_MAIN, "start",
                f"--host={LOOPBACK}", f"--port={p.firestore}", f"--project_id={self.project}",
                f"--rules={ROOT / 'firestore.rules'}", f"--functions_emulator={LOOPBACK}:{p.functions}",
            ], f"http://{self.firestore_host}/"),
            Service("pubsub", [
                "java", "-jar", str(pubsub_jars[-1]), f"--host={LOOPBACK}", f"--port={p.pubsub}",
            ], f"http://{self.pubsub_host}/v1/projects/{self.project}/topics"),
            Service("auth", [
                str(firebase), "emulators:start", "--only", "auth", "--project", self.project,
                "--config", str(auth_config),
            ], f"http://{self.auth_host}/", env={"FIREBASE_CLI_DISABLE_UPDATE_CHECK": "true"}),
            Service("stripe", [sys.executable, "-m", "devtools.fake_stripe", "--port", str(p.stripe)],
                    f"{self.stripe_url}/_fake/stats"),
            Service("openai", [sys.executable, "-m", "devtools.fake_openai", "--port", str(p.openai)],
                    f"{self.openai_url}/_fake/stats"),
            Service("functions", [
                sys.executable, "-m", "devtools.host", "--port", str(p.functions),
                *(["--quiet"] if self.quiet_host else []), *self.host_args,
            ], f"{self.functions_url}/", env={**self.client_env(), **self.host_env}),
            Service("taps", [
                sys.executable, "-m", "devtools.host", "--port", str(p.taps), "--only", ",".join(OWN_HOST),
                *(["--quiet"] if self.quiet_host else []),
            ], f"{self.taps_url}/", env={**self.client_env(), **self.host_env}),
        ]

    def start(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        services = self._services()
        busy = [port for port in (self.ports.firestore, self.ports.auth, self.ports.pubsub,
                                  self.ports.functions, self.ports.hub, self.ports.stripe, self.ports.openai,
                                  self.ports.taps) if port_open(port)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy} (is another stack running?)")
        try:
            for svc in services:
                self._spawn(svc)
            for svc in services:
                self._wait_ready(svc, t0 + timeout)
            self.register_triggers()
            self.wire_pubsub()
            self.wire_stripe_webhooks()
            if self.run_scheduler:
                self.scheduler = Scheduler(scheduler_jobs(self.manifest),
                                           emulator_publisher(self.pubsub_host, self.project))
                self.scheduler.start()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0

    def _spawn(self, svc: Service, append: bool = False) -> None:
        svc.log = open(self.workdir / f"{svc.name}.log", "ab" if append else "wb")  # noqa: SIM115 (closed in stop)
        stream_host = svc.name == "functions" and not self.quiet_host
        svc.proc = subprocess.Popen(
            svc.argv, cwd=ROOT, env={**os.environ, **svc.env},
            stdout=None if stream_host else svc.log, stderr=subprocess.STDOUT if not stream_host else None,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.services.append(svc)

    def _wait_ready(self, svc: Service, deadline: float) -> None:
        assert svc.proc is not None
        while time.monotonic() < deadline:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}; see "
                                   f"{self.workdir / (svc.name + '.log')}")
            if http_ok(svc.ready_url):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{svc.name} not ready at {svc.ready_url}")

    def register_triggers(self) -> None:
        """Register each Firestore trigger of deploy.toml, as Eventarc does on deploy."""
        for fn in self.manifest.by_trigger("firestore"):
            body = json.dumps({
                "eventType": fn.event_type, "database": "(default)", "namespace": "(default)",
                "document": {"value": fn.document, "matchType": "PATH_PATTERN"},
            }).encode()
            url = (f"http://{self.firestore_host}/emulator/v1/projects/{self.project}"
                   f"/eventarcTrigger?eventarcTriggerId={fn.name}")
            req = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()

    def wire_pubsub(self) -> None:
        """Each Pub/Sub function's topic, with a push subscription to the functions host
        (what Eventarc sets up in production; Cloud Scheduler publishes to the topic there)."""
        base = f"http://{self.pubsub_host}/v1/projects/{self.project}"
        for fn in self.manifest.by_trigger("pubsub"):
            _put(f"{base}/topics/{fn.topic}", {})
            _put(f"{base}/subscriptions/{fn.name}-push", {
                "topic": f"projects/{self.project}/topics/{fn.topic}",
                "pushConfig": {"pushEndpoint": self.trigger_url(fn)},
                "ackDeadlineSeconds": fn.ack_deadline or 60,
                **({"retryPolicy": {"minimumBackoff": fn.retry_backoff[0], "maximumBackoff": fn.retry_backoff[1]}}
                   if fn.retry_backoff else {}),
            })

    def wire_stripe_webhooks(self) -> None:
        """The local Stripe sends signed events to stripe-webhook, as a Stripe webhook endpoint does."""
        body = json.dumps({"url": self.function_url("stripe-webhook"),
                           "secret": os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_local")}).encode()
        req = urllib.request.Request(f"{self.stripe_url}/_fake/webhook", body,
                                     {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        import base64

        data = base64.b64encode(json.dumps(message).encode()).decode()
        req = urllib.request.Request(
            f"http://{self.pubsub_host}/v1/projects/{self.project}/topics/{topic}:publish",
            json.dumps({"messages": [{"data": data}]}).encode(), {"Content-Type": "application/json"},
            method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL a service's whole process group, as an instance dies (tests)."""
        svc = self.service(name)
        assert svc.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait()

    def restart(self, name: str, timeout: float = 30.0) -> None:
        svc = self.service(name)
        if svc.log:
            svc.log.close()
        self.services.remove(svc)
        self._spawn(svc, append=True)
        self._wait_ready(svc, time.monotonic() + timeout)

    def stop(self, grace: float = 10.0) -> None:
        if self.scheduler is not None:  # before the emulator it publishes to
            self.scheduler.stop()
            self.scheduler = None
        for svc in self.services:
            if svc.proc and svc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(svc.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for svc in self.services:
            if svc.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
                os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait()
            if svc.log:
                svc.log.close()
        self.services.clear()

    # -- data ------------------------------------------------------------
    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Wait (up to `timeout`) until the local Stripe has no webhook left to send and the functions
        host handles no trigger or Pub/Sub delivery, so a test's wipe does not race the last one's
        writes (a usage follow-up waits about a second; a late Stripe event writes the user's profile)."""
        deadline = time.monotonic() + timeout
        for url, key in ((f"{self.stripe_url}/_fake/outbox", "pending"),  # the local Stripe's webhooks first
                         (f"{self.functions_url}/_host/in-flight", "inFlight")):
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if json.loads(response.read()).get(key) == 0:
                            break
                except (OSError, ValueError):
                    return False  # cannot tell: say so rather than report quiet
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True

    def clear_firestore(self, timeout: float = 10.0) -> None:
        """Delete every document. The emulator answers 409 while a transaction
        (a trigger still running) holds locks, so retry until it is free."""
        url = f"http://{self.firestore_host}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def banner(self) -> str:
        lines = [f"SimplyTalk local stack ({self.project}) up in {self.started_in or 0:.1f} s"]
        lines += [f"  Firestore emulator  http://{self.firestore_host}  (rules: firestore.rules)",
                  f"  Auth emulator       http://{self.auth_host}",
                  f"  Pub/Sub emulator    http://{self.pubsub_host}",
                  f"  local Stripe        {self.stripe_url}  (webhooks -> stripe-webhook)",
                  f"  local OpenAI        {self.openai_url}  (Realtime calls and sidebands; "
                  "/_fake/calls/{id}/... plays the caller)"]
        for fn in self.manifest.functions:
            if fn.trigger == "http":
                lines.append(f"  {fn.name:<19} {self.function_url(fn.name)}")
            else:
                lines.append(f"  {fn.name:<19} {fn.trigger}: {fn.document or 'topic ' + str(fn.topic)}")
        if self.scheduler is not None:
            lines.append("  Cloud Scheduler (local; `make fire JOB=name` publishes one now):")
            lines += [f"    {line}" for line in self.scheduler.describe()]
        lines.append(f"  logs                {self.workdir}/*.log")
        lines.append("Ctrl-C stops everything.")
        return "\n".join(lines)


def _put(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"},
                                 method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already exists
            raise


def run(args: argparse.Namespace) -> int:
    stack = Stack(project=args.project, quiet_host=False, scheduler=not args.no_scheduler)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        print(stack.banner(), flush=True)
        while not stopping.is_set():
            dead = [s.name for s in stack.services if s.proc and s.proc.poll() is not None]
            if dead:
                print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
                return 1
            stopping.wait(0.5)
    finally:
        stack.stop()
        print("stack stopped", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="start the stack and wait for Ctrl-C")
    p_run.add_argument("--project", default=os.environ.get("SIMPLYTALK_PROJECT", "demo-simplytalk"))
    p_run.add_argument("--no-scheduler", action="store_true",
                       help="do not publish the scheduled jobs of deploy.toml on their cron")
    args = parser.parse_args()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
