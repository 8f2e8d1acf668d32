"""`usageEvents/{eventId}` created -> counted once into the user's aggregates. Raise to retry.

An event that can never be counted (one validation refuses, figures no counter can hold, a
write Firestore refuses as invalid) is acknowledged and logged as an error: a retry would
fail the same way, forever. Anything else raised (Firestore unavailable, a timeout) is retried.
"""

from __future__ import annotations

import datetime as dt

from pydantic import ValidationError
from simplytalk import logs
from simplytalk.config import settings
from simplytalk.events import DocumentChange, document_event_handler
from simplytalk.models import UsageEvent
from simplytalk.services.aggregation import MIRROR_TOPIC, FollowUps, mirror_after_counting, mirror_message
from simplytalk.services.usage_deps import firestore_usage_deps
from simplytalk.usage_counters import uncountable

log = logs.get_logger("aggregate-token-usage")


def _drop(event_id: str, why: str) -> None:
    log.error("usage event %s not counted: %s", event_id, why, extra={"fields": {"eventId": event_id}})


FOLLOW_UPS = FollowUps()  # this instance's


def _ask_follow_up(uid: str, due: dt.datetime) -> bool:
    """Publish a follow-up for `mirror-usage`; False when Pub/Sub cannot take it (the sweep will)."""
    from simplytalk.pubsub import PubSubUnavailable, publisher

    try:
        publisher().publish(MIRROR_TOPIC, mirror_message(uid, due), {"userId": uid})
    except PubSubUnavailable as exc:
        log.warning("mirrors of %s left to the sweep: %s", uid, exc, extra={"fields": {"uid": uid}})
        return False
    return True


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
    why = uncountable(event, settings().vapi_max_call_seconds)
    if why:
        _drop(change.document_id, why)
        return
    deps = firestore_usage_deps()
    try:
        applied = deps.usage.apply(change.document_id, event, deps.clock())
    except (gexc.InvalidArgument, ValueError, OverflowError) as exc:  # the same write would be refused again
        _drop(change.document_id, f"the counters refused it: {exc}")
        return
    try:
        outcome = mirror_after_counting(event.user_id, applied.commit_time, FOLLOW_UPS, deps.rollup,
                                        _ask_follow_up)
    except gexc.InvalidArgument as exc:  # counted; the mirrors catch up on a later event or the sweep
        outcome = "refused"
        log.error("usage event %s counted, mirrors not rolled up: %s", change.document_id, exc,
                  extra={"fields": {"eventId": change.document_id, "uid": event.user_id}})
    log.info("usage event %s: %s, %s", change.document_id, "counted" if applied.applied else "duplicate",
             outcome, extra={"fields": {"eventId": change.document_id, "uid": event.user_id,
                                        "applied": applied.applied, "rollup": outcome}})
