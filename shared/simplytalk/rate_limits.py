"""Per-user rate limits on the costly endpoints (starting calls, scraping, card setup,
creating assistants): a fixed window per user and action.

The decision is pure (`admit`); `Limiter` applies it to the state a `RateLimits` store keeps:
`FirestoreRateLimits` (`rateLimits/{uid}`, one map per action, changed in one optimistic write,
so a limit holds across every instance) or `InMemoryRateLimits`, its twin for unit tests.
`FirestoreRateLimiter` and `InMemoryRateLimiter` are a `Limiter` on each.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk.errors import ConfigError, LimitReached

if TYPE_CHECKING:
    from google.cloud.firestore import Client

COLLECTION = "rateLimits"  # rateLimits/{uid}: {actions: {action: {window, count}}}; server-only


@dataclass(frozen=True)
class Limit:
    count: int
    per_seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.per_seconds}"


DEFAULT_LIMITS = {
    "call-start": Limit(10, 60),
    "scrape": Limit(20, 3600),
    "setup-intent": Limit(10, 3600),
    "assistant-create": Limit(30, 60),
}


def parse_limits(text: str | None) -> dict[str, Limit]:
    """`SIMPLYTALK_RATE_LIMITS`: `action=count/seconds,...` over the defaults."""
    limits = dict(DEFAULT_LIMITS)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        action, _, value = item.strip().partition("=")
        count, _, per = value.partition("/")
        if action not in DEFAULT_LIMITS or not count.isdecimal() or not per.isdecimal() or int(per) < 1:
            raise ConfigError(f"SIMPLYTALK_RATE_LIMITS: {item!r} is not action=count/seconds "
                              f"(actions: {', '.join(DEFAULT_LIMITS)})")
        limits[action] = Limit(int(count), int(per))
    return limits


def admit(state: Mapping[str, Any] | None, limit: Limit, now: float) -> tuple[dict[str, int], int | None]:
    """One more request in the window `now` falls in: the new state, or the seconds until the
    next window if the limit is reached (the state then stays as it was)."""
    window = int(now // limit.per_seconds) * limit.per_seconds
    count = int(state.get("count", 0)) if state and state.get("window") == window else 0
    if count >= limit.count:
        return {"window": window, "count": count}, max(1, int(window + limit.per_seconds - now + 0.999))
    return {"window": window, "count": count + 1}, None


def refused(action: str, limit: Limit, retry_after: int) -> LimitReached:
    return LimitReached(f"rate limit: at most {limit.count} {action} requests per {limit.per_seconds} s; "
                        f"retry in {retry_after} s", retry_after=retry_after)


class RateLimiter(Protocol):
    def take(self, uid: str, action: str) -> None:
        """Count one request; LimitReached (with retry_after) when over the limit."""


Admit = Callable[[Mapping[str, Any] | None], tuple[dict[str, int], int | None]]


class RateLimits(Protocol):
    """Where each user's windows are kept, one state per action."""

    def change(self, uid: str, action: str, decide: Admit) -> int | None:
        """Atomically: read the action's state, `decide` (the new state, or the seconds to wait);
        store the new state unless refused. The seconds to wait, or None when admitted."""
        ...


class FirestoreRateLimits:
    def __init__(self, db: Client) -> None:
        self.db = db

    def change(self, uid: str, action: str, decide: Admit) -> int | None:
        from simplytalk.repositories.retry import Again, optimistic

        ref = self.db.collection(COLLECTION).document(uid)

        def attempt() -> int | None:
            snap = ref.get()
            actions = dict((snap.to_dict() or {}).get("actions") or {})
            state, retry_after = decide(actions.get(action))
            if retry_after is not None:
                return retry_after
            from google.api_core import exceptions as gexc

            actions[action] = state
            try:
                if snap.exists:
                    ref.update({"actions": actions}, option=self.db.write_option(last_update_time=snap.update_time))
                else:
                    ref.create({"actions": actions})
            except gexc.AlreadyExists as exc:
                raise Again from exc
            return None

        return optimistic(attempt, what="the rate limit")


class InMemoryRateLimits:
    def __init__(self) -> None:
        self.state: dict[tuple[str, str], dict[str, int]] = {}

    def change(self, uid: str, action: str, decide: Admit) -> int | None:
        state, retry_after = decide(self.state.get((uid, action)))
        if retry_after is None:
            self.state[(uid, action)] = state
        return retry_after


class Limiter:
    """The limits, applied by `admit` at the clock's time to the state `store` keeps."""

    def __init__(self, store: RateLimits, limits: Mapping[str, Limit], clock: Callable[[], dt.datetime]) -> None:
        self.store, self.limits, self.clock = store, limits, clock

    def take(self, uid: str, action: str) -> None:
        limit = self.limits[action]
        retry_after = self.store.change(uid, action, lambda state: admit(state, limit, self.clock().timestamp()))
        if retry_after is not None:
            raise refused(action, limit, retry_after)


class FirestoreRateLimiter(Limiter):
    def __init__(self, db: Client, limits: Mapping[str, Limit], clock: Callable[[], dt.datetime]) -> None:
        super().__init__(FirestoreRateLimits(db), limits, clock)


class InMemoryRateLimiter(Limiter):
    def __init__(self, limits: Mapping[str, Limit], clock: Callable[[], dt.datetime]) -> None:
        super().__init__(InMemoryRateLimits(), limits, clock)


@functools.cache
def rate_limiter() -> RateLimiter:
    """The instance's limiter (Firestore-backed), created on first use."""
    from simplytalk.clock import utcnow
    from simplytalk.config import settings
    from simplytalk.firestore import firestore_client

    return FirestoreRateLimiter(firestore_client(), settings().rate_limits, utcnow)
