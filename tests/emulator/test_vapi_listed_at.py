"""`listedAt` on vapi assistants: the `vapi-listed-at` trigger (through the Firestore emulator, as
Eventarc delivers it) and migration 003 (on data written with no trigger in the way)."""

from __future__ import annotations

import datetime as dt
import time
from types import ModuleType
from typing import Any

import pytest
import requests

from devtools.firestore_events import document_event
from devtools.stack import Stack
from migrations import m003_vapi_listed_at as m003
from migrations.runner import run_all
from tests.emulator.conftest import wait_for

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
WHEN = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
WRITTEN = "google.cloud.firestore.document.v1.written"

# createdAt as vapi documents store it -> the listedAt it must give (the createdAt GET /assistants shows)
SHAPES: dict[str, tuple[Any, dt.datetime]] = {
    "timestamp": (WHEN, WHEN),
    "rfc3339-z": ("2026-03-01T12:30:15.123456Z", WHEN),
    "rfc3339-offset": ("2026-03-01T14:30:15.123456+02:00", WHEN),
    "rfc3339-no-zone": ("2026-03-01T12:30:15.123456", WHEN),
    "rfc3339-nanos": ("2026-03-01T12:30:15.123456789Z", WHEN),
    "date-only": ("2026-03-01", dt.datetime(2026, 3, 1, tzinfo=UTC)),
    "epoch-seconds": (1772368215, dt.datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)),
    "epoch-seconds-float": (1772368215.5, dt.datetime(2026, 3, 1, 12, 30, 15, 500000, tzinfo=UTC)),
    "epoch-millis": (1772368215123, dt.datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)),
    "null": (None, EPOCH),
    "garbage": ("yesterday", EPOCH),
    "negative": (-5, EPOCH),
    "huge-millis": (10**17, EPOCH),
    "huge-float": (1e300, EPOCH),
    "before-year-1-in-utc": ("0001-01-01T00:00:00+01:00", EPOCH),
    "a-map": ({"seconds": 5}, EPOCH),
}


def _ref(db: Any, doc_id: str) -> Any:
    return db.collection("assistants").document(doc_id)


def _listed_at(db: Any, doc_id: str) -> Any:
    return (_ref(db, doc_id).get().to_dict() or {}).get("listedAt")


def _trigger(stack: Stack) -> str:
    return f"{stack.functions_url}/functions/projects/{stack.project}/triggers/vapi-listed-at"


def test_the_trigger_sets_listed_at_for_every_stored_shape(db: Any) -> None:
    batch = db.batch()
    for name, (created, _) in SHAPES.items():
        batch.set(_ref(db, f"v-{name}"), {"userId": "u1", "name": name, "createdAt": created})
    batch.set(_ref(db, "v-missing"), {"userId": "u1", "name": "no createdAt at all"})
    batch.commit()

    wanted = {f"v-{name}": listed for name, (_, listed) in SHAPES.items()} | {"v-missing": EPOCH}
    wait_for(lambda: all(_listed_at(db, doc_id) is not None for doc_id in wanted), timeout=60, interval=0.2)
    got = {doc_id: _listed_at(db, doc_id) for doc_id in wanted}
    assert got == wanted


def test_a_change_of_created_at_moves_listed_at_and_an_overwrite_gets_it_back(db: Any) -> None:
    ref = _ref(db, "v-moving")
    ref.set({"userId": "u1", "name": "moving", "createdAt": "2024-01-01T00:00:00Z"})
    wait_for(lambda: _listed_at(db, "v-moving") == dt.datetime(2024, 1, 1, tzinfo=UTC), timeout=30)

    ref.update({"createdAt": 1767225600000})  # 2026-01-01 in epoch ms
    wait_for(lambda: _listed_at(db, "v-moving") == dt.datetime(2026, 1, 1, tzinfo=UTC), timeout=30)

    ref.set({"userId": "u1", "name": "rewritten whole", "createdAt": WHEN})  # listedAt gone with the rest
    wait_for(lambda: _listed_at(db, "v-moving") == WHEN, timeout=30)

    ref.update({"name": "renamed"})  # other fields change nothing
    time.sleep(1.0)
    assert _listed_at(db, "v-moving") == WHEN


def test_its_own_write_does_not_loop(db: Any) -> None:
    ref = _ref(db, "v-once")
    ref.set({"userId": "u1", "createdAt": WHEN})
    wait_for(lambda: _listed_at(db, "v-once") == WHEN, timeout=30)
    settled = ref.get().update_time

    time.sleep(2.0)  # the event of the trigger's own write has long arrived

    assert ref.get().update_time == settled


def test_many_quick_changes_end_at_the_last_created_at(db: Any) -> None:
    """Events of a burst arrive in any order, and writes race the trigger's (preconditions, retries):
    listedAt ends at the createdAt the document ends with."""
    ref = _ref(db, "v-burst")
    ref.set({"userId": "u1", "createdAt": "2020-01-01T00:00:00Z"})
    shapes = [lambda t: t, lambda t: t.isoformat(), lambda t: int(t.timestamp() * 1000), lambda t: int(t.timestamp())]
    last = EPOCH
    for i in range(20):
        last = dt.datetime(2021, 1, 1, tzinfo=UTC) + dt.timedelta(days=i * 7 % 13, seconds=i)
        ref.update({"createdAt": shapes[i % 4](last)})

    wait_for(lambda: _listed_at(db, "v-burst") == last, timeout=60, interval=0.1)
    time.sleep(1.5)  # and stays there once every event is in
    assert _listed_at(db, "v-burst") == last


def test_a_late_or_repeated_event_reads_the_document_as_it_is_now(stack: Stack, db: Any) -> None:
    ref = _ref(db, "v-late")
    ref.set({"userId": "u1", "createdAt": "2024-01-01T00:00:00Z"})
    wait_for(lambda: _listed_at(db, "v-late") == dt.datetime(2024, 1, 1, tzinfo=UTC), timeout=30)
    ref.update({"createdAt": WHEN})
    wait_for(lambda: _listed_at(db, "v-late") == WHEN, timeout=30)
    time.sleep(0.5)
    settled = ref.get().update_time

    # the first version's event, delivered again now: its copy says 2024 and has no listedAt
    stale, stale_body = document_event(stack.project, "assistants/v-late",
                                       {"userId": "u1", "createdAt": "2024-01-01T00:00:00Z"}, WRITTEN)
    current, current_body = document_event(stack.project, "assistants/v-late",
                                           {"userId": "u1", "createdAt": WHEN, "listedAt": WHEN}, WRITTEN)
    for headers, body in [(stale, stale_body), (current, current_body), (stale, stale_body)]:
        assert requests.post(_trigger(stack), data=body, headers=headers, timeout=10).status_code == 200

    assert _listed_at(db, "v-late") == WHEN
    assert ref.get().update_time == settled  # nothing written


def test_a_deleted_document_is_left_alone(stack: Stack, db: Any) -> None:
    deleted, deleted_body = document_event(stack.project, "assistants/v-gone", None, WRITTEN,
                                           old_fields={"userId": "u1", "createdAt": WHEN})
    created, created_body = document_event(stack.project, "assistants/v-gone",
                                           {"userId": "u1", "createdAt": WHEN}, WRITTEN)
    for headers, body in [(deleted, deleted_body), (created, created_body)]:  # the create arrives late
        assert requests.post(_trigger(stack), data=body, headers=headers, timeout=10).status_code == 200

    assert not _ref(db, "v-gone").get().exists


# -- migration 003 --------------------------------------------------------------------------


@pytest.fixture
def quiet(stack: Stack) -> Any:
    """The same emulator, a project with no triggers: vapi documents from before the trigger."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    db = firestore.Client(project=stack.project + "-vapi-legacy", credentials=AnonymousCredentials())
    for collection in ("assistants", "migrations"):
        for snap in db.collection(collection).stream():
            db.recursive_delete(snap.reference)
    batch = db.batch()
    for name, (created, _) in SHAPES.items():
        batch.set(_ref(db, f"v-{name}"), {"userId": "u1", "name": name, "createdAt": created})
    batch.set(_ref(db, "v-missing"), {"userId": "u1"})
    batch.set(_ref(db, "v-done"), {"userId": "u1", "createdAt": WHEN, "listedAt": WHEN})
    batch.set(_ref(db, "v-wrong"), {"userId": "u1", "createdAt": WHEN, "listedAt": EPOCH})
    batch.set(_ref(db, "v-text"), {"userId": "u1", "createdAt": WHEN, "listedAt": "2026-03-01"})
    batch.set(_ref(db, "v-orphan"), {"name": "no owner", "createdAt": WHEN})
    batch.commit()
    return db


WANTED = {f"v-{name}": listed for name, (_, listed) in SHAPES.items()} | {
    "v-missing": EPOCH, "v-done": WHEN, "v-wrong": WHEN, "v-text": WHEN, "v-orphan": WHEN}


def _quiet_progress(line: str) -> None:
    pass


def _paged(page: int, number: int = 3) -> ModuleType:
    """Migration 003 with small pages (a checkpoint every `page` documents), under another number."""
    copy = ModuleType(m003.__name__)
    copy.__dict__.update(m003.__dict__)
    copy.NUMBER = number  # type: ignore[attr-defined]
    copy.run = lambda ctx: m003.run(ctx, page=page)  # type: ignore[attr-defined]
    return copy


def test_migration_003_gives_every_vapi_assistant_its_listed_at(quiet: Any) -> None:
    before = {s.id: s.update_time for s in quiet.collection("assistants").stream()}

    [outcome] = run_all(quiet, progress=_quiet_progress, modules=[_paged(4)])

    got = {s.id: (s.to_dict() or {}).get("listedAt") for s in quiet.collection("assistants").stream()}
    assert got == WANTED
    assert outcome.status == "applied" and outcome.writes == len(WANTED) - 1  # v-done was right
    assert quiet.collection("assistants").document("v-done").get().update_time == before["v-done"]
    ledger = quiet.collection("migrations").document("003").get().to_dict()
    assert ledger["status"] == "applied" and ledger["counts"]["assistants"] == len(WANTED)
    problems = {(b["kind"], b["path"]) for b in ledger["badData"]}
    assert ("assistant", "assistants/v-orphan") in problems
    assert ("assistant", "assistants/v-garbage.createdAt") in problems
    assert ("assistant", "assistants/v-done.createdAt") not in problems


def test_migration_003_a_second_run_writes_nothing(quiet: Any) -> None:
    run_all(quiet, progress=_quiet_progress, modules=[_paged(4)])
    before = {s.id: s.update_time for s in quiet.collection("assistants").stream()}

    again = run_all(quiet, progress=_quiet_progress, modules=[_paged(4)])
    forced = run_all(quiet, progress=_quiet_progress, modules=[_paged(4, number=93)])

    assert again[0].status == "skipped"
    assert forced[0].status == "applied" and forced[0].writes == 0
    assert {s.id: s.update_time for s in quiet.collection("assistants").stream()} == before


def test_migration_003_dry_run_writes_nothing(quiet: Any) -> None:
    before = {s.id: s.update_time for s in quiet.collection("assistants").stream()}

    [outcome] = run_all(quiet, dry_run=True, progress=_quiet_progress, modules=[_paged(4)])

    assert outcome.status == "dry-run" and outcome.writes == len(WANTED) - 1
    assert {s.id: s.update_time for s in quiet.collection("assistants").stream()} == before
    assert not list(quiet.collection("migrations").stream())


def test_migration_003_resumes_from_its_checkpoint(quiet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_check = m003._check
    seen = {"n": 0}

    def crash_on_the_second_page(doc_id: str, fields: dict[str, Any]) -> list[tuple[str, str]]:
        seen["n"] += 1
        if seen["n"] == 6:  # in the middle of the second page of 4
            raise RuntimeError("machine lost")
        return real_check(doc_id, fields)

    monkeypatch.setattr(m003, "_check", crash_on_the_second_page)
    failed = run_all(quiet, progress=_quiet_progress, modules=[_paged(4)])
    ledger = quiet.collection("migrations").document("003").get().to_dict()
    right = {s.id for s in quiet.collection("assistants").stream()
             if (s.to_dict() or {}).get("listedAt") == WANTED[s.id]}
    monkeypatch.setattr(m003, "_check", real_check)
    resumed = run_all(quiet, progress=_quiet_progress, modules=[_paged(4)])

    assert failed[0].status == "failed" and ledger["checkpoint"] == sorted(WANTED)[3]
    assert right == set(sorted(WANTED)[:4]) | {"v-done"}  # the first page, and the one right already
    assert resumed[0].status == "applied"
    assert {s.id: (s.to_dict() or {}).get("listedAt") for s in quiet.collection("assistants").stream()} == WANTED
    assert quiet.collection("migrations").document("003").get().to_dict()["counts"]["assistants"] == len(WANTED)


def test_migration_003_a_document_changed_during_the_run_gets_the_new_listed_at(
        quiet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the page's read and its batch, the app changes one createdAt and deletes another:
    the batch's preconditions refuse it, and each document is brought in line on a fresh read."""
    real_check = m003._check
    later = dt.datetime(2027, 5, 5, tzinfo=UTC)

    def change_meanwhile(doc_id: str, fields: dict[str, Any]) -> list[tuple[str, str]]:
        if doc_id == "v-timestamp":  # read already, as v-garbage (ids in order), not yet written
            _ref(quiet, "v-timestamp").update({"createdAt": later})
            _ref(quiet, "v-garbage").delete()
        return real_check(doc_id, fields)

    monkeypatch.setattr(m003, "_check", change_meanwhile)
    [outcome] = run_all(quiet, progress=_quiet_progress, modules=[_paged(100)])

    got = {s.id: (s.to_dict() or {}).get("listedAt") for s in quiet.collection("assistants").stream()}
    assert outcome.status == "applied"
    assert got == {**{k: v for k, v in WANTED.items() if k != "v-garbage"}, "v-timestamp": later}
    assert not _ref(quiet, "v-garbage").get().exists
