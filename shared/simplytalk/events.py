"""Decoding Firestore CloudEvents (Eventarc in production, the emulator locally).

The data is a protobuf `DocumentEventData`: raw bytes in production, the base64
text of those bytes from the emulator. Raw protobuf for this message starts with
a field tag byte (0x0a, 0x12 or 0x1a), never a base64 character, so the two are
told apart without guessing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simplytalk.errors import SimplyTalkError

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n")


class BadEvent(SimplyTalkError):
    """An event that can never be processed; acknowledge it (retrying cannot help)."""


@dataclass(frozen=True)
class Document:
    path: str  # "users/u1"
    fields: dict[str, Any]
    create_time: dt.datetime | None
    update_time: dt.datetime | None


@dataclass(frozen=True)
class DocumentChange:
    event_id: str
    event_type: str
    path: str  # the document path relative to the database, e.g. "users/u1"
    value: Document | None
    old_value: Document | None

    @property
    def document_id(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _payload_bytes(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, str):
        data = data.encode("ascii", "strict")
    if not isinstance(data, bytes | bytearray):
        raise BadEvent(f"unexpected CloudEvent data of type {type(data).__name__}")
    data = bytes(data)
    if data and set(data) <= _B64_ALPHABET:
        try:
            return base64.b64decode(data, validate=False)
        except binascii.Error as exc:
            raise BadEvent("CloudEvent data is neither protobuf nor base64") from exc
    return data


def _relative_path(name: str) -> str:
    # projects/{p}/databases/{db}/documents/users/u1 -> users/u1
    marker = "/documents/"
    return name.split(marker, 1)[1] if marker in name else name


def decode_document_event(
    event_id: str, event_type: str, subject: str | None, document_attr: str | None, data: Any
) -> DocumentChange:
    from google.events.cloud.firestore_v1 import DocumentEventData

    try:
        payload = DocumentEventData.deserialize(_payload_bytes(data))
    except BadEvent:
        raise
    except Exception as exc:
        raise BadEvent(f"cannot decode DocumentEventData: {exc}") from exc

    value = _document(payload.value) if payload.value and payload.value.name else None
    old = _document(payload.old_value) if payload.old_value and payload.old_value.name else None
    if document_attr:
        path = document_attr
    elif subject and subject.startswith("documents/"):
        path = subject.removeprefix("documents/")
    elif value or old:
        path = (value or old).path  # type: ignore[union-attr]
    else:
        raise BadEvent("event names no document")
    return DocumentChange(event_id, event_type, path, value, old)


def decode_cloud_event(cloud_event: Any) -> DocumentChange:
    """A `cloudevents.http.CloudEvent` from functions-framework -> DocumentChange."""
    attrs = cloud_event.get_attributes()
    return decode_document_event(
        event_id=str(attrs.get("id", "")),
        event_type=str(attrs.get("type", "")),
        subject=attrs.get("subject"),
        document_attr=attrs.get("document"),
        data=cloud_event.get_data(),
    )


def _document(doc: Any) -> Document:
    return Document(
        path=_relative_path(doc.name),
        fields={k: _value(v) for k, v in doc.fields.items()},
        create_time=_time(doc.create_time),
        update_time=_time(doc.update_time),
    )


def _time(ts: Any) -> dt.datetime | None:
    if ts is None:
        return None
    if isinstance(ts, dt.datetime):
        return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
    return None


def _value(v: Any) -> Any:
    from google.events.cloud.firestore_v1 import Value

    pb = Value.pb(v)
    kind = pb.WhichOneof("value_type")
    if kind is None or kind == "null_value":
        return None
    if kind == "map_value":
        return {k: _value(Value.wrap(x)) for k, x in pb.map_value.fields.items()}
    if kind == "array_value":
        return [_value(Value.wrap(x)) for x in pb.array_value.values]
    if kind == "timestamp_value":
        return pb.timestamp_value.ToDatetime(tzinfo=dt.UTC)
    if kind == "geo_point_value":
        return {"latitude": pb.geo_point_value.latitude, "longitude": pb.geo_point_value.longitude}
    if kind == "reference_value":
        return _relative_path(pb.reference_value)
    return getattr(pb, kind)


def event_age(cloud_event: Any, now: dt.datetime) -> dt.timedelta | None:
    """How long ago the event happened (its CloudEvent `time`), or None when it does not say."""
    try:
        raw = cloud_event["time"]
    except (KeyError, TypeError):
        return None
    if isinstance(raw, dt.datetime):
        when = raw if raw.tzinfo else raw.replace(tzinfo=dt.UTC)
    elif isinstance(raw, str):
        try:
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
    else:
        return None
    return now - when


def too_old(cloud_event: Any, name: str, max_age_seconds: int) -> bool:
    """True (and logged) for a redelivered event older than the function takes: the platform
    retries a failing event for days; past this age it is acknowledged instead."""
    from simplytalk import logs

    age = event_age(cloud_event, dt.datetime.now(dt.UTC))
    if age is None or age.total_seconds() <= max_age_seconds:
        return False
    event_id = cloud_event.get("id") if hasattr(cloud_event, "get") else None
    logs.get_logger(name).error("%s: dropping event %s, %d s old (more than %d s): not processed", name, event_id,
                                int(age.total_seconds()), max_age_seconds,
                                extra={"fields": {"eventId": event_id, "ageSeconds": int(age.total_seconds())}})
    return True


def document_event_handler(name: str, age_setting: str = "max_event_age_seconds"
                           ) -> Callable[[Callable[[DocumentChange], None]], Callable[[Any], None]]:
    """Wrap a Firestore-event handler: an event older than the `age_setting` of the settings
    (SIMPLYTALK_MAX_EVENT_AGE_SECONDS by default) is logged and acknowledged; the CloudEvent is decoded
    first, and one that cannot be decoded is logged and acknowledged (a retry cannot fix it).
    Anything the handler raises goes back to the platform, which redelivers: raise to retry,
    return to acknowledge."""
    from simplytalk import logs

    log = logs.get_logger(name)

    def wrap(handler: Callable[[DocumentChange], None]) -> Callable[[Any], None]:
        def handle(cloud_event: Any) -> None:
            from simplytalk.config import settings

            if too_old(cloud_event, name, int(getattr(settings(), age_setting))):
                return
            try:
                change = decode_cloud_event(cloud_event)
            except BadEvent as exc:
                log.error("%s: dropping undecodable event: %s", name, exc)
                return
            handler(change)

        return handle

    return wrap


def pubsub_json(cloud_event: Any) -> dict[str, Any]:
    """The JSON object a Pub/Sub push delivery carries (`message.data`, base64); {} for anything else."""
    import json

    data = cloud_event.get_data() or {}
    raw = (data.get("message") or {}).get("data") if isinstance(data, dict) else None
    try:
        parsed = json.loads(base64.b64decode(raw or "", validate=True))
    except (ValueError, TypeError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
