"""What invoicing reads of a user's usage: the counters' figures per period and assistant, and
each assistant's provider. In production, `read_aggregate` over the user's counters; nothing
else of the counters is depended on here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from simplytalk.pricing import UsageFigures

if TYPE_CHECKING:
    from google.cloud.firestore import Client


@dataclass(frozen=True)
class CountedUsage:
    period_assistants: Mapping[str, Mapping[str, UsageFigures]] = field(default_factory=dict)
    providers: Mapping[str, str] = field(default_factory=dict)  # assistant -> "openai" | "vapi"


class BillableUsage(Protocol):
    def counted(self, uid: str) -> CountedUsage:
        """Everything counted for the user so far (all periods), as absolute figures."""
        ...


class CounterUsage:
    def __init__(self, db: Client) -> None:
        self.db = db

    def counted(self, uid: str) -> CountedUsage:
        from simplytalk.services.aggregation import read_aggregate

        aggregate = read_aggregate(self.db, uid)
        return CountedUsage(aggregate.period_assistants, aggregate.providers)


@dataclass
class InMemoryUsage:
    """uid -> period -> assistant -> figures, and assistant -> provider."""

    figures: dict[str, dict[str, dict[str, UsageFigures]]] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)

    def add(self, uid: str, period: str, assistant_id: str, figures: UsageFigures, provider: str = "openai") -> None:
        per = self.figures.setdefault(uid, {}).setdefault(period, {})
        per[assistant_id] = per.get(assistant_id, UsageFigures()) + figures
        self.providers[assistant_id] = provider

    def counted(self, uid: str) -> CountedUsage:
        periods = self.figures.get(uid, {})
        return CountedUsage({p: dict(per) for p, per in periods.items()},
                            {aid: self.providers[aid] for per in periods.values() for aid in per})
