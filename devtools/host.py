"""The local functions host: every function of deploy.toml on one port.

Each function is a real functions-framework app (`create_app` on
functions/main.py, as `functions-framework --target=...` builds it), mounted
where the Firebase functions emulator would serve it:

- HTTP functions at `/{project}/{region}/{function}/...` (the function sees
  the rest of the path, as in production);
- event functions at `/functions/projects/{project}/triggers/{function}`, where
  the Firestore emulator (`--functions_emulator`) delivers CloudEvents for the
  eventarc triggers registered under that key;
- the API's OpenAPI document (openapi.json, `python -m devtools.openapi`) at
  `/openapi.json`, its first server this host.

Run: `python -m devtools.host --port 5001`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from typing import Any

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import run_simple
from werkzeug.wrappers import Request, Response

from devtools.manifest import ROOT, Manifest, load

MAIN = ROOT / "functions" / "main.py"


def _not_found(environ: dict[str, Any], start_response: Any) -> Any:
    path = Request(environ).path
    body = {"error": {"code": 404, "status": "NOT_FOUND", "message": f"no function at {path}"}}
    return Response(json.dumps(body), 404, content_type="application/json")(environ, start_response)


def _root_path(app: Any) -> Any:
    """`/fn` and `/fn/` both reach the function as path `/`, as in production."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        return app(environ, start_response)

    return wrapped


class _InFlight:
    """Counts the event deliveries (triggers, Pub/Sub pushes) being handled right now, so a test
    can wait for the last one before it wipes Firestore (`GET /_host/in-flight`)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def wrap(self, app: Any) -> Any:
        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            with self._lock:
                self.count += 1
            try:
                return list(app(environ, start_response))
            finally:
                with self._lock:
                    self.count -= 1

        return counted

    def serve(self, environ: dict[str, Any], start_response: Any) -> Any:
        return Response(json.dumps({"inFlight": self.count}), 200,
                        content_type="application/json")(environ, start_response)


BARE = ROOT / "devtools" / "bench" / "bare_function.py"
OPENAPI = ROOT / "openapi.json"


def _openapi(project: str, region: str) -> Any:
    """The committed OpenAPI document, its local server being this host (whatever its port)."""

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        document = json.loads(OPENAPI.read_text())
        here = f"{request.host_url.rstrip('/')}/{project}/{region}"
        document["servers"] = [{"url": here, "description": "this local functions host"},
                               *document.get("servers", [])[1:]]
        return Response(json.dumps(document, ensure_ascii=False), 200, content_type="application/json",
                        headers={"Access-Control-Allow-Origin": "*"})(environ, start_response)

    return serve


def build_app(project: str, manifest: Manifest | None = None, with_bench: bool = False,
              only: set[str] | None = None) -> DispatcherMiddleware:
    import functions_framework

    manifest = manifest or load()
    in_flight = _InFlight()
    mounts: dict[str, Any] = {"/openapi.json": _openapi(project, manifest.region), "/_host/in-flight": in_flight.serve}
    if with_bench:  # benchmarks' baseline; never deployed
        mounts[f"/{project}/{manifest.region}/bench-bare"] = functions_framework.create_app(
            "bench_bare", str(BARE), "http")
    for fn in manifest.functions:
        if only is not None and fn.name not in only:
            continue
        app = functions_framework.create_app(fn.entry_point, str(MAIN), fn.signature_type)
        if fn.trigger == "http":
            mounts[f"/{project}/{manifest.region}/{fn.name}"] = app
        else:
            mounts[f"/functions/projects/{project}/triggers/{fn.name}"] = in_flight.wrap(app)
    return DispatcherMiddleware(_not_found, {k: _root_path(v) for k, v in mounts.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--quiet", action="store_true", help="no per-request access log")
    parser.add_argument("--with-bench", action="store_true", help="also serve the bench-bare baseline")
    parser.add_argument("--only", help="serve only these functions (comma-separated names), as their own service")
    args = parser.parse_args()
    project = os.environ.get("SIMPLYTALK_PROJECT", "demo-simplytalk")
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = build_app(project, with_bench=args.with_bench,
                    only=set(args.only.split(",")) if args.only else None)
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
