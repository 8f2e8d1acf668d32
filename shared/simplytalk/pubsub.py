"""Publishing to a Pub/Sub topic through its REST API (the emulator's locally): a function that
publishes pays for no gRPC client."""

from __future__ import annotations

import base64
import functools
import json
import time
import urllib.error
import urllib.request
from typing import Any

from simplytalk.config import settings
from simplytalk.errors import Unavailable


class PubSubUnavailable(Unavailable):
    """The message could not be published (Pub/Sub refused it or is unreachable)."""


class Publisher:
    def __init__(self, project: str, emulator_host: str | None) -> None:
        self.base = f"http://{emulator_host}" if emulator_host else "https://pubsub.googleapis.com"
        self.project = project
        self.emulated = emulator_host is not None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if not self.emulated:
            headers["Authorization"] = f"Bearer {_access_token()}"
        return headers

    def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> None:
        """Publish one JSON message; retries 5xx, 429 and network errors a few times."""
        url = f"{self.base}/v1/projects/{self.project}/topics/{topic}:publish"
        data = base64.b64encode(json.dumps(message).encode()).decode()
        body = json.dumps({"messages": [{"data": data, "attributes": attributes or {}}]}).encode()
        for attempt in range(3):
            request = urllib.request.Request(url, body, self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    raise PubSubUnavailable(f"Pub/Sub answered {exc.code} for topic {topic}") from exc
            except OSError:
                pass
            time.sleep(0.2 * 2**attempt)
        raise PubSubUnavailable(f"Pub/Sub is unreachable (topic {topic})")


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
def publisher() -> Publisher:
    """One per instance."""
    cfg = settings()
    return Publisher(cfg.project_id, cfg.pubsub_emulator_host)
