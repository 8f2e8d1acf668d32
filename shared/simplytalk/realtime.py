"""OpenAI Realtime calls, the core: pure, no I/O, no clock.

What the server tells a call (`SessionPlan`, built from the assistant), what
it watches for on the call's sideband connection (`CallWatcher`, a state
machine that turns server events into `Action`s), and when a call must end.
The tap (services/realtime_tap.py) does the I/O: it feeds events and ticks to
a watcher and carries out its actions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from simplytalk.ids import valid_document_id
from simplytalk.models import OpenAIAssistant, RealtimeUsage
from simplytalk.pricing import RateCard, UsageFigures

MAX_SDP_CHARS = 32_768  # a browser's offer is a few KB; OpenAI allows 64 KiB
MAX_INSTRUCTIONS_CHARS = 32_000  # systemPrompt (<= 20,000) plus as much knowledge as fits
MAX_TRANSCRIPT_ENTRIES = 500  # per call; later lines are counted, not stored
MAX_TRANSCRIPT_CHARS = 4_000  # per line
KNOWLEDGE_HEADING = "\n\n# Knowledge\nAnswer from this material where it applies:\n\n"


class CallStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(StrEnum):
    COMPLETED = "completed"  # OpenAI ended the call (the caller left)
    HUNG_UP = "hung_up"  # the user asked (DELETE /realtime-calls/{id})
    ALLOWANCE_EXHAUSTED = "allowance_exhausted"
    MAX_DURATION = "max_duration"
    IDLE = "idle"
    SESSION_TAMPERED = "session_tampered"
    NOT_WATCHED = "not_watched"  # no tap could watch it: it is hung up rather than left unmetered


# -- input --------------------------------------------------------------------------

def _sdp_offer(value: str) -> str:
    if not value.startswith("v=0"):
        raise ValueError("must be a WebRTC SDP offer (starting with v=0)")
    if "\nm=audio" not in value:
        raise ValueError("must offer an audio stream (m=audio)")
    return value


def _document_id(value: str) -> str:
    if not valid_document_id(value):
        raise ValueError("not an assistant id")
    return value


class StartCall(BaseModel):
    """`POST /realtime-calls` body."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    assistant_id: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_document_id)]
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS), AfterValidator(_sdp_offer)]


def call_id_from_location(location: str | None) -> str:
    """OpenAI's call id from the `Location` header of a call creation (`/v1/realtime/calls/{id}`)."""
    call_id = (location or "").rstrip("/").rsplit("/", 1)[-1]
    if not call_id or not valid_document_id(call_id) or not call_id.isascii():
        raise ValueError(f"no call id in Location {location!r}")
    return call_id


# -- what the server tells a call --------------------------------------------------------

def instructions_for(system_prompt: str, knowledge: str, limit: int = MAX_INSTRUCTIONS_CHARS) -> str:
    """The assistant's prompt, then as much of its scraped knowledge as fits in `limit`."""
    prompt = system_prompt.strip()[:limit]
    knowledge = knowledge.strip()
    room = limit - len(prompt) - len(KNOWLEDGE_HEADING)
    if not knowledge or room <= 0:
        return prompt
    return prompt + KNOWLEDGE_HEADING + knowledge[:room]


@dataclass(frozen=True)
class SessionPlan:
    """The session the server gives a call, and the parts of it nobody else may change."""

    model: str
    instructions: str
    voice: str
    transcription: dict[str, Any]
    speed: float | None = None
    first_message: str = ""

    @classmethod
    def for_assistant(cls, assistant: OpenAIAssistant, model: str) -> SessionPlan:
        voice = assistant.voice_details or {}
        transcriber = assistant.transcriber_details or {}
        transcription = {"model": transcriber.get("model") or "gpt-4o-mini-transcribe"}
        for key in ("language", "prompt"):
            if transcriber.get(key):
                transcription[key] = transcriber[key]
        speed = voice.get("speed")
        return cls(model=model,
                   instructions=instructions_for(assistant.system_prompt, assistant.scraped_content),
                   voice=str(voice.get("voice") or "alloy"), transcription=transcription,
                   speed=float(speed) if isinstance(speed, int | float) else None,
                   first_message=assistant.first_message.strip())

    def session(self) -> dict[str, Any]:
        """`session` for `client.realtime.calls.create` (RealtimeSessionCreateRequestParam)."""
        output: dict[str, Any] = {"voice": self.voice}
        if self.speed is not None:
            output["speed"] = self.speed
        return {
            "type": "realtime",
            "model": self.model,
            "instructions": self.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "transcription": dict(self.transcription),
                    "turn_detection": {"type": "semantic_vad", "eagerness": "auto",
                                       "create_response": True, "interrupt_response": True},
                },
                "output": output,
            },
            "tools": [],
        }

    def restore(self) -> dict[str, Any]:
        """`session` for a `session.update` that puts back everything a browser may have changed."""
        return {"type": "realtime", "model": self.model, "instructions": self.instructions, "tools": [],
                "prompt": None,
                "audio": {"input": {"transcription": dict(self.transcription)}, "output": {"voice": self.voice}}}

    def drift(self, session: dict[str, Any]) -> list[str]:
        """The protected parts of a session (as OpenAI reports it) that differ from the plan."""
        audio = session.get("audio") or {}
        transcription = (audio.get("input") or {}).get("transcription") or {}
        seen = {
            "model": session.get("model"),
            "instructions": session.get("instructions"),
            "prompt": session.get("prompt") or None,
            "tools": session.get("tools") or [],
            "voice": (audio.get("output") or {}).get("voice"),
            "transcription": transcription.get("model"),
        }
        wanted = {"model": self.model, "instructions": self.instructions, "prompt": None, "tools": [],
                  "voice": self.voice, "transcription": self.transcription["model"]}
        if isinstance(seen["model"], str) and seen["model"].startswith(self.model + "-"):
            seen["model"] = self.model  # OpenAI may report the dated snapshot of the model asked for
        return [name for name in wanted if seen[name] != wanted[name]]

    def greeting(self) -> dict[str, Any] | None:
        """The client event that has the assistant speak its first message first (none without one)."""
        if not self.first_message:
            return None
        return {"type": "response.create", "response": {
            "instructions": "Open the call by saying exactly the following, then wait for the caller:\n\n"
                            + self.first_message}}

    def to_doc(self) -> dict[str, Any]:
        return {"model": self.model, "instructions": self.instructions, "voice": self.voice,
                "transcription": dict(self.transcription), "speed": self.speed,
                "firstMessage": self.first_message}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SessionPlan:
        return cls(model=doc["model"], instructions=doc["instructions"], voice=doc["voice"],
                   transcription=dict(doc["transcription"]), speed=doc.get("speed"),
                   first_message=doc.get("firstMessage") or "")


# -- usage, in the stored vocabulary ---------------------------------------------------------

def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _present(value: Any) -> Any:
    """Without the nulls the SDK's types allow for figures OpenAI did not report."""
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    return value


def response_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """A Realtime `response.done` usage object (snake_case) as a usage event's `usage` (camelCase,
    the stored model's shape); ValueError for figures that are not counts."""
    try:
        return RealtimeUsage.model_validate(_present(usage)).to_firestore()
    except ValidationError as exc:
        raise ValueError(str(exc)) from exc


def transcription_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Input-transcription usage (billed by the transcription model: tokens or seconds), camelCase."""
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        return {"type": "duration",
                "seconds": float(seconds) if isinstance(seconds, int | float) and seconds >= 0 else 0.0}
    details = usage.get("input_token_details") or {}
    return {"type": "tokens", "totalTokens": _int(usage.get("total_tokens")),
            "inputTokens": _int(usage.get("input_tokens")), "outputTokens": _int(usage.get("output_tokens")),
            "inputTokenDetails": {"textTokens": _int(details.get("text_tokens")),
                                  "audioTokens": _int(details.get("audio_tokens"))}}


def call_figures(total_tokens: int, elapsed: dt.timedelta) -> UsageFigures:
    return UsageFigures(total_tokens=total_tokens, openai_call_millis=max(0, elapsed // dt.timedelta(milliseconds=1)))


def live_minutes(card: RateCard, started: list[dt.datetime], now: dt.datetime) -> Fraction:
    """Minutes of calls still going that no counter holds yet: on a card billed by call length, their
    time so far (a call's length is counted when it ends); on a token card none (tokens are counted
    as they come)."""
    if card.openai_basis != "call-duration":
        return Fraction(0)
    return sum((call_figures(0, now - at).openai_minutes(card) for at in started), Fraction(0))


# -- watching a call -----------------------------------------------------------------------

@dataclass(frozen=True)
class TranscriptLine:
    item_id: str
    role: Literal["assistant", "user"]
    text: str


@dataclass(frozen=True)
class RecordResponse:
    response_id: str
    status: str
    usage: dict[str, Any] | None  # camelCase; None when OpenAI reported none (or none that reads)
    lines: tuple[TranscriptLine, ...]
    unreadable_usage: dict[str, Any] | None = None  # kept as sent, for an operator: nothing is dropped


@dataclass(frozen=True)
class RecordTranscription:
    item_id: str
    usage: dict[str, Any] | None
    line: TranscriptLine


@dataclass(frozen=True)
class SendEvent:
    """A client event for the sideband (a session restore, an item deletion, the greeting)."""

    event: dict[str, Any]
    why: str


@dataclass(frozen=True)
class HangUp:
    reason: EndReason


Action = RecordResponse | RecordTranscription | SendEvent | HangUp


@dataclass(frozen=True)
class WatchPolicy:
    max_call_seconds: int
    idle_seconds: int
    max_tampering: int
    free_minutes: int


@dataclass
class CallWatcher:
    """One call as the tap sees it. Feed it server events (`on_event`) and the clock
    (`check`); it answers with what to do. No I/O: the tap records and sends."""

    plan: SessionPlan
    policy: WatchPolicy
    card: RateCard
    started_at: dt.datetime
    last_event_at: dt.datetime
    subscribed: bool
    baseline: Fraction = Fraction(0)  # the period's minutes before this call started
    call_tokens: int = 0  # this call's tokens recorded so far (in this period)
    counted_minutes: Fraction = Fraction(0)  # the period's minutes as the counters (and other calls) last said
    period_from: dt.datetime | None = None  # when the call crossed into a new billing period
    tampering: int = 0
    ending: EndReason | None = None
    _seen_items: set[str] = field(default_factory=set)
    _last_drift: tuple[tuple[str, str], ...] = ()

    def on_event(self, event: dict[str, Any], now: dt.datetime) -> list[Action]:
        kind = event.get("type")
        if kind == "response.done":  # usage is recorded to the last event, even while the call ends
            return [self._response(event)]
        if kind == "conversation.item.input_audio_transcription.completed":
            return [self._transcription(event)]
        if self.ending:
            return []
        if isinstance(kind, str) and not kind.startswith("session.") and kind != "error":
            self.last_event_at = max(self.last_event_at, now)  # a sign of life (not our own reconnects)
        if kind in ("session.created", "session.updated"):
            return self._session(event.get("session") or {})
        if kind in ("conversation.item.added", "conversation.item.created"):
            return self._item(event.get("item") or {})
        return []

    def recorded(self, usage: dict[str, Any] | None) -> None:
        """A response's usage was recorded for the first time (not a repeat)."""
        if usage:
            self.call_tokens += _int(usage.get("totalTokens"))

    def used_minutes(self, now: dt.datetime) -> Fraction:
        """The period's minutes: the counters, or the baseline plus this call, whichever is more
        (the counters lag this call's newest tokens by the aggregation trigger's latency). On a
        card billed by call length the counters never hold this call's time until it ends."""
        mine = call_figures(self.call_tokens, now - (self.period_from or self.started_at)).openai_minutes(self.card)
        if self.card.openai_basis == "call-duration":
            return max(self.counted_minutes, self.baseline) + mine
        return max(self.counted_minutes, self.baseline + mine)

    def new_period(self, card: RateCard, now: dt.datetime) -> None:
        """The call went on into a new month: its allowance starts again from what that month holds."""
        self.card, self.baseline, self.call_tokens, self.period_from = card, Fraction(0), 0, now

    def check(self, now: dt.datetime) -> list[Action]:
        if self.ending:
            return []
        if (now - self.started_at).total_seconds() >= self.policy.max_call_seconds:
            return self._end(EndReason.MAX_DURATION)
        if (now - self.last_event_at).total_seconds() >= self.policy.idle_seconds:
            return self._end(EndReason.IDLE)
        if not self.subscribed and self.used_minutes(now) >= self.policy.free_minutes:
            return self._end(EndReason.ALLOWANCE_EXHAUSTED)
        return []

    def _end(self, reason: EndReason) -> list[Action]:
        self.ending = reason
        return [HangUp(reason)]

    def _tampered(self, fix: SendEvent) -> list[Action]:
        self.tampering += 1
        if self.tampering > self.policy.max_tampering:
            return self._end(EndReason.SESSION_TAMPERED)
        return [fix]

    def _session(self, session: dict[str, Any]) -> list[Action]:
        drift = self.plan.drift(session)
        seen = tuple((name, repr(session.get(name))) for name in drift)
        if not drift or seen == self._last_drift:
            # no change, or the same one again with no session of ours in between: OpenAI did not take
            # the restore for that field (it reports it its own way); restoring again would not help
            self._last_drift = seen
            return []
        self._last_drift = seen
        return self._tampered(SendEvent({"type": "session.update", "session": self.plan.restore()},
                                        "restore " + ", ".join(drift)))

    def _item(self, item: dict[str, Any]) -> list[Action]:
        item_id = item.get("id")
        if not isinstance(item_id, str) or item_id in self._seen_items:
            return []
        self._seen_items.add(item_id)
        if item.get("type") == "message" and item.get("role") == "system":
            # nobody but the server tells the assistant anything; the server adds no items
            return self._tampered(SendEvent({"type": "conversation.item.delete", "item_id": item_id},
                                            "delete a system message the browser added"))
        return []

    def _response(self, event: dict[str, Any]) -> RecordResponse:
        response = event.get("response") or {}
        response_id = response.get("id") or event.get("event_id") or ""
        usage = response.get("usage")
        lines = []
        for item in response.get("output") or []:
            if not isinstance(item, dict) or item.get("type") != "message" or not item.get("id"):
                continue
            text = " ".join(part.get("transcript") or part.get("text") or ""
                            for part in item.get("content") or [] if isinstance(part, dict)).strip()
            if text:
                lines.append(TranscriptLine(item["id"], "assistant", text[:MAX_TRANSCRIPT_CHARS]))
        status = str(response.get("status") or "")
        if not isinstance(usage, dict):
            return RecordResponse(str(response_id), status, None, tuple(lines))
        try:
            return RecordResponse(str(response_id), status, response_usage(usage), tuple(lines))
        except ValueError:
            return RecordResponse(str(response_id), status, None, tuple(lines), unreadable_usage=usage)

    def _transcription(self, event: dict[str, Any]) -> RecordTranscription:
        item_id = str(event.get("item_id") or event.get("event_id") or "")
        usage = event.get("usage")
        text = str(event.get("transcript") or "").strip()[:MAX_TRANSCRIPT_CHARS]
        return RecordTranscription(item_id, transcription_usage(usage) if isinstance(usage, dict) else None,
                                   TranscriptLine(item_id, "user", text))
