"""Starting a tap run: a message on the `realtime-taps` Pub/Sub topic, which delivers it to
the `realtime-tap` function (with retries when a run fails or its instance dies).

Published through Pub/Sub's REST API (the emulator's locally): a start-call request
pays for no gRPC client.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol

from simplytalk.config import settings
from simplytalk.errors import Unavailable

TAP_TOPIC = "realtime-taps"


class TapQueue(Protocol):
    def start(self, call_id: str, generation: int) -> None:
        """Have a tap run (of this generation) watch the call; Unavailable if that cannot be arranged."""
        ...


def tap_message(call_id: str, generation: int) -> dict[str, Any]:
    return {"callId": call_id, "generation": generation}


class PubSubTapQueue:
    def __init__(self, project: str, emulator_host: str | None) -> None:
        base = f"http://{emulator_host}" if emulator_host else "https://pubsub.googleapis.com"
        self.url = f"{base}/v1/projects/{project}/topics/{TAP_TOPIC}:publish"
        self.emulated = emulator_host is not None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if not self.emulated:
            headers["Authorization"] = f"Bearer {_access_token()}"
        return headers

    def start(self, call_id: str, generation: int) -> None:
        data = base64.b64encode(json.dumps(tap_message(call_id, generation)).encode()).decode()
        body = json.dumps({"messages": [{"data": data, "attributes": {"callId": call_id}}]}).encode()
        for attempt in range(3):
            request = urllib.request.Request(self.url, body, self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    raise Unavailable(f"cannot start the call's tap: Pub/Sub answered {exc.code}") from exc
            except OSError:
                pass
            time.sleep(0.2 * 2**attempt)
        raise Unavailable("cannot start the call's tap: Pub/Sub is unreachable")


def _access_token() -> str:
    credentials = _credentials()
    if not credentials.valid:
        import google.auth.transport.requests

        credentials.refresh(google.auth.transport.requests.Request())
    return str(credentials.token)


@functools.cache
def _credentials() -> Any:
    import google.auth

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/pubsub"])
    return credentials


@functools.cache
def tap_queue() -> TapQueue:
    cfg = settings()
    return PubSubTapQueue(cfg.project_id, cfg.pubsub_emulator_host)


@dataclass
class InMemoryTapQueue:
    started: list[tuple[str, int]] = field(default_factory=list)
    fail: bool = False

    def start(self, call_id: str, generation: int) -> None:
        if self.fail:
            raise Unavailable("cannot start the call's tap")
        self.started.append((call_id, generation))
