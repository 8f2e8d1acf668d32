"""`usageEvents/{eventId}` created -> counted once into the user's aggregates. Raise to retry."""

from __future__ import annotations

from pydantic import ValidationError
from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.events import DocumentChange, document_event_handler
from simplytalk.firestore import firestore_client
from simplytalk.models import UsageEvent
from simplytalk.services.aggregation import apply_event, rollup

log = logs.get_logger("aggregate-token-usage")


@document_event_handler("aggregate-token-usage")
def handle(change: DocumentChange) -> None:
    if change.value is None:
        return
    try:
        event = UsageEvent.model_validate(change.value.fields)
    except ValidationError as exc:  # retrying cannot fix it: acknowledge, loudly
        log.error("usage event %s not counted: %s", change.document_id, exc,
                  extra={"fields": {"eventId": change.document_id}})
        return
    db = firestore_client()
    applied = apply_event(db, change.document_id, event, utcnow())
    outcome = rollup(db, event.user_id, applied.commit_time)
    log.info("usage event %s: %s, %s", change.document_id, "counted" if applied.applied else "duplicate",
             outcome, extra={"fields": {"eventId": change.document_id, "uid": event.user_id,
                                        "applied": applied.applied, "rollup": outcome}})
