"""Realtime calls: how many calls one tap process watches at once and the usage events a
second it records (against a naive tap that records each response in a transaction), the
time from OpenAI's `response.done` to the usage counted in `token-usage`, and the start-call
latency against the bare authenticated endpoint. All against the local OpenAI server."""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from simplytalk.clock import utcnow
from simplytalk.config import Settings
from simplytalk.models import OpenAIAssistant
from simplytalk.openai_gateway import OpenAIRealtime
from simplytalk.realtime import RecordResponse, StartCall, WatchPolicy
from simplytalk.repositories.accounts import FirestoreAccounts
from simplytalk.repositories.calls import CallRecord, FirestoreCalls, response_event
from simplytalk.services import realtime_calls as calls_svc
from simplytalk.services.realtime_deps import RealtimeDeps
from simplytalk.services.realtime_tap import TapSettings, run_tap
from simplytalk.tap_queue import InMemoryTapQueue

from devtools.bench.quiet import quiet_stack
from devtools.emulator_auth import sign_up
from devtools.stack import Stack

OFFER = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
         "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n")
USAGE = {"total_tokens": 300, "input_tokens": 200, "output_tokens": 100,
         "input_token_details": {"text_tokens": 20, "audio_tokens": 180, "image_tokens": 0, "cached_tokens": 0,
                                 "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
         "output_token_details": {"text_tokens": 20, "audio_tokens": 80}}
LOADS = (10, 50, 100, 200)  # calls watched at once by one process
RESPONSES_PER_CALL = 5
SETTINGS = TapSettings(run_seconds=600, lease_seconds=15, tick_seconds=0.25,
                       policy=WatchPolicy(max_call_seconds=3600, idle_seconds=600, max_tampering=3,
                                          free_minutes=30))


def _pcts(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _rss_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class NaiveCalls(FirestoreCalls):
    """The naive tap: a read-modify-write transaction per response (marker check, event, call totals)."""

    def record_response(self, record: CallRecord, rec: RecordResponse, now: dt.datetime,
                        store_lines: bool) -> bool:
        event_ref = self.db.collection("usageEvents").document(rec.response_id)
        call_ref = self.db.collection("realtimeCalls").document(record.id)

        @firestore.transactional
        def txn(tx: Any) -> bool:
            if event_ref.get(transaction=tx).exists:
                return False
            call = call_ref.get(transaction=tx).to_dict() or {}
            used = dict(call.get("usage") or {})
            for key in ("totalTokens", "inputTokens", "outputTokens"):
                used[key] = int(used.get(key) or 0) + int((rec.usage or {}).get(key) or 0)
            tx.set(event_ref, response_event(record, rec, now))
            tx.update(call_ref, {"usage": used, "responses": int(call.get("responses") or 0) + 1})
            return True

        return bool(txn(self.db.transaction()))


def _tap_load(stack: Stack, db: Any, calls_repo: FirestoreCalls, calls: int, label: str) -> dict[str, Any]:
    """`calls` calls, each watched by a tap run in this one process; every call gets
    RESPONSES_PER_CALL responses from the local OpenAI as fast as it can send them."""
    uid = f"bench-tap-{label}-{calls}"
    now = utcnow()
    assistant = OpenAIAssistant.model_validate({"id": f"asst-{uid}", "userId": uid, "name": "Bench",
                                                "systemPrompt": "Be brief.", "createdAt": now, "updatedAt": now})
    db.collection("openaiAssistants").document(assistant.id).set(assistant.to_firestore())
    db.collection("users").document(uid).set({"isSubscribed": True})
    from openai import OpenAI

    gateway = OpenAIRealtime(lambda: OpenAI(api_key="sk-local", base_url=f"{stack.openai_url}/v1", max_retries=2))
    deps = RealtimeDeps(calls=calls_repo, accounts=FirestoreAccounts(db), gateway=gateway,
                        taps=InMemoryTapQueue(), clock=utcnow)
    limits = calls_svc.CallLimits("gpt-realtime-1.5", 30, calls)
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda _: calls_svc.start_call(
            deps, limits, uid, StartCall(assistant_id=assistant.id, sdp=OFFER)).record.id, range(calls)))
    threads = [threading.Thread(target=run_tap, args=(deps, SETTINGS, cid, 0, f"bench-{cid}"), daemon=True)
               for cid in ids]
    rss_before = _rss_mb()
    t_connect = time.monotonic()
    for thread in threads:
        thread.start()
    control = f"{stack.openai_url}/_fake/calls"
    http = requests.Session()

    def all_watched() -> bool:
        known = {c["id"]: c for c in http.get(control, timeout=30).json()["calls"]}
        return all(known[i]["sidebandConnections"] >= 1 for i in ids)

    while not all_watched():
        time.sleep(0.05)
    connect_s = time.monotonic() - t_connect
    rss_per_call = (_rss_mb() - rss_before) / calls

    expected = calls * RESPONSES_PER_CALL
    start = time.monotonic()
    local = threading.local()

    def respond(call_id: str) -> None:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        for _ in range(RESPONSES_PER_CALL):
            local.http.post(f"{control}/{call_id}/responses", json={"usage": USAGE}, timeout=60).raise_for_status()

    with ThreadPoolExecutor(min(32, calls)) as pool:
        list(pool.map(respond, ids))
    sent_s = time.monotonic() - start
    deadline = time.monotonic() + 120
    recorded = 0
    while time.monotonic() < deadline:
        recorded = sum(int((c.to_dict() or {}).get("responses") or 0) for c in
                       db.collection("realtimeCalls").where(filter=firestore.FieldFilter("userId", "==", uid))
                       .select(["responses"]).stream())
        if recorded >= expected:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    for call_id in ids:  # end the calls; the taps see it and stop
        http.post(f"{control}/{call_id}/end", timeout=30)
    for thread in threads:
        thread.join(timeout=30)
    exact = recorded == expected
    return {"tap": label, "calls_watched": calls, "responses": expected, "recorded": recorded, "exact": exact,
            "connect_all_s": round(connect_s, 2), "send_s": round(sent_s, 2), "record_all_s": round(elapsed, 2),
            "events_per_s": round(recorded / elapsed, 1), "rss_mb_per_call": round(rss_per_call, 2)}


def _subscriber(stack: Stack, email: str) -> tuple[requests.Session, str]:
    """A subscribed user's authenticated session and an assistant of theirs."""
    user = sign_up(stack.auth_host, email)
    http = requests.Session()
    http.headers.update(user.headers)
    db = firestore.Client(project=stack.project, credentials=AnonymousCredentials())
    db.collection("users").document(user.uid).set({"email": user.email, "isSubscribed": True})
    assistant_id = http.post(stack.function_url("openai-assistants"), json={"name": "Bench"}, timeout=30).json()["id"]
    return http, str(assistant_id)


def _counted_latency(stack: Stack) -> dict[str, Any]:
    """`response.done` sent by OpenAI -> the tokens visible in token-usage, through the whole stack."""
    http, assistant_id = _subscriber(stack, "bench-realtime-latency@example.com")
    call = http.post(stack.function_url("realtime-calls"), json={"assistantId": assistant_id, "sdp": OFFER},
                     timeout=30).json()
    control = f"{stack.openai_url}/_fake/calls/{call['callId']}"
    while requests.get(control, timeout=10).json()["sidebandConnections"] < 1:
        time.sleep(0.02)
    usage_url = stack.function_url("token-usage")
    samples = []
    total = 0
    for _ in range(30):
        requests.post(f"{control}/responses", json={"usage": USAGE}, timeout=30).raise_for_status()
        t0 = time.perf_counter()
        total += USAGE["total_tokens"]  # type: ignore[operator]
        while http.get(usage_url, timeout=30).json()["totals"]["totalTokens"] < total:
            if time.perf_counter() - t0 > 20:
                raise RuntimeError("usage not counted within 20 s")
        samples.append((time.perf_counter() - t0) * 1000)
    requests.post(f"{control}/end", timeout=10)
    p50, _ = _pcts(samples)
    return {"request": "response.done -> counted in token-usage (n=30, max as p99)", "n": len(samples),
            "p50_ms": round(p50, 1), "p99_ms": round(max(samples), 1), "p50_vs_bare": None}


def _takeover(stack: Stack, runs: int = 3) -> dict[str, Any]:
    """The process running a call's tap is killed: how long until a new run watches the call
    (Pub/Sub redelivery with the manifest's backoff, then the lease lapsing)."""
    http, assistant_id = _subscriber(stack, "bench-realtime-takeover@example.com")
    call = http.post(stack.function_url("realtime-calls"), json={"assistantId": assistant_id, "sdp": OFFER},
                     timeout=30).json()
    control = f"{stack.openai_url}/_fake/calls/{call['callId']}"

    def connects() -> int:
        state = requests.get(control, timeout=10).json()
        return int(state["sidebandConnects"]) if state["sidebandConnections"] >= 1 else -1

    samples = []
    for _ in range(runs):
        while connects() < 0:
            time.sleep(0.05)
        before = connects()
        t0 = time.perf_counter()
        stack.kill("taps")
        stack.restart("taps")
        while connects() <= before:
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("no tap watched the call again within 120 s")
            time.sleep(0.05)
        samples.append((time.perf_counter() - t0) * 1000)
        requests.post(f"{control}/responses", json={"usage": USAGE}, timeout=30).raise_for_status()
    requests.post(f"{control}/end", timeout=10)
    p50, _ = _pcts(samples)
    lease = Settings.from_env().tap_lease_seconds  # what the stack's tap runs with
    return {"request": f"tap process killed -> call watched again (n={runs}, max as p99; lease {lease} s)",
            "n": runs,
            "p50_ms": round(p50, 1), "p99_ms": round(max(samples), 1), "p50_vs_bare": None}


def _start_latency(stack: Stack) -> list[dict[str, Any]]:
    http, assistant_id = _subscriber(stack, "bench-realtime-start@example.com")
    url, bare = stack.function_url("realtime-calls"), stack.function_url("bench-bare")
    for _ in range(10):
        http.get(bare, timeout=10)
    bare_ms, start_ms, hangup_ms = [], [], []
    for _ in range(200):
        t0 = time.perf_counter()
        http.get(bare, timeout=10).raise_for_status()
        bare_ms.append((time.perf_counter() - t0) * 1000)
    for _ in range(40):
        t0 = time.perf_counter()
        response = http.post(url, json={"assistantId": assistant_id, "sdp": OFFER}, timeout=30)
        start_ms.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 201:
            raise RuntimeError(f"start failed: {response.status_code} {response.text[:300]}")
        t0 = time.perf_counter()
        http.delete(f"{url}/{response.json()['callId']}", timeout=30).raise_for_status()
        hangup_ms.append((time.perf_counter() - t0) * 1000)
    bare_p50, _ = _pcts(bare_ms)
    rows = []
    for name, samples in (("bare authenticated GET (baseline)", bare_ms), ("POST realtime-calls (start)", start_ms),
                          ("DELETE realtime-calls/{id} (hang up)", hangup_ms)):
        p50, p99 = _pcts(samples)
        rows.append({"request": name, "n": len(samples), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
                     "p50_vs_bare": round(p50 / bare_p50, 1)})
    return rows


def run(stack: Stack) -> dict[str, Any]:
    latency = [*_start_latency(stack), _counted_latency(stack), _takeover(stack)]
    # The load runs on a stack without Firestore triggers: thousands of usage events would
    # otherwise queue aggregation deliveries behind everything measured after them.
    with quiet_stack(stack, "rt") as quiet:
        db = firestore.Client(project=quiet.project, credentials=AnonymousCredentials())
        rows = [_tap_load(quiet, db, FirestoreCalls(db), n, "batch") for n in LOADS]
        naive = _tap_load(quiet, db, NaiveCalls(db), LOADS[1], "naive transaction")
    rows.append(naive)
    same_load = next(r for r in rows if r["calls_watched"] == naive["calls_watched"] and r["tap"] == "batch")
    for row in rows:
        row["vs_naive"] = round(row["events_per_s"] / max(naive["events_per_s"], 0.001), 1)
    return {
        "title": f"Realtime tap: calls one process watches at once, {RESPONSES_PER_CALL} responses each "
                 "(local OpenAI, emulator)",
        "notes": f"events_per_s = responses recorded exactly once per second until all were; naive at "
                 f"{naive['calls_watched']} calls: {naive['events_per_s']} /s vs {same_load['events_per_s']} /s",
        "rows": rows,
        "latency": {"title": "Realtime calls: start latency and usage visibility (sequential, one client)",
                    "rows": latency},
    }
