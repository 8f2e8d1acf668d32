"""What the Realtime services and the tap work with, and its production wiring (one place)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from simplytalk.openai_gateway import RealtimeGateway
from simplytalk.repositories.accounts import Accounts
from simplytalk.repositories.calls import CallRepository
from simplytalk.tap_queue import TapQueue


@dataclass(frozen=True)
class RealtimeDeps:
    calls: CallRepository
    accounts: Accounts
    gateway: RealtimeGateway
    taps: TapQueue
    clock: Callable[[], dt.datetime]


def firestore_deps() -> RealtimeDeps:
    """Firestore repositories, OpenAI through the SDK (made on first use), taps through Pub/Sub."""
    from simplytalk.clock import utcnow
    from simplytalk.firestore import firestore_client
    from simplytalk.openai_gateway import realtime_gateway
    from simplytalk.repositories.accounts import FirestoreAccounts
    from simplytalk.repositories.calls import FirestoreCalls
    from simplytalk.tap_queue import tap_queue

    db = firestore_client()
    return RealtimeDeps(calls=FirestoreCalls(db), accounts=FirestoreAccounts(db), gateway=realtime_gateway(),
                        taps=tap_queue(), clock=utcnow)
