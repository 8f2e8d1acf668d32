"""Usage history a person can read: what each entry was, in words, with its minutes and cost.

Pure: the service hands in the raw event fields, the assistant's name, the call's
figures and the rate card of the entry's own month. The words are shown as they are
by the dashboard, so they are plain English and need no formatting on the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from simplytalk.pricing import RateCard, call_minutes, cost_cents, seconds_to_millis, token_minutes

UNNAMED = "an unnamed assistant"
DELETED = "a deleted assistant"


def format_duration(seconds: Fraction | Decimal | float | int) -> str:
    """A call's length as people say it: "45 s", "2 min 05 s", "1 h 02 min 05 s" (rounded to the second)."""
    whole = round_half_up_seconds(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def round_half_up_seconds(seconds: Fraction | Decimal | float | int) -> int:
    value = Fraction(Decimal(str(seconds)) if isinstance(seconds, float) else seconds)
    if value < 0:
        raise ValueError("a duration must not be negative")
    return int((value * 2 + 1) // 2)


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def seconds_of(value: Any) -> Decimal | None:
    """A stored callSeconds (number or decimal text) as an exact Decimal; None if absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        exact = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not exact.is_finite() or exact < 0:
        return None
    return exact


def _call_minutes(seconds: Decimal | None) -> Fraction:
    return call_minutes(seconds_to_millis(seconds)) if seconds is not None else Fraction(0)


@dataclass(frozen=True)
class Described:
    description: str
    minutes: Fraction
    cost_cents: int


def describe_event(data: dict[str, Any], assistant_name: str, card: RateCard,
                   call: dict[str, Any] | None = None) -> Described:
    """One raw usage event (a `usageEvents` document's fields) in words, priced at `card`.

    `call` is the event's `realtimeCalls` document, when there is one: it gives a call's
    number of responses and tokens so far.
    """
    provider = data.get("provider")
    kind = data.get("kind")
    usage = _map(data.get("usage"))
    tokens = _int(usage.get("totalTokens"))
    seconds = seconds_of(data.get("callSeconds"))
    if provider == "vapi":
        minutes = _call_minutes(seconds)
        length = f", {format_duration(seconds)}" if seconds is not None else ""
        return Described(f"vapi call with {assistant_name}{length}", minutes, cost_cents(minutes, card))
    if kind == "transcription":
        text = f"Transcription of the caller in a call with {assistant_name}"
        return Described(text, Fraction(0), 0)  # the transcription model's usage is not billed as minutes
    if kind == "call":
        responses = _int((call or {}).get("responses"))
        parts = [_count(responses, "response", "responses")] if call is not None else []
        if seconds is not None:
            parts.append(format_duration(seconds))
        text = f"Call with {assistant_name}" + (f": {', '.join(parts)}" if parts else "")
        if card.openai_basis == "call-duration" and seconds is not None:
            minutes = _call_minutes(seconds)
            return Described(text, minutes, cost_cents(minutes, card))
        return Described(text, Fraction(0), 0)  # its responses carry the minutes
    minutes = token_minutes(tokens, card) if card.openai_basis == "tokens" else Fraction(0)
    inputs, outputs = _int(usage.get("inputTokens")), _int(usage.get("outputTokens"))
    text = (f"Response from {assistant_name}: {_count(tokens, 'token', 'tokens')} "
            f"({inputs:,} in, {outputs:,} out)")
    return Described(text, minutes, cost_cents(minutes, card))


def describe_call(data: dict[str, Any], assistant_name: str, card: RateCard,
                  call: dict[str, Any] | None) -> Described:
    """A whole call (history grouped per call): an OpenAI call's end event with its tokens from the
    call document, or a vapi call's event."""
    if data.get("provider") == "vapi":
        return describe_event(data, assistant_name, card)
    seconds = seconds_of(data.get("callSeconds"))
    responses = _int((call or {}).get("responses"))
    usage = _map((call or {}).get("usage"))
    tokens = _int(usage.get("totalTokens"))
    parts = [_count(responses, "response", "responses"), _count(tokens, "token", "tokens")]
    if seconds is not None:
        parts.append(format_duration(seconds))
    minutes = _call_minutes(seconds) if card.openai_basis == "call-duration" else token_minutes(tokens, card)
    return Described(f"Call with {assistant_name}: {', '.join(parts)}", minutes, cost_cents(minutes, card))


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def count_of(value: Any) -> int:
    """A stored count, or 0 when it is not a non-negative integer."""
    return _int(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
