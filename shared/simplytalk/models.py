"""The stored shapes (Firestore documents), with the camelCase names the
frontend and the roadmap use. Python attributes are snake_case; `to_firestore`
and `to_json` give the camelCase documents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_firestore(self) -> dict[str, Any]:
        """Document fields: camelCase, datetimes left as datetimes for Firestore timestamps."""
        return self.model_dump(by_alias=True)

    def to_json(self) -> dict[str, Any]:
        """JSON body: camelCase, datetimes as RFC 3339 strings."""
        return self.model_dump(mode="json", by_alias=True)


class TokenCounts(CamelModel):
    total_tokens: NonNegativeInt = 0
    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0


class CachedTokenDetails(CamelModel):
    text_tokens: NonNegativeInt = 0
    audio_tokens: NonNegativeInt = 0
    image_tokens: NonNegativeInt = 0


class InputTokenDetails(CamelModel):
    text_tokens: NonNegativeInt = 0
    audio_tokens: NonNegativeInt = 0
    cached_tokens: NonNegativeInt = 0
    image_tokens: NonNegativeInt = 0
    cached_tokens_details: CachedTokenDetails = Field(default_factory=CachedTokenDetails)


class OutputTokenDetails(CamelModel):
    text_tokens: NonNegativeInt = 0
    audio_tokens: NonNegativeInt = 0


class RealtimeUsage(TokenCounts):
    """The Realtime `response.done` usage object, in camelCase."""

    input_token_details: InputTokenDetails = Field(default_factory=InputTokenDetails)
    output_token_details: OutputTokenDetails = Field(default_factory=OutputTokenDetails)


class TokenUsage(TokenCounts):
    """`tokenUsage/{uid}` as init-user first writes it (zero totals); the usage rollup then keeps
    its mirrors: totals, `currentPeriod` and `usageHistory`, the 20 newest entries (the full
    history is the `usageEvents` collection, read by `token-usage`)."""

    user_id: str
    usage_history: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def zero(cls, uid: str, now: datetime) -> TokenUsage:
        return cls(user_id=uid, created_at=now, updated_at=now)


class KnowledgeSource(CamelModel):
    url: str
    ok: bool
    chars: int = 0
    truncated: bool = False
    error: str | None = None


class KnowledgeState(CamelModel):
    """How `scrapedContent` was made: from which URL list, when, and each source's result."""

    urls_hash: str
    scraped_at: datetime
    sources: list[KnowledgeSource] = Field(default_factory=list)


class OpenAIAssistant(CamelModel):
    """`openaiAssistants/{id}`."""

    id: str
    user_id: str
    name: str
    system_prompt: str = ""
    first_message: str = ""
    is_subscribed: bool = False
    token_usage: TokenCounts = Field(default_factory=TokenCounts)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    voice_details: dict[str, Any] = Field(default_factory=dict)
    transcriber_details: dict[str, Any] = Field(default_factory=dict)
    training_files: list[dict[str, Any]] = Field(default_factory=list)
    scraped_urls: list[str] = Field(default_factory=list)
    scraped_content: str = ""
    knowledge: KnowledgeState | None = None
    created_at: datetime
    updated_at: datetime


UsageKind = Literal["response", "transcription", "call"]


class UsageEvent(CamelModel):
    """`usageEvents/{eventId}`: immutable raw usage keyed by the provider's own id.

    OpenAI Realtime calls give three kinds: a `response` (its `response.done` usage,
    keyed by the response id), a `transcription` of the caller's speech (keyed by the
    item id; its `transcription` usage is the transcription model's, priced apart and
    not part of the billed token figures), and the `call` itself when it ends (keyed
    by the call id; `callSeconds`, for rate cards billed by call duration).
    """

    user_id: str
    assistant_id: str
    provider: Literal["openai", "vapi"]
    kind: UsageKind | None = None
    call_id: str | None = None
    model: str | None = None
    occurred_at: datetime
    usage: RealtimeUsage | None = None
    transcription: dict[str, Any] | None = None
    call_seconds: float | None = Field(default=None, ge=0)


class RealtimeCall(CamelModel):
    """`realtimeCalls/{callId}` (the id is OpenAI's): one Realtime call the server started and watches."""

    id: str = Field(exclude=True)
    user_id: str
    assistant_id: str
    model: str
    status: Literal["active", "ended"]
    started_at: datetime
    ended_at: datetime | None = None
    ended_reason: str | None = None
    duration_seconds: float | None = None
    usage: TokenCounts = Field(default_factory=TokenCounts)
    responses: NonNegativeInt = 0
    transcript_entries: NonNegativeInt = 0
    last_event_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"callId": self.id, **super().to_json()}
