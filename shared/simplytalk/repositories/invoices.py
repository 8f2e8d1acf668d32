"""Invoices, the billing ledger and the monthly runs.

Documents:
- `invoices/{uid}_{period}`: the invoice (`Invoice.to_firestore`); a deterministic id, so a
  rerun's create fails and nothing is billed twice.
- `billingLedger/{uid}/years/{YYYY}`: `billed.{YYYY-MM}.{assistantId}` (figure fields), what
  that year's periods' invoices have billed (at most 12 periods a document), `lastInvoiceId`,
  `updatedAt`; `billingLedger/{uid}` keeps `lastInvoiceId` and `updatedAt` (and, from before the
  year roll-over, a legacy all-years `billed`, read until migration 004 moves it).
- `invoiceRuns/{period}`: the run's cursor, counts and totals.

An invoice that moves the ledger is created in ONE batch with every ledger document it
changes, each updated on a precondition on the update time it was read at (or created when
it did not exist), the root included: of two runs that read the same ledger, one commit wins
and the other gets `Again` (it reads again, through `repositories.retry.optimistic`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col
from simplytalk.charges import Figures, effective_billed
from simplytalk.invoice import Invoice, InvoiceStatus
from simplytalk.pricing import UsageFigures
from simplytalk.repositories.retry import Again
from simplytalk.usage_counters import from_fields, to_fields

if TYPE_CHECKING:
    from google.cloud.firestore import Client

Billed = dict[str, dict[str, UsageFigures]]  # period -> assistant -> figures


@dataclass(frozen=True)
class Ledger:
    """A user's ledger as read: the root's legacy `billed`, the year documents asked for (None:
    no such document), and the version each was read at (None: it did not exist)."""

    uid: str
    legacy: Billed = field(default_factory=dict)
    years: dict[str, Billed | None] = field(default_factory=dict)
    version: Any = None
    year_versions: dict[str, Any] = field(default_factory=dict)

    def billed(self) -> Billed:
        """What has been billed, per period and assistant (a year document wins over the legacy map)."""
        return effective_billed(self.legacy, self.years)


@dataclass(frozen=True)
class StatusState:
    """What a status move reads of an invoice (read leniently: the rest of the document may be missing)."""

    status: InvoiceStatus
    total: int | None
    stripe_invoice_id: str | None
    replacing_stripe_invoice: str | None


# a status move's decision on the state read: the status and the fields to write, or None to leave it
StatusDecision = Callable[[StatusState], "tuple[InvoiceStatus, dict[str, Any]] | None"]


def _status_state(data: dict[str, Any]) -> StatusState:
    total = data.get("total")
    return StatusState(status=InvoiceStatus(data.get("status") or "draft"),
                       total=total if isinstance(total, int) else None,
                       stripe_invoice_id=data.get("stripeInvoiceId"),
                       replacing_stripe_invoice=data.get("replacingStripeInvoice"))


class Invoices(Protocol):
    def get(self, invoice_id: str) -> Invoice | None: ...

    def page(self, uid: str, size: int, after: tuple[str, str] | None) -> list[Invoice]:
        """The user's invoices, newest period first (period, id), after a cursor."""
        ...

    def ledger(self, uid: str, years: list[str]) -> Ledger:
        """The root ledger document and the given year documents, in one read."""
        ...

    def create(self, invoice: Invoice) -> None:
        """Store an invoice that leaves the ledger alone (carried); Again when its id exists."""
        ...

    def create_billed(self, invoice: Invoice, ledger: Ledger, years: Mapping[str, Figures],
                      now: dt.datetime) -> None:
        """Store the invoice and rewrite the ledger's `years` (year -> that year's whole `billed`)
        atomically, on the versions `ledger` was read at; Again when anything changed meanwhile."""
        ...

    def move_status(self, invoice_id: str, decide: StatusDecision, now: dt.datetime) -> InvoiceStatus | None:
        """Read the invoice's status and Stripe link, ask `decide` (again on each retry) and write what it
        decided (with `updatedAt`), atomically; the status then (the current one when `decide` left
        it); None when there is no such invoice."""
        ...

    def run(self, period: str) -> dict[str, Any] | None:
        """The period's run document (cursor, counts, totals), None before the first run."""
        ...

    def save_run(self, period: str, fields: dict[str, Any], merge: bool = True) -> None: ...

    def owners_page(self, cursor: str | None, size: int) -> tuple[list[str], set[str]]:
        """The next `size` user ids after `cursor`, in id order, of users with a profile or with
        usage counters (usage whose owner has no profile is billed too); and which have a profile."""
        ...


# -- the ledger's figures -------------------------------------------------------------------------

def ledger_figures(billed: Any) -> Billed:
    """A ledger document's `billed` map (period -> assistant -> figure fields) as figures."""
    if not isinstance(billed, dict):
        return {}
    return {period: {aid: from_fields(f) for aid, f in (per if isinstance(per, dict) else {}).items()}
            for period, per in billed.items()}


def ledger_fields(billed: Figures) -> dict[str, dict[str, dict[str, int]]]:
    return {period: {aid: to_fields(f) for aid, f in per.items()}
            for period, per in billed.items()}


def _year_doc(uid: str, year: str, billed: Figures, invoice_id: str, now: dt.datetime) -> dict[str, Any]:
    return {"userId": uid, "year": year, "billed": ledger_fields(billed), "lastInvoiceId": invoice_id,
            "updatedAt": now}


def _root_doc(uid: str, invoice_id: str, now: dt.datetime) -> dict[str, Any]:
    return {"userId": uid, "lastInvoiceId": invoice_id, "updatedAt": now}


# -- Firestore --------------------------------------------------------------------------------------

class FirestoreInvoices:
    def __init__(self, db: Client) -> None:
        self.db = db

    def get(self, invoice_id: str) -> Invoice | None:
        snap = self.db.collection(col.INVOICES).document(invoice_id).get()
        data = snap.to_dict() if snap.exists else None
        return Invoice.from_firestore(data) if data else None

    def page(self, uid: str, size: int, after: tuple[str, str] | None) -> list[Invoice]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self.db.collection(col.INVOICES).where(filter=FieldFilter("userId", "==", uid))
                 .order_by("period", direction=Query.DESCENDING)
                 .order_by("__name__", direction=Query.DESCENDING))
        if after:
            query = query.start_after({"period": after[0], "__name__": after[1]})
        return [Invoice.from_firestore(d.to_dict() or {}) for d in query.limit(size).stream()]

    def ledger(self, uid: str, years: list[str]) -> Ledger:
        root = self.db.collection(col.BILLING_LEDGER).document(uid)
        year_refs = [root.collection(col.LEDGER_YEARS).document(year) for year in years]
        snaps = {snap.reference.path: snap for snap in self.db.get_all([root, *year_refs])}
        root_snap = snaps[root.path]
        year_snaps = {ref.id: snaps[ref.path] for ref in year_refs}
        return Ledger(
            uid=uid, legacy=ledger_figures((root_snap.to_dict() or {}).get("billed")),
            years={y: ledger_figures((s.to_dict() or {}).get("billed")) if s.exists else None
                   for y, s in year_snaps.items()},
            version=root_snap.update_time if root_snap.exists else None,
            year_versions={y: s.update_time if s.exists else None for y, s in year_snaps.items()})

    def create(self, invoice: Invoice) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.db.collection(col.INVOICES).document(invoice.id).create(invoice.to_firestore())
        except gexc.AlreadyExists as exc:
            raise Again from exc

    def create_billed(self, invoice: Invoice, ledger: Ledger, years: Mapping[str, Figures],
                      now: dt.datetime) -> None:
        from google.api_core import exceptions as gexc

        db = self.db
        root = db.collection(col.BILLING_LEDGER).document(ledger.uid)
        batch = db.batch()
        batch.create(db.collection(col.INVOICES).document(invoice.id), invoice.to_firestore())
        writes = [(root.collection(col.LEDGER_YEARS).document(year), ledger.year_versions.get(year),
                   _year_doc(ledger.uid, year, billed, invoice.id, now)) for year, billed in years.items()]
        writes.append((root, ledger.version, _root_doc(ledger.uid, invoice.id, now)))
        for ref, version, doc in writes:
            if version is not None:
                batch.update(ref, doc, option=db.write_option(last_update_time=version))
            else:
                batch.create(ref, doc)
        try:
            batch.commit()
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.Aborted) as exc:
            raise Again from exc  # another run got there first: look again

    def move_status(self, invoice_id: str, decide: StatusDecision, now: dt.datetime) -> InvoiceStatus | None:
        from google.cloud import firestore

        ref = self.db.collection(col.INVOICES).document(invoice_id)

        @firestore.transactional
        def run(tx: Any) -> InvoiceStatus | None:
            snap = ref.get(transaction=tx)
            if not snap.exists:
                return None
            state = _status_state(snap.to_dict() or {})
            decided = decide(state)
            if decided is None:
                return state.status
            status, fields = decided
            tx.update(ref, {**fields, "status": str(status), "updatedAt": now})
            return status

        result: InvoiceStatus | None = run(self.db.transaction())
        return result

    def run(self, period: str) -> dict[str, Any] | None:
        snap = self.db.collection(col.INVOICE_RUNS).document(period).get()
        return (snap.to_dict() or {}) if snap.exists else None

    def save_run(self, period: str, fields: dict[str, Any], merge: bool = True) -> None:
        self.db.collection(col.INVOICE_RUNS).document(period).set(fields, merge=merge)

    def owners_page(self, cursor: str | None, size: int) -> tuple[list[str], set[str]]:
        def ids(collection: str) -> list[str]:
            query = self.db.collection(collection).order_by("__name__")
            if cursor:
                query = query.start_after({"__name__": cursor})
            return [snap.id for snap in query.select([]).limit(size).stream()]

        profiles = ids(col.USERS)
        owners = ids(col.TOKEN_USAGE)
        # each list is the first `size` ids of its collection, so the first `size` of their union are exact
        return sorted(set(profiles) | set(owners))[:size], set(profiles)


# -- in memory ----------------------------------------------------------------------------------------

@dataclass
class InMemoryInvoices:
    """Invoices, ledgers and runs in dicts, with the same preconditions: every document has a
    version that each write bumps, and `create_billed` refuses (Again) when one moved."""

    invoices: dict[str, Invoice] = field(default_factory=dict)
    ledger_roots: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {billed?, lastInvoiceId}
    ledger_years: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (uid, year) -> doc
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: set[str] = field(default_factory=set)  # users/{uid} exists
    usage_owners: set[str] = field(default_factory=set)  # tokenUsage/{uid} exists
    commits: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def _version(self, doc: dict[str, Any] | None) -> Any:
        return doc.get("_version") if doc is not None else None

    def get(self, invoice_id: str) -> Invoice | None:
        with self.lock:
            found = self.invoices.get(invoice_id)
            return Invoice.from_firestore(found.to_firestore()) if found else None  # a copy, as a read is

    def page(self, uid: str, size: int, after: tuple[str, str] | None) -> list[Invoice]:
        with self.lock:
            keys = sorted(((i.period, i.id) for i in self.invoices.values() if i.user_id == uid), reverse=True)
        if after:
            keys = [k for k in keys if k < after]
        return [inv for inv in (self.get(i) for _, i in keys[:size]) if inv is not None]

    def ledger(self, uid: str, years: list[str]) -> Ledger:
        with self.lock:
            root = self.ledger_roots.get(uid)
            docs = {y: self.ledger_years.get((uid, y)) for y in years}
            return Ledger(uid=uid, legacy=ledger_figures((root or {}).get("billed")),
                          years={y: ledger_figures(d.get("billed")) if d is not None else None
                                 for y, d in docs.items()},
                          version=self._version(root), year_versions={y: self._version(d) for y, d in docs.items()})

    def create(self, invoice: Invoice) -> None:
        with self.lock:
            if invoice.id in self.invoices:
                raise Again
            self.invoices[invoice.id] = Invoice.from_firestore(invoice.to_firestore())

    def create_billed(self, invoice: Invoice, ledger: Ledger, years: Mapping[str, Figures],
                      now: dt.datetime) -> None:
        with self.lock:
            stale = [y for y in years if self._version(self.ledger_years.get((ledger.uid, y)))
                     != ledger.year_versions.get(y)]
            if (invoice.id in self.invoices or stale
                    or self._version(self.ledger_roots.get(ledger.uid)) != ledger.version):
                raise Again
            self.commits += 1
            self.invoices[invoice.id] = Invoice.from_firestore(invoice.to_firestore())
            for year, billed in years.items():
                self.ledger_years[(ledger.uid, year)] = {
                    **_year_doc(ledger.uid, year, billed, invoice.id, now), "_version": self.commits}
            root = self.ledger_roots.get(ledger.uid, {})
            self.ledger_roots[ledger.uid] = {**root, **_root_doc(ledger.uid, invoice.id, now),
                                             "_version": self.commits}

    def billed(self, uid: str) -> dict[str, Billed]:
        """year -> that year document's `billed` (for tests)."""
        with self.lock:
            return {y: ledger_figures(d.get("billed")) for (u, y), d in sorted(self.ledger_years.items()) if u == uid}

    def move_status(self, invoice_id: str, decide: StatusDecision, now: dt.datetime) -> InvoiceStatus | None:
        with self.lock:
            found = self.invoices.get(invoice_id)
            if found is None:
                return None
            data = found.to_firestore()
            decided = decide(_status_state(data))
            if decided is None:
                return found.status
            status, fields = decided
            self.invoices[invoice_id] = Invoice.from_firestore({**data, **fields, "status": str(status),
                                                                "updatedAt": now})
            return status

    def run(self, period: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.runs.get(period)
            return dict(found) if found is not None else None

    def save_run(self, period: str, fields: dict[str, Any], merge: bool = True) -> None:
        with self.lock:
            self.runs[period] = {**(self.runs.get(period, {}) if merge else {}), **fields}

    def owners_page(self, cursor: str | None, size: int) -> tuple[list[str], set[str]]:
        with self.lock:
            owners = sorted(uid for uid in self.profiles | self.usage_owners if cursor is None or uid > cursor)
            return owners[:size], set(self.profiles)
