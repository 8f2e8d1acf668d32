"""`assistants/{assistantId}` written -> `listedAt`, the vapi assistant's place in `GET /assistants`.

The service reads the document as it is now and writes only a changed listedAt, with a
precondition on the update time it read (retried on a conflict), so repeated, late and
out-of-order events, and this function's own write, change nothing. Raise to retry.
"""

from __future__ import annotations

from simplytalk import logs
from simplytalk.events import DocumentChange, document_event_handler
from simplytalk.repositories.assistants import listed_at_is_current
from simplytalk.services.assistants import sync_listed_at
from simplytalk.services.assistants_deps import firestore_deps as deps

log = logs.get_logger("vapi-listed-at")


@document_event_handler("vapi-listed-at")
def handle(change: DocumentChange) -> None:
    if change.value is None:
        return  # deleted: nothing to order (a later re-create has an event of its own)
    if listed_at_is_current(change.value.fields):
        # right for this version; any later version has an event of its own (this function's
        # own writes land here, so they cost no read)
        return
    outcome = sync_listed_at(deps(), change.document_id)
    log.info("vapi-listed-at %s: %s", change.document_id, outcome.value,
             extra={"fields": {"assistantId": change.document_id, "eventId": change.event_id,
                               "outcome": outcome.value}})
