"""One cold start, in a fresh process: what a Cloud Functions instance pays.

argv: entry_point signature_type request.json   (or `--all-sdks` for the naive baseline)
Prints one JSON line of timings in milliseconds.
"""

from __future__ import annotations

import json
import sys
import time

HEAVY = {
    "google.cloud.firestore": "firestore",
    "firebase_admin": "firebase_admin",
    "openai": "openai",
    "stripe": "stripe",
    "google.cloud.pubsub": "pubsub",
    "google.events.cloud.firestore_v1": "google-events",
}
ALL_SDKS = ["functions_framework", *HEAVY]


def _loaded() -> list[str]:
    return sorted(label for module, label in HEAVY.items() if module in sys.modules)


def all_sdks() -> dict[str, object]:
    import importlib

    t0 = time.perf_counter()
    for module in ALL_SDKS:
        importlib.import_module(module)
    return {"import_ms": (time.perf_counter() - t0) * 1000, "sdks": _loaded()}


def entry_point(target: str, signature: str, request_file: str, main: str) -> dict[str, object]:
    t0 = time.perf_counter()
    import functions_framework

    app = functions_framework.create_app(target, main, signature)
    t1 = time.perf_counter()
    with open(request_file) as fh:
        spec = json.load(fh)
    client = app.test_client()

    def call() -> float:
        start = time.perf_counter()
        response = client.open(spec["path"], method=spec["method"], headers=spec["headers"],
                               data=spec["body"].encode("latin-1") if spec["body"] else None)
        if response.status_code >= 400:
            raise SystemExit(f"{target}: {response.status_code} {response.get_data(as_text=True)}")
        return time.perf_counter() - start

    first = call()
    second = call()
    return {
        "import_main_ms": (t1 - t0) * 1000,
        "first_call_ms": first * 1000,
        "warm_call_ms": second * 1000,
        "import_ms": ((t1 - t0) + max(0.0, first - second)) * 1000,
        "sdks": _loaded(),
    }


if __name__ == "__main__":
    result = all_sdks() if sys.argv[1] == "--all-sdks" else entry_point(*sys.argv[1:5])
    print(json.dumps(result))
