"""Starting a tap run: a message on the `realtime-taps` Pub/Sub topic, which delivers it to
the `realtime-tap` function (with retries when a run fails or its instance dies).

Published through Pub/Sub's REST API (`simplytalk.pubsub`): a start-call request pays for
no gRPC client.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

from simplytalk.errors import Unavailable
from simplytalk.pubsub import Publisher, PubSubUnavailable, publisher

TAP_TOPIC = "realtime-taps"


class TapQueue(Protocol):
    def start(self, call_id: str, generation: int) -> None:
        """Have a tap run (of this generation) watch the call; Unavailable if that cannot be arranged."""
        ...


def tap_message(call_id: str, generation: int) -> dict[str, Any]:
    return {"callId": call_id, "generation": generation}


class PubSubTapQueue:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def start(self, call_id: str, generation: int) -> None:
        try:
            self.publisher.publish(TAP_TOPIC, tap_message(call_id, generation), {"callId": call_id})
        except PubSubUnavailable as exc:
            raise Unavailable(f"cannot start the call's tap: {exc}") from exc


@functools.cache
def tap_queue() -> TapQueue:
    return PubSubTapQueue(publisher())


@dataclass
class InMemoryTapQueue:
    started: list[tuple[str, int]] = field(default_factory=list)
    fail: bool = False

    def start(self, call_id: str, generation: int) -> None:
        if self.fail:
            raise Unavailable("cannot start the call's tap")
        self.started.append((call_id, generation))
