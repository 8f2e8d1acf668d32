"""What Firestore accepts as a document id (anything else would fail on the server: a 500)."""

from __future__ import annotations

import re

_RESERVED = re.compile(r"^__.*__$")


def valid_document_id(value: str) -> bool:
    return (0 < len(value.encode("utf-8")) <= 1500 and "/" not in value and value not in (".", "..")
            and not _RESERVED.match(value))
