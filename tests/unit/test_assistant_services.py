"""The assistants services on the in-memory repository and usage totals: no emulator, no network."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from simplytalk.assistant_input import AssistantCreate, AssistantPatch
from simplytalk.errors import Aborted, InvalidInput, LimitReached, NotFound
from simplytalk.paging import decode_token
from simplytalk.pricing import UsageFigures
from simplytalk.repositories.assistants import EPOCH, InMemoryAssistants, ListedAtOutcome, listed_at
from simplytalk.services import assistants as svc
from simplytalk.services.assistants import AssistantDeps

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LIMIT = 3


@dataclass
class Totals:
    figures: dict[str, dict[str, UsageFigures]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def assistant_totals(self, uid: str) -> dict[str, UsageFigures]:
        self.asked.append(uid)
        return self.figures.get(uid, {})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def _ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"asst_{next(counter):04d}"


@pytest.fixture
def repo() -> InMemoryAssistants:
    return InMemoryAssistants(users={"ann": {"isSubscribed": True}, "bob": {}}, attempts=5)


@pytest.fixture
def deps(repo: InMemoryAssistants) -> AssistantDeps:
    return AssistantDeps(assistants=repo, usage=Totals(), clock=Clock(), new_id=_ids())


def create(deps: AssistantDeps, uid: str = "ann", name: str = "Front desk", limit: int = LIMIT) -> Any:
    return svc.create_assistant(deps, uid, AssistantCreate(name=name), limit)


# -- create ------------------------------------------------------------------------------

def test_creating_within_the_limit_stores_it_and_adds_it_to_the_users_array(
        deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    made = create(deps)

    assert made.user_id == "ann" and made.name == "Front desk" and made.is_subscribed
    assert made.created_at == made.updated_at == NOW
    assert repo.users["ann"]["openaiAssistants"] == [made.id]
    assert repo.openai[made.id]["userId"] == "ann"


def test_creating_for_a_user_without_a_profile_creates_the_profile(deps: AssistantDeps,
                                                                   repo: InMemoryAssistants) -> None:
    made = create(deps, "cat")

    assert not made.is_subscribed
    assert repo.users["cat"] == {"openaiAssistants": [made.id], "vapiAssistants": [], "createdAt": NOW}


def test_creating_at_the_limit_is_refused_with_the_limit_message(deps: AssistantDeps,
                                                                 repo: InMemoryAssistants) -> None:
    for i in range(LIMIT):
        create(deps, name=f"a{i}")

    with pytest.raises(LimitReached) as refused:
        create(deps)

    assert refused.value.message == ("assistant limit reached: 3 OpenAI assistants per user; "
                                     "delete one to create another")
    assert len(repo.openai) == LIMIT


def test_deleting_one_at_the_limit_makes_room_for_another(deps: AssistantDeps) -> None:
    made = [create(deps, name=f"a{i}") for i in range(LIMIT)]

    svc.delete_assistant(deps, "ann", made[0].id)

    create(deps)


def test_concurrent_creates_never_overshoot_the_limit(repo: InMemoryAssistants) -> None:
    repo.attempts = 40
    deps = AssistantDeps(assistants=repo, usage=Totals(), clock=Clock())

    def attempt(i: int) -> str:
        try:
            create(deps, name=f"a{i}")
            return "created"
        except LimitReached:
            return "refused"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(attempt, range(10)))

    assert sorted(outcomes) == ["created"] * LIMIT + ["refused"] * (10 - LIMIT)
    assert sorted(repo.users["ann"]["openaiAssistants"]) == sorted(repo.openai)


def test_a_create_that_lost_a_race_retries_on_a_fresh_read(deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    races = iter([True])

    def another_create_wins(path: str) -> None:
        if next(races, False):
            repo.users["ann"]["openaiAssistants"] = ["asst_other"]
            repo.versions[path] = repo.versions.get(path, 0) + 1

    repo.meanwhile = another_create_wins
    made = create(deps)

    assert repo.users["ann"]["openaiAssistants"] == ["asst_other", made.id]
    assert made.id == "asst_0001"  # the lost attempt's id was never stored


def test_a_concurrent_change_every_time_gives_up_with_aborted_after_n_attempts(
        deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    tries: list[str] = []

    def always_changed(path: str) -> None:
        tries.append(path)
        repo.versions[path] = repo.versions.get(path, 0) + 1

    repo.meanwhile = always_changed

    with pytest.raises(Aborted) as gave_up:
        create(deps)

    assert gave_up.value.message == "too many concurrent changes to this user's assistants; try again"
    assert tries == ["users/ann"] * 5
    assert repo.openai == {}


# -- read, update, delete ---------------------------------------------------------------------

def test_another_users_assistant_is_not_found(deps: AssistantDeps) -> None:
    theirs = create(deps, "bob")

    for call in (lambda: svc.get_assistant(deps, "ann", theirs.id),
                 lambda: svc.update_assistant(deps, "ann", theirs.id, AssistantPatch.model_validate({"name": "x"})),
                 lambda: svc.delete_assistant(deps, "ann", theirs.id)):
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.message == "assistant not found"
    assert svc.get_assistant(deps, "bob", theirs.id).name == "Front desk"


def test_a_missing_assistant_is_not_found(deps: AssistantDeps) -> None:
    with pytest.raises(NotFound):
        svc.get_assistant(deps, "ann", "asst_none")


def test_a_patch_changes_what_it_sets_and_keeps_unset_fields(deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    made = svc.create_assistant(deps, "ann", AssistantCreate.model_validate(
        {"name": "Front desk", "systemPrompt": "Be kind.", "firstMessage": "Hi!"}), LIMIT)
    later = NOW + dt.timedelta(minutes=5)
    deps.clock.now = later  # type: ignore[attr-defined]

    updated = svc.update_assistant(deps, "ann", made.id, AssistantPatch.model_validate({"firstMessage": "Hello!"}))

    assert (updated.name, updated.system_prompt, updated.first_message) == ("Front desk", "Be kind.", "Hello!")
    assert updated.created_at == NOW and updated.updated_at == later
    assert svc.get_assistant(deps, "ann", made.id).model_dump() == updated.model_dump()
    assert repo.openai[made.id]["systemPrompt"] == "Be kind."


def test_an_assistant_deleted_during_a_patch_is_not_found(deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    made = create(deps)

    def deleted_meanwhile(path: str) -> None:
        repo.openai.pop(made.id, None)

    repo.meanwhile = deleted_meanwhile

    with pytest.raises(NotFound):
        svc.update_assistant(deps, "ann", made.id, AssistantPatch.model_validate({"name": "x"}))


def test_delete_removes_it_and_its_id_from_the_users_array(deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    keep, gone = create(deps, name="keep"), create(deps, name="gone")

    svc.delete_assistant(deps, "ann", gone.id)

    assert repo.users["ann"]["openaiAssistants"] == [keep.id]
    assert list(repo.openai) == [keep.id]
    with pytest.raises(NotFound):
        svc.get_assistant(deps, "ann", gone.id)
    with pytest.raises(NotFound):
        svc.delete_assistant(deps, "ann", gone.id)


def test_a_delete_racing_a_change_retries_and_gives_up_with_aborted_after_n_attempts(
        deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    made = create(deps)
    tries: list[str] = []
    changes = 5

    def changed(path: str) -> None:
        tries.append(path)
        if len(tries) <= changes:
            repo.versions[path] = repo.versions.get(path, 0) + 1

    repo.meanwhile = changed
    with pytest.raises(Aborted) as gave_up:
        svc.delete_assistant(deps, "ann", made.id)
    assert gave_up.value.message == "the assistant is changing too often to delete; try again"
    assert tries == [f"openaiAssistants/{made.id}"] * 5 and made.id in repo.openai

    tries.clear()
    changes = 2
    svc.delete_assistant(deps, "ann", made.id)
    assert len(tries) == 3 and made.id not in repo.openai


def test_token_usage_comes_from_the_usage_totals_not_the_document(deps: AssistantDeps,
                                                                  repo: InMemoryAssistants) -> None:
    made = create(deps)
    repo.openai[made.id]["tokenUsage"] = {"totalTokens": 1, "inputTokens": 1, "outputTokens": 0}  # a lagging mirror
    deps.usage.figures["ann"] = {  # type: ignore[attr-defined]
        made.id: UsageFigures(total_tokens=300, input_tokens=200, output_tokens=100)}
    want = {"totalTokens": 300, "inputTokens": 200, "outputTokens": 100}

    assert svc.get_assistant(deps, "ann", made.id).to_json()["tokenUsage"] == want
    patched = svc.update_assistant(deps, "ann", made.id, AssistantPatch.model_validate({"name": "y"}))
    assert patched.to_json()["tokenUsage"] == want
    assert svc.list_openai_assistants(deps, "ann", 10, None).items[0]["tokenUsage"] == want
    assert svc.list_all_assistants(deps, "ann", 10, None).items[0]["tokenUsage"] == want
    other = create(deps, name="unused")
    assert svc.get_assistant(deps, "ann", other.id).to_json()["tokenUsage"] == {
        "totalTokens": 0, "inputTokens": 0, "outputTokens": 0}


def test_an_empty_page_does_not_ask_for_the_usage_totals(deps: AssistantDeps) -> None:
    page = svc.list_openai_assistants(deps, "ann", 10, None)

    assert page.items == [] and page.next_page_token is None
    assert deps.usage.asked == []  # type: ignore[attr-defined]


# -- paging ------------------------------------------------------------------------------------

def _walk(list_page: Callable[[int, str | None], svc.Page], size: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    token = None
    while True:
        page = list_page(size, token)
        assert len(page.items) <= size
        seen += page.items
        token = page.next_page_token
        if token is None:
            return seen


def test_paging_covers_every_assistant_once_newest_first_with_ties(deps: AssistantDeps) -> None:
    clock: Any = deps.clock
    made = []
    for i in range(7):
        clock.now = NOW + dt.timedelta(seconds=i // 3)  # three to a second: ties broken by id
        made.append(create(deps, name=f"a{i}", limit=100).id)
    create(deps, "bob", limit=100)
    expected = sorted(made, key=lambda aid: (NOW + dt.timedelta(seconds=made.index(aid) // 3), aid), reverse=True)

    for size in (1, 2, 3, 7, 100):
        listed = _walk(lambda n, t: svc.list_openai_assistants(deps, "ann", n, t), size)
        assert [a["id"] for a in listed] == expected, size


def test_the_last_full_page_has_no_next_token(deps: AssistantDeps) -> None:
    for i in range(4):
        create(deps, name=f"a{i}", limit=100)

    first = svc.list_openai_assistants(deps, "ann", 2, None)
    second = svc.list_openai_assistants(deps, "ann", 2, first.next_page_token)

    assert first.next_page_token and second.next_page_token is None and len(second.items) == 2


def test_a_foreign_page_token_is_invalid_input(deps: AssistantDeps) -> None:
    for list_page in (svc.list_openai_assistants, svc.list_all_assistants):
        with pytest.raises(InvalidInput):
            list_page(deps, "ann", 10, "bm90IGpzb24")


# -- both providers ---------------------------------------------------------------------------

def _stamp(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_the_merged_list_orders_by_created_at_provider_and_id_and_pages_by_token(
        deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    clock: Any = deps.clock
    base = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    times = [base + dt.timedelta(seconds=s) for s in (0, 0, 1, 2, 2, 3)]
    made = []
    for i, t in enumerate(times):  # OpenAI assistants at the same times as vapi ones: provider breaks ties
        clock.now = t
        made.append(create(deps, name=f"o{i}", limit=100).id)
    shapes = [lambda t: t, _stamp, lambda t: int(t.timestamp()), lambda t: int(t.timestamp() * 1000)]
    for i, t in enumerate(times):
        repo.put_vapi(f"v{i}", {"userId": "ann", "name": f"v{i}", "createdAt": shapes[i % 4](t), "callSeconds": i})
        assert repo.sync_listed_at(f"v{i}") is ListedAtOutcome.SET
    repo.put_vapi("theirs", {"userId": "bob", "createdAt": base})
    repo.sync_listed_at("theirs")
    repo.put_vapi("unlisted", {"userId": "ann", "createdAt": base})  # the trigger has not run yet

    def key(entry: tuple[str, str, dt.datetime]) -> tuple[dt.datetime, str, str]:
        provider, aid, t = entry
        return (t, provider, aid)

    expected = sorted([("openai", aid, t) for aid, t in zip(made, times, strict=True)]
                      + [("vapi", f"v{i}", t) for i, t in enumerate(times)], key=key, reverse=True)

    for size in (1, 2, 3, 5, 100):
        listed = _walk(lambda n, t: svc.list_all_assistants(deps, "ann", n, t), size)
        assert [(a["provider"], a["id"]) for a in listed] == [(p, aid) for p, aid, _ in expected], size
    first = svc.list_all_assistants(deps, "ann", 3, None)
    assert first.next_page_token is not None
    assert decode_token(first.next_page_token, ("createdAt", "provider", "id")) == {
        "createdAt": "2025-06-01T00:00:02.000000Z", "provider": "vapi", "id": "v4"}
    vapi, openai = first.items[:2]
    assert vapi == {"id": "v5", "provider": "vapi", "name": "v5", "createdAt": "2025-06-01T00:00:03.000000Z",
                    "updatedAt": None, "callSeconds": 5}
    assert openai["id"] == made[5] and openai["createdAt"] == openai["updatedAt"] == "2025-06-01T00:00:03.000000Z"
    assert set(openai) == {"id", "provider", "name", "createdAt", "updatedAt", "tokenUsage", "isSubscribed"}


def test_a_vapi_assistant_is_listed_at_its_created_at_in_every_stored_shape(repo: InMemoryAssistants) -> None:
    moment = dt.datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=dt.UTC)  # .5 s: exact in epoch ms
    shapes: dict[str, tuple[Any, dt.datetime]] = {
        "timestamp": (moment, moment),
        "rfc3339": ("2026-03-01T12:00:00.500000Z", moment),
        "offset": ("2026-03-01T13:00:00.5+01:00", moment),
        "no-zone": ("2026-03-01T12:00:00.500", moment),
        "epoch-s": (int(moment.timestamp()), moment.replace(microsecond=0)),
        "epoch-ms": (int(moment.timestamp() * 1000), moment),
        "missing": (None, EPOCH),
        "unreadable": ("yesterday", EPOCH),
        "negative": (-5, EPOCH),
        "before-year-1": ("0001-01-01T00:00:00+01:00", EPOCH),
    }
    for name, (created, _) in shapes.items():
        repo.put_vapi(name, {"userId": "ann", **({"createdAt": created} if created is not None else {})})

    outcomes = {name: repo.sync_listed_at(name) for name in shapes}

    assert set(outcomes.values()) == {ListedAtOutcome.SET}
    assert {name: repo.vapi[name]["listedAt"] for name in shapes} == {n: want for n, (_, want) in shapes.items()}
    assert listed_at(None) == EPOCH


def test_listed_at_is_written_only_when_it_differs_and_never_recreates(repo: InMemoryAssistants) -> None:
    repo.put_vapi("v", {"userId": "ann", "createdAt": "2024-01-01T00:00:00Z"})

    assert repo.sync_listed_at("v") is ListedAtOutcome.SET
    assert repo.sync_listed_at("v") is ListedAtOutcome.UP_TO_DATE
    repo.put_vapi("v", {**repo.vapi["v"], "createdAt": "2026-01-01T00:00:00Z"})
    assert repo.sync_listed_at("v") is ListedAtOutcome.SET
    assert repo.vapi["v"]["listedAt"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    del repo.vapi["v"]
    assert repo.sync_listed_at("v") is ListedAtOutcome.GONE
    assert "v" not in repo.vapi


def test_listed_at_follows_a_change_made_during_the_sync(deps: AssistantDeps, repo: InMemoryAssistants) -> None:
    repo.put_vapi("v", {"userId": "ann", "createdAt": "2024-01-01T00:00:00Z"})
    changes = iter([True])

    def vapi_writes_meanwhile(path: str) -> None:
        if next(changes, False):
            repo.put_vapi("v", {**repo.vapi["v"], "createdAt": "2026-01-01T00:00:00Z"})

    repo.meanwhile = vapi_writes_meanwhile

    assert svc.sync_listed_at(deps, "v") is ListedAtOutcome.SET
    assert repo.vapi["v"]["listedAt"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_listed_at_gives_up_with_aborted_when_the_document_keeps_changing(repo: InMemoryAssistants) -> None:
    repo.put_vapi("v", {"userId": "ann", "createdAt": "2024-01-01T00:00:00Z"})
    repo.meanwhile = lambda path: repo.put_vapi("v", dict(repo.vapi["v"]))

    with pytest.raises(Aborted) as gave_up:
        repo.sync_listed_at("v")

    assert gave_up.value.message == "assistants/v changes too often to set listedAt; try again"

