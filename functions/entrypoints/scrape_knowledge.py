"""`openaiAssistants/{id}` written -> fetch its scrapedUrls when they changed.

A fetch that fails or times out is recorded on the assistant (`knowledge.sources[].error`)
and the event acknowledged: fetching again on a retry would only time out again. The whole
scrape ends within TRIGGER_BUDGET_SECONDS, under the function's timeout. Only a failed
Firestore write raises, to retry.
"""

from __future__ import annotations

import time

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.events import DocumentChange, document_event_handler
from simplytalk.firestore import firestore_client
from simplytalk.repositories.knowledge import FirestoreKnowledge
from simplytalk.scraping import FetchPolicy
from simplytalk.services.knowledge import TRIGGER_BUDGET_SECONDS, refresh_knowledge

log = logs.get_logger("scrape-knowledge")


@document_event_handler("scrape-knowledge")
def handle(change: DocumentChange) -> None:
    if change.value is None or change.value.update_time is None:
        return  # deleted
    outcome = refresh_knowledge(
        FirestoreKnowledge(firestore_client()), change.document_id, change.value.fields, change.value.update_time,
        FetchPolicy(allow_loopback=settings().scrape_allow_loopback), utcnow(),
        deadline=time.monotonic() + TRIGGER_BUDGET_SECONDS)
    log.info("scrape-knowledge %s: %s", change.document_id, outcome.value,
             extra={"fields": {"assistantId": change.document_id, "eventId": change.event_id,
                               "outcome": outcome.value}})
