"""Year roll-over on the emulators: counters and the billing ledger keep one document a year, so
none grows without bound; documents from before the roll-over still count; migration 004 moves a
legacy ledger."""

from __future__ import annotations

import datetime as dt
import re
import threading
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from simplytalk.models import UsageEvent
from simplytalk.pricing import DEFAULT_RATE_CARD
from simplytalk.repositories.invoices import FirestoreInvoices
from simplytalk.repositories.usage import apply_event, read_aggregate
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import invoice_user, run_period
from simplytalk.services.usage_deps import firestore_usage_deps
from simplytalk.usage_counters import shard_of

from devtools.stack import Stack
from migrations import m004_ledger_years
from migrations.runner import run_all
from tests.emulator.conftest import wait_for

NOV = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
DEC = dt.datetime(2026, 12, 20, 12, tzinfo=dt.UTC)
JAN = dt.datetime(2027, 1, 10, 12, tzinfo=dt.UTC)
FEB = dt.datetime(2027, 2, 1, 3, tzinfo=dt.UTC)


def fields(uid: str, tokens: int, when: dt.datetime, assistant: str = "asst_roll") -> dict[str, Any]:
    return {"userId": uid, "assistantId": assistant, "provider": "openai", "occurredAt": when,
            "usage": {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}}


def usage(db: Any, event_id: str, uid: str, tokens: int, when: dt.datetime, assistant: str = "asst_roll") -> None:
    db.collection("usageEvents").document(event_id).set(fields(uid, tokens, when, assistant))


def shards(db: Any, uid: str) -> dict[str, dict[str, Any]]:
    counters = db.collection("tokenUsage").document(uid).collection("usageShards")
    return {s.id: s.to_dict() or {} for s in counters.stream()}


def ledger_years(db: Any, uid: str) -> dict[str, dict[str, Any]]:
    ledger = db.collection("billingLedger").document(uid)
    return {s.id: s.to_dict() or {} for s in ledger.collection("years").stream()}


def billed_tokens(year_doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {p: {a: f["totalTokens"] for a, f in per.items()} for p, per in year_doc["billed"].items()}


def invoices(db: Any) -> dict[str, dict[str, Any]]:
    return {d.id: d.to_dict() for d in db.collection("invoices").stream()}


def lines(invoice: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(line["usagePeriod"], line["minutes"], line["amount"]) for line in invoice["lines"]]


# -- counters -------------------------------------------------------------------------------------

def test_events_across_new_year_land_in_two_year_documents_and_sum_right(db: Any) -> None:
    eve = dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    for i in range(12):
        usage(db, f"resp_ny_{i}", "u-roll", 10 * (i + 1), eve if i % 2 else eve + dt.timedelta(seconds=2))

    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 10 * sum(range(1, 13)), timeout=20)

    found = shards(db, "u-roll")
    assert {sid.split("-")[0] for sid in found} == {"2026", "2027"}
    for sid, data in found.items():
        assert set(data["periods"]) == {"2026-12" if sid.startswith("2026-") else "2027-01"}, sid
        assert re.fullmatch(r"20(26|27)-[0-9]", sid), sid
    aggregate = read_aggregate(db, "u-roll")
    assert aggregate.periods["2026-12"].total_tokens == 10 * (2 + 4 + 6 + 8 + 10 + 12)
    assert aggregate.periods["2027-01"].total_tokens == 10 * (1 + 3 + 5 + 7 + 9 + 11)
    assert sum(d["totals"]["totalTokens"] for d in found.values()) == aggregate.totals.total_tokens


def test_thirty_months_of_events_never_put_more_than_12_periods_in_a_shard(db: Any) -> None:
    months = [dt.datetime(2025 + (6 + m) // 12, (6 + m) % 12 + 1, 15, tzinfo=dt.UTC) for m in range(30)]
    batch = db.batch()
    for m, when in enumerate(months):
        for i in range(2):
            batch.set(db.collection("usageEvents").document(f"resp_30m_{m}_{i}"), fields("u-roll", m + 1, when))
    batch.commit()  # 60 events, each delivered to the trigger

    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 2 * sum(range(1, 31)), timeout=60)

    found = shards(db, "u-roll")
    assert max(len(d["periods"]) for d in found.values()) <= 12
    assert {sid[:4] for sid in found} == {"2025", "2026", "2027"}
    assert len(read_aggregate(db, "u-roll").periods) == 30
    assert firestore_usage_deps(db).check("u-roll").matches  # the counters agree with the raw events


def test_a_shard_document_from_before_the_roll_over_still_counts(db: Any) -> None:
    """A `{k}` document as the counters wrote it before year documents: no migration needed."""
    legacy = {"totals": {"totalTokens": 600, "inputTokens": 600, "outputTokens": 0},
              "assistants": {"asst_roll": {"totalTokens": 600, "inputTokens": 600, "provider": "openai"}},
              "periods": {"2026-11": {"totalTokens": 600, "inputTokens": 600,
                                      "assistants": {"asst_roll": {"totalTokens": 600, "inputTokens": 600}}}},
              "changedAt": NOV}
    db.collection("tokenUsage").document("u-roll").collection("usageShards").document("3").set(legacy)
    usage(db, "resp_after_1", "u-roll", 120, NOV)  # the same month, counted after the deploy
    usage(db, "resp_after_2", "u-roll", 180, DEC)

    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 900)

    aggregate = read_aggregate(db, "u-roll")
    assert {p: f.total_tokens for p, f in aggregate.periods.items()} == {"2026-11": 720, "2026-12": 180}
    assert aggregate.period_assistants["2026-11"]["asst_roll"].total_tokens == 720
    assert set(shards(db, "u-roll")) == {"3", f"2026-{shard_of('resp_after_1')}", f"2026-{shard_of('resp_after_2')}"}
    invoice = invoice_user(firestore_billing(db), "u-roll", "2026-11", [DEFAULT_RATE_CARD], DEC).invoice
    assert invoice is not None and invoice.total == 12 * 45  # 720 tokens: 12 minutes, the legacy document's included


# -- the ledger ------------------------------------------------------------------------------------

@pytest.fixture
def profile(db: Any) -> None:
    db.collection("users").document("u-roll").set({"email": "roll@example.com"})  # the monthly run walks users


def test_late_december_usage_is_billed_in_january_and_recorded_in_last_years_document(db: Any, profile: None) -> None:
    usage(db, "resp_dec", "u-roll", 600, DEC)
    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 600)
    run_period(firestore_billing(db, lambda: JAN), "2026-12", [DEFAULT_RATE_CARD])
    assert billed_tokens(ledger_years(db, "u-roll")["2026"]) == {"2026-12": {"asst_roll": 600}}

    usage(db, "resp_dec_late", "u-roll", 120, DEC)  # a December call reported in January
    usage(db, "resp_jan", "u-roll", 240, JAN, assistant="asst_jan")
    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 960)
    run_period(firestore_billing(db, lambda: FEB), "2027-01", [DEFAULT_RATE_CARD])

    january = invoices(db)["u-roll_2027-01"]
    assert lines(january) == [("2026-12", "2", 90), ("2027-01", "4", 180)]
    assert january["total"] == 270
    assert invoices(db)["u-roll_2026-12"]["total"] == 450  # the closed invoice is untouched
    years = ledger_years(db, "u-roll")
    assert billed_tokens(years["2026"]) == {"2026-12": {"asst_roll": 720}}
    assert billed_tokens(years["2027"]) == {"2027-01": {"asst_jan": 240}}
    assert years["2026"]["lastInvoiceId"] == years["2027"]["lastInvoiceId"] == "u-roll_2027-01"
    root = db.collection("billingLedger").document("u-roll").get().to_dict()
    assert root["lastInvoiceId"] == "u-roll_2027-01" and "billed" not in root
    run_period(firestore_billing(db, lambda: FEB + dt.timedelta(days=28)), "2027-02", [DEFAULT_RATE_CARD])
    assert "u-roll_2027-02" not in invoices(db)  # nothing left unbilled


def test_two_runs_at_once_bill_the_same_usage_once(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """December's run and January's both find December's usage unbilled; both read the ledger
    before either writes (held at a barrier), so exactly one commit wins and the other reads again."""
    usage(db, "resp_c_dec", "u-roll", 600, DEC)
    usage(db, "resp_c_jan", "u-roll", 300, JAN)
    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 900)
    barrier = threading.Barrier(2, timeout=30)
    reads: Counter[str] = Counter()
    real = FirestoreInvoices.ledger

    def read_ledger_together(self: FirestoreInvoices, uid: str, years: list[str]) -> Any:
        snaps = real(self, uid, years)
        name = threading.current_thread().name
        reads[name] += 1
        if reads[name] == 1:
            barrier.wait()
        return snaps

    monkeypatch.setattr(FirestoreInvoices, "ledger", read_ledger_together)
    billing = firestore_billing(db)
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda p: invoice_user(billing, "u-roll", p, [DEFAULT_RATE_CARD], FEB).outcome,
                                 ["2026-12", "2027-01"]))

    # January's run may have won with December's usage on it: December's then finds nothing left
    assert outcomes in (["created", "created"], ["no-usage", "created"])
    found = invoices(db)
    billed = Counter[tuple[str, str]]()
    for invoice in found.values():
        for line in invoice["lines"]:
            billed[(line["usagePeriod"], line["minutes"])] += 1
    assert billed == {("2026-12", "10"): 1, ("2027-01", "5"): 1}  # December billed once, by one of them
    assert sum(i["total"] for i in found.values()) == 450 + 225
    years = ledger_years(db, "u-roll")
    assert billed_tokens(years["2026"]) == {"2026-12": {"asst_roll": 600}}
    assert billed_tokens(years["2027"]) == {"2027-01": {"asst_roll": 300}}
    assert sum(reads.values()) == 3  # both read before either wrote; the loser read the ledger again


def test_a_legacy_root_ledger_still_counts_and_is_carried_into_the_year_document(db: Any, profile: None) -> None:
    """A ledger from before the roll-over (`billed` in the root): October was billed there."""
    db.collection("billingLedger").document("u-roll").set({
        "userId": "u-roll", "lastInvoiceId": "u-roll_2026-10", "updatedAt": NOV,
        "billed": {"2026-10": {"asst_roll": {"totalTokens": 600, "inputTokens": 600}}}})
    usage(db, "resp_oct", "u-roll", 600, dt.datetime(2026, 10, 5, tzinfo=dt.UTC))
    usage(db, "resp_nov", "u-roll", 120, NOV)
    wait_for(lambda: read_aggregate(db, "u-roll").totals.total_tokens == 720)

    run_period(firestore_billing(db, lambda: DEC), "2026-11", [DEFAULT_RATE_CARD])

    assert lines(invoices(db)["u-roll_2026-11"]) == [("2026-11", "2", 90)]  # October not billed again
    assert billed_tokens(ledger_years(db, "u-roll")["2026"]) == {"2026-10": {"asst_roll": 600},
                                                                 "2026-11": {"asst_roll": 120}}


# -- migration 004 ------------------------------------------------------------------------------------

def _clear(stack: Stack, project: str) -> None:
    url = f"http://{stack.firestore_host}/emulator/v1/projects/{project}/databases/(default)/documents"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
        pass


def _figures(tokens: int) -> dict[str, int]:
    return {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}


@pytest.fixture
def legacy(stack: Stack) -> Any:
    """A project with no triggers, holding ledgers as invoicing wrote them before the roll-over."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    project = stack.project + "-ledger"
    _clear(stack, project)
    db = firestore.Client(project=project, credentials=AnonymousCredentials())
    ledgers = db.collection("billingLedger")
    ledgers.document("u-two-years").set({"userId": "u-two-years", "lastInvoiceId": "u-two-years_2026-02",
                                         "updatedAt": NOV, "billed": {
                                             "2025-12": {"a": _figures(60)},
                                             "2026-01": {"a": _figures(120), "b": _figures(30)},
                                             "2026-02": {"a": _figures(180)}}})
    ledgers.document("u-started").set({"userId": "u-started", "lastInvoiceId": "u-started_2026-11",
                                       "updatedAt": DEC, "billed": {"2026-10": {"a": _figures(600)}}})
    # the first invoice after the deploy created 2026's document, carrying October over
    ledgers.document("u-started").collection("years").document("2026").set(
        {"userId": "u-started", "year": "2026", "billed": {"2026-10": {"a": _figures(600)},
                                                           "2026-11": {"a": _figures(120)}}})
    ledgers.document("u-new").set({"userId": "u-new", "lastInvoiceId": "u-new_2026-12", "updatedAt": JAN})
    ledgers.document("u-bad").set({"userId": "u-bad", "billed": {"October": {"a": _figures(1)}}})
    return db


def _fresh(number: int) -> ModuleType:
    copy = ModuleType(m004_ledger_years.__name__)
    copy.__dict__.update(m004_ledger_years.__dict__)
    setattr(copy, "NUMBER", number)  # noqa: B010
    return copy


def _quiet(line: str) -> None:
    pass


def test_migration_004_moves_a_legacy_ledger_into_year_documents(legacy: Any) -> None:
    dry = run_all(legacy, dry_run=True, progress=_quiet, modules=[m004_ledger_years])
    assert dry[0].status == "dry-run" and dry[0].counts["moved"] == 2 and dry[0].writes == 4
    assert "billed" in legacy.collection("billingLedger").document("u-two-years").get().to_dict()
    assert ledger_years(legacy, "u-two-years") == {}

    applied = run_all(legacy, progress=_quiet, modules=[m004_ledger_years])

    assert applied[0].status == "applied" and applied[0].writes == 4
    assert applied[0].counts["moved"] == 2 and applied[0].counts["year-documents"] == 2
    years = ledger_years(legacy, "u-two-years")
    assert billed_tokens(years["2025"]) == {"2025-12": {"a": 60}}
    assert billed_tokens(years["2026"]) == {"2026-01": {"a": 120, "b": 30}, "2026-02": {"a": 180}}
    root = legacy.collection("billingLedger").document("u-two-years").get().to_dict()
    assert "billed" not in root and root["lastInvoiceId"] == "u-two-years_2026-02"
    # a year document already there is what invoicing reads: kept as it is
    assert billed_tokens(ledger_years(legacy, "u-started")["2026"]) == {"2026-10": {"a": 600}, "2026-11": {"a": 120}}
    assert "billed" not in legacy.collection("billingLedger").document("u-started").get().to_dict()
    assert ledger_years(legacy, "u-new") == {}
    assert "billed" in legacy.collection("billingLedger").document("u-bad").get().to_dict()  # reported, left
    assert ("ledger", "billingLedger/u-bad.billed") in {(b["kind"], b["path"]) for b in applied[0].bad_data}

    before = {s.reference.path: s.update_time for s in legacy.collection_group("years").stream()}
    again = run_all(legacy, progress=_quiet, modules=[_fresh(94)])
    assert again[0].status == "applied" and again[0].writes == 0  # idempotent: nothing left to move
    assert {s.reference.path: s.update_time for s in legacy.collection_group("years").stream()} == before


def test_migration_004_moves_a_ledger_an_invoice_changed_meanwhile(legacy: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_plan = m004_ledger_years._plan_page

    def invoice_meanwhile(ctx: Any, page: list[Any]) -> Any:
        moves = real_plan(ctx, page)
        # after 004 read the ledgers, an invoice (new code) creates 2026's document and moves the root on
        root = legacy.collection("billingLedger").document("u-two-years")
        root.collection("years").document("2026").create(
            {"userId": "u-two-years", "year": "2026",
             "billed": {"2026-01": {"a": _figures(120), "b": _figures(30)}, "2026-02": {"a": _figures(180)},
                        "2026-03": {"a": _figures(240)}}})
        root.update({"lastInvoiceId": "u-two-years_2026-03"})
        return moves

    monkeypatch.setattr(m004_ledger_years, "_plan_page", invoice_meanwhile)
    outcome = run_all(legacy, only=4, progress=_quiet, modules=[m004_ledger_years])[0]

    assert outcome.status == "applied" and outcome.counts["changed-meanwhile"] >= 1
    years = ledger_years(legacy, "u-two-years")
    assert billed_tokens(years["2025"]) == {"2025-12": {"a": 60}}
    assert billed_tokens(years["2026"])["2026-03"] == {"a": 240}  # the invoice's record survives
    root = legacy.collection("billingLedger").document("u-two-years").get().to_dict()
    assert "billed" not in root and root["lastInvoiceId"] == "u-two-years_2026-03"


def test_invoicing_after_migration_004_bills_only_what_the_legacy_ledger_had_not(legacy: Any) -> None:
    run_all(legacy, progress=_quiet, modules=[m004_ledger_years])
    for event_id, tokens, when in [("e-dec", 60, dt.datetime(2025, 12, 3, tzinfo=dt.UTC)),
                                   ("e-jan", 150, dt.datetime(2026, 1, 3, tzinfo=dt.UTC)),
                                   ("e-feb", 180, dt.datetime(2026, 2, 3, tzinfo=dt.UTC)),
                                   ("e-mar", 120, dt.datetime(2026, 3, 3, tzinfo=dt.UTC))]:
        apply_event(legacy, event_id, UsageEvent.model_validate(fields("u-two-years", tokens, when, "a")), NOV)

    outcome = invoice_user(firestore_billing(legacy), "u-two-years", "2026-03", [DEFAULT_RATE_CARD], NOV)

    assert outcome.outcome == "created"
    assert outcome.invoice is not None
    assert lines(outcome.invoice.to_firestore()) == [("2026-01", "0.5", 23), ("2026-03", "2", 90)]
