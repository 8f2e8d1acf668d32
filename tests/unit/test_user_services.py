"""init-user on the in-memory repository: no emulator, no network."""

from __future__ import annotations

import datetime as dt

from simplytalk.repositories.users import InMemoryNewUsers
from simplytalk.services.users import InitOutcome, init_user

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=1)


def test_a_new_user_gets_zero_totals_and_empty_arrays() -> None:
    users = InMemoryNewUsers(profiles={"ann": {"email": "ann@example.com", "displayName": "Ann"}})

    assert init_user(users, "ann", NOW) is InitOutcome.INITIALIZED

    assert users.profiles["ann"] == {"email": "ann@example.com", "displayName": "Ann",
                                     "vapiAssistants": [], "openaiAssistants": []}
    usage = users.usage["ann"]
    assert usage["userId"] == "ann" and usage["createdAt"] == usage["updatedAt"] == NOW
    assert usage["totalTokens"] == usage["inputTokens"] == usage["outputTokens"] == 0
    assert usage["usageHistory"] == []


def test_a_repeat_changes_nothing() -> None:
    users = InMemoryNewUsers(profiles={"ann": {}})
    init_user(users, "ann", NOW)
    profile, usage, writes = dict(users.profiles["ann"]), dict(users.usage["ann"]), users.writes

    assert init_user(users, "ann", LATER) is InitOutcome.ALREADY_DONE

    assert users.profiles["ann"] == profile and users.usage["ann"] == usage and users.writes == writes


def test_existing_arrays_are_kept() -> None:
    users = InMemoryNewUsers(profiles={"ann": {"vapiAssistants": ["v1"]}})

    assert init_user(users, "ann", NOW) is InitOutcome.INITIALIZED

    assert users.profiles["ann"] == {"vapiAssistants": ["v1"], "openaiAssistants": []}


def test_an_array_that_is_not_an_array_is_left_as_it_is() -> None:
    users = InMemoryNewUsers(profiles={"ann": {"vapiAssistants": "oops", "openaiAssistants": []}})

    init_user(users, "ann", NOW)

    assert users.profiles["ann"] == {"vapiAssistants": "oops", "openaiAssistants": []}


def test_existing_usage_is_kept_while_missing_arrays_are_added() -> None:
    users = InMemoryNewUsers(profiles={"ann": {}}, usage={"ann": {"userId": "ann", "totalTokens": 7}})

    assert init_user(users, "ann", NOW) is InitOutcome.INITIALIZED

    assert users.usage["ann"] == {"userId": "ann", "totalTokens": 7}
    assert users.profiles["ann"] == {"vapiAssistants": [], "openaiAssistants": []}


def test_a_user_deleted_before_the_event_gets_nothing() -> None:
    users = InMemoryNewUsers()

    assert init_user(users, "gone", NOW) is InitOutcome.USER_GONE

    assert users.profiles == {} and users.usage == {} and users.writes == 0
