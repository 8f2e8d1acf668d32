from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from simplytalk.events import BadEvent, decode_document_event

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "firestore-emulator-v2-delivery.json"


def _deliveries() -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = json.loads(SAMPLES.read_text())["requests"]
    return requests


def _decode(request: dict[str, Any], body: bytes) -> Any:
    h = request["headers"]
    return decode_document_event(h["ce-id"], h["ce-type"], h["ce-subject"], h["ce-document"], body)


def test_emulator_delivery_of_a_created_document_decodes() -> None:
    first = _deliveries()[0]

    change = _decode(first, base64.b64decode(first["body_b64"]))

    assert change.path == "users/u1"
    assert change.document_id == "u1"
    assert change.old_value is None
    assert change.value is not None
    assert change.value.fields["name"] == "Ann"
    assert change.value.fields["n"] == 1
    assert change.value.fields["tags"] == ["a", "b"]
    assert change.value.fields["m"] == {"x": 1.5}
    assert change.value.fields["ts"].year == 2026


def test_emulator_delivery_of_an_update_has_old_and_new_values() -> None:
    second = _deliveries()[1]

    change = _decode(second, base64.b64decode(second["body_b64"]))

    assert change.old_value is not None and change.value is not None
    assert change.old_value.fields["n"] == 1
    assert change.value.fields["n"] == 2


def test_raw_protobuf_as_production_sends_it_decodes_the_same() -> None:
    for request in _deliveries():
        emulator_body = base64.b64decode(request["body_b64"])  # base64 text of protobuf
        production_body = base64.b64decode(emulator_body)  # raw protobuf bytes

        assert _decode(request, production_body) == _decode(request, emulator_body)


def test_document_path_falls_back_to_subject_then_value() -> None:
    request = _deliveries()[0]
    body = base64.b64decode(request["body_b64"])
    h = request["headers"]

    assert decode_document_event("e", h["ce-type"], "documents/users/u1", None, body).path == "users/u1"
    assert decode_document_event("e", h["ce-type"], None, None, body).path == "users/u1"


@pytest.mark.parametrize("body", [b"\x0a\xff\xff\xff\xff", b"not base64 !!", 12345])
def test_garbage_is_a_bad_event(body: Any) -> None:
    with pytest.raises(BadEvent):
        decode_document_event("e", "t", "documents/users/u1", "users/u1", body)


def test_empty_body_is_an_event_without_values() -> None:
    change = decode_document_event("e", "t", "documents/users/u1", "users/u1", b"")

    assert change.value is None and change.old_value is None
    assert change.document_id == "u1"


class _Delivery:
    def __init__(self, data: object) -> None:
        self.data = data

    def get_data(self) -> object:
        return self.data


@pytest.mark.parametrize(("data", "expected"), [
    ({"message": {"data": "eyJjYWxsSWQiOiAicnRjXzEifQ=="}}, {"callId": "rtc_1"}),
    ({"message": {"data": "WzFd"}}, {}),  # a JSON array, not an object
    ({"message": {"data": "not base64!"}}, {}),
    ({"message": {}}, {}),
    (None, {}),
    ("text", {}),
])
def test_a_pubsub_delivery_carries_a_json_object_or_nothing(data: object, expected: dict[str, str]) -> None:
    from simplytalk.events import pubsub_json

    assert pubsub_json(_Delivery(data)) == expected


def _event(time: str | None) -> Any:
    """The emulator's first recorded Firestore delivery as functions-framework hands it over, at `time`."""
    from cloudevents.http import CloudEvent

    first = _deliveries()[0]
    attributes = {k[3:]: v for k, v in first["headers"].items() if k.startswith("ce-")}
    attributes.pop("time")
    if time is not None:
        attributes["time"] = time
    return CloudEvent(attributes, base64.b64decode(first["body_b64"]))


def test_a_redelivered_event_older_than_the_limit_is_dropped() -> None:
    import datetime as dt

    from simplytalk.events import document_event_handler, too_old

    now = dt.datetime.now(dt.UTC)
    old = _event((now - dt.timedelta(hours=25)).isoformat())
    fresh = _event((now - dt.timedelta(hours=23)).isoformat())
    seen: list[Any] = []
    handler = document_event_handler("test-trigger")(seen.append)

    handler(old)
    handler(fresh)
    handler(_event(None))

    assert [change.document_id for change in seen] == ["u1", "u1"]  # the old one never reached the handler
    assert too_old(old, "t", 86400) and not too_old(fresh, "t", 86400)
    assert not too_old(_event("not a time"), "t", 86400)
