"""`usageEvents/{eventId}` created -> counted once into the user's aggregates. Raise to retry."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.events import BadEvent, decode_cloud_event
from simplytalk.firestore import firestore_client
from simplytalk.models import UsageEvent
from simplytalk.services.aggregation import apply_event, rollup

log = logs.get_logger("aggregate-token-usage")


def handle(cloud_event: Any) -> None:
    try:
        change = decode_cloud_event(cloud_event)
        if change.value is None:
            return
        event = UsageEvent.model_validate(change.value.fields)
    except (BadEvent, ValidationError) as exc:  # retrying cannot fix it: acknowledge, loudly
        log.error("usage event not counted: %s", exc, extra={"fields": {"path": getattr(exc, "path", None)}})
        return
    db = firestore_client()
    applied = apply_event(db, change.document_id, event, utcnow())
    outcome = rollup(db, event.user_id, applied.commit_time)
    log.info("usage event %s: %s, %s", change.document_id, "counted" if applied.applied else "duplicate",
             outcome, extra={"fields": {"eventId": change.document_id, "uid": event.user_id,
                                        "applied": applied.applied, "rollup": outcome}})
