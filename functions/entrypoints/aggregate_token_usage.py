"""`usageEvents/{eventId}` created -> counted once into the user's aggregates. Raise to retry.

An event that can never be counted (one validation refuses, figures no counter can hold, a
write Firestore refuses as invalid) is acknowledged and logged as an error: a retry would
fail the same way, forever. Anything else raised (Firestore unavailable, a timeout) is retried.
"""

from __future__ import annotations

import math

from pydantic import ValidationError
from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.events import DocumentChange, document_event_handler
from simplytalk.firestore import firestore_client
from simplytalk.models import UsageEvent
from simplytalk.services.aggregation import apply_event, figures_of, rollup

log = logs.get_logger("aggregate-token-usage")

# No call of either provider is this long (vapi stops at 12 h, OpenAI Realtime at 60 min)...
MAX_CALL_SECONDS = 7 * 24 * 3600
# ...and no single event adds this much to a counter (Firestore integers stop at 2**63 - 1).
MAX_FIGURE = 10**15


def uncountable(event: UsageEvent) -> str | None:
    """Why this (valid) event can never be counted, or None."""
    seconds = event.call_seconds
    if seconds is not None:
        limit = settings().vapi_max_call_seconds if event.provider == "vapi" else MAX_CALL_SECONDS
        if not math.isfinite(seconds) or seconds > limit:
            return f"callSeconds {seconds!r} is over {limit}"
    try:
        figures = figures_of(event)
    except (ValueError, ArithmeticError) as exc:
        return f"figures cannot be computed: {exc}"
    if any(not 0 <= value <= MAX_FIGURE for value in figures.astuple()):
        return f"a figure is outside 0..{MAX_FIGURE}"
    return None


def _drop(event_id: str, why: str) -> None:
    log.error("usage event %s not counted: %s", event_id, why, extra={"fields": {"eventId": event_id}})


@document_event_handler("aggregate-token-usage", age_setting="max_usage_event_age_seconds")
def handle(change: DocumentChange) -> None:
    from google.api_core import exceptions as gexc

    if change.value is None:
        return
    try:
        event = UsageEvent.model_validate(change.value.fields)
    except ValidationError as exc:  # retrying cannot fix it: acknowledge, loudly
        _drop(change.document_id, str(exc))
        return
    why = uncountable(event)
    if why:
        _drop(change.document_id, why)
        return
    db = firestore_client()
    try:
        applied = apply_event(db, change.document_id, event, utcnow())
    except (gexc.InvalidArgument, ValueError, OverflowError) as exc:  # the same write would be refused again
        _drop(change.document_id, f"the counters refused it: {exc}")
        return
    try:
        outcome = rollup(db, event.user_id, applied.commit_time)
    except gexc.InvalidArgument as exc:  # counted; the mirrors catch up on a later event or the sweep
        outcome = "refused"
        log.error("usage event %s counted, mirrors not rolled up: %s", change.document_id, exc,
                  extra={"fields": {"eventId": change.document_id, "uid": event.user_id}})
    log.info("usage event %s: %s, %s", change.document_id, "counted" if applied.applied else "duplicate",
             outcome, extra={"fields": {"eventId": change.document_id, "uid": event.user_id,
                                        "applied": applied.applied, "rollup": outcome}})
