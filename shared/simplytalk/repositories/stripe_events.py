"""Stripe's processed-event markers: an event applied once is acknowledged as a duplicate after.

Documents:
- `stripeEvents/{eventId}`: `{type, processedAt, result, outcome}`, created once the event was
  applied (an event processed concurrently creates it once; the second create changes nothing:
  both applied the same object's current state).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col

if TYPE_CHECKING:
    from google.cloud.firestore import Client


class StripeEvents(Protocol):
    def seen(self, event_id: str) -> bool:
        """True when the event was processed already."""
        ...

    def record(self, event_id: str, kind: str, now: dt.datetime, result: str | None, outcome: str) -> None:
        """Mark the event processed (a marker that exists already is left as it is)."""
        ...


def _marker(kind: str, now: dt.datetime, result: str | None, outcome: str) -> dict[str, Any]:
    # plain strings: the values stay what they were when outcomes were bare strings
    return {"type": kind, "processedAt": now, "result": None if result is None else str(result),
            "outcome": str(outcome)}


class FirestoreStripeEvents:
    def __init__(self, db: Client) -> None:
        self.db = db

    def seen(self, event_id: str) -> bool:
        return bool(self.db.collection(col.STRIPE_EVENTS).document(event_id).get().exists)

    def record(self, event_id: str, kind: str, now: dt.datetime, result: str | None, outcome: str) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.AlreadyExists):  # processed concurrently: same outcome
            self.db.collection(col.STRIPE_EVENTS).document(event_id).create(_marker(kind, now, result, outcome))


@dataclass
class InMemoryStripeEvents:
    markers: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def seen(self, event_id: str) -> bool:
        with self.lock:
            return event_id in self.markers

    def record(self, event_id: str, kind: str, now: dt.datetime, result: str | None, outcome: str) -> None:
        with self.lock:
            self.markers.setdefault(event_id, _marker(kind, now, result, outcome))
