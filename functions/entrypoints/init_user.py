"""`users/{uid}` created -> tokenUsage and assistant arrays. Raise to retry, return to ack."""

from __future__ import annotations

from typing import Any

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.events import BadEvent, decode_cloud_event
from simplytalk.firestore import firestore_client
from simplytalk.services.users import init_user

log = logs.get_logger("init-user")


def handle(cloud_event: Any) -> None:
    try:
        change = decode_cloud_event(cloud_event)
    except BadEvent as exc:
        log.error("dropping undecodable event: %s", exc)
        return
    uid = change.document_id
    outcome = init_user(firestore_client(), uid, utcnow())
    log.info("init-user %s: %s", uid, outcome.value,
             extra={"fields": {"uid": uid, "eventId": change.event_id, "outcome": outcome.value}})
