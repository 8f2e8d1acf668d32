"""What the usage services work with (the counters' repository, the clock, the rate cards, a way to
wait), and its production wiring, in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simplytalk.pricing import RateCard
from simplytalk.repositories.usage import UsageCounters
from simplytalk.services import aggregation
from simplytalk.services.aggregation import RebuildReport, Rollup
from simplytalk.services.usage import usage_view

if TYPE_CHECKING:
    from google.cloud.firestore import Client


@dataclass(frozen=True)
class UsageDeps:
    usage: UsageCounters
    clock: Callable[[], dt.datetime]
    cards: Callable[[], list[RateCard]]  # every rate card (the mirrors' rollups may cache them)
    sleep: Callable[[float], None]

    def rollup(self, uid: str, covering: dt.datetime | None, patience: float = 0.0) -> Rollup:
        return aggregation.rollup(self.usage, uid, covering, now=self.clock, cards=self.cards,
                                  patience=patience, sleep=self.sleep)

    def follow_up(self, uid: str, due: dt.datetime, patience: float = 0.0) -> Rollup:
        return aggregation.follow_up(self.usage, uid, due, now=self.clock, cards=self.cards,
                                     patience=patience, sleep=self.sleep)

    def sweep(self, since: dt.datetime) -> dict[str, Rollup]:
        return aggregation.sweep(self.usage, since, now=self.clock, cards=self.cards, sleep=self.sleep)

    def check(self, uid: str) -> RebuildReport:
        return aggregation.check_user(self.usage, uid)

    def rebuild(self, uid: str) -> RebuildReport:
        return aggregation.rebuild_user(self.usage, uid, self.clock(), self.cards)

    def view(self, uid: str, period: str, assistant_id: str | None, size: int, token: str | None,
             group_by: str = "event") -> dict[str, Any]:
        return usage_view(self.usage, uid, self.cards(), period, assistant_id, size, token, group_by)


def firestore_usage_deps(db: Client | None = None, cached: bool = True) -> UsageDeps:
    """Production: Firestore, the wall clock, real sleeps; the rate cards cached for a while
    (`cached`, the triggers' rollups) or read fresh (the API)."""
    import time

    from simplytalk.clock import utcnow
    from simplytalk.firestore import firestore_client
    from simplytalk.repositories.usage import FirestoreUsage
    from simplytalk.services.rate_cards import cached_cards, list_cards

    client = db if db is not None else firestore_client()
    cards: Callable[[], list[RateCard]] = (
        (lambda: cached_cards(client)) if cached else (lambda: list_cards(client)))
    return UsageDeps(usage=FirestoreUsage(client), clock=utcnow, cards=cards, sleep=time.sleep)
