"""`users/{uid}` created -> tokenUsage and assistant arrays. Raise to retry, return to ack."""

from __future__ import annotations

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.events import DocumentChange, document_event_handler
from simplytalk.firestore import firestore_client
from simplytalk.repositories.users import FirestoreNewUsers
from simplytalk.services.users import init_user

log = logs.get_logger("init-user")


@document_event_handler("init-user")
def handle(change: DocumentChange) -> None:
    uid = change.document_id
    outcome = init_user(FirestoreNewUsers(firestore_client()), uid, utcnow())
    log.info("init-user %s: %s", uid, outcome.value,
             extra={"fields": {"uid": uid, "eventId": change.event_id, "outcome": outcome.value}})
