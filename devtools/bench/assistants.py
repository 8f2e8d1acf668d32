"""Assistant create and list latency with 1,000 assistants for one user, and Firestore
round trips per request, against a bare authenticated endpoint on the same host."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import requests
from simplytalk.assistant_input import AssistantCreate, AssistantPatch
from simplytalk.services import assistants as svc
from simplytalk.services.assistants_deps import firestore_deps

from devtools.bench.counting import CountingClient
from devtools.emulator_auth import sign_up
from devtools.stack import Stack

ASSISTANTS = 1000


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _timed(call: Callable[[], requests.Response], expect: int) -> float:
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    if response.status_code != expect:
        raise RuntimeError(f"unexpected {response.status_code}: {response.text[:300]}")
    return elapsed * 1000


def _rpcs(stack: Stack) -> dict[str, float]:
    """Firestore RPCs each service call makes (what the endpoint calls), counted on the wire."""
    db = CountingClient(stack.project)
    uid = "bench-rpc-user"
    db.collection("users").document(uid).set({"email": "rpc@example.com"})
    deps = firestore_deps(db)
    db.counter.take()
    counts: dict[str, list[int]] = {"create": [], "list": [], "list_all": [], "get": [], "patch": [],
                                    "delete": []}
    made = []
    for i in range(20):
        made.append(svc.create_assistant(deps, uid, AssistantCreate(name=f"r{i}"), 10_000))
        counts["create"].append(db.counter.take())
    for _ in range(10):
        svc.list_openai_assistants(deps, uid, 20, None)
        counts["list"].append(db.counter.take())
        svc.list_all_assistants(deps, uid, 20, None)
        counts["list_all"].append(db.counter.take())
    for a in made[:10]:
        svc.get_assistant(deps, uid, a.id)
        counts["get"].append(db.counter.take())
        svc.update_assistant(deps, uid, a.id, AssistantPatch.model_validate({"name": "x"}))
        counts["patch"].append(db.counter.take())
        svc.delete_assistant(deps, uid, a.id)
        counts["delete"].append(db.counter.take())
    return {k: statistics.mean(v) for k, v in counts.items()}


def run(stack: Stack) -> dict[str, Any]:
    user = sign_up(stack.auth_host, "bench-assistants@example.com")
    http = requests.Session()
    http.headers.update(user.headers)
    url = stack.function_url("openai-assistants")
    bare = stack.function_url("bench-bare")
    for _ in range(20):  # warm both paths (first-call imports)
        http.get(bare, timeout=10)
        http.get(url, timeout=10)

    bare_ms = [_timed(lambda: http.get(bare, timeout=10), 200) for _ in range(300)]
    create_ms = [_timed(lambda i=i: http.post(url, json={"name": f"a{i}"}, timeout=30), 201)  # type: ignore[misc]
                 for i in range(ASSISTANTS)]
    list_ms = [_timed(lambda: http.get(url, params={"pageSize": 20}, timeout=10), 200) for _ in range(300)]
    walk_ms: list[float] = []
    token = None
    while True:
        params = {"pageSize": 100, **({"pageToken": token} if token else {})}
        start = time.perf_counter()
        page = http.get(url, params=params, timeout=30).json()
        walk_ms.append((time.perf_counter() - start) * 1000)
        token = page["nextPageToken"]
        if not token:
            break
    all_url = stack.function_url("assistants")
    unified_ms = [_timed(lambda: http.get(all_url, params={"pageSize": 20}, timeout=10), 200)
                  for _ in range(100)]
    rpcs = _rpcs(stack)

    bare_p50, bare_p99 = _percentiles(bare_ms)
    rows = []
    for name, samples, rpc in [
        ("bare authenticated GET (baseline)", bare_ms, 0.0),
        (f"POST create (user grows to {ASSISTANTS})", create_ms, rpcs["create"]),
        (f"GET list, 20 of {ASSISTANTS}", list_ms, rpcs["list"]),
        (f"GET list, walk {ASSISTANTS} by 100", walk_ms, rpcs["list"]),
        ("GET assistants (both providers), 20", unified_ms, rpcs["list_all"]),
    ]:
        p50, p99 = _percentiles(samples)
        rows.append({"request": name, "n": len(samples), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
                     "p50_vs_bare": round(p50 / bare_p50, 2), "p99_vs_bare": round(p99 / bare_p99, 2),
                     "firestore_rpcs": None if rpc is None else round(rpc, 2)})
    for name in ("get", "patch", "delete"):
        rows.append({"request": f"{name} (service, RPCs only)", "n": 10, "p50_ms": None, "p99_ms": None,
                     "p50_vs_bare": None, "p99_vs_bare": None, "firestore_rpcs": round(rpcs[name], 2)})
    return {
        "title": f"Assistants: latency with {ASSISTANTS} assistants for one user (sequential, one client)",
        "notes": "firestore_rpcs: counted on the gRPC channel for the service call the endpoint makes "
                 "(create: read the user + one batch commit; a retry only when a concurrent change won)",
        "rows": rows,
    }
