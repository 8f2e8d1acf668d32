"""What starting and watching a call needs to know about its user: the assistant they own,
whether they are subscribed, this month's usage and the rate card that prices it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from simplytalk import collections as col
from simplytalk.errors import NotFound
from simplytalk.models import OpenAIAssistant
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard, UsageFigures

if TYPE_CHECKING:
    from google.cloud.firestore import Client


class Accounts(Protocol):
    def owned_assistant(self, uid: str, assistant_id: str) -> OpenAIAssistant:
        """The caller's OpenAI assistant; NotFound for a missing one and for another user's."""
        ...

    def is_subscribed(self, uid: str) -> bool: ...

    def period_usage(self, uid: str, period: str) -> UsageFigures: ...

    def rate_card(self, period: str) -> RateCard: ...


class FirestoreAccounts:
    def __init__(self, db: Client) -> None:
        self.db = db

    def owned_assistant(self, uid: str, assistant_id: str) -> OpenAIAssistant:
        snap = self.db.collection(col.OPENAI_ASSISTANTS).document(assistant_id).get()
        data = snap.to_dict() if snap.exists else None
        if not data or data.get("userId") != uid:
            raise NotFound("assistant not found")
        return OpenAIAssistant.model_validate({**data, "id": snap.id})

    def is_subscribed(self, uid: str) -> bool:
        return (self.db.collection(col.USERS).document(uid).get().to_dict() or {}).get("isSubscribed") is True

    def period_usage(self, uid: str, period: str) -> UsageFigures:
        from simplytalk.services.aggregation import read_aggregate

        return read_aggregate(self.db, uid).periods.get(period, UsageFigures())

    def rate_card(self, period: str) -> RateCard:
        from simplytalk.charges import card_for
        from simplytalk.services.rate_cards import list_cards

        return card_for(period, list_cards(self.db))


@dataclass
class InMemoryAccounts:
    assistants: dict[str, OpenAIAssistant] = field(default_factory=dict)
    subscribed: set[str] = field(default_factory=set)
    usage: dict[tuple[str, str], UsageFigures] = field(default_factory=dict)
    card: RateCard = DEFAULT_RATE_CARD

    def owned_assistant(self, uid: str, assistant_id: str) -> OpenAIAssistant:
        found = self.assistants.get(assistant_id)
        if found is None or found.user_id != uid:
            raise NotFound("assistant not found")
        return found

    def is_subscribed(self, uid: str) -> bool:
        return uid in self.subscribed

    def period_usage(self, uid: str, period: str) -> UsageFigures:
        return self.usage.get((uid, period), UsageFigures())

    def rate_card(self, period: str) -> RateCard:
        return self.card
