"""Rate cards: `rateCards/{id}`, immutable (a create, never an update), versioned by `effectiveFrom`.

`list` is every stored card plus the built-in default, oldest first; with `max_age` it may
answer from what this instance read less than that many seconds ago (the usage mirrors price
every rollup; a card only takes effect in a month not yet begun, so a card up to a minute
old prices this month right)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col
from simplytalk.charges import card_order
from simplytalk.errors import Conflict
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard

if TYPE_CHECKING:
    from google.cloud.firestore import Client


class RateCards(Protocol):
    def list(self, max_age: float | None = None) -> list[RateCard]:
        """Every card, the built-in default included, oldest first (`card_order`)."""
        ...

    def add(self, card: RateCard, created_by: str) -> None:
        """Store a new card; Conflict when its id exists (cards are immutable)."""
        ...


def with_default(stored: list[RateCard]) -> list[RateCard]:
    ids = {c.id for c in stored}
    return sorted(stored + ([DEFAULT_RATE_CARD] if DEFAULT_RATE_CARD.id not in ids else []), key=card_order)


def conflict(card_id: str) -> Conflict:
    return Conflict(f"rate card {card_id} exists; cards are immutable, add a new one")


# -- the document ------------------------------------------------------------------------------

def card_from(doc_id: str, data: dict[str, Any]) -> RateCard:
    added_at = data.get("createdAt")
    return RateCard(id=doc_id, effective_from=dt.date.fromisoformat(data["effectiveFrom"]),
                    tokens_per_minute=int(data["tokensPerMinute"]),
                    cents_per_minute=Decimal(data["centsPerMinute"]), currency=data.get("currency", "usd"),
                    openai_basis=data.get("openaiBasis", "tokens"),
                    added_at=added_at if isinstance(added_at, dt.datetime) else None)


def card_doc(card: RateCard, created_by: str) -> dict[str, Any]:
    return {"effectiveFrom": card.effective_from.isoformat(), "tokensPerMinute": card.tokens_per_minute,
            "centsPerMinute": str(card.cents_per_minute), "currency": card.currency,
            "openaiBasis": card.openai_basis, "createdAt": card.added_at, "createdBy": created_by}


class _Cache:
    """What `list` read last, and when (monotonic seconds)."""

    def __init__(self, read: Callable[[], list[RateCard]]) -> None:
        self.read, self.lock = read, threading.Lock()
        self.entry: tuple[float, list[RateCard]] | None = None

    def get(self, max_age: float | None) -> list[RateCard]:
        moment = time.monotonic()
        with self.lock:
            entry = self.entry
        if max_age is not None and entry is not None and moment - entry[0] <= max_age:
            return entry[1]
        cards = self.read()
        with self.lock:
            self.entry = (moment, cards)
        return cards


class FirestoreRateCards:
    def __init__(self, db: Client) -> None:
        self.db = db
        self._cache = _Cache(self._read)

    def _read(self) -> list[RateCard]:
        return with_default([card_from(s.id, s.to_dict() or {}) for s in self.db.collection(col.RATE_CARDS).stream()])

    def list(self, max_age: float | None = None) -> list[RateCard]:
        return self._cache.get(max_age)

    def add(self, card: RateCard, created_by: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.db.collection(col.RATE_CARDS).document(card.id).create(card_doc(card, created_by))
        except gexc.AlreadyExists as exc:
            raise conflict(card.id) from exc


@dataclass
class InMemoryRateCards:
    cards: dict[str, RateCard] = field(default_factory=dict)
    created_by: dict[str, str] = field(default_factory=dict)
    reads: int = 0

    def __post_init__(self) -> None:
        self._cache = _Cache(self._read)

    def _read(self) -> list[RateCard]:
        self.reads += 1
        return with_default(list(self.cards.values()))

    def list(self, max_age: float | None = None) -> list[RateCard]:
        return self._cache.get(max_age)

    def add(self, card: RateCard, created_by: str) -> None:
        if card.id in self.cards:
            raise conflict(card.id)
        self.cards[card.id] = card
        self.created_by[card.id] = created_by
