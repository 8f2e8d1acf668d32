"""Migrations 001 and 002 on seeded data of every kind, through the runner and its ledger (the later
ones run here too and have tests of their own: 003 test_vapi_listed_at.py, 004 test_rollover.py)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
from simplytalk.services.aggregation import read_aggregate

from devtools.stack import Stack
from migrations import m002_assistant_refs
from migrations.runner import discover, run_all

WHEN = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)


def seed(db: Any) -> None:
    """Every kind of user, written with no triggers in the way (the documents predate the backend)."""
    users = {
        "u-none": {"email": "none@example.com"},
        "u-vapi": {"email": "vapi@example.com"},
        "u-openai": {"email": "openai@example.com"},
        "u-both": {"email": "both@example.com", "displayName": "Both", "isSubscribed": True},
        "u-done": {"email": "done@example.com", "vapiAssistants": ["v-done"], "openaiAssistants": []},
        "u-half": {"email": "half@example.com", "openaiAssistants": ["o-half-1", "o-gone"]},
        "u-bad": {"openaiAssistants": "o-bad"},  # no email; a string where an array belongs
        "u-legacy": {"email": "legacy@example.com"},  # totals from before the counters, no raw events
        "u-partial": {"email": "partial@example.com"},  # totals, and some of them as raw events
    }
    batch = db.batch()
    for uid, data in users.items():
        batch.set(db.collection("users").document(uid), data)
    for aid, uid in {"v-vapi": "u-vapi", "v-both": "u-both", "v-done": "u-done", "v-orphan": "u-nobody"}.items():
        batch.set(db.collection("assistants").document(aid), {"userId": uid, "name": aid})
    for aid, uid in {"o-openai": "u-openai", "o-both-1": "u-both", "o-both-2": "u-both", "o-half-1": "u-half",
                     "o-half-2": "u-half", "o-bad": "u-bad"}.items():
        batch.set(db.collection("openaiAssistants").document(aid), {"userId": uid, "name": aid})
    batch.set(db.collection("tokenUsage").document("u-done"), {"userId": "u-done", "totalTokens": 0})
    batch.set(db.collection("tokenUsage").document("u-legacy"), {"userId": "u-legacy", "totalTokens": 500,
                                                                 "inputTokens": 300, "outputTokens": 200})
    batch.set(db.collection("tokenUsage").document("u-partial"), {"userId": "u-partial", "totalTokens": 1000,
                                                                  "inputTokens": 1000, "outputTokens": 0})
    batch.set(db.collection("usageEvents").document("partial-1"), {
        "userId": "u-partial", "assistantId": "o-x", "provider": "openai", "occurredAt": WHEN,
        "usage": {"totalTokens": 350, "inputTokens": 350, "outputTokens": 0}})
    for i, tokens in enumerate([100, 250]):
        batch.set(db.collection("usageEvents").document(f"old-{i}"), {
            "userId": "u-openai", "assistantId": "o-openai", "provider": "openai", "occurredAt": WHEN,
            "usage": {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}})
    batch.commit()


@pytest.fixture
def quiet(stack: Stack) -> Any:
    """The same emulator, a project with no triggers registered: data as it was before this backend."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    db = firestore.Client(project=stack.project + "-legacy", credentials=AnonymousCredentials())
    for collection in ("users", "assistants", "openaiAssistants", "tokenUsage", "usageEvents", "migrations"):
        for snap in db.collection(collection).stream():
            db.recursive_delete(snap.reference)
    seed(db)
    return db


def profile(db: Any, uid: str) -> dict[str, Any]:
    return db.collection("users").document(uid).get().to_dict() or {}


def quiet_progress(line: str) -> None:
    pass


def test_both_migrations_bring_every_user_to_the_new_model(quiet: Any) -> None:
    outcomes = run_all(quiet, progress=quiet_progress)

    assert [(o.number, o.status) for o in outcomes] == [(m.NUMBER, "applied") for m in discover()]
    for uid in ("u-none", "u-vapi", "u-openai", "u-both", "u-done", "u-half", "u-bad", "u-legacy"):
        assert quiet.collection("tokenUsage").document(uid).get().exists, uid
    assert quiet.collection("tokenUsage").document("u-openai").get().to_dict()["totalTokens"] == 350
    assert read_aggregate(quiet, "u-openai").totals.total_tokens == 350
    assert quiet.collection("tokenUsage").document("u-none").get().to_dict()["totalTokens"] == 0
    # totals from before the counters survive the rollup: the part no raw event explains is a legacy counter
    assert quiet.collection("tokenUsage").document("u-legacy").get().to_dict()["totalTokens"] == 500
    assert quiet.collection("tokenUsage").document("u-partial").get().to_dict()["totalTokens"] == 1000
    assert read_aggregate(quiet, "u-partial").totals.total_tokens == 1000
    expected = {
        "u-none": ([], []), "u-vapi": (["v-vapi"], []), "u-openai": ([], ["o-openai"]),
        "u-both": (["v-both"], ["o-both-1", "o-both-2"]), "u-done": (["v-done"], []),
        "u-half": ([], ["o-half-1", "o-half-2"]), "u-bad": ([], ["o-bad"]), "u-legacy": ([], []),
    }
    for uid, (vapi, openai) in expected.items():
        data = profile(quiet, uid)
        assert sorted(data["vapiAssistants"]) == vapi, uid
        assert sorted(data["openaiAssistants"]) == openai, uid
    assert profile(quiet, "u-both")["displayName"] == "Both" and profile(quiet, "u-both")["isSubscribed"] is True
    ledger = quiet.collection("migrations").document("002").get().to_dict()
    assert ledger["status"] == "applied" and ledger["codeVersion"] and ledger["endedAt"] >= ledger["startedAt"]
    problems = {(b["kind"], b["path"]) for b in ledger["badData"]}
    assert ("user", "users/u-bad") in problems  # no email
    assert ("user", "users/u-bad.openaiAssistants") in problems  # not an array
    assert ("assistant", "assistants of u-nobody") in problems  # userId names no user
    ledger_001 = quiet.collection("migrations").document("001").get().to_dict()
    report_001 = {(b["kind"], b["path"]) for b in ledger_001["badData"]}
    assert ("token-usage", "tokenUsage/u-legacy") in report_001


def test_a_second_run_has_nothing_to_do(quiet: Any) -> None:
    run_all(quiet, progress=quiet_progress)
    before = {s.id: s.update_time for s in quiet.collection("users").stream()}

    again = run_all(quiet, progress=quiet_progress)
    forced = run_all(quiet, progress=quiet_progress, modules=[_fresh(m002_assistant_refs, 92)])

    assert [o.status for o in again] == ["skipped"] * len(discover())
    assert forced[0].status == "applied" and forced[0].writes == 0  # re-running 002's logic changes nothing
    assert {s.id: s.update_time for s in quiet.collection("users").stream()} == before


def test_the_dry_run_writes_nothing(quiet: Any) -> None:
    outcomes = run_all(quiet, dry_run=True, progress=quiet_progress)

    assert [o.status for o in outcomes] == ["dry-run"] * len(discover())
    assert outcomes[0].counts["zero"] == 5 and outcomes[0].counts["from-events"] == 1
    assert outcomes[1].writes > 0
    assert not quiet.collection("tokenUsage").document("u-none").get().exists
    assert "vapiAssistants" not in profile(quiet, "u-vapi")
    assert not list(quiet.collection("migrations").stream())


def test_a_crash_in_the_middle_resumes_from_the_checkpoint(quiet: Any) -> None:
    crashing = _fresh(m002_assistant_refs, 2)
    calls = {"n": 0}
    real_run = getattr(crashing, "run")  # noqa: B009

    def crash_on_second_page(ctx: Any) -> None:
        pages = ctx.user_pages

        def limited() -> Any:
            for page in pages(2):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise RuntimeError("machine lost")
                yield page

        setattr(ctx, "user_pages", lambda page=2: limited())  # noqa: B010
        real_run(ctx)

    setattr(crashing, "run", crash_on_second_page)  # noqa: B010
    failed = run_all(quiet, only=2, progress=quiet_progress, modules=[crashing])
    ledger = quiet.collection("migrations").document("002").get().to_dict()
    resumed = run_all(quiet, only=2, progress=quiet_progress, modules=[_fresh(m002_assistant_refs, 2)])

    assert failed[0].status == "failed" and ledger["status"] == "failed" and ledger["checkpoint"]
    assert resumed[0].status == "applied"
    assert sorted(profile(quiet, "u-half")["openaiAssistants"]) == ["o-half-1", "o-half-2"]
    assert sorted(profile(quiet, "u-vapi")["vapiAssistants"]) == ["v-vapi"]
    assert quiet.collection("migrations").document("002").get().to_dict()["attempts"] == 2


def test_an_assistant_created_during_the_run_is_never_lost(quiet: Any) -> None:
    from google.cloud.firestore import ArrayUnion

    module = _fresh(m002_assistant_refs, 2)
    real_run = getattr(module, "run")  # noqa: B009

    def create_meanwhile(ctx: Any) -> None:
        # after 002 read the assistants, the app creates one for u-both (batch: doc + ArrayUnion)
        batch = quiet.batch()
        batch.set(quiet.collection("openaiAssistants").document("o-live"), {"userId": "u-both", "name": "live"})
        batch.update(quiet.collection("users").document("u-both"), {"openaiAssistants": ArrayUnion(["o-live"])})
        batch.commit()
        real_run(ctx)

    setattr(module, "run", create_meanwhile)  # noqa: B010
    run_all(quiet, only=2, progress=quiet_progress, modules=[module])

    assert sorted(profile(quiet, "u-both")["openaiAssistants"]) == ["o-both-1", "o-both-2", "o-live"]


def test_make_migrate_cli(stack: Stack, quiet: Any) -> None:
    env = {**os.environ, **stack.client_env(), "SIMPLYTALK_PROJECT": stack.project + "-legacy"}

    first = subprocess.run([sys.executable, "-m", "migrations"], capture_output=True, text=True, env=env)
    second = subprocess.run([sys.executable, "-m", "migrations"], capture_output=True, text=True, env=env)

    assert first.returncode == 0, first.stderr
    assert "001 token-usage-for-existing-users: applied" in first.stdout
    assert "bad data: user users/u-bad" in first.stdout
    assert "already applied" in second.stderr and "writes 0" in second.stdout


def _fresh(module: ModuleType, number: int) -> ModuleType:
    """A copy of a migration module under another number (to run its logic again, or wrap it)."""
    copy = ModuleType(module.__name__)
    copy.__dict__.update(module.__dict__)
    setattr(copy, "NUMBER", number)  # noqa: B010
    return copy

