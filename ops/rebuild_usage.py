"""Check or rebuild a user's usage aggregates from the raw events (the source of truth).

    python -m ops.rebuild_usage UID [UID ...]            # check: recompute and compare, write nothing
    python -m ops.rebuild_usage --apply UID [UID ...]    # replace the counters, then roll up the mirrors

The project comes from SIMPLYTALK_PROJECT / GOOGLE_CLOUD_PROJECT (the emulators
for a demo- project, as everywhere). Exit status 1 when any user's counters
differ from their events (check) or still differ after the rebuild (apply).
"""

from __future__ import annotations

import argparse
import sys

from simplytalk.config import settings
from simplytalk.pricing import UsageFigures
from simplytalk.services.aggregation import RebuildReport
from simplytalk.services.usage_deps import firestore_usage_deps


def _line(f: UsageFigures) -> str:
    return (f"tokens {f.total_tokens} (in {f.input_tokens}, out {f.output_tokens}), "
            f"openai call ms {f.openai_call_millis}, vapi call ms {f.vapi_call_millis}")


def describe(uid: str, report: RebuildReport) -> str:
    lines = [f"{uid}: {report.events} events, {'OK' if report.matches else 'DIFFERENT'}"]
    if not report.matches:
        lines.append(f"  counters: {_line(report.stored.totals)}")
        lines.append(f"  events:   {_line(report.recomputed.totals)}")
    if report.malformed:
        lines.append(f"  malformed events (not counted): {', '.join(report.malformed[:20])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("uids", nargs="+")
    parser.add_argument("--apply", action="store_true", help="replace the counters (default: check only)")
    args = parser.parse_args(argv)
    deps = firestore_usage_deps()
    print(f"project {settings().project_id}", file=sys.stderr)
    ok = True
    for uid in args.uids:
        report = deps.rebuild(uid) if args.apply else deps.check(uid)
        print(describe(uid, report))
        ok = ok and report.matches
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
