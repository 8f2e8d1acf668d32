"""The pure fold of usage into counters, as properties: what any order, any grouping of events
into shard documents, and the codec must keep."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from simplytalk.models import UsageEvent
from simplytalk.pricing import UsageFigures, period_of
from simplytalk.usage_counters import (
    SHARDS,
    Aggregate,
    figures_of,
    fold_events,
    from_fields,
    merge_deltas,
    shard_delta,
    shard_id,
    to_fields,
    token_fields,
)

counts = st.integers(min_value=0, max_value=10**9)
moments = st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 31),
                       timezones=st.just(dt.UTC))


@st.composite
def events(draw: Any) -> tuple[str, UsageEvent]:
    provider = draw(st.sampled_from(["openai", "vapi"]))
    data: dict[str, Any] = {"userId": "ann", "assistantId": draw(st.sampled_from(["a1", "a2", "v1"])),
                            "provider": provider, "occurredAt": draw(moments)}
    if draw(st.booleans()):
        i, o = draw(counts), draw(counts)
        data["usage"] = {"totalTokens": i + o, "inputTokens": i, "outputTokens": o}
    if draw(st.booleans()):
        data["callSeconds"] = draw(st.floats(min_value=0, max_value=43_200, allow_nan=False))
    return draw(st.text("abcdef0123456789_", min_size=1, max_size=12)), UsageEvent.model_validate(data)


many = st.lists(events(), max_size=25)
figures = st.builds(UsageFigures, counts, counts, counts, counts, counts)


@given(many, st.randoms())
def test_folding_in_any_order_gives_the_same_aggregate(batch: list[tuple[str, UsageEvent]], rnd: Any) -> None:
    shuffled = list(batch)
    rnd.shuffle(shuffled)
    assert fold_events([e for _, e in batch]).figures() == fold_events([e for _, e in shuffled]).figures()


@given(many, st.randoms())
def test_folding_in_any_grouping_of_shard_documents_gives_the_same_aggregate(
        batch: list[tuple[str, UsageEvent]], rnd: Any) -> None:
    groups: dict[int, list[dict[str, Any]]] = {}
    for _, event in batch:
        groups.setdefault(rnd.randrange(4), []).append(shard_delta(event))
    grouped = Aggregate()
    for deltas in groups.values():
        grouped.add_shard(merge_deltas(deltas))  # one stored document holding several events' increments
    assert grouped.figures() == fold_events([e for _, e in batch]).figures()


@given(many)
def test_the_shards_an_event_id_picks_fold_to_the_same_aggregate(batch: list[tuple[str, UsageEvent]]) -> None:
    shards: dict[str, list[dict[str, Any]]] = {}
    for event_id, event in batch:
        shards.setdefault(shard_id(event_id, period_of(event.occurred_at)), []).append(shard_delta(event))
    stored = Aggregate()
    for deltas in shards.values():
        stored.add_shard(merge_deltas(deltas))
    assert stored.figures() == fold_events([e for _, e in batch]).figures()


@given(events())
def test_a_shard_delta_adds_the_event_s_figures_to_the_totals_its_assistant_and_its_month(
        item: tuple[str, UsageEvent]) -> None:
    _, event = item
    delta = shard_delta(event)
    period = period_of(event.occurred_at)
    expected = figures_of(event)
    assert from_fields(delta["totals"]) == expected
    assert from_fields(delta["assistants"][event.assistant_id]) == expected
    assert delta["assistants"][event.assistant_id]["provider"] == event.provider
    assert from_fields(delta["periods"][period]) == expected
    assert from_fields(delta["periods"][period]["assistants"][event.assistant_id]) == expected


@given(many)
def test_totals_equal_the_sum_of_the_months_and_of_the_assistants(batch: list[tuple[str, UsageEvent]]) -> None:
    aggregate = fold_events([e for _, e in batch])
    assert sum(aggregate.periods.values(), UsageFigures()) == aggregate.totals
    assert sum(aggregate.assistants.values(), UsageFigures()) == aggregate.totals
    for period, per in aggregate.period_assistants.items():
        assert sum(per.values(), UsageFigures()) == aggregate.periods[period]


@given(events())
def test_an_event_lands_in_a_shard_of_its_own_year(item: tuple[str, UsageEvent]) -> None:
    event_id, event = item
    year, k = shard_id(event_id, period_of(event.occurred_at)).split("-")
    assert year == f"{event.occurred_at.year:04d}" and 0 <= int(k) < SHARDS


@given(figures)
def test_the_codec_reads_back_what_it_writes(f: UsageFigures) -> None:
    assert from_fields(to_fields(f)) == f
    assert list(to_fields(f)) == ["totalTokens", "inputTokens", "outputTokens", "openaiCallMillis", "vapiCallMillis"]
    assert token_fields(f) == {"totalTokens": f.total_tokens, "inputTokens": f.input_tokens,
                               "outputTokens": f.output_tokens}


def test_missing_fields_and_a_missing_map_read_as_zero() -> None:
    assert from_fields(None) == UsageFigures()
    assert from_fields({"totalTokens": 5}) == UsageFigures(total_tokens=5)
    assert from_fields({"totalTokens": None, "vapiCallMillis": 7}) == UsageFigures(vapi_call_millis=7)
