"""vapi server messages: an end-of-call report becomes a usage event keyed by the call id.

Where vapi puts things (its published schema: VapiAI/server-sdk-python
src/vapi/types/server_message_end_of_call_report.py, call.py and cost_breakdown.py, generated
from VapiAI/docs fern/apis/api/openapi.json; read 2026-11):

- `ServerMessageEndOfCallReport`: `type`, `endedReason`, `cost` (number), `timestamp` (number),
  `startedAt`/`endedAt` (ISO 8601 strings, optional), `assistant` (a CreateAssistantDTO), and
  `call` (the Call object, OPTIONAL).
- `Call`: `id` (required), `assistantId`, `startedAt`/`endedAt` (ISO 8601), `cost` (number),
  `costBreakdown` (CostBreakdown: transport, stt, llm, tts, vapi, chat, total, llmPromptTokens,
  llmCompletionTokens, llmCachedPromptTokens, ttsCharacters: numbers; analysisCostBreakdown: an
  object of 16 more numbers).
- Not in the schema but sent by vapi and read as a fallback: `durationMs` / `durationSeconds`
  (numbers, fractional at times) and `costBreakdown` at message level, `assistant.id`.
- `Assistant.maxDurationSeconds` has `maximum: 43200`: no vapi call is longer (our default cap).

How vapi authenticates server messages (VapiAI/docs fern/server-url/server-authentication.mdx,
https://docs.vapi.ai/server-url/server-authentication, and the HmacAuthenticationPlan /
BearerAuthenticationPlan schemas in server-sdk-python src/vapi/types/hmac_authentication_plan.py
and bearer_authentication_plan.py):

- Bearer Token credential: `Authorization: Bearer <token>` (header and prefix by default).
- HMAC credential: algorithm sha256, signature encoding hex, signature in `x-signature`, timestamp
  in `x-timestamp`, signed payload `{timestamp}.{body}`, no signature prefix unless one is
  configured (e.g. `sha256=`, which we tolerate). The timestamp's unit is not documented: we
  accept Unix seconds or milliseconds (the signature covers the header text as sent).
- Legacy: the inline `secret`, sent as `x-vapi-secret`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from simplytalk.errors import InvalidInput, Unauthenticated
from simplytalk.ids import valid_document_id
from simplytalk.repositories.vapi_calls import Kept, VapiCalls

if TYPE_CHECKING:
    from simplytalk.config import Settings

# -- authentication ---------------------------------------------------------------------

SIGNATURE_HEADER = "x-signature"
TIMESTAMP_HEADER = "x-timestamp"
LEGACY_HEADER = "x-vapi-secret"
_TIMESTAMP = re.compile(r"[0-9]{1,16}(\.[0-9]{1,9})?")
_MILLIS_FROM = Decimal(10) ** 11  # as seconds: the year 5138; as milliseconds: 1973


@dataclass(frozen=True)
class WebhookAuth:
    """The credentials this deployment accepts; a request must pass one of them."""

    bearer_token: str | None = None
    hmac_secret: str | None = None
    legacy_secret: str | None = None
    tolerance_seconds: int = 300

    @classmethod
    def from_settings(cls, s: Settings) -> WebhookAuth:
        return cls(s.vapi_webhook_bearer_token, s.vapi_webhook_hmac_secret, s.vapi_webhook_secret,
                   s.vapi_webhook_tolerance_seconds)

    @property
    def configured(self) -> bool:
        return bool(self.bearer_token or self.hmac_secret or self.legacy_secret)


def _same(received: str, expected: str) -> bool:
    return hmac.compare_digest(received.encode("utf-8", "surrogateescape"), expected.encode())


def hmac_signature(secret: str, timestamp: str, body: bytes) -> str:
    """vapi's default HMAC: hex sha256 over `{timestamp}.{body}` (the raw body bytes)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _timestamp_seconds(text: str) -> Decimal | None:
    if not _TIMESTAMP.fullmatch(text):
        return None
    value = Decimal(text)
    return value / 1000 if value >= _MILLIS_FROM else value


def _check_hmac(secret: str, signature: str, timestamp: str | None, body: bytes, now: dt.datetime,
                tolerance: int) -> str | None:
    """None if the signature is good; else why not."""
    if not timestamp:
        return f"{TIMESTAMP_HEADER} is missing"
    seconds = _timestamp_seconds(timestamp.strip())
    if seconds is None:
        return f"{TIMESTAMP_HEADER} is not a Unix time"
    if abs(Decimal(now.timestamp()) - seconds) > tolerance:
        return f"{TIMESTAMP_HEADER} is more than {tolerance} s away from now"
    received = signature.strip().removeprefix("sha256=").lower()
    if not _same(received, hmac_signature(secret, timestamp.strip(), body)):
        return f"{SIGNATURE_HEADER} does not match the body"
    return None


def authenticate(headers: Mapping[str, str], body: bytes, auth: WebhookAuth, now: dt.datetime) -> str:
    """The scheme the request passed ("hmac", "bearer", "legacy"); Unauthenticated otherwise.

    Every configured scheme whose header the request carries is tried (constant-time compares);
    one that passes is enough. Nothing configured: every request is refused.
    """
    if not auth.configured:
        raise Unauthenticated("vapi webhook authentication is not configured")
    lower = {k.lower(): v for k, v in headers.items()}
    refusals: list[str] = []
    signature = lower.get(SIGNATURE_HEADER)
    if auth.hmac_secret and signature is not None:
        why = _check_hmac(auth.hmac_secret, signature, lower.get(TIMESTAMP_HEADER), body, now,
                          auth.tolerance_seconds)
        if why is None:
            return "hmac"
        refusals.append(why)
    authorization = lower.get("authorization")
    if auth.bearer_token and authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip() and _same(token.strip(), auth.bearer_token):
            return "bearer"
        refusals.append("bad Authorization bearer token")
    legacy = lower.get(LEGACY_HEADER)
    if auth.legacy_secret and legacy is not None:
        if legacy and _same(legacy, auth.legacy_secret):
            return "legacy"
        refusals.append(f"bad {LEGACY_HEADER}")
    raise Unauthenticated("; ".join(refusals) or "no vapi credential: expected "
                          + ", ".join(name for name, on in (
                              ("an HMAC signature (x-signature, x-timestamp)", auth.hmac_secret),
                              ("Authorization: Bearer", auth.bearer_token),
                              (LEGACY_HEADER, auth.legacy_secret)) if on))


def parse_body(raw: bytes) -> Any:
    """The JSON body, numbers with a fraction as exact Decimals; 400 for anything not JSON."""
    if not raw.strip():
        raise InvalidInput("request body must be a JSON object")
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {str(exc)[:200]}") from exc


# -- the report -------------------------------------------------------------------------

MAX_TEXT = 500  # stored strings (endedReason, ...) are cut to this many characters
MAX_BREAKDOWN_ENTRIES = 32
MAX_BREAKDOWN_DEPTH = 2  # costBreakdown.analysisCostBreakdown.summary, flattened; deeper is dropped
MAX_BREAKDOWN_TEXT = 64
MAX_BREAKDOWN_NUMBER = Decimal(10) ** 12
FUTURE_SKEW = dt.timedelta(seconds=300)  # how far ahead of our clock a call's end may be
EARLIEST = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # vapi did not exist before; no call starts earlier
_BREAKDOWN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _document_id(value: str | None) -> str | None:
    if value is not None and not valid_document_id(value):
        raise ValueError("not a usable id")
    return value


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValueError("time out of range") from exc


def _short(value: str | None, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


Time = Annotated[AwareDatetime | None, AfterValidator(_utc)]
Number = Annotated[Decimal | None, Field(ge=0, allow_inf_nan=False)]
Text = Annotated[str | None, AfterValidator(_short)]


class _Figures(_Loose):
    """The fields vapi may put on the message or on `call` (the message's win)."""

    started_at: Time = Field(default=None, alias="startedAt")
    ended_at: Time = Field(default=None, alias="endedAt")
    duration_ms: Number = Field(default=None, alias="durationMs")
    duration_seconds: Number = Field(default=None, alias="durationSeconds")
    cost: Annotated[Decimal | None, Field(allow_inf_nan=False)] = None
    cost_breakdown: Any = Field(default=None, alias="costBreakdown")
    ended_reason: Text = Field(default=None, alias="endedReason")


class VapiCall(_Figures):
    id: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_document_id)]
    assistant_id: Annotated[str | None, AfterValidator(_document_id)] = Field(default=None, alias="assistantId")


class VapiAssistantRef(_Loose):
    id: Annotated[str | None, AfterValidator(_document_id)] = None


class EndOfCallReport(_Figures):
    type: str
    call: VapiCall | None = None
    assistant: VapiAssistantRef | None = None

    def _pick(self, name: str) -> Any:
        mine = getattr(self, name)
        return mine if mine is not None or self.call is None else getattr(self.call, name)

    @property
    def started(self) -> dt.datetime | None:
        return self._pick("started_at")

    @property
    def ended(self) -> dt.datetime | None:
        return self._pick("ended_at")

    def assistant_id(self) -> str | None:
        return (self.call.assistant_id if self.call else None) or (self.assistant.id if self.assistant else None)

    def call_seconds(self) -> Decimal:
        """From the call's start and end; vapi's own duration only when those are missing.

        Exact (Decimal). ValueError for an end before the start; InvalidInput for no figures.
        """
        started, ended = self.started, self.ended
        if started and ended:
            seconds = Decimal((ended - started) // dt.timedelta(microseconds=1)) / 1_000_000
            if seconds < 0:
                raise ValueError("endedAt is before startedAt")
            return seconds
        duration_ms: Decimal | None = self._pick("duration_ms")
        if duration_ms is not None:
            return duration_ms / 1000
        duration_seconds: Decimal | None = self._pick("duration_seconds")
        if duration_seconds is not None:
            return duration_seconds
        raise InvalidInput("end-of-call-report has neither startedAt/endedAt nor a duration")


def flat_breakdown(value: Any) -> dict[str, float | str] | None:
    """vapi's costBreakdown as a flat map of at most MAX_BREAKDOWN_ENTRIES numbers and short strings.

    Nested objects are flattened up to MAX_BREAKDOWN_DEPTH (`analysisCostBreakdown.summary`);
    anything deeper, longer, non-finite or oddly named is dropped.
    """
    if not isinstance(value, dict):
        return None
    out: dict[str, float | str] = {}

    def walk(prefix: str, mapping: dict[Any, Any], depth: int) -> None:
        for key, item in mapping.items():
            if len(out) >= MAX_BREAKDOWN_ENTRIES:
                return
            if not isinstance(key, str) or not _BREAKDOWN_KEY.fullmatch(key):
                continue
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(item, bool):
                continue
            if isinstance(item, int | Decimal | float):
                number = Decimal(item) if not isinstance(item, float) else Decimal(str(item))
                # adjusted() first: abs() of a number past the context's exponent range raises
                if number.is_finite() and number.adjusted() < 16 and abs(number) <= MAX_BREAKDOWN_NUMBER:
                    out[name] = float(number)
            elif isinstance(item, str):
                if len(item) <= MAX_BREAKDOWN_TEXT:
                    out[name] = item
            elif isinstance(item, dict) and depth < MAX_BREAKDOWN_DEPTH:
                walk(name, item, depth + 1)

    walk("", value, 1)
    return out


def body_call_id(raw: bytes) -> str:
    """The id of a report without `call`: its body's sha256, so a repeated report is one event."""
    return "body-" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Limits:
    max_call_seconds: int = 43200
    future_skew: dt.timedelta = FUTURE_SKEW
    earliest: dt.datetime = EARLIEST


def assess(report: EndOfCallReport, now: dt.datetime, limits: Limits) -> tuple[Decimal, str | None]:
    """The call's exact length and why it can never be counted (absurd times or length), or None.

    InvalidInput when the report has nothing to measure the call by.
    """
    times = [t for t in (report.started, report.ended) if t is not None]
    try:
        seconds = report.call_seconds()
    except ValueError:
        return Decimal(0), "ended-before-started"
    except ArithmeticError:  # a duration past Decimal's range (1e999999999 ms)
        return Decimal(0), "call-too-long"
    if any(t > now + limits.future_skew for t in times):
        return seconds, "time-in-future"
    if any(t < limits.earliest for t in times):
        return seconds, "time-before-floor"
    if seconds > limits.max_call_seconds:
        return seconds, "call-too-long"
    return seconds, None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else _short(str(value), 64)


class CallOutcome(StrEnum):
    RECORDED = "recorded"  # a usage event for its owner
    UNATTRIBUTED = "unattributed"  # no user owns the assistant: kept for an operator
    SET_ASIDE = "set-aside"  # can never be counted: kept with its reason
    DUPLICATE = "duplicate"  # a repeated report: nothing changed


@dataclass(frozen=True)
class Recorded:
    event_id: str
    outcome: CallOutcome
    reason: str | None = None  # why it was set aside


def record_end_of_call(calls: VapiCalls, report: EndOfCallReport, raw: bytes, received_at: dt.datetime,
                       limits: Limits) -> Recorded:
    """Store the call as `usageEvents/{callId}`. A repeated report changes nothing.

    A call no user owns goes to `unattributedUsage`; one that can never be counted to
    `setAsideUsage` with its reason (vapi does not retry: refusing it would lose it).
    """
    event_id = report.call.id if report.call else body_call_id(raw)
    seconds, reason = assess(report, received_at, limits)
    assistant_id = report.assistant_id()
    owner = None
    if assistant_id:
        found = calls.owner(assistant_id)
        owner = found if found is not None and valid_document_id(found) else None
    started, ended = report.started, report.ended
    details = {
        "callId": report.call.id if report.call else None,
        "cost": _text(report._pick("cost")),
        "costBreakdown": flat_breakdown(report._pick("cost_breakdown")),
        "endedReason": report._pick("ended_reason"),
        "startedAt": started,
        "endedAt": ended,
        "durationMs": _text(report._pick("duration_ms")),
        "durationSeconds": _text(report._pick("duration_seconds")),
    }
    event: dict[str, Any] = {
        "provider": "vapi",
        "assistantId": assistant_id,
        "userId": owner,
        "model": None,
        "occurredAt": ended or started or received_at,
        "callSeconds": None if reason else float(seconds),
        "vapi": details,
        "receivedAt": received_at,
    }
    if reason:
        where, outcome = Kept.SET_ASIDE, CallOutcome.SET_ASIDE
        event["reason"] = reason
        event["reportedCallSeconds"] = _text(seconds)
    elif owner:
        where, outcome = Kept.USAGE, CallOutcome.RECORDED
    else:
        where, outcome = Kept.UNATTRIBUTED, CallOutcome.UNATTRIBUTED
    if not calls.record(where, event_id, event):
        return Recorded(event_id, CallOutcome.DUPLICATE, reason)
    return Recorded(event_id, outcome, reason)
