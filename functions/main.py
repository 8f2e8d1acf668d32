"""Every Cloud Function's entry point (see deploy.toml for triggers and settings).

Each deployed function imports this whole module on a cold start, so it stays
light: an entry point imports its handler module (and through it the SDKs that
function needs) on its first call, and a function never pays for another's SDKs.
"""

from __future__ import annotations

import os
from typing import Any

import functions_framework

if os.environ.get("K_SERVICE"):  # deployed: refuse to start on local defaults (raises ConfigError)
    from simplytalk.config import settings

    settings()


@functions_framework.errorhandler(404)
def not_routed(_error: Any) -> Any:
    """A path the framework routes to no function (one with a line break in it, /favicon.ico,
    /robots.txt) gets the contract's 404, not Flask's HTML page."""
    from simplytalk.errors import NotFound
    from simplytalk.http import error_response

    return error_response(NotFound("no such resource"))


@functions_framework.http
def token_usage(request: Any) -> Any:
    from entrypoints.token_usage import api

    return api(request)


@functions_framework.cloud_event
def init_user(cloud_event: Any) -> None:
    from entrypoints.init_user import handle

    handle(cloud_event)


@functions_framework.http
def openai_assistants(request: Any) -> Any:
    from entrypoints.openai_assistants import api

    return api(request)


@functions_framework.http
def assistants(request: Any) -> Any:
    from entrypoints.assistants import api

    return api(request)


@functions_framework.cloud_event
def scrape_knowledge(cloud_event: Any) -> None:
    from entrypoints.scrape_knowledge import handle

    handle(cloud_event)


@functions_framework.cloud_event
def vapi_listed_at(cloud_event: Any) -> None:
    from entrypoints.vapi_listed_at import handle

    handle(cloud_event)


@functions_framework.cloud_event
def aggregate_token_usage(cloud_event: Any) -> None:
    from entrypoints.aggregate_token_usage import handle

    handle(cloud_event)


@functions_framework.cloud_event
def mirror_usage(cloud_event: Any) -> None:
    from entrypoints.mirror_usage import handle

    handle(cloud_event)


@functions_framework.http
def vapi_webhook(request: Any) -> Any:
    from entrypoints.vapi_webhook import api

    return api(request)


@functions_framework.cloud_event
def usage_rollup(cloud_event: Any) -> None:
    from entrypoints.usage_rollup import handle

    handle(cloud_event)


@functions_framework.http
def billing(request: Any) -> Any:
    from entrypoints.billing import api

    return api(request)


@functions_framework.cloud_event
def monthly_invoicing(cloud_event: Any) -> None:
    from entrypoints.monthly_invoicing import handle

    handle(cloud_event)


@functions_framework.http
def stripe_webhook(request: Any) -> Any:
    from entrypoints.stripe_webhook import api

    return api(request)


@functions_framework.http
def realtime_calls(request: Any) -> Any:
    from entrypoints.realtime_calls import api

    return api(request)


@functions_framework.cloud_event
def realtime_tap(cloud_event: Any) -> None:
    from entrypoints.realtime_tap import handle

    handle(cloud_event)


@functions_framework.cloud_event
def realtime_watchdog(cloud_event: Any) -> None:
    from entrypoints.realtime_tap import sweep

    sweep(cloud_event)
