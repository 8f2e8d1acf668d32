"""Page sizes and opaque page tokens (base64url JSON of the last item's sort key)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from simplytalk.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(raw: str | None, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        message = f"must be an integer from 1 to {maximum}"
        raise InvalidArgument(f"pageSize: {message}", [FieldViolation("pageSize", message)])
    return size


def encode_token(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str | None, required: tuple[str, ...]) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        cursor = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        cursor = None
    if not isinstance(cursor, dict) or any(not isinstance(cursor.get(k), str) for k in required):
        raise InvalidArgument("pageToken: not a token this API issued",
                              [FieldViolation("pageToken", "not a token this API issued")])
    return cursor
