"""The usage counters, pure: the figures an event adds, the delta it adds to its shard, folding
deltas (or stored shards) into an Aggregate, and the one Firestore codec of `UsageFigures`.

No I/O: `repositories.usage` stores the deltas (as Increment transforms) and reads the shards back
through `Aggregate.add_shard`; `fold_events` computes the same aggregate straight from raw events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from simplytalk.models import UsageEvent
from simplytalk.pricing import UsageFigures, period_of, seconds_to_millis

SHARDS = 10

# The one Firestore (and JSON) shape of UsageFigures: five camelCase integer fields.
FIGURE_FIELDS = ("totalTokens", "inputTokens", "outputTokens", "openaiCallMillis", "vapiCallMillis")
TOKEN_FIELDS = FIGURE_FIELDS[:3]


def to_fields(figures: UsageFigures) -> dict[str, int]:
    """UsageFigures as the five camelCase fields the counters, mirrors and ledger store."""
    return dict(zip(FIGURE_FIELDS, figures.astuple(), strict=True))


def from_fields(data: Any) -> UsageFigures:
    """The five camelCase fields back as UsageFigures (missing fields, or no map at all, are zero)."""
    if not isinstance(data, dict):
        return UsageFigures()
    return UsageFigures(*(int(data.get(name) or 0) for name in FIGURE_FIELDS))


def token_fields(figures: UsageFigures) -> dict[str, int]:
    """Only the three token figures (what the API and the mirrors show as `tokenUsage`)."""
    fields = to_fields(figures)
    return {name: fields[name] for name in TOKEN_FIELDS}


def shard_of(event_id: str, shards: int = SHARDS) -> int:
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) % shards


def shard_id(event_id: str, period: str, shards: int = SHARDS) -> str:
    """The counter document an event of `period` ("YYYY-MM") adds to: `{YYYY}-{k}`."""
    return f"{period[:4]}-{shard_of(event_id, shards)}"


def figures_of(event: UsageEvent) -> UsageFigures:
    millis = seconds_to_millis(event.call_seconds) if event.call_seconds is not None else 0
    usage = event.usage
    return UsageFigures(
        total_tokens=usage.total_tokens if usage else 0,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        openai_call_millis=millis if event.provider == "openai" else 0,
        vapi_call_millis=millis if event.provider == "vapi" else 0,
    )


# No call of either provider is this long (vapi stops at 12 h, OpenAI Realtime at 60 min)...
MAX_CALL_SECONDS = 7 * 24 * 3600
# ...and no single event adds this much to a counter (Firestore integers stop at 2**63 - 1).
MAX_FIGURE = 10**15


def uncountable(event: UsageEvent, vapi_max_call_seconds: int) -> str | None:
    """Why this (valid) event can never be counted, or None: the trigger acknowledges such an
    event instead of retrying it forever."""
    seconds = event.call_seconds
    if seconds is not None:
        limit = vapi_max_call_seconds if event.provider == "vapi" else MAX_CALL_SECONDS
        if not math.isfinite(seconds) or seconds > limit:
            return f"callSeconds {seconds!r} is over {limit}"
    try:
        figures = figures_of(event)
    except (ValueError, ArithmeticError) as exc:
        return f"figures cannot be computed: {exc}"
    if any(not 0 <= value <= MAX_FIGURE for value in figures.astuple()):
        return f"a figure is outside 0..{MAX_FIGURE}"
    return None


def shard_delta(event: UsageEvent) -> dict[str, Any]:
    """The nested counters one event adds to its shard (values to wrap in Increment)."""
    figures = to_fields(figures_of(event))
    period = period_of(event.occurred_at)
    return {
        "totals": figures,
        "assistants": {event.assistant_id: {**figures, "provider": event.provider}},
        "periods": {period: {**figures, "assistants": {event.assistant_id: dict(figures)}}},
    }


@dataclass
class Aggregate:
    totals: UsageFigures = field(default_factory=UsageFigures)
    assistants: dict[str, UsageFigures] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    periods: dict[str, UsageFigures] = field(default_factory=dict)
    period_assistants: dict[str, dict[str, UsageFigures]] = field(default_factory=dict)
    read_time: dt.datetime | None = None

    def add_shard(self, data: dict[str, Any]) -> None:
        """Add one shard document's counters (or one event's `shard_delta`)."""
        self.totals += from_fields(data.get("totals"))
        for aid, figures in (data.get("assistants") or {}).items():
            self.assistants[aid] = self.assistants.get(aid, UsageFigures()) + from_fields(figures)
            if isinstance(figures, dict) and isinstance(figures.get("provider"), str):
                self.providers[aid] = figures["provider"]
        for period, figures in (data.get("periods") or {}).items():
            self.periods[period] = self.periods.get(period, UsageFigures()) + from_fields(figures)
            per = self.period_assistants.setdefault(period, {})
            for aid, a_figures in ((figures or {}).get("assistants") or {}).items():
                per[aid] = per.get(aid, UsageFigures()) + from_fields(a_figures)

    def figures(self) -> tuple[Any, ...]:
        """What two aggregates must share to agree (not when they were read)."""
        return (self.totals, self.assistants, self.periods, self.period_assistants)


def merge_deltas(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Several deltas summed into one shard document, as Increment transforms leave it."""
    out: dict[str, Any] = {}
    for delta in deltas:
        _merge_into(out, delta)
    return out


def _merge_into(target: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if isinstance(value, dict):
            _merge_into(target.setdefault(key, {}), value)
        elif isinstance(value, int) and not isinstance(value, bool):
            target[key] = target.get(key, 0) + value
        else:
            target[key] = value


def fold_events(events: list[UsageEvent]) -> Aggregate:
    """The aggregate computed straight from raw events (the source of truth)."""
    aggregate = Aggregate()
    for event in events:
        aggregate.add_shard(shard_delta(event))
    return aggregate
