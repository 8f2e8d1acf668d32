"""Run every benchmark on a stack of its own; print tables and write bench-results.json."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.bench import assistants, imports, invoicing, migrations, mirrors, realtime, stripe_calls, usage
from devtools.manifest import ROOT
from devtools.stack import Ports, Stack

BENCHMARKS: dict[str, Callable[[Stack], dict[str, Any]]] = {
    "imports": imports.run,
    "assistants": assistants.run,
    "usage": usage.run,
    "mirrors": mirrors.run,
    "invoicing": invoicing.run,
    "stripe": stripe_calls.run,
    "migrations": migrations.run,
    "realtime": realtime.run,
}


def format_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    if not rows:
        return f"{result['title']}\n  (no rows)"
    columns = list(rows[0])
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [result["title"], line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if result.get("notes"):
        out.append(f"  ({result['notes']})")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which to run (default all: {', '.join(BENCHMARKS)})")
    parser.add_argument("--output", default=str(ROOT / "bench-results.json"))
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    stack = Stack(project="demo-simplytalk-bench", ports=Ports.free(),
                  workdir=Path(tempfile.mkdtemp(prefix="simplytalk-bench-")),
                  host_env={"SIMPLYTALK_MAX_ASSISTANTS": "100000"}, host_args=["--with-bench"])
    stack.start()
    os.environ.update(stack.client_env())
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "stack_start_s": round(stack.started_in or 0, 2),
        "benchmarks": {},
    }
    try:
        for name in names:
            stack.clear_firestore()
            t0 = time.monotonic()
            result = BENCHMARKS[name](stack)
            result["wall_s"] = round(time.monotonic() - t0, 2)
            results["benchmarks"][name] = result
            print(format_table(result), flush=True)
            for extra in (v for v in result.values() if isinstance(v, dict) and "rows" in v):
                print(flush=True)
                print(format_table(extra), flush=True)
            print(flush=True)
    finally:
        stack.stop()
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"stack start {results['stack_start_s']} s; results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
