"""An in-memory OpenAI Realtime gateway for service tests (the emulator tests use the real
SDK against devtools/fake_openai.py instead)."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from simplytalk.errors import Unavailable
from simplytalk.openai_gateway import CallGone, CreatedCall, SidebandLost

_ids = itertools.count(1)
CLOSE, DROP = object(), object()


class ScriptedSideband:
    """Events put on `feed` come out of `events()`; CLOSE ends it normally, DROP breaks it."""

    def __init__(self, call: FakeCall) -> None:
        self.call = call
        self.feed: queue.Queue[Any] = queue.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def events(self) -> Iterator[dict[str, Any]]:
        while True:
            item = self.feed.get()
            if item is CLOSE:
                return
            if item is DROP:
                raise SidebandLost("dropped")
            yield item

    def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)
        self.call.client_events.append(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.feed.put(CLOSE)


@dataclass
class FakeCall:
    call_id: str
    session: dict[str, Any]
    status: str = "active"
    client_events: list[dict[str, Any]] = field(default_factory=list)
    sidebands: list[ScriptedSideband] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    @property
    def sideband(self) -> ScriptedSideband:
        return self.sidebands[-1]


@dataclass
class FakeGateway:
    calls: dict[str, FakeCall] = field(default_factory=dict)
    fail_create: Exception | None = None
    unreachable: bool = False
    refuse_sideband: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create_call(self, sdp: str, session: dict[str, Any]) -> CreatedCall:
        if self.fail_create is not None:
            raise self.fail_create
        call_id = f"rtc_test_{next(_ids)}"
        with self.lock:
            self.calls[call_id] = FakeCall(call_id, session)
        return CreatedCall(call_id, "v=0\r\no=- answer\r\n")

    def hang_up(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        if call is None or call.status != "active":
            return False
        call.status = "hung_up"
        for sideband in call.sidebands:
            sideband.close()
        return True

    def connect(self, call_id: str) -> ScriptedSideband:
        if self.unreachable:
            raise SidebandLost("unreachable")
        call = self.calls.get(call_id)
        if call is None or call.status != "active" or self.refuse_sideband:
            raise CallGone(call_id)
        sideband = ScriptedSideband(call)
        call.sidebands.append(sideband)
        sideband.feed.put({"type": "session.created", "event_id": "event_1", "session": call.session})
        call.connected.set()
        return sideband

    # playing OpenAI's side
    def respond(self, call_id: str, response_id: str, total: int, transcript: str = "") -> None:
        output = [{"id": f"item_{response_id}", "type": "message", "role": "assistant",
                   "content": [{"type": "output_audio", "transcript": transcript}]}] if transcript else []
        self.calls[call_id].sideband.feed.put({"type": "response.done", "event_id": f"event_{response_id}",
                                               "response": {"id": response_id, "status": "completed",
                                                            "output": output,
                                                            "usage": {"total_tokens": total,
                                                                      "input_tokens": total // 2,
                                                                      "output_tokens": total - total // 2}}})

    def end(self, call_id: str) -> None:
        call = self.calls[call_id]
        call.status = "ended"
        for sideband in call.sidebands:
            sideband.close()


class FailingQueue:
    def start(self, call_id: str, generation: int) -> None:
        raise Unavailable("no queue")


def sdk_usage(text: int = 0, audio: int = 0, cached_audio: int = 0, out_text: int = 0,
              out_audio: int = 0) -> dict[str, Any]:
    """A `response.done` usage object as OpenAI sends it."""
    return {"total_tokens": text + audio + out_text + out_audio, "input_tokens": text + audio,
            "output_tokens": out_text + out_audio,
            "input_token_details": {"text_tokens": text, "audio_tokens": audio, "image_tokens": 0,
                                    "cached_tokens": cached_audio,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": cached_audio,
                                                              "image_tokens": 0}},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}
