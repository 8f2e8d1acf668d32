from __future__ import annotations

import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.assistant_input import (
    REALTIME_VOICES,
    TRANSCRIPTION_MODELS,
    AssistantCreate,
    AssistantPatch,
)
from simplytalk.errors import InvalidInput
from simplytalk.validation import parse_model


def _sdk_literal(annotation: object) -> set[str]:
    found: set[str] = set()
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            found |= set(typing.get_args(arg))
        else:
            found |= _sdk_literal(arg)
    return found


def test_voices_and_models_are_the_sdks() -> None:
    from openai.types.realtime.audio_transcription import AudioTranscription
    from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput

    sdk_voices = _sdk_literal(RealtimeAudioConfigOutput.model_fields["voice"].annotation)
    sdk_models = _sdk_literal(AudioTranscription.model_fields["model"].annotation)

    assert set(REALTIME_VOICES) <= sdk_voices
    assert set(TRANSCRIPTION_MODELS) <= sdk_models


def test_create_fills_defaults_in_camel_case() -> None:
    fields = parse_model(AssistantCreate, {"name": "  Front desk ",
                                           "trainingFiles": [{"name": "a.pdf", "sizeBytes": 10}]}
                         ).document_fields()

    assert fields["name"] == "Front desk"
    assert fields["voiceDetails"] == {"voice": "alloy"}
    assert fields["trainingFiles"] == [{"name": "a.pdf", "sizeBytes": 10}]


def test_patch_keeps_only_what_was_sent() -> None:
    patch = parse_model(AssistantPatch, {"firstMessage": "Hi"})

    assert patch.document_fields(only_set=True) == {"firstMessage": "Hi"}


def test_duplicate_urls_are_stored_once() -> None:
    urls = ["https://a.example/x", "https://a.example/x", "https://b.example/"]

    assert parse_model(AssistantPatch, {"scrapedUrls": urls}).scraped_urls == urls[1:]


@given(st.text(max_size=150))
def test_any_name_is_accepted_clean_or_refused_with_a_400(name: str) -> None:
    try:
        parsed = parse_model(AssistantCreate, {"name": name})
    except InvalidInput as exc:
        assert [d.field for d in exc.details] == ["name"]
        return
    assert 1 <= len(parsed.name) <= 100
    assert parsed.name == parsed.name.strip()
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in parsed.name)


@pytest.mark.parametrize("prompt", ["line one\nline two", "tab\there", "crlf\r\n"])
def test_prompts_keep_newlines_and_tabs(prompt: str) -> None:
    assert parse_model(AssistantCreate, {"name": "x", "systemPrompt": prompt}).system_prompt == prompt
