from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    """A time in JSON: UTC, with `Z`."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def rfc3339_sortable(moment: dt.datetime) -> str:
    """Fixed width (microseconds, Z), so the strings sort as the times do (list cursors)."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
