"""Rate cards as data: immutable, versioned by the date they take effect (stored through
`repositories.rate_cards`)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

from simplytalk.errors import FieldViolation, InvalidInput
from simplytalk.period import Period
from simplytalk.pricing import RateCard

if TYPE_CHECKING:
    from google.cloud.firestore import Client

    from simplytalk.repositories.rate_cards import FirestoreRateCards, RateCards


# For the OpenAPI document: what `_exact` lets through (a whole number, or an exact decimal string).
CENTS_SCHEMA = WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0, "maximum": 100_000},
    {"type": "string", "pattern": r"^(100000|[0-9]{1,5}(\.[0-9]{1,4})?)$"}],
    "description": 'cents a minute: a whole number, or a decimal string such as "12.5" (never a float)'})


class RateCardInput(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{2,62}$")
    effective_from: dt.date | None = None  # default: the first day of next month
    tokens_per_minute: int = Field(ge=1, le=1_000_000)
    cents_per_minute: Annotated[Decimal, CENTS_SCHEMA] = Field(ge=0, le=100_000, max_digits=12, decimal_places=4)
    currency: Literal["usd"] = "usd"
    openai_basis: Literal["tokens", "call-duration"] = "tokens"

    @field_validator("cents_per_minute", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError('must be a string such as "45" or "12.5" (exact), not a float')
        return value


def card_json(card: RateCard) -> dict[str, Any]:
    return {"id": card.id, "effectiveFrom": card.effective_from.isoformat(),
            "tokensPerMinute": card.tokens_per_minute, "centsPerMinute": str(card.cents_per_minute),
            "currency": card.currency, "openaiBasis": card.openai_basis}


CARDS_TTL_SECONDS = 60.0


def next_month_start(now: dt.datetime) -> dt.date:
    return Period.of(now).next().start


def effective_date(requested: dt.date | None, now: dt.datetime) -> dt.date:
    """A card takes effect on the first day of a month that has not begun: usage already
    shown to a user (this month's estimate) or billed is never repriced."""
    earliest = next_month_start(now)
    if requested is None:
        return earliest
    if requested.day != 1:
        raise InvalidInput("effectiveFrom: a card takes effect on the first day of a month",
                           [FieldViolation("effectiveFrom", "must be the first day of a month")])
    if requested < earliest:
        raise InvalidInput(f"effectiveFrom: must be {earliest.isoformat()} or later (a month not yet begun)",
                           [FieldViolation("effectiveFrom", f"must be {earliest.isoformat()} or later")])
    return requested


def add_card(cards: RateCards, data: RateCardInput, created_by: str, now: dt.datetime) -> RateCard:
    """A new card from a month that has not begun (closed and current months keep their card).
    Cards are immutable (Conflict for an id that exists); a second card for the same month
    replaces the first (the last added wins)."""
    effective_from = effective_date(data.effective_from, now)
    card_id = data.id or f"card-{effective_from.isoformat()}-{now.strftime('%Y%m%d%H%M%S')}"
    card = RateCard(id=card_id, effective_from=effective_from, tokens_per_minute=data.tokens_per_minute,
                    cents_per_minute=data.cents_per_minute, currency=data.currency,
                    openai_basis=data.openai_basis, added_at=now)
    cards.add(card, created_by)
    return card


# -- for callers that still hand over a Firestore client (usage views, margin, the mirrors) ------

_repositories: dict[int, tuple[Client, FirestoreRateCards]] = {}


def shared_rate_cards(db: Client) -> FirestoreRateCards:
    """The instance's one rate card repository for `db` (so its cache is shared by every caller)."""
    from simplytalk.repositories.rate_cards import FirestoreRateCards

    found = _repositories.get(id(db))
    if found is None or found[0] is not db:
        found = _repositories[id(db)] = (db, FirestoreRateCards(db))
    return found[1]


def list_cards(db: Client) -> list[RateCard]:
    """Every stored card plus the built-in default, oldest first."""
    return shared_rate_cards(db).list()


def cached_cards(db: Client, ttl: float = CARDS_TTL_SECONDS) -> list[RateCard]:
    """`list_cards`, read at most once a `ttl` per instance (the usage mirrors price every rollup).
    A card takes effect in a month not yet begun, so a card up to `ttl` old prices this month right."""
    return shared_rate_cards(db).list(max_age=ttl)
