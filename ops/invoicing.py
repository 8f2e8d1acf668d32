"""Run monthly invoicing by hand.

    python -m ops.invoicing                       # the previous calendar month (UTC)
    python -m ops.invoicing --period 2026-10      # a given month
    python -m ops.invoicing --period 2026-10 --dry-run   # what it would bill; writes nothing

Progress goes to stderr on long runs. Rerunning is safe: each user is invoiced at
most once per period; an unfinished run resumes from its cursor.
"""

from __future__ import annotations

import argparse
import sys

from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.pricing import valid_period
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import RunSummary, previous_period, run_period


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--period", default=None, help="YYYY-MM (default: the previous month)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be billed; write nothing")
    args = parser.parse_args(argv)
    period = args.period or previous_period(utcnow())
    if not valid_period(period):
        parser.error("--period must be YYYY-MM")
    print(f"project {settings().project_id}: invoicing {period}{' (dry run)' if args.dry_run else ''}",
          file=sys.stderr)

    def progress(summary: RunSummary) -> None:
        print(f"  {summary.users} users, {summary.counts}, {summary.total_cents} cents", file=sys.stderr)

    client = None
    if not args.dry_run:
        from simplytalk.stripe_gateway import stripe_client

        client = stripe_client()
    billing = firestore_billing(stripe_client=client)
    summary = run_period(billing, period, billing.rate_cards.list(), dry_run=args.dry_run, progress=progress)
    verb = "would bill" if args.dry_run else "billed"
    created = summary.counts.get("would-create" if args.dry_run else "created", 0)
    print(f"{period}: {summary.users} users; {verb} {created} invoices, {summary.total_cents} cents "
          f"({summary.counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
