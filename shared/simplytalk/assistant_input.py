"""What a client may send for an OpenAI assistant, and the limits on it.

Limits (documented for the frontend):
- name: 1-100 characters after trimming, one line
- systemPrompt: at most 20,000 characters; firstMessage: at most 2,000
- messages: at most 50, each content at most 4,000 characters
- scrapedUrls: at most 10 absolute http(s) URLs, each at most 2,048 characters
- trainingFiles: at most 20 entries of metadata (name, url, contentType, sizeBytes)
- voiceDetails.voice: a Realtime voice; transcriberDetails.model: a transcription model
- text may hold newlines and tabs (not in name); other control characters are refused

The server alone sets id, userId, createdAt, updatedAt, tokenUsage,
isSubscribed and scrapedContent; sending them is an unknown-field 400.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

# The Realtime API's voices and transcription models (checked against the
# installed openai SDK's types by tests/unit/test_assistant_input.py).
Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]
TranscriptionModel = Literal["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                             "gpt-4o-transcribe-diarize"]
REALTIME_VOICES: tuple[str, ...] = get_args(Voice)
TRANSCRIPTION_MODELS: tuple[str, ...] = get_args(TranscriptionModel)

MAX_SCRAPED_URLS = 10


def _no_controls(value: str, allowed: str) -> str:
    for ch in value:
        if unicodedata.category(ch) == "Cc" and ch not in allowed:
            raise ValueError(f"must not contain control characters (found U+{ord(ch):04X})")
    return value


def _one_line(value: str) -> str:
    return _no_controls(value.strip(), "")


def _multiline(value: str) -> str:
    return _no_controls(value, "\n\t\r")


def _http_url(value: str) -> str:
    value = value.strip()
    _no_controls(value, "")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    try:
        _ = parts.port  # raises for a port out of range
        parts.hostname.encode("idna")
    except (ValueError, UnicodeError) as exc:
        raise ValueError("must have a valid host and port") from exc
    return value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


# The JSON schemas of the text types, for the OpenAPI document only (the validators are the rule):
# the same limits, a little stricter where a regex cannot say it, so what a client or a fuzzer
# builds from the document passes.
_NO_CC = r"\x00-\x1f\x7f-\x9f"  # Unicode's control characters (category Cc)
_LINE_CHAR = f"[^{_NO_CC}]"
_TEXT_CHAR = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # newline, carriage return and tab allowed
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


def _line_schema(max_length: int, non_blank: bool = False) -> WithJsonSchema:
    pattern = f"^{_LINE_CHAR}*[^\\s{_NO_CC}]{_LINE_CHAR}*$" if non_blank else f"^{_LINE_CHAR}*$"
    return WithJsonSchema({"type": "string", "maxLength": max_length, "pattern": pattern}
                          | ({"minLength": 1} if non_blank else {}))


def _text_schema(max_length: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "maxLength": max_length, "pattern": f"^{_TEXT_CHAR}*$"})


_URL_SCHEMA = WithJsonSchema({
    "type": "string", "maxLength": 2048, "description": "an absolute http(s) URL, no credentials",
    "pattern": f"^https?://{_LABEL}(\\.{_LABEL})*(:[1-9][0-9]{{0,3}})?(/[^\\s{_NO_CC}]*)?$"})

Name = Annotated[str, AfterValidator(_one_line), Field(max_length=200),
                 AfterValidator(lambda v: _length(v, 1, 100)), _line_schema(100, non_blank=True)]
ShortLine = Annotated[str, Field(max_length=255), AfterValidator(_one_line)]
Url = Annotated[str, Field(max_length=2048), AfterValidator(_http_url), _URL_SCHEMA]


def _length(value: str, low: int, high: int) -> str:
    if len(value) < low:
        raise ValueError("must not be empty")
    if len(value) > high:
        raise ValueError(f"must be at most {high} characters")
    return value


class _Input(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_max_length=20_000)


class VoiceDetails(_Input):
    voice: Voice = "alloy"
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class TranscriberDetails(_Input):
    model: TranscriptionModel = "gpt-4o-mini-transcribe"
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    prompt: Annotated[str, Field(max_length=1000), AfterValidator(_multiline), _text_schema(1000)] | None = None


class Message(_Input):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=4000), AfterValidator(_multiline), _text_schema(4000)]


class TrainingFile(_Input):
    name: Annotated[ShortLine, AfterValidator(lambda v: _length(v, 1, 255)), _line_schema(255, non_blank=True)]
    url: Url | None = None
    content_type: Annotated[ShortLine, Field(max_length=100), _line_schema(100)] | None = None
    size_bytes: int | None = Field(default=None, ge=0, le=50 * 1024 * 1024)


class AssistantFields(_Input):
    """Every field a client may set; for a create, `name` is required."""

    name: Name
    system_prompt: Annotated[str, Field(max_length=20_000), AfterValidator(_multiline), _text_schema(20_000)] = ""
    first_message: Annotated[str, Field(max_length=2_000), AfterValidator(_multiline), _text_schema(2_000)] = ""
    voice_details: VoiceDetails = Field(default_factory=VoiceDetails)
    transcriber_details: TranscriberDetails = Field(default_factory=TranscriberDetails)
    messages: list[Message] = Field(default_factory=list, max_length=50)
    training_files: list[TrainingFile] = Field(default_factory=list, max_length=20)
    scraped_urls: Annotated[list[Url], Field(max_length=MAX_SCRAPED_URLS), AfterValidator(_unique)] = \
        Field(default_factory=list)

    def document_fields(self, only_set: bool = False) -> dict[str, Any]:
        """camelCase fields to store; with only_set, just those the client sent (a PATCH)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        if only_set:
            sent = {to_camel(name) for name in self.model_fields_set}
            data = {k: v for k, v in data.items() if k in sent}
        return data


class AssistantCreate(AssistantFields):
    pass


class AssistantPatch(AssistantFields):
    """A partial update: every field optional (null is refused by the field types), at least one."""

    name: Name = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _changes_something(self) -> AssistantPatch:
        if not self.model_fields_set:
            raise ValueError("must name at least one field to change")
        return self
