from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    """A time in JSON: UTC, with `Z`."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
