"""One way to retry an optimistic write that lost a race (a precondition or create that failed)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from simplytalk.errors import Aborted

T = TypeVar("T")


class Again(Exception):
    """Raised by an attempt that read stale state: read again and retry."""


def optimistic(attempt: Callable[[], T], attempts: int = 40, what: str = "this") -> T:
    """Run `attempt` until it returns; it raises `Again` (or a Firestore conflict) to go round again."""
    from google.api_core import exceptions as gexc

    for n in range(attempts):
        try:
            return attempt()
        except (Again, gexc.FailedPrecondition, gexc.Aborted):
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2**n)))
    raise Aborted(f"too many concurrent changes to {what}; try again")
