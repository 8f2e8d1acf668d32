"""Firestore CloudEvent deliveries in the emulator's own wire format (tests, benchmarks)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any


def _value(v: Any) -> Any:
    from google.events.cloud.firestore_v1 import ArrayValue, MapValue, Value

    if v is None:
        return Value(null_value=0)
    if isinstance(v, bool):
        return Value(boolean_value=v)
    if isinstance(v, int):
        return Value(integer_value=v)
    if isinstance(v, float):
        return Value(double_value=v)
    if isinstance(v, str):
        return Value(string_value=v)
    if isinstance(v, dt.datetime):
        return Value(timestamp_value=v)
    if isinstance(v, list):
        return Value(array_value=ArrayValue(values=[_value(x) for x in v]))
    if isinstance(v, dict):
        return Value(map_value=MapValue(fields={k: _value(x) for k, x in v.items()}))
    raise TypeError(f"no Firestore value for {type(v).__name__}")


def document_event(project: str, path: str, fields: dict[str, Any] | None,
                   event_type: str = "google.cloud.firestore.document.v1.created",
                   event_id: str | None = None, old_fields: dict[str, Any] | None = None,
                   ) -> tuple[dict[str, str], bytes]:
    """Headers and body (base64 text of a protobuf DocumentEventData), as the emulator POSTs them."""
    from google.events.cloud.firestore_v1 import Document, DocumentEventData

    name = f"projects/{project}/databases/(default)/documents/{path}"
    now = dt.datetime.now(dt.UTC)

    def doc(values: dict[str, Any]) -> Any:
        return Document(name=name, fields={k: _value(v) for k, v in values.items()},
                        create_time=now, update_time=now)

    data = DocumentEventData(
        value=doc(fields) if fields is not None else None,
        old_value=doc(old_fields) if old_fields is not None else None,
    )
    headers = {
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/(default)",
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-subject": f"documents/{path}",
        "ce-time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ce-document": path,
        "ce-database": "(default)",
        "ce-namespace": "(default)",
        "ce-project": project,
        "Content-Type": "application/protobuf",
    }
    return headers, base64.b64encode(DocumentEventData.serialize(data))
