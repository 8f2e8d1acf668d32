from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard
from simplytalk.usage_history import describe_call, describe_event, format_duration

BY_DURATION = RateCard(id="by-duration", effective_from=dt.date(2026, 1, 1), tokens_per_minute=60,
                       cents_per_minute=Decimal(45), openai_basis="call-duration")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (45, "45 s"), (59.5, "1 min 00 s"), (125, "2 min 05 s"), (90.4, "1 min 30 s"),
    (3725, "1 h 02 min 05 s"), (Decimal("0.5"), "1 s"),
])
def test_a_duration_reads_as_people_say_it(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_a_duration_in_words_adds_back_up_to_its_seconds(seconds: int) -> None:
    words = format_duration(seconds).split()
    units = {"h": 3600, "min": 60, "s": 1}
    assert sum(int(n) * units[u] for n, u in zip(words[::2], words[1::2], strict=True)) == seconds


def test_an_openai_call_says_its_responses_and_length() -> None:
    event = {"provider": "openai", "kind": "call", "callId": "rtc_1", "callSeconds": 125.2}

    described = describe_event(event, "Support", DEFAULT_RATE_CARD, {"responses": 3})

    assert described.description == "Call with Support: 3 responses, 2 min 05 s"
    assert (described.minutes, described.cost_cents) == (0, 0)  # at a token card its responses bill


def test_a_call_billed_by_duration_carries_its_minutes() -> None:
    event = {"provider": "openai", "kind": "call", "callSeconds": 90}

    described = describe_event(event, "Support", BY_DURATION, {"responses": 1})

    assert described.description == "Call with Support: 1 response, 1 min 30 s"
    assert (described.minutes, described.cost_cents) == (Fraction(3, 2), 68)  # 1.5 * 45 = 67.5 -> 68


def test_a_response_says_its_tokens_and_bills_them() -> None:
    event = {"provider": "openai", "kind": "response",
             "usage": {"totalTokens": 1830, "inputTokens": 1220, "outputTokens": 610}}

    described = describe_event(event, "Support", DEFAULT_RATE_CARD)

    assert described.description == "Response from Support: 1,830 tokens (1,220 in, 610 out)"
    assert (described.minutes, described.cost_cents) == (Fraction(61, 2), 1373)  # 30.5 * 45 = 1372.5


def test_a_vapi_call_says_its_length_and_bills_it() -> None:
    described = describe_event({"provider": "vapi", "callSeconds": 90}, "Sales", DEFAULT_RATE_CARD)

    assert described.description == "vapi call with Sales, 1 min 30 s"
    assert (described.minutes, described.cost_cents) == (Fraction(3, 2), 68)


def test_a_transcription_is_described_but_bills_nothing() -> None:
    described = describe_event({"provider": "openai", "kind": "transcription"}, "Sales", DEFAULT_RATE_CARD)

    assert described.description == "Transcription of the caller in a call with Sales"
    assert described.cost_cents == 0


def test_a_whole_call_sums_its_responses_tokens() -> None:
    event = {"provider": "openai", "kind": "call", "callSeconds": 61}
    call = {"responses": 2, "usage": {"totalTokens": 120, "inputTokens": 80, "outputTokens": 40}}

    described = describe_call(event, "Support", DEFAULT_RATE_CARD, call)

    assert described.description == "Call with Support: 2 responses, 120 tokens, 1 min 01 s"
    assert (described.minutes, described.cost_cents) == (2, 90)


def test_garbage_fields_still_read_as_words() -> None:
    event = {"provider": "openai", "kind": "call", "callSeconds": "NaN", "usage": [1]}

    assert describe_event(event, "X", DEFAULT_RATE_CARD, {"responses": -4}).description == \
        "Call with X: 0 responses"
