"""Page sizes and opaque page tokens (base64url JSON of the last item's sort key)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from simplytalk.errors import InvalidInput
from simplytalk.ids import valid_document_id

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
T = TypeVar("T")


def page_size(raw: str | None, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        message = f"must be an integer from 1 to {maximum}"
        raise InvalidInput.of("pageSize", message)
    return size


def next_page_token(fetched: Sequence[T], size: int, cursor_of: Callable[[T], dict[str, str]]) -> str | None:
    """Every list pages the same way: fetch `size + 1` from the cursor on, show `size`, and when the
    extra one came back hand out a token for the cursor of the last one shown."""
    return encode_token(cursor_of(fetched[size - 1])) if len(fetched) > size else None


def encode_token(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str | None, required: tuple[str, ...], times: tuple[str, ...] = (),
                 ids: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The cursor in a token this API issued; a 400 for anything else (never a 500 later)."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        cursor = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        cursor = None
    ok = isinstance(cursor, dict) and all(isinstance(cursor.get(k), str) for k in required)
    if ok:
        assert isinstance(cursor, dict)
        ok = all(valid_document_id(cursor[k]) for k in ids) and all(_is_time(cursor[k]) for k in times)
    if not ok:
        raise InvalidInput.of("pageToken", "not a token this API issued")
    return cursor


def _is_time(value: str) -> bool:
    try:
        cursor_time(value)
    except ValueError:
        return False
    return True


def cursor_time(value: str) -> dt.datetime:
    """A cursor's time as UTC. Only times a stored timestamp can have: one with no zone, or that
    falls outside years 1-9999 in UTC (say 9999-12-31T23:59:59-01:00), is a ValueError."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a cursor time needs its zone")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValueError("a cursor time outside the years a timestamp holds") from exc
