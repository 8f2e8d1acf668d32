"""A bare authenticated endpoint (token check only): the floor for HTTP latency on this host."""

from __future__ import annotations

from typing import Any

import functions_framework
from simplytalk.http import Api, ApiRequest, Reply

api = Api("bench-bare")


@api.route("GET", "/")
def whoami(req: ApiRequest) -> Reply:
    return Reply(200, {"userId": req.uid})


@functions_framework.http
def bench_bare(request: Any) -> Any:
    return api(request)
