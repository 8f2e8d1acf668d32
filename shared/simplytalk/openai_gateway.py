"""OpenAI Realtime through the official SDK: create and hang up calls, watch their sideband.

One lazily created client per instance. OpenAI's errors are mapped here to the
library's own (`InvalidInput` for an offer OpenAI refuses, `LimitReached`
for its rate limits, `Unavailable` for the rest); the sideband's outcomes are
`CallGone` (OpenAI no longer knows the call) and `SidebandLost` (the connection
broke; reconnecting may work).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import logs
from simplytalk.config import settings
from simplytalk.errors import (
    ConfigError,
    FieldViolation,
    InvalidInput,
    LimitReached,
    SimplyTalkError,
    Unavailable,
)
from simplytalk.realtime import call_id_from_location

if TYPE_CHECKING:
    from openai import OpenAI

log = logs.get_logger("openai")
CONNECT_TIMEOUT_S = 10.0


class CallGone(SimplyTalkError):
    """OpenAI no longer has the call (it ended): the sideband is refused or hangup finds nothing."""


class SidebandLost(SimplyTalkError):
    """The sideband connection broke or could not be opened; the call may still be up."""


@dataclass(frozen=True)
class CreatedCall:
    call_id: str
    answer_sdp: str


class Sideband(Protocol):
    def events(self) -> Iterator[dict[str, Any]]:
        """Server events until the connection closes normally; SidebandLost when it breaks."""
        ...

    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class RealtimeGateway(Protocol):
    def create_call(self, sdp: str, session: dict[str, Any]) -> CreatedCall: ...

    def hang_up(self, call_id: str) -> bool:
        """True if the call was up and is now hung up; False if OpenAI had already ended it."""
        ...

    def connect(self, call_id: str) -> Sideband:
        """The call's sideband connection; CallGone if the call is over, SidebandLost if unreachable."""
        ...


@functools.cache
def openai_client() -> OpenAI:
    from openai import OpenAI

    cfg = settings()
    if not cfg.openai_api_key:
        raise ConfigError("OPENAI_API_KEY is not set")
    # Retries are safe for hangup; a create that timed out after OpenAI made the call would be
    # unmetered, so creates are not retried (max_retries=0 on that request).
    return OpenAI(api_key=cfg.openai_api_key, base_url=cfg.openai_base_url, max_retries=2, timeout=20.0)


def _retry_after(exc: Any) -> int | None:
    try:
        value = exc.response.headers.get("retry-after")
        return max(1, int(float(value))) if value else None
    except (AttributeError, ValueError):
        return None


class OpenAIRealtime:
    """The gateway over the SDK. The client is made on first use, so a request that never
    talks to OpenAI (a list, a read) never imports the SDK."""

    def __init__(self, make_client: Callable[[], OpenAI]) -> None:
        self._make_client = make_client

    @functools.cached_property
    def client(self) -> OpenAI:
        return self._make_client()

    def create_call(self, sdp: str, session: dict[str, Any]) -> CreatedCall:
        import openai

        try:
            raw = self.client.with_options(max_retries=0).realtime.calls.with_raw_response.create(
                sdp=sdp, session=session)  # type: ignore[arg-type]
        except openai.BadRequestError as exc:
            param = getattr(exc, "param", None) or ""
            if param == "sdp" or "sdp" in str(exc).lower():
                raise InvalidInput("sdp: OpenAI refused the SDP offer",
                                   [FieldViolation("sdp", "OpenAI refused the SDP offer")]) from exc
            log.error("OpenAI refused the session the server built: %s", exc)
            raise Unavailable("voice calls are unavailable right now") from exc
        except openai.RateLimitError as exc:
            raise LimitReached("OpenAI is rate limiting calls; try again shortly",
                               retry_after=_retry_after(exc) or 5) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            log.error("OpenAI refused the server's credentials: %s", exc)
            raise Unavailable("voice calls are unavailable right now") from exc
        except openai.APIError as exc:
            raise Unavailable("OpenAI could not start the call; try again") from exc
        try:
            call_id = call_id_from_location(raw.headers.get("location"))
        except ValueError as exc:
            raise Unavailable("OpenAI answered without a call id") from exc
        return CreatedCall(call_id, raw.parse().text)

    def hang_up(self, call_id: str) -> bool:
        import openai

        try:
            self.client.realtime.calls.hangup(call_id)
        except openai.NotFoundError:
            return False
        except openai.APIError as exc:
            raise Unavailable("OpenAI could not hang up the call; try again") from exc
        return True

    def connect(self, call_id: str) -> Sideband:
        from websockets.exceptions import InvalidStatus, WebSocketException

        manager = self.client.realtime.connect(
            call_id=call_id,
            websocket_connection_options={"open_timeout": CONNECT_TIMEOUT_S,  # type: ignore[typeddict-unknown-key]
                                          "close_timeout": 2.0})
        try:
            connection = manager.enter()
        except InvalidStatus as exc:
            if exc.response.status_code in (404, 410):
                raise CallGone(f"OpenAI has no call {call_id}") from exc
            raise SidebandLost(f"sideband refused: HTTP {exc.response.status_code}") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise SidebandLost(f"sideband unreachable: {exc}") from exc
        return _SdkSideband(connection)


class _SdkSideband:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def events(self) -> Iterator[dict[str, Any]]:
        from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

        while True:
            try:
                raw = self.connection.recv_bytes()
            except ConnectionClosedOK:
                return
            except (ConnectionClosedError, OSError) as exc:
                raise SidebandLost(f"sideband dropped: {exc}") from exc
            try:
                event = json.loads(raw)
            except (ValueError, RecursionError):
                log.warning("sideband sent a frame that is not JSON; ignored")
                continue
            if isinstance(event, dict):
                yield event

    def send(self, event: dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.connection.send(event)
        except (ConnectionClosed, OSError) as exc:
            raise SidebandLost(f"sideband closed while sending: {exc}") from exc

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.connection.close()


@functools.cache
def realtime_gateway() -> RealtimeGateway:
    return OpenAIRealtime(openai_client)
