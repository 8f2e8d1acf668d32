"""Where vapi's end-of-call reports are kept, and who owns a vapi assistant.

Documents:
- `assistants/{assistantId}`: the vapi assistant; its `userId` is the call's owner (read only).
- `usageEvents/{callId}`: a call its owner is billed for (the `aggregate-token-usage` trigger
  counts it once).
- `unattributedUsage/{callId}`: a call no user owns, kept for an operator and never counted.
- `setAsideUsage/{callId}`: a report that can never be counted (absurd times or length), with
  its `reason`.

Each is created once: a repeated report (vapi may send one twice) finds its document there and
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col

if TYPE_CHECKING:
    from google.cloud.firestore import Client

UNATTRIBUTED_USAGE = "unattributedUsage"  # calls no user owns: kept for an operator, never counted
SET_ASIDE_USAGE = "setAsideUsage"  # reports that can never be counted (absurd values), with a reason


class Kept(StrEnum):
    """Where a report is kept."""

    USAGE = "usage"  # usageEvents: counted for its owner
    UNATTRIBUTED = "unattributed"  # unattributedUsage
    SET_ASIDE = "set-aside"  # setAsideUsage


class VapiCalls(Protocol):
    def owner(self, assistant_id: str) -> str | None:
        """The `userId` of the vapi assistant; None when there is no such assistant or no string there."""
        ...

    def record(self, where: Kept, event_id: str, event: dict[str, Any]) -> bool:
        """Create `event_id` where the report is kept; False when it is there already (nothing changes)."""
        ...


class FirestoreVapiCalls:
    def __init__(self, db: Client) -> None:
        self.db = db

    def owner(self, assistant_id: str) -> str | None:
        snap = self.db.collection(col.VAPI_ASSISTANTS).document(assistant_id).get()
        found = (snap.to_dict() or {}).get("userId") if snap.exists else None
        return found if isinstance(found, str) else None

    def record(self, where: Kept, event_id: str, event: dict[str, Any]) -> bool:
        from google.api_core import exceptions as gexc

        if where is Kept.USAGE:
            ref = self.db.collection(col.USAGE_EVENTS).document(event_id)
        elif where is Kept.UNATTRIBUTED:
            ref = self.db.collection(UNATTRIBUTED_USAGE).document(event_id)
        else:
            ref = self.db.collection(SET_ASIDE_USAGE).document(event_id)
        try:
            ref.create(event)
        except gexc.AlreadyExists:
            return False
        return True


@dataclass
class InMemoryVapiCalls:
    """The fake: `owners` (assistant id -> whatever its `userId` is) and what was kept, by place."""

    owners: dict[str, Any] = field(default_factory=dict)
    kept: dict[Kept, dict[str, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in Kept})

    def owner(self, assistant_id: str) -> str | None:
        found = self.owners.get(assistant_id)
        return found if isinstance(found, str) else None

    def record(self, where: Kept, event_id: str, event: dict[str, Any]) -> bool:
        shelf = self.kept[where]
        if event_id in shelf:
            return False
        shelf[event_id] = dict(event)
        return True
