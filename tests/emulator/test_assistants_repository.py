"""The assistants repository's contract, the same assertions on the in-memory fake and on Firestore
(the emulator): the limit, ownership, the user's array kept in step, ordering with ties, cursors
across providers, listedAt, and a precondition retry when the user document changed meanwhile."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from simplytalk.assistant_input import AssistantPatch
from simplytalk.errors import NotFound
from simplytalk.models import OpenAIAssistant
from simplytalk.repositories.assistants import (
    EPOCH,
    PROVIDERS,
    Assistants,
    FirestoreAssistants,
    InMemoryAssistants,
    ListCursor,
    ListedAtOutcome,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)


@dataclass
class Harness:
    """One implementation, and how a test writes and reads its documents around the repository."""

    repo: Assistants
    put_user: Callable[[str, dict[str, Any]], None]
    user: Callable[[str], dict[str, Any] | None]
    put_vapi: Callable[[str, dict[str, Any]], None]
    vapi: Callable[[str], dict[str, Any] | None]


def _memory() -> Harness:
    repo = InMemoryAssistants()

    def put_user(uid: str, fields: dict[str, Any]) -> None:
        repo.users[uid] = dict(fields)
        repo.versions[f"users/{uid}"] = repo.versions.get(f"users/{uid}", 0) + 1

    return Harness(repo, put_user, lambda uid: repo.users.get(uid), repo.put_vapi, lambda aid: repo.vapi.get(aid))


def _firestore(db: Any) -> Harness:
    def put_user(uid: str, fields: dict[str, Any]) -> None:
        db.collection("users").document(uid).set(fields)

    def put_vapi(aid: str, fields: dict[str, Any]) -> None:
        db.collection("assistants").document(aid).set(fields)

    return Harness(FirestoreAssistants(db), put_user, lambda uid: db.collection("users").document(uid).get().to_dict(),
                   put_vapi, lambda aid: db.collection("assistants").document(aid).get().to_dict())


@pytest.fixture(params=["memory", "firestore"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield _memory() if request.param == "memory" else _firestore(request.getfixturevalue("db"))


_ids = itertools.count()


def builder(uid: str, at: dt.datetime = T0, name: str = "a",
            meanwhile: Callable[[int], None] | None = None) -> Callable[[bool], OpenAIAssistant]:
    calls = itertools.count()

    def build(is_subscribed: bool) -> OpenAIAssistant:
        n = next(calls)
        if meanwhile is not None:
            meanwhile(n)  # between the attempt's read and its write
        return OpenAIAssistant(id=f"asst_{next(_ids):06d}", user_id=uid, name=name, is_subscribed=is_subscribed,
                               created_at=at, updated_at=at)

    return build


def _array(h: Harness, uid: str) -> list[str]:
    return list((h.user(uid) or {}).get("openaiAssistants") or [])


def test_creates_within_the_limit_and_keeps_the_users_array_in_step(h: Harness) -> None:
    h.put_user("ann", {"isSubscribed": True, "openaiAssistants": []})

    made = [h.repo.create("ann", 2, builder("ann", name=f"a{i}")) for i in range(2)]
    refused = h.repo.create("ann", 2, builder("ann"))

    assert refused is None and all(a is not None for a in made)
    assert sorted(_array(h, "ann")) == sorted(a.id for a in made if a)
    assert all(a is not None and a.is_subscribed for a in made)
    assert made[0] is not None and h.repo.owned("ann", made[0].id).name == "a0"


def test_a_first_create_makes_the_profile(h: Harness) -> None:
    made = h.repo.create("cat", 5, builder("cat"))

    assert made is not None and not made.is_subscribed
    profile = h.user("cat") or {}
    assert profile["openaiAssistants"] == [made.id] and profile["createdAt"] == T0


def test_a_create_that_lost_a_race_retries_on_a_fresh_read(h: Harness) -> None:
    h.put_user("ann", {"openaiAssistants": ["asst_elsewhere"]})

    def someone_else_writes_first(attempt: int) -> None:
        if attempt == 0:
            h.put_user("ann", {"openaiAssistants": ["asst_elsewhere", "asst_other"]})

    made = h.repo.create("ann", 3, builder("ann", meanwhile=someone_else_writes_first))

    assert made is not None
    assert _array(h, "ann") == ["asst_elsewhere", "asst_other", made.id]
    assert h.repo.create("ann", 3, builder("ann")) is None


def test_another_users_or_a_missing_assistant_is_not_found(h: Harness) -> None:
    theirs = h.repo.create("bob", 5, builder("bob"))
    assert theirs is not None
    patch = AssistantPatch.model_validate({"name": "x"})

    for aid in (theirs.id, "asst_missing"):
        with pytest.raises(NotFound):
            h.repo.owned("ann", aid)
        with pytest.raises(NotFound):
            h.repo.update("ann", aid, patch, T0)
        with pytest.raises(NotFound):
            h.repo.delete("ann", aid)
    assert h.repo.owned("bob", theirs.id).name == "a"


def test_an_update_changes_only_what_the_patch_sets(h: Harness) -> None:
    made = h.repo.create("ann", 5, builder("ann", name="Front desk"))
    assert made is not None
    later = T0 + dt.timedelta(hours=1)

    updated = h.repo.update("ann", made.id, AssistantPatch.model_validate({"firstMessage": "Hi!"}), later)

    assert (updated.name, updated.first_message, updated.created_at, updated.updated_at) == (
        "Front desk", "Hi!", T0, later)
    assert h.repo.owned("ann", made.id).model_dump() == updated.model_dump()


def test_a_delete_takes_it_out_of_the_users_array_too(h: Harness) -> None:
    keep = h.repo.create("ann", 5, builder("ann"))
    gone = h.repo.create("ann", 5, builder("ann"))
    assert keep is not None and gone is not None

    h.repo.delete("ann", gone.id)

    assert _array(h, "ann") == [keep.id]
    with pytest.raises(NotFound):
        h.repo.owned("ann", gone.id)


def test_pages_cover_every_assistant_once_newest_first_with_ties_by_id(h: Harness) -> None:
    made = []
    for i in range(5):
        a = h.repo.create("ann", 50, builder("ann", at=T0 + dt.timedelta(seconds=i // 2)))
        assert a is not None
        made.append(a)
    h.repo.create("bob", 50, builder("bob"))
    expected = [a.id for a in sorted(made, key=lambda a: (a.created_at, a.id), reverse=True)]

    for size in (1, 2, 5):
        seen: list[str] = []
        after = None
        while True:
            page = h.repo.page("ann", size, after)
            seen += [a.id for a in page]
            if len(page) < size:
                break
            after = (page[-1].created_at, page[-1].id)
        assert seen == expected, size


def test_each_providers_listing_starts_just_after_a_cursor_of_either_provider(h: Harness) -> None:
    same = T0.replace(microsecond=0)
    made = h.repo.create("ann", 50, builder("ann", at=same))
    assert made is not None
    for aid, created in (("v1", same), ("v2", same.isoformat()), ("v3", int(same.timestamp()) - 60)):
        h.put_vapi(aid, {"userId": "ann", "name": aid, "createdAt": created})
        assert h.repo.sync_listed_at(aid) in (ListedAtOutcome.SET, ListedAtOutcome.UP_TO_DATE)
    stamp = "2026-03-01T12:00:00.000000Z"

    def ids(after: ListCursor | None) -> dict[str, list[str]]:
        return {p: [e.id for e in h.repo.listed("ann", p, 10, after)] for p in PROVIDERS}

    assert ids(None) == {"openai": [made.id], "vapi": ["v2", "v1", "v3"]}
    assert ids((stamp, "vapi", "v2")) == {"openai": [made.id], "vapi": ["v1", "v3"]}
    assert ids((stamp, "vapi", "v1")) == {"openai": [made.id], "vapi": ["v3"]}
    assert ids((stamp, "openai", made.id)) == {"openai": [], "vapi": ["v3"]}
    [entry] = h.repo.listed("ann", "vapi", 1, (stamp, "vapi", "v2"))
    assert (entry.name, entry.listed_at, entry.created_at, entry.updated_at) == ("v1", same, same, None)


def test_listed_at_is_created_at_in_any_shape_and_left_alone_once_right(h: Harness) -> None:
    for aid, created, want in (("ts", T0, T0), ("text", "2026-03-01T13:00:00.25+01:00", T0),
                               ("ms", int(T0.timestamp() * 1000), T0), ("none", None, EPOCH)):
        h.put_vapi(aid, {"userId": "ann", "createdAt": created})
        assert h.repo.sync_listed_at(aid) in (ListedAtOutcome.SET, ListedAtOutcome.UP_TO_DATE)
        assert (h.vapi(aid) or {})["listedAt"] == want, aid
        assert h.repo.sync_listed_at(aid) is ListedAtOutcome.UP_TO_DATE
    assert h.repo.sync_listed_at("never-written") is ListedAtOutcome.GONE
    assert h.vapi("never-written") is None
