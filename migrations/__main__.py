"""Run the data migrations.

    python -m migrations                 # every migration not yet applied
    python -m migrations --dry-run       # report what would change; write nothing
    python -m migrations --only 2        # just one
    python -m migrations --project my-project   # a real project (default: the local emulators)
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--only", type=int, default=None)
    parser.add_argument("--project", default=None, help="target project (default SIMPLYTALK_PROJECT or demo)")
    args = parser.parse_args(argv)
    if args.project:
        os.environ["SIMPLYTALK_PROJECT"] = args.project
    from simplytalk.config import settings
    from simplytalk.firestore import firestore_client

    from migrations.runner import run_all

    print(f"project {settings().project_id}{' (dry run)' if args.dry_run else ''}", file=sys.stderr)
    outcomes = run_all(firestore_client(), dry_run=args.dry_run, only=args.only)
    for o in outcomes:
        print(f"{o.number:03d} {o.name}: {o.status}; writes {o.writes}; {o.counts}")
        for bad in o.bad_data:
            print(f"    bad data: {bad['kind']} {bad['path']}: {bad['problem']}")
    if not outcomes:
        print("nothing to run")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
