from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.clock import rfc3339_sortable as _rfc3339
from simplytalk.errors import InvalidInput
from simplytalk.paging import decode_token, encode_token, page_size
from simplytalk.repositories.assistants import EPOCH
from simplytalk.repositories.assistants import parse_time as _parse_time


@given(st.dictionaries(st.sampled_from(["createdAt", "id", "provider"]), st.text(), min_size=3))
def test_tokens_round_trip(cursor: dict[str, str]) -> None:
    assert decode_token(encode_token(cursor), ("createdAt", "id", "provider")) == cursor


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "WzFd", "eyJpZCI6MX0"])
def test_foreign_tokens_are_400(token: str) -> None:
    with pytest.raises(InvalidInput):
        decode_token(token, ("id",))


@pytest.mark.parametrize(("raw", "size"), [(None, 20), ("", 20), ("1", 1), ("100", 100)])
def test_page_sizes(raw: str | None, size: int) -> None:
    assert page_size(raw) == size


@pytest.mark.parametrize("raw", ["0", "101", "-5", "2.5", "x"])
def test_bad_page_sizes(raw: str) -> None:
    with pytest.raises(InvalidInput):
        page_size(raw)


def test_created_at_in_every_stored_shape() -> None:
    moment = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

    assert _parse_time(moment) == moment
    assert _parse_time("2026-03-01T12:00:00Z") == moment
    assert _parse_time(moment.timestamp()) == moment
    assert _parse_time(moment.timestamp() * 1000) == moment
    assert _parse_time(None) == EPOCH
    assert _parse_time("yesterday") == EPOCH


@given(st.datetimes(timezones=st.just(dt.UTC)), st.datetimes(timezones=st.just(dt.UTC)))
def test_rfc3339_strings_sort_as_times(a: dt.datetime, b: dt.datetime) -> None:
    assert (_rfc3339(a) < _rfc3339(b)) == (a < b)


@pytest.mark.parametrize("cursor", [{"createdAt": "x", "id": "a"}, {"createdAt": "2026-01-01T00:00:00Z", "id": "a/b"},
                                    {"createdAt": "2026-01-01T00:00:00Z", "id": ".."}])
def test_forged_cursors_are_400(cursor: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        decode_token(encode_token(cursor), ("createdAt", "id"), times=("createdAt",), ids=("id",))


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00"])
def test_a_cursor_time_no_timestamp_can_have_is_400_not_a_500_later(when: str) -> None:
    token = encode_token({"createdAt": when, "id": "a"})

    with pytest.raises(InvalidInput):
        decode_token(token, ("createdAt", "id"), times=("createdAt",), ids=("id",))


def test_a_cursor_time_is_utc() -> None:
    from simplytalk.paging import cursor_time

    assert cursor_time("2026-01-01T01:00:00+01:00") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
