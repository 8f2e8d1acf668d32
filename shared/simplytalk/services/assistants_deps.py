"""The assistants services' production wiring, in one place: Firestore repositories, the usage
counters for `tokenUsage`, the system clock. Used by `openai-assistants`, `assistants`,
`vapi-listed-at` and migration 003."""

from __future__ import annotations

from typing import TYPE_CHECKING

from simplytalk.pricing import UsageFigures
from simplytalk.services.assistants import AssistantDeps

if TYPE_CHECKING:
    from google.cloud.firestore import Client


class CounterTotals:
    """`UsageTotals` from the usage counters: one query over the user's counter documents."""

    def __init__(self, db: Client) -> None:
        self.db = db

    def assistant_totals(self, uid: str) -> dict[str, UsageFigures]:
        from simplytalk.services.aggregation import assistant_totals

        return assistant_totals(self.db, uid)


def firestore_deps(db: Client | None = None) -> AssistantDeps:
    """On the function's Firestore client, or on `db` (a migration's, a bench's counting client)."""
    from simplytalk.clock import utcnow
    from simplytalk.firestore import firestore_client
    from simplytalk.repositories.assistants import FirestoreAssistants

    db = db if db is not None else firestore_client()
    return AssistantDeps(assistants=FirestoreAssistants(db), usage=CounterTotals(db), clock=utcnow)
