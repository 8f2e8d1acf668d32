"""Cold-start import cost of each entry point against importing every SDK (the naive main.py)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.emulator_auth import sign_up
from devtools.firestore_events import document_event
from devtools.manifest import ROOT
from devtools.stack import Stack

PROBE = [sys.executable, "-m", "devtools.bench.coldstart_probe"]
MAIN = str(ROOT / "functions" / "main.py")


def _request_for(stack: Stack, fn: Any, token: str, uid: str) -> dict[str, Any]:
    if fn.name == "vapi-webhook":  # secret-authenticated; a message it acknowledges
        return {"method": "POST", "path": "/", "body": json.dumps({"message": {"type": "status-update"}}),
                "headers": {"x-vapi-secret": "local-vapi-secret", "Content-Type": "application/json"}}
    if fn.name == "stripe-webhook":  # a signed event it acknowledges without work
        import stripe

        payload = json.dumps({"id": "evt_bench", "object": "event", "type": "charge.refunded",
                              "data": {"object": {"id": "ch_bench"}}, "created": 0, "livemode": False})
        header = stripe.WebhookSignature.generate_signature_header(payload, "whsec_local")
        return {"method": "POST", "path": "/", "body": payload,
                "headers": {"Stripe-Signature": header, "Content-Type": "application/json"}}
    if fn.trigger == "http":
        path = "/invoices" if fn.name == "billing" else "/"
        return {"method": "GET", "path": path, "headers": {"Authorization": f"Bearer {token}"}, "body": ""}
    if fn.trigger == "firestore" and fn.document and fn.event_type:
        # the function's own document pattern, with the bench user's id for every wildcard
        path = re.sub(r"\{\w+\}", uid, fn.document)
        fields: dict[str, Any] = {"userId": uid, "name": "bench"}
        if fn.document.startswith("usageEvents/"):  # a real usage event, so the first call counts it
            fields = {"userId": uid, "assistantId": "bench", "provider": "openai",
                      "occurredAt": dt.datetime.now(dt.UTC),
                      "usage": {"totalTokens": 3, "inputTokens": 2, "outputTokens": 1}}
        headers, body = document_event(stack.project, path, fields, event_type=fn.event_type)
        return {"method": "POST", "path": "/", "headers": headers, "body": body.decode("latin-1")}
    if fn.trigger == "pubsub":  # a push delivery, as the Pub/Sub emulator and Eventarc send it
        push = json.dumps({"subscription": f"projects/{stack.project}/subscriptions/{fn.name}-push",
                           "message": {"data": base64.b64encode(b'{"period": "2001-01"}').decode(),
                                       "messageId": "1",
                                       "publishTime": "2026-01-01T00:00:00Z", "attributes": {}}})
        return {"method": "POST", "path": "/", "headers": {"Content-Type": "application/json"}, "body": push}
    raise ValueError(f"no cold-start request for {fn.name}")


def _probe(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([*PROBE, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"probe failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(stack: Stack, repeats: int = 5) -> dict[str, Any]:
    env = {**os.environ, **stack.client_env()}
    user = sign_up(stack.auth_host, "coldstart@example.com")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    db = firestore.Client(project=stack.project, credentials=AnonymousCredentials())
    db.collection("users").document(user.uid).set({"email": user.email})

    baseline = [_probe(["--all-sdks"], env) for _ in range(repeats)]
    baseline_ms = statistics.median(r["import_ms"] for r in baseline)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fn in stack.manifest.functions:
            spec_file = Path(tmp) / f"{fn.name}.json"
            spec_file.write_text(json.dumps(_request_for(stack, fn, user.id_token, user.uid)))
            runs = [_probe([fn.entry_point, fn.signature_type, str(spec_file), MAIN], env)
                    for _ in range(repeats)]
            import_ms = statistics.median(r["import_ms"] for r in runs)
            rows.append({
                "function": fn.name,
                "import_main_ms": round(statistics.median(r["import_main_ms"] for r in runs), 1),
                "first_call_ms": round(statistics.median(r["first_call_ms"] for r in runs), 1),
                "warm_call_ms": round(statistics.median(r["warm_call_ms"] for r in runs), 1),
                "import_ms": round(import_ms, 1),
                "vs_all_sdks": round(import_ms / baseline_ms, 2),
                "sdks": ",".join(runs[-1]["sdks"]),
            })
    rows.append({"function": "baseline: every SDK", "import_main_ms": round(baseline_ms, 1),
                 "first_call_ms": None, "warm_call_ms": None, "import_ms": round(baseline_ms, 1),
                 "vs_all_sdks": 1.0, "sdks": ",".join(baseline[-1]["sdks"])})
    return {
        "title": f"Cold start per entry point (median of {repeats} fresh processes)",
        "notes": "import_ms = functions_framework + main.py + the imports of the first call "
                 "(first call minus warm call); vs_all_sdks = import_ms / importing every SDK",
        "rows": rows,
    }
