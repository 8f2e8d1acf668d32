"""What scraping an assistant's pages reads and writes.

Documents:
- `openaiAssistants/{assistantId}`: read for its owner and scraped fields (`userId`,
  `scrapedUrls`, `scrapedContent`, `knowledge`); `scrapedContent` and `knowledge` written on a
  precondition on the update time they were read at, so content scraped for an older URL list
  never overwrites a newer edit.
- `scrapeCooldowns/{assistantId}`: `{userId, requestedAt}`, the last on-demand scrape
  (server-only), taken in a transaction so the cooldown holds across instances.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col

if TYPE_CHECKING:
    from google.cloud.firestore import Client

SCRAPE_COOLDOWNS = "scrapeCooldowns"  # scrapeCooldowns/{assistantId}: the last on-demand scrape; server-only


@dataclass(frozen=True)
class Scraped:
    """An assistant as read for scraping: its fields and the update time they were read at."""

    fields: dict[str, Any]
    read_at: dt.datetime


class Stored(StrEnum):
    WRITTEN = "written"
    STALE = "stale"  # the assistant changed after `read_at`: nothing written
    GONE = "gone"  # no such assistant any more


class Knowledge(Protocol):
    def assistant(self, assistant_id: str) -> Scraped | None:
        """The assistant's fields and update time; None when there is none."""
        ...

    def store(self, assistant_id: str, fields: dict[str, Any], read_at: dt.datetime) -> Stored:
        """Update the assistant's scraped fields if it is still as it was at `read_at`."""
        ...

    def claim_cooldown(self, assistant_id: str, uid: str, now: dt.datetime,
                       check: Callable[[dt.datetime | None], None]) -> None:
        """Atomically: read when the assistant was last scraped on demand, `check` it (it raises to
        refuse, and nothing is written), and record `now` by `uid`."""
        ...


class FirestoreKnowledge:
    def __init__(self, db: Client) -> None:
        self.db = db

    def assistant(self, assistant_id: str) -> Scraped | None:
        snap = self.db.collection(col.OPENAI_ASSISTANTS).document(assistant_id).get()
        fields = snap.to_dict() if snap.exists else None
        return Scraped(fields, snap.update_time) if fields is not None else None

    def store(self, assistant_id: str, fields: dict[str, Any], read_at: dt.datetime) -> Stored:
        from google.api_core import exceptions as gexc

        ref = self.db.collection(col.OPENAI_ASSISTANTS).document(assistant_id)
        try:
            ref.update(fields, option=self.db.write_option(last_update_time=read_at))
        except gexc.NotFound:
            return Stored.GONE
        except gexc.FailedPrecondition:
            return Stored.STALE
        return Stored.WRITTEN

    def claim_cooldown(self, assistant_id: str, uid: str, now: dt.datetime,
                       check: Callable[[dt.datetime | None], None]) -> None:
        from google.cloud import firestore

        ref = self.db.collection(SCRAPE_COOLDOWNS).document(assistant_id)

        @firestore.transactional
        def run(tx: Any) -> None:
            snap = ref.get(transaction=tx)
            last = (snap.to_dict() or {}).get("requestedAt") if snap.exists else None
            check(last if isinstance(last, dt.datetime) else None)
            tx.set(ref, {"userId": uid, "requestedAt": now})

        run(self.db.transaction())


TICK = dt.timedelta(microseconds=1)


@dataclass
class InMemoryKnowledge:
    """The fake: assistants (fields and update time) and cooldown documents, by assistant id.
    `on_read` runs after each read of an assistant (a test's way to change it meanwhile)."""

    assistants: dict[str, Scraped] = field(default_factory=dict)
    cooldowns: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_read: Callable[[str], None] | None = None

    def put(self, assistant_id: str, fields: dict[str, Any], at: dt.datetime) -> None:
        """Create or replace an assistant (as the user's edit would), updated at `at` or later."""
        before = self.assistants.get(assistant_id)
        when = max(at, before.read_at + TICK) if before else at
        self.assistants[assistant_id] = Scraped(dict(fields), when)

    def assistant(self, assistant_id: str) -> Scraped | None:
        found = self.assistants.get(assistant_id)
        if self.on_read is not None:
            self.on_read(assistant_id)
        return Scraped(dict(found.fields), found.read_at) if found else None

    def store(self, assistant_id: str, fields: dict[str, Any], read_at: dt.datetime) -> Stored:
        found = self.assistants.get(assistant_id)
        if found is None:
            return Stored.GONE
        if found.read_at != read_at:
            return Stored.STALE
        self.assistants[assistant_id] = Scraped({**found.fields, **fields}, found.read_at + TICK)
        return Stored.WRITTEN

    def claim_cooldown(self, assistant_id: str, uid: str, now: dt.datetime,
                       check: Callable[[dt.datetime | None], None]) -> None:
        last = self.cooldowns.get(assistant_id, {}).get("requestedAt")
        check(last if isinstance(last, dt.datetime) else None)
        self.cooldowns[assistant_id] = {"userId": uid, "requestedAt": now}
