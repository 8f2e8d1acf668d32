"""Margin per assistant: the provider price table, the cost of each event, and the report's money.

Hand-computed figures use the shipped table (USD per 1M tokens): gpt-realtime-1.5 text 4 / cached
0.40 / out 16, audio 32 / cached 0.40 / out 64, image 5 / cached 0.50; gpt-realtime-2 the same with
text out 24; gpt-realtime-mini-2025-10-06 text 0.60 / 0.06 / 2.40, audio 10 / 0.30 / 20;
gpt-4o-transcribe audio in 6, text in 2.50, text out 10; whisper-1 0.006 a minute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.assistant_input import TRANSCRIPTION_MODELS
from simplytalk.config import REALTIME_MODELS
from simplytalk.margin import (
    AssistantMonth,
    EventCost,
    event_cost,
    margin_report,
    report_json,
    response_cost,
    transcription_cost,
    usd_text,
    vapi_cost,
)
from simplytalk.models import RealtimeUsage
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard, UsageFigures, round_half_up
from simplytalk.provider_prices import PriceTableError, default_table, parse_table
from simplytalk.realtime import response_usage, transcription_usage

OCT = dt.datetime(2026, 10, 14, 12, 0, tzinfo=dt.UTC)
TABLE = default_table()
PRICES = TABLE.versions[-1]


def sdk_usage(text: int = 0, audio: int = 0, image: int = 0, cached_text: int = 0, cached_audio: int = 0,
              cached_image: int = 0, out_text: int = 0, out_audio: int = 0, extra_in: int = 0,
              extra_out: int = 0) -> dict[str, Any]:
    """A Realtime `response.done` usage object, as OpenAI sends it (snake_case)."""
    inp, out = text + audio + image + extra_in, out_text + out_audio + extra_out
    return {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
            "input_token_details": {"text_tokens": text, "audio_tokens": audio, "image_tokens": image,
                                    "cached_tokens": cached_text + cached_audio + cached_image,
                                    "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio,
                                                              "image_tokens": cached_image}},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}


def response(model: str, usage: dict[str, Any], when: dt.datetime = OCT) -> dict[str, Any]:
    """A usage event as the tap stores it (repositories.calls.response_event)."""
    return {"userId": "u1", "assistantId": "a1", "provider": "openai", "kind": "response", "callId": "c1",
            "model": model, "occurredAt": when, "usage": response_usage(usage), "responseStatus": "completed"}


def transcription(model: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"userId": "u1", "assistantId": "a1", "provider": "openai", "kind": "transcription", "callId": "c1",
            "model": model, "occurredAt": OCT, "usage": None,
            "transcription": transcription_usage(usage) if usage is not None else None}


TURN = sdk_usage(text=1000, audio=2000, cached_text=200, cached_audio=500, out_text=300, out_audio=1500)


# -- the table ---------------------------------------------------------------------------------

def test_every_model_the_backend_allows_has_a_price() -> None:
    assert set(REALTIME_MODELS) <= set(PRICES.realtime), set(REALTIME_MODELS) - set(PRICES.realtime)
    assert set(TRANSCRIPTION_MODELS) <= set(PRICES.transcription)
    assert all(p.source for p in PRICES.realtime.values()), "cite every price"
    assert all(p.source for p in PRICES.transcription.values()), "cite every price"


def test_the_shipped_prices_are_openais_published_ones() -> None:
    p = PRICES.realtime["gpt-realtime-1.5"]
    assert (p.text_input, p.cached_text_input, p.audio_input, p.cached_audio_input, p.image_input,
            p.cached_image_input, p.text_output, p.audio_output) == tuple(
        Decimal(x) for x in ("4", "0.4", "32", "0.4", "5", "0.5", "16", "64"))
    assert PRICES.realtime["gpt-realtime-2"].text_output == Decimal(24)
    assert PRICES.realtime["gpt-realtime-2.1-mini"].audio_output == Decimal(20)
    assert PRICES.transcription["whisper-1"].per_minute == Decimal("0.006")
    assert PRICES.transcription["gpt-4o-mini-transcribe"].audio_input == Decimal(3)


def _toml(**over: str) -> str:
    fields = {"text_input": '"4"', "cached_text_input": '"0.4"', "audio_input": '"32"', "cached_audio_input": '"0.4"',
              "image_input": '"5"', "cached_image_input": '"0.5"', "text_output": '"16"', "audio_output": '"64"',
              **over}
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v)
    return f'[[version]]\nid = "v1"\neffective_from = "2026-01-01"\n[version.realtime."m"]\n{body}\n'


@pytest.mark.parametrize(("text", "says"), [
    (_toml(text_input="4.0"), "decimal string"),  # a TOML float: inexact
    (_toml(text_input='"four"'), "not a decimal"),
    (_toml(text_input='"-1"'), "non-negative"),
    (_toml(audio_output=""), "missing"),
    (_toml(per_token='"1"'), "unknown keys"),
    ('[[version]]\nid = "v1"\neffective_from = "2026-01-01"\n[version.transcription."w"]\nper_minute = "0.007"\n',
     "no exact price a second"),
    ('[[version]]\nid = "v1"\neffective_from = "2026-01-01"\n[version.transcription."t"]\naudio_input = "6"\n',
     "need all of"),
    ('[[version]]\nid = "b"\neffective_from = "2026-02-01"\n[[version]]\nid = "a"\neffective_from = "2026-01-01"\n',
     "in order"),
    ('[[version]]\nid = "a"\neffective_from = "2026-01-01"\ncurrency = "eur"\n', "usd"),
    ("", r"no \[\[version\]\] in the table"),
])
def test_a_table_that_cannot_price_exactly_is_refused(text: str, says: str) -> None:
    with pytest.raises(PriceTableError, match=says):
        parse_table(text)


def test_each_event_is_priced_with_the_version_in_force_on_its_day() -> None:
    doubled = [("text_input", 8), ("cached_text_input", 1), ("audio_input", 64), ("cached_audio_input", 1),
               ("image_input", 10), ("cached_image_input", 1), ("text_output", 32), ("audio_output", 128)]
    table = parse_table(_toml() + '[[version]]\nid = "v2"\neffective_from = "2026-11-01"\n'
                        '[version.realtime."m"]\n' + "\n".join(f'{k} = "{v}"' for k, v in doubled) + "\n")
    usage = sdk_usage(text=1_000_000)

    october = event_cost(response("m", usage, OCT), table)
    november = event_cost(response("m", usage, dt.datetime(2026, 11, 1, tzinfo=dt.UTC)), table)
    before = event_cost(response("m", usage, dt.datetime(2025, 12, 31, 23, 59, tzinfo=dt.UTC)), table)

    assert (october.usd, october.version_id) == (Decimal(4), "v1")
    assert (november.usd, november.version_id) == (Decimal(8), "v2")
    assert not before.priced and before.usd == 0


# -- one event, by hand --------------------------------------------------------------------------

def test_a_realtime_turn_by_hand() -> None:
    # text 800 x 4 + cached 200 x 0.40 + audio 1500 x 32 + cached 500 x 0.40 + out 300 x 16 + 1500 x 64
    # = 3200 + 80 + 48000 + 200 + 4800 + 96000 = 152280 per 1M -> $0.15228
    cost = event_cost(response("gpt-realtime-1.5", TURN), TABLE)
    assert cost == EventCost(Decimal("0.15228"), True, False, PRICES.id)
    # gpt-realtime-2 bills text output at 24: + 300 x 8 = 154680 -> $0.15468
    assert event_cost(response("gpt-realtime-2", TURN), TABLE).usd == Decimal("0.15468")
    # mini: 800 x 0.60 + 200 x 0.06 + 1500 x 10 + 500 x 0.30 + 300 x 2.40 + 1500 x 20 = 46362 -> $0.046362
    assert event_cost(response("gpt-realtime-mini-2025-10-06", TURN), TABLE).usd == Decimal("0.046362")


def test_images_and_their_cached_share() -> None:
    # 60 x 5 + 40 x 0.50 = 320 per 1M
    usage = sdk_usage(image=100, cached_image=40)
    assert event_cost(response("gpt-realtime-1.5", usage), TABLE).usd == Decimal("0.00032")


def test_tokens_without_details_are_priced_at_the_dearest_rate() -> None:
    # only totals (200 in, 100 out): audio in 32 and audio out 64 -> 6400 + 6400 = 12800 per 1M
    bare = {"total_tokens": 300, "input_tokens": 200, "output_tokens": 100}
    cost = event_cost(response("gpt-realtime-1.5", bare), TABLE)
    assert (cost.usd, cost.undetailed) == (Decimal("0.0128"), True)
    # cached tokens of no reported modality get no discount: 100 text at 4 -> 400 per 1M
    unsplit = {**sdk_usage(text=100), "input_token_details": {"text_tokens": 100, "cached_tokens": 100}}
    cost = event_cost(response("gpt-realtime-1.5", unsplit), TABLE)
    assert (cost.usd, cost.undetailed) == (Decimal("0.0004"), True)


def test_transcriptions_by_tokens_and_by_duration() -> None:
    # audio 600 x 6 + prompt text 20 x 2.50 + output 150 x 10 = 3600 + 50 + 1500 = 5150 per 1M
    tokens = {"type": "tokens", "total_tokens": 770, "input_tokens": 620, "output_tokens": 150,
              "input_token_details": {"text_tokens": 20, "audio_tokens": 600}}
    assert event_cost(transcription("gpt-4o-transcribe", tokens), TABLE).usd == Decimal("0.00515")
    # whisper-1 by duration: 42.5 s x 0.006 / 60 = $0.00425
    assert event_cost(transcription("whisper-1", {"type": "duration", "seconds": 42.5}), TABLE).usd == \
        Decimal("0.00425")
    # a duration for a model priced by tokens, or no usage at all: unpriced, never guessed
    assert not event_cost(transcription("gpt-4o-transcribe", {"type": "duration", "seconds": 3}), TABLE).priced
    assert not event_cost(transcription("gpt-4o-transcribe", None), TABLE).priced


def test_vapi_calls_cost_what_vapi_reports_and_call_events_nothing() -> None:
    vapi = {"userId": "u1", "assistantId": "v1", "provider": "vapi", "occurredAt": OCT, "callSeconds": 90.5,
            "vapi": {"cost": "0.1234"}}
    assert event_cost(vapi, TABLE) == EventCost(Decimal("0.1234"), True)
    assert not event_cost({**vapi, "vapi": {"cost": None}}, TABLE).priced
    call = {"userId": "u1", "assistantId": "a1", "provider": "openai", "kind": "call", "occurredAt": OCT,
            "callSeconds": 61.5, "model": "gpt-realtime-1.5"}
    assert event_cost(call, TABLE) == EventCost(Decimal(0), True)
    assert [vapi_cost(v) for v in ("0.5", 2, "-1", "NaN", True, None, "x")] == [
        Decimal("0.5"), Decimal(2), None, None, None, None, None]


def test_what_cannot_be_priced_is_counted_not_guessed() -> None:
    assert event_cost(response("gpt-4o-realtime-preview", TURN), TABLE).reason == \
        "no price for Realtime model 'gpt-4o-realtime-preview'"
    unreadable = {**response("gpt-realtime-1.5", TURN), "usage": None, "unreadableUsage": {"x": 1}}
    assert event_cost(unreadable, TABLE).reason == "no usage reported"
    assert not event_cost({**response("gpt-realtime-1.5", TURN), "occurredAt": None}, TABLE).priced


# -- properties ----------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def usages(draw: Any) -> dict[str, Any]:
    text, audio, image = draw(counts), draw(counts), draw(counts)
    return sdk_usage(text=text, audio=audio, image=image, cached_text=draw(st.integers(0, text)),
                     cached_audio=draw(st.integers(0, audio)), cached_image=draw(st.integers(0, image)),
                     out_text=draw(counts), out_audio=draw(counts))


def _exact(usage: dict[str, Any], model: str) -> Fraction:
    p, i, o = PRICES.realtime[model], usage["input_token_details"], usage["output_token_details"]
    c = i["cached_tokens_details"]
    parts = [(i["text_tokens"] - c["text_tokens"], p.text_input), (c["text_tokens"], p.cached_text_input),
             (i["audio_tokens"] - c["audio_tokens"], p.audio_input), (c["audio_tokens"], p.cached_audio_input),
             (i["image_tokens"] - c["image_tokens"], p.image_input), (c["image_tokens"], p.cached_image_input),
             (o["text_tokens"], p.text_output), (o["audio_tokens"], p.audio_output)]
    return sum((n * Fraction(price) for n, price in parts), Fraction(0)) / 1_000_000


@given(usages(), st.sampled_from(sorted(REALTIME_MODELS)))
def test_a_response_costs_exactly_its_tokens_times_their_prices(usage: dict[str, Any], model: str) -> None:
    cost = response_cost(RealtimeUsage.model_validate(response_usage(usage)), PRICES.realtime[model])
    assert Fraction(cost[0]) == _exact(usage, model) and cost[1] is False


@given(usages(), usages())
def test_cost_is_additive_so_no_event_is_rounded(a: dict[str, Any], b: dict[str, Any]) -> None:
    def cost(u: dict[str, Any]) -> Decimal:
        return response_cost(RealtimeUsage.model_validate(response_usage(u)), PRICES.realtime["gpt-realtime-2"])[0]

    both = sdk_usage(**{k: a_v + b_v for k, a_v, b_v in zip(
        ("text", "audio", "image", "cached_text", "cached_audio", "cached_image", "out_text", "out_audio"),
        _flat(a), _flat(b), strict=True)})
    assert cost(a) + cost(b) == cost(both)


def _flat(u: dict[str, Any]) -> tuple[int, ...]:
    i, c, o = u["input_token_details"], u["input_token_details"]["cached_tokens_details"], u["output_token_details"]
    return (i["text_tokens"], i["audio_tokens"], i["image_tokens"], c["text_tokens"], c["audio_tokens"],
            c["image_tokens"], o["text_tokens"], o["audio_tokens"])


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9))
def test_an_undetailed_response_is_never_cheaper_than_any_split(text: int, audio: int, out_text: int,
                                                                 out_audio: int) -> None:
    prices = PRICES.realtime["gpt-realtime-1.5"]
    detailed = response_cost(RealtimeUsage.model_validate(response_usage(
        sdk_usage(text=text, audio=audio, out_text=out_text, out_audio=out_audio))), prices)[0]
    bare = {"total_tokens": text + audio + out_text + out_audio, "input_tokens": text + audio,
            "output_tokens": out_text + out_audio}
    upper, undetailed = response_cost(RealtimeUsage.model_validate(response_usage(bare)), prices)
    assert upper >= detailed and undetailed == (text + audio + out_text + out_audio > 0)


@given(st.decimals(min_value=0, max_value=1000, places=3), st.sampled_from(["0.006", "0.012", "0.3"]))
def test_durations_price_exactly(seconds: Decimal, per_minute: str) -> None:
    table = parse_table(f'[[version]]\nid = "v"\neffective_from = "2026-01-01"\n'
                        f'[version.transcription."w"]\nper_minute = "{per_minute}"\n')
    usd = transcription_cost({"type": "duration", "seconds": float(seconds)}, table.versions[0].transcription["w"])
    assert usd is not None
    assert Fraction(usd[0]) == Fraction(str(float(seconds))) * Fraction(per_minute) / 60


# -- the report ----------------------------------------------------------------------------------

def _month(uid: str, aid: str, provider: str, figures: UsageFigures, costs: Sequence[str] = (),
           lines: Sequence[tuple[str, int, str, str]] = ()) -> AssistantMonth:
    m = AssistantMonth(uid, aid, figures=figures)
    for usd in costs:
        m.add_event(EventCost(Decimal(usd), True, version_id="v"), provider)
    for minutes_exact, amount, status, currency in lines:
        m.add_invoice_line({"assistantId": aid, "provider": provider, "usagePeriod": "2026-10",
                            "minutesExact": minutes_exact, "amount": amount}, status, currency)
    m.provider = m.provider or provider
    return m


def test_a_month_of_both_providers_by_hand() -> None:
    months = [
        # u1's Realtime assistant: 1830 tokens = 30.5 min, invoiced 1373 cents; two responses 0.15228 + 0.0128
        _month("u1", "a-openai", "openai", UsageFigures(total_tokens=1830), ["0.15228", "0.0128"],
               [("61/2", 1373, "open", "usd")]),
        # u1's vapi assistant: 90.5 s = 1.508333 min, not invoiced yet: 90.5 / 60 x 45 = 67.875 cents estimated
        _month("u1", "v-phone", "vapi", UsageFigures(vapi_call_millis=90_500), ["0.1234"]),
        # u2: 100 tokens = 5/3 min on an invoice since voided (75 cents, nothing collected); a transcription
        _month("u2", "a-void", "openai", UsageFigures(total_tokens=100), ["0.00515"], [("5/3", 75, "void", "usd")]),
        # u2: 1 token = 1/60 min on a carried invoice (billed nothing): 0.75 cents estimated
        _month("u2", "a-carried", "openai", UsageFigures(total_tokens=1), [], [("1/60", 1, "carried", "usd")]),
    ]

    report = margin_report("2026-10", DEFAULT_RATE_CARD, months)

    by = {line.assistant_id: line for line in report.lines}
    # cost: 16.508 + 12.34 + 0.515 + 0 = 29.363 cents -> 29; floors 16 + 12 + 0 = 28, the cent left
    # goes to the largest remainder (0.515 > 0.508 > 0.34)
    assert [by[a].cost_cents for a in ("a-openai", "v-phone", "a-void", "a-carried")] == [16, 12, 1, 0]
    # estimates: 67.875 + 0.75 = 68.625 -> 69; floors 67 + 0, both remainders get a cent
    assert [by[a].estimated_cents for a in ("a-openai", "v-phone", "a-void", "a-carried")] == [0, 68, 0, 1]
    assert [by[a].revenue_cents for a in ("a-openai", "v-phone", "a-void", "a-carried")] == [1373, 68, 0, 1]
    assert [by[a].margin_cents for a in ("a-openai", "v-phone", "a-void", "a-carried")] == [1357, 56, -1, 1]
    assert [by[a].estimated for a in ("a-openai", "v-phone", "a-void", "a-carried")] == [False, True, False, True]
    assert by["a-void"].voided_cents == 75 and by["v-phone"].cost_usd == Decimal("0.1234")
    t = report.totals
    assert (t.revenue_cents, t.invoiced_cents, t.estimated_cents, t.cost_cents, t.margin_cents) == (
        1442, 1373, 69, 29, 1413)
    assert t.cost_usd == Decimal("0.29363") and t.voided_cents == 75 and t.estimated
    # 61/2 + 181/120 + 5/3 + 1/60 = 4043/120 minutes
    assert t.minutes == Fraction(4043, 120)
    body = report_json(report)
    assert body["totals"]["minutes"] == "33.691667" and body["totals"]["providerCostUsd"] == "0.29363"
    assert body["assistants"][0]["revenue"] == {"amount": 1373, "currency": "usd"}
    assert body["priceVersions"] == ["v"] and "half-up" in body["rounding"] and body["unpricedReasons"] == {}


def test_revenue_in_another_currency_is_shown_but_never_mixed_into_the_totals() -> None:
    eur = _month("u1", "a-eur", "openai", UsageFigures(total_tokens=60), ["0.01"], [("1", 45, "paid", "eur")])
    usd = _month("u1", "a-usd", "openai", UsageFigures(total_tokens=60), ["0.02"], [("1", 45, "paid", "usd")])

    report = margin_report("2026-10", DEFAULT_RATE_CARD, [eur, usd])

    line = report.lines[0]
    assert (line.comparable, line.currency, line.revenue_cents, line.margin_cents) == (False, "eur", 45, None)
    assert (report.totals.revenue_cents, report.totals.cost_cents, report.totals.not_comparable) == (45, 2, 1)
    assert report_json(report)["assistants"][0]["margin"] is None


def test_usage_billed_on_a_non_usd_card_is_not_comparable() -> None:
    card = RateCard(id="eur", effective_from=dt.date(2026, 1, 1), tokens_per_minute=60,
                    cents_per_minute=Decimal(40), currency="eur")
    report = margin_report("2026-10", card, [_month("u1", "a", "openai", UsageFigures(total_tokens=60), ["0.01"])])
    assert report.lines[0].currency == "eur" and report.lines[0].estimated_cents == 40
    assert report.totals.revenue_cents == 0 and report.totals.not_comparable == 1


cents = st.decimals(min_value=0, max_value=10**6, places=7, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(cents, st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**6)), max_size=12),
       st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False))
def test_the_report_rounds_once_and_adds_up(rows: list[tuple[Decimal, int, int, int]], rate: Decimal) -> None:
    card = RateCard(id="c", effective_from=dt.date(2026, 1, 1), tokens_per_minute=60, cents_per_minute=rate)
    months = []
    for i, (usd, tokens, billed_tokens, amount) in enumerate(rows):
        billed = min(billed_tokens, tokens)
        months.append(_month("u", f"a{i:02d}", "openai", UsageFigures(total_tokens=tokens), [str(usd)],
                             [(str(Fraction(billed, 60)), amount, "paid", "usd")]))

    report = margin_report("2026-10", card, months)

    exact_cost = [Fraction(usd) * 100 for usd, *_ in rows]
    exact_estimate = [Fraction(t - min(b, t), 60) * Fraction(rate) for _, t, b, _ in rows]
    t = report.totals
    assert t.cost_cents == round_half_up(sum(exact_cost, Fraction(0))) == sum(x.cost_cents for x in report.lines)
    assert t.estimated_cents == round_half_up(sum(exact_estimate, Fraction(0)))
    assert t.revenue_cents == sum(x.revenue_cents or 0 for x in report.lines)
    assert t.margin_cents == t.revenue_cents - t.cost_cents == sum(x.margin_cents or 0 for x in report.lines)
    for line, cost, estimate in zip(report.lines, exact_cost, exact_estimate, strict=True):
        assert abs(line.cost_cents - cost) < 1 and abs(line.estimated_cents - estimate) < 1
        assert line.margin_cents == line.revenue_cents - line.cost_cents  # type: ignore[operator]


def test_usd_text_is_exact_and_plain() -> None:
    assert [usd_text(Decimal(x)) for x in ("0.15228", "12.00", "0E-7", "1E+2", "0.0000001")] == [
        "0.15228", "12", "0", "100", "0.0000001"]


def test_the_report_says_why_events_went_unpriced() -> None:
    month = AssistantMonth("u1", "a1")
    for data in (response("gpt-4o-realtime-preview", TURN), response("gpt-4o-realtime-preview", TURN),
                 {**response("gpt-realtime-1.5", TURN), "usage": None}, response("gpt-realtime-1.5", TURN)):
        month.add_event(event_cost(data, TABLE), "openai")

    report = margin_report("2026-10", DEFAULT_RATE_CARD, [month])

    assert report.totals.unpriced_events == 3 and report.totals.cost_usd == Decimal("0.15228")
    assert report_json(report)["unpricedReasons"] == {
        "no price for Realtime model 'gpt-4o-realtime-preview'": 2, "no usage reported": 1}
