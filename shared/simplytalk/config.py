"""Configuration from the environment, with defaults for the local stack.

A `demo-` project id can never touch a real project, so it is the default, and
only a `demo-` project may use the emulators: the Auth emulator accepts
unsigned tokens, a path that must never be reachable in production.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from simplytalk.errors import ConfigError
from simplytalk.rate_limits import DEFAULT_LIMITS, Limit, parse_limits

DEFAULT_PROJECT = "demo-simplytalk"
DEFAULT_REGION = "us-central1"
LOCAL_FIRESTORE = "127.0.0.1:8080"
LOCAL_AUTH = "127.0.0.1:9099"
LOCAL_PUBSUB = "127.0.0.1:8085"
# The Realtime models a call may use: the SDK's list without those OpenAI has announced
# shutdowns for (checked against the installed openai SDK by tests/unit/test_realtime.py).
REALTIME_MODELS: tuple[str, ...] = ("gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime-2.1",
                                    "gpt-realtime-2.1-mini", "gpt-realtime-mini-2025-10-06")


LOCAL_ORIGINS = "http://localhost:3000,http://127.0.0.1:3000,http://localhost:5173"
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9a-f:]+\](:[0-9]{1,5})?$")


def allowed_origins(value: str | None, demo: bool) -> frozenset[str]:
    """`SIMPLYTALK_ALLOWED_ORIGINS`: comma-separated `scheme://host[:port]`, exactly as browsers send
    them (no path, no wildcard). The local dev servers by default for demo- projects, none otherwise."""
    raw = value if value is not None else (LOCAL_ORIGINS if demo else "")
    origins = frozenset(o.strip().lower() for o in raw.split(",") if o.strip())
    bad = sorted(o for o in origins if not _ORIGIN.match(o))
    if bad:
        raise ConfigError(f"SIMPLYTALK_ALLOWED_ORIGINS: not an origin (scheme://host[:port]): {', '.join(bad)}")
    return origins


@dataclass(frozen=True)
class Settings:
    project_id: str
    region: str
    firestore_emulator_host: str | None
    auth_emulator_host: str | None
    pubsub_emulator_host: str | None
    max_body_bytes: int
    max_assistants_per_user: int = 50
    scrape_allow_loopback: bool = False
    scrape_cooldown_seconds: int = 60  # per assistant, between on-demand scrapes (0: none)
    vapi_webhook_secret: str | None = None  # legacy: vapi's inline secret, sent as x-vapi-secret
    vapi_webhook_bearer_token: str | None = None  # a vapi Bearer Token credential
    vapi_webhook_hmac_secret: str | None = None  # a vapi HMAC credential (sha256, hex, defaults)
    vapi_webhook_tolerance_seconds: int = 300  # how old or early an HMAC x-timestamp may be
    vapi_max_call_seconds: int = 43200  # vapi's own maximum maxDurationSeconds
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None  # a local Stripe (tests, `make run`); demo- projects only
    stripe_webhook_secret: str | None = None
    stripe_price_id: str = "price_simplytalk_minutes"
    # OpenAI Realtime calls (see simplytalk.realtime and services/realtime_*)
    openai_api_key: str | None = None
    openai_base_url: str | None = None  # a local OpenAI (tests, `make run`); demo- projects only
    realtime_model: str = "gpt-realtime-1.5"
    free_minutes: int = 30  # a month, for users without a subscription
    max_concurrent_calls: int = 2  # per user
    max_call_seconds: int = 3600  # OpenAI ends a Realtime session at 60 minutes too
    call_idle_seconds: int = 300  # no event at all from a call this long: it is over
    tap_run_seconds: int = 480  # one tap run, under the realtime-tap function's 540 s timeout
    tap_lease_seconds: int = 15  # a tap that stops renewing is replaced after this long
    max_session_tampering: int = 3  # browser changes undone before the call is ended
    allowed_origins: frozenset[str] = frozenset()  # browser origins that may call the user API (CORS)
    max_event_age_seconds: int = 86400  # retried triggers acknowledge older events (logged)
    max_usage_event_age_seconds: int = 6 * 86400  # usage: just under the platform's 7 days of retries
    rate_limits: Mapping[str, Limit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))

    @property
    def is_demo(self) -> bool:
        return self.project_id.startswith("demo-")

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] = os.environ) -> Settings:
        project = (
            env.get("SIMPLYTALK_PROJECT")
            or env.get("GOOGLE_CLOUD_PROJECT")
            or env.get("GCLOUD_PROJECT")
            or DEFAULT_PROJECT
        )
        demo = project.startswith("demo-")
        if demo and env.get("K_SERVICE"):  # fail closed: never the local defaults in Cloud Functions / Run
            raise ConfigError(f"running in Cloud Functions / Cloud Run (K_SERVICE={env.get('K_SERVICE')}) with the "
                              f"local project {project!r}: set SIMPLYTALK_PROJECT to the real project; demo "
                              "defaults, emulator hosts and local secrets are for local use only")

        def emulator(var: str, local_default: str) -> str | None:
            value = env.get(var) or (local_default if demo else None)
            if value and not demo:
                raise ConfigError(f"{var} is set but project {project!r} is not a demo- project")
            return value

        def positive_int(var: str, default: int, minimum: int = 1) -> int:
            try:
                value = int(env.get(var, str(default)))
            except ValueError as exc:
                raise ConfigError(f"{var} must be an integer") from exc
            if value < minimum:
                raise ConfigError(f"{var} must be at least {minimum}")
            return value

        stripe_base = env.get("STRIPE_API_BASE") or ("http://127.0.0.1:12111" if demo else None)
        if stripe_base and not demo:
            raise ConfigError("STRIPE_API_BASE (a local Stripe) is for demo- projects only")
        openai_base = env.get("OPENAI_BASE_URL") or ("http://127.0.0.1:12112/v1" if demo else None)
        if openai_base and not demo:
            raise ConfigError("OPENAI_BASE_URL (a local OpenAI) is for demo- projects only")
        realtime_model = env.get("SIMPLYTALK_REALTIME_MODEL") or "gpt-realtime-1.5"
        if realtime_model not in REALTIME_MODELS:
            raise ConfigError(f"SIMPLYTALK_REALTIME_MODEL must be one of {', '.join(REALTIME_MODELS)}")
        tap_run = positive_int("SIMPLYTALK_TAP_RUN_SECONDS", 480, minimum=2)
        tap_lease = positive_int("SIMPLYTALK_TAP_LEASE_SECONDS", 15, minimum=2)
        allow_loopback = env.get("SIMPLYTALK_SCRAPE_ALLOW_LOOPBACK", "") == "1"
        if allow_loopback and not demo:
            raise ConfigError("SIMPLYTALK_SCRAPE_ALLOW_LOOPBACK is for local tests only (demo- projects)")
        return cls(
            project_id=project,
            region=env.get("SIMPLYTALK_REGION") or env.get("FUNCTION_REGION") or DEFAULT_REGION,
            firestore_emulator_host=emulator("FIRESTORE_EMULATOR_HOST", LOCAL_FIRESTORE),
            auth_emulator_host=emulator("FIREBASE_AUTH_EMULATOR_HOST", LOCAL_AUTH),
            pubsub_emulator_host=emulator("PUBSUB_EMULATOR_HOST", LOCAL_PUBSUB),
            max_body_bytes=positive_int("SIMPLYTALK_MAX_BODY_BYTES", 65536),
            max_assistants_per_user=positive_int("SIMPLYTALK_MAX_ASSISTANTS", 50),
            scrape_allow_loopback=allow_loopback,
            scrape_cooldown_seconds=positive_int("SIMPLYTALK_SCRAPE_COOLDOWN_SECONDS", 60, minimum=0),
            # from Secret Manager in production (deploy.toml); a fixed value for the local stack
            vapi_webhook_secret=env.get("VAPI_WEBHOOK_SECRET") or ("local-vapi-secret" if demo else None),
            vapi_webhook_bearer_token=env.get("VAPI_WEBHOOK_BEARER_TOKEN") or ("local-vapi-bearer" if demo else None),
            vapi_webhook_hmac_secret=env.get("VAPI_WEBHOOK_HMAC_SECRET") or ("local-vapi-hmac" if demo else None),
            vapi_webhook_tolerance_seconds=positive_int("VAPI_WEBHOOK_TOLERANCE_SECONDS", 300),
            vapi_max_call_seconds=positive_int("SIMPLYTALK_VAPI_MAX_CALL_SECONDS", 43200),
            stripe_api_key=env.get("STRIPE_API_KEY") or ("sk_test_local" if demo else None),
            stripe_api_base=stripe_base,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or ("whsec_local" if demo else None),
            stripe_price_id=env.get("STRIPE_PRICE_ID") or "price_simplytalk_minutes",
            openai_api_key=env.get("OPENAI_API_KEY") or ("sk-local" if demo else None),
            openai_base_url=openai_base,
            realtime_model=realtime_model,
            free_minutes=positive_int("SIMPLYTALK_FREE_MINUTES", 30, minimum=0),
            max_concurrent_calls=positive_int("SIMPLYTALK_MAX_CONCURRENT_CALLS", 2),
            max_call_seconds=positive_int("SIMPLYTALK_MAX_CALL_SECONDS", 3600),
            call_idle_seconds=positive_int("SIMPLYTALK_CALL_IDLE_SECONDS", 300),
            tap_run_seconds=tap_run,
            tap_lease_seconds=tap_lease,
            max_session_tampering=positive_int("SIMPLYTALK_MAX_SESSION_TAMPERING", 3, minimum=0),
            allowed_origins=allowed_origins(env.get("SIMPLYTALK_ALLOWED_ORIGINS"), demo),
            rate_limits=parse_limits(env.get("SIMPLYTALK_RATE_LIMITS")),
            max_event_age_seconds=positive_int("SIMPLYTALK_MAX_EVENT_AGE_SECONDS", 86400),
            max_usage_event_age_seconds=positive_int("SIMPLYTALK_MAX_USAGE_EVENT_AGE_SECONDS", 6 * 86400),
        )

    def export_emulator_hosts(self) -> None:
        """The Google SDKs read emulator hosts from the environment only."""
        for var, value in (
            ("FIRESTORE_EMULATOR_HOST", self.firestore_emulator_host),
            ("FIREBASE_AUTH_EMULATOR_HOST", self.auth_emulator_host),
            ("PUBSUB_EMULATOR_HOST", self.pubsub_emulator_host),
        ):
            if value:
                os.environ[var] = value


@functools.cache
def settings() -> Settings:
    """The settings of this instance, read once."""
    return Settings.from_env()
