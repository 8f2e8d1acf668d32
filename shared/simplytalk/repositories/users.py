"""A new user's documents: the profile `users/{uid}` (its assistant arrays) and the usage
summary `tokenUsage/{uid}`.

`set_up` reads both in one transaction, lets the caller decide what is missing (a pure plan,
which may run again when the transaction retries) and writes only that: the arrays merged into
the profile, the summary created. A user without a profile gets nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col
from simplytalk.models import TokenUsage

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction


@dataclass(frozen=True)
class Found:
    """What a new user has: the profile's fields and whether the usage summary exists."""

    profile: dict[str, Any]
    has_usage: bool


@dataclass(frozen=True)
class Setup:
    """What to write: arrays to add to the profile, the usage summary to create (None: leave it)."""

    arrays: dict[str, list[str]] = field(default_factory=dict)
    usage: TokenUsage | None = None

    @property
    def empty(self) -> bool:
        return not self.arrays and self.usage is None


Plan = Callable[[Found], Setup]


class NewUsers(Protocol):
    def set_up(self, uid: str, plan: Plan) -> Setup | None:
        """Read the user's documents, write what `plan` says, atomically; the setup written,
        or None when the user has no profile (nothing is written)."""
        ...


class FirestoreNewUsers:
    def __init__(self, db: Client) -> None:
        self.db = db

    def set_up(self, uid: str, plan: Plan) -> Setup | None:
        from google.cloud import firestore

        user_ref = self.db.collection(col.USERS).document(uid)
        usage_ref = self.db.collection(col.TOKEN_USAGE).document(uid)

        @firestore.transactional
        def run(tx: Transaction) -> Setup | None:
            user = user_ref.get(transaction=tx)
            if not user.exists:
                return None
            usage = usage_ref.get(transaction=tx)
            setup = plan(Found(user.to_dict() or {}, usage.exists))
            if setup.arrays:
                tx.update(user_ref, setup.arrays)
            if setup.usage is not None:
                tx.create(usage_ref, setup.usage.to_firestore())
            return setup

        result: Setup | None = run(self.db.transaction())
        return result


@dataclass
class InMemoryNewUsers:
    """The fake: profiles and usage summaries (as Firestore would hold them), by uid."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0

    def set_up(self, uid: str, plan: Plan) -> Setup | None:
        if uid not in self.profiles:
            return None
        setup = plan(Found(dict(self.profiles[uid]), uid in self.usage))
        if setup.arrays:
            self.profiles[uid] = {**self.profiles[uid], **setup.arrays}
            self.writes += 1
        if setup.usage is not None:
            if uid in self.usage:
                raise AssertionError(f"tokenUsage/{uid} exists: a create would fail")
            self.usage[uid] = setup.usage.to_firestore()
            self.writes += 1
        return setup
