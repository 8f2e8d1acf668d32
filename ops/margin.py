"""Margin per assistant for a month: minutes, revenue, provider cost and margin, with totals.

    python -m ops.margin --period 2026-10              # every user's assistants
    python -m ops.margin --period 2026-10 --user UID   # one user's
    python -m ops.margin --period 2026-10 --json       # the GET /billing/margin body

Revenue is what invoices billed for the month's usage (an `~` marks lines that also hold an
estimate of usage not invoiced yet, at the month's rate card); provider cost prices each usage
event with the provider price table (shared/simplytalk/provider_prices.toml; vapi calls at vapi's
reported cost). Money in USD; cents rounded half-up once per total, lines adding up to it.
Reads only, a page of events at a time. The project comes from SIMPLYTALK_PROJECT /
GOOGLE_CLOUD_PROJECT (the local emulators for a demo- project).
"""

from __future__ import annotations

import argparse
import json
import sys

from simplytalk.config import settings
from simplytalk.ids import valid_document_id
from simplytalk.margin import MarginReport, report_json, usd_text
from simplytalk.pricing import format_minutes, valid_period
from simplytalk.services.billing_deps import firestore_margin
from simplytalk.services.margin import margin


def dollars(cents: int | None) -> str:
    if cents is None:
        return "-"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def table(report: MarginReport) -> str:
    header = ("user", "assistant", "provider", "minutes", "revenue", "cost", "margin", "events", "unpriced")
    rows = [header]
    for line in report.lines:
        revenue = dollars(line.revenue_cents) + ("~" if line.estimated else "")
        if not line.comparable:
            revenue += f" {line.currency or 'mixed'}"
        rows.append((line.user_id, line.assistant_id, line.provider, format_minutes(line.minutes), revenue,
                     dollars(line.cost_cents), dollars(line.margin_cents), str(line.events),
                     str(line.unpriced_events)))
    t = report.totals
    rows.append(("total", "", "", format_minutes(t.minutes), dollars(t.revenue_cents) + ("~" if t.estimated else ""),
                 dollars(t.cost_cents), dollars(t.margin_cents), str(t.events), str(t.unpriced_events)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7, 8}

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                              strict=True)))

    out = [fmt(rows[0]), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[1:-1]),
           "  ".join("-" * w for w in widths), fmt(rows[-1])]
    notes = [f"{report.period}: rate card {report.rate_card_id}; prices {', '.join(report.price_versions) or '-'}; "
             f"USD; exact provider cost {usd_text(t.cost_usd)}"]
    if t.estimated:
        notes.append(f"~ includes {dollars(t.estimated_cents)} estimated for usage not invoiced yet")
    if t.voided_cents:
        notes.append(f"{dollars(t.voided_cents)} billed on invoices since voided (not in revenue)")
    if t.unpriced_events:
        notes.append(f"{t.unpriced_events} events could not be priced (cost 0): the margin is overstated")
        notes += [f"  {n} x {reason}" for reason, n in report.unpriced_reasons.items()]
    if t.undetailed_events:
        notes.append(f"{t.undetailed_events} events partly priced at the dearest rate: cost is an upper bound")
    if t.not_comparable:
        notes.append(f"{t.not_comparable} lines billed in another currency are left out of the totals")
    return "\n".join([*out, "", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--period", required=True, help="YYYY-MM")
    parser.add_argument("--user", default=None, help="only this user's assistants (a uid)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (GET /billing/margin's body)")
    args = parser.parse_args(argv)
    if not valid_period(args.period):
        parser.error("--period must be YYYY-MM")
    if args.user is not None and not valid_document_id(args.user):
        parser.error("--user must be a user id")
    print(f"project {settings().project_id}: margin for {args.period}", file=sys.stderr)
    report = margin(firestore_margin(), args.period, args.user)
    print(json.dumps(report_json(report), indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
