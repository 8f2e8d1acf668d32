"""The local OpenAI Realtime stand-in (devtools/fake_openai.py), driven only through the official SDK.

Every server event received is validated against the SDK's own model for its `type` and checked for
keys that model does not declare (the SDK's models accept extras, so drift would otherwise pass).
The `/_fake` controls are plain HTTP.
"""

from __future__ import annotations

import json
import re
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import openai
import pydantic
import pytest
import requests
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
)
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from devtools.fake_openai import default_session, serve_in_thread

KEY = "sk-local-test"
OFFER = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "a=msid-semantic: WMS", "m=audio 9 UDP/TLS/RTP/SAVPF 111 0", "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx", "a=fingerprint:sha-256 AA:BB", "a=setup:actpass",
    "a=mid:0", "a=sendrecv", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0",
    "a=mid:1", "a=sctp-port:5000", "a=max-message-size:262144", "",
])
USAGE = {
    "total_tokens": 1234, "input_tokens": 1000, "output_tokens": 234,
    "input_token_details": {"text_tokens": 120, "audio_tokens": 880, "image_tokens": 0, "cached_tokens": 64,
                            "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0}},
    "output_token_details": {"text_tokens": 34, "audio_tokens": 200},
}
TOKENS_USAGE = {"type": "tokens", "input_tokens": 40, "output_tokens": 9, "total_tokens": 49,
                "input_token_details": {"audio_tokens": 40, "text_tokens": 0}}


# -- strict checks against the SDK's types ------------------------------------------------------
def _accepts(annotation: Any, value: Any) -> bool:
    try:
        pydantic.TypeAdapter(annotation).validate_python(value)
    except pydantic.ValidationError:
        return False
    return True


def undeclared_keys(value: Any, annotation: Any, path: str = "$") -> list[str]:
    """Keys in raw JSON that the SDK type does not declare, at any depth (for unions: the best member)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return undeclared_keys(value, get_args(annotation)[0], path)
    if origin in (Union, types.UnionType):
        found = [undeclared_keys(value, m, path) for m in get_args(annotation)
                 if m is not type(None) and _accepts(m, value)]
        return min(found, key=len) if found else []
    if origin is list and isinstance(value, list):
        return [k for i, v in enumerate(value) for k in undeclared_keys(v, get_args(annotation)[0], f"{path}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [k for key, v in value.items() for k in undeclared_keys(v, get_args(annotation)[1], f"{path}.{key}")]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) and isinstance(value, dict):
        fields = {(f.alias or name): f for name, f in annotation.model_fields.items()}
        return [k for key, v in value.items()
                for k in ([f"{path}.{key}"] if key not in fields
                          else undeclared_keys(v, fields[key].annotation, f"{path}.{key}"))]
    return []


SERVER_EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(get_args(RealtimeServerEvent)[0])
}


def check_strictly(raw: Any, model: Any) -> None:
    pydantic.TypeAdapter(model).validate_python(raw)
    assert undeclared_keys(raw, model) == []


def check_event(raw: dict[str, Any]) -> None:
    """A server event as the SDK declares it: its type's model validates it and it has nothing more."""
    assert raw["type"] in SERVER_EVENT_MODELS, f"unknown server event type {raw['type']!r}"
    assert raw["event_id"].startswith("event_")
    check_strictly(raw, SERVER_EVENT_MODELS[raw["type"]])
    pydantic.TypeAdapter(RealtimeServerEvent).validate_python(raw)


# -- fixtures and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _, base, stop = serve_in_thread(api_key=KEY)
    yield base
    stop()


@pytest.fixture
def base(server: str) -> str:
    requests.delete(f"{server}/_fake/data", timeout=10).raise_for_status()
    return server


@pytest.fixture
def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{base}/v1", max_retries=0, timeout=10)


def ctl(base: str, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{base}/_fake{path}", json=body, timeout=15)


def create_call(client: openai.OpenAI, session: Any = None) -> str:
    raw = (client.realtime.calls.with_raw_response.create(sdp=OFFER, session=session) if session is not None
           else client.realtime.calls.with_raw_response.create(sdp=OFFER))
    assert raw.status_code == 201
    match = re.fullmatch(r"/v1/realtime/calls/(rtc_[0-9a-f]{32})", raw.headers["location"])
    assert match, raw.headers["location"]
    return match.group(1)


def call_state(base: str, call_id: str) -> dict[str, Any]:
    response = ctl(base, "GET", f"/calls/{call_id}")
    assert response.status_code == 200
    state: dict[str, Any] = response.json()
    return state


def _watchdog(conn: Any, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, conn.close)  # a missing event fails the test instead of hanging it
    timer.start()
    return timer


def recv(conn: Any, timeout: float = 5.0) -> dict[str, Any]:
    timer = _watchdog(conn, timeout)
    try:
        data = conn.recv_bytes()
    finally:
        timer.cancel()
    event: dict[str, Any] = json.loads(data)
    check_event(event)
    assert conn.parse_event(data).type == event["type"]
    return event


def drain(conn: Any, timeout: float = 5.0) -> list[Any]:
    """Iterate the SDK connection to its end (the watchdog closes it after `timeout`)."""
    timer = _watchdog(conn, timeout)
    try:
        return list(conn)
    finally:
        timer.cancel()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- creating calls ---------------------------------------------------------------------------------
def test_create_call_multipart_records_session_merged_with_defaults(client: openai.OpenAI, base: str) -> None:
    session: Any = {"type": "realtime", "model": "gpt-realtime", "instructions": "Speak slowly, in Spanish.",
               "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe", "language": "es"}},
                         "output": {"voice": "marin"}}}
    raw = client.realtime.calls.with_raw_response.create(sdp=OFFER, session=session)
    assert raw.status_code == 201
    assert raw.headers["content-type"].startswith("application/sdp")
    call_id = raw.headers["location"].rsplit("/", 1)[1]
    assert re.fullmatch(r"rtc_[0-9a-f]{32}", call_id)
    answer = raw.parse().text
    assert answer.startswith("v=0\r\n")
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 111 0" in answer and "a=setup:passive" in answer
    assert "m=application 9 UDP/DTLS/SCTP webrtc-datachannel" in answer and "a=mid:1" in answer

    state = call_state(base, call_id)
    assert state["status"] == "active" and state["sidebandConnections"] == 0 and state["clientEvents"] == []
    expected = default_session()
    expected["instructions"] = "Speak slowly, in Spanish."
    expected["audio"]["input"]["transcription"] = {"model": "gpt-4o-transcribe", "language": "es"}
    expected["audio"]["output"]["voice"] = "marin"
    assert state["session"] == expected
    check_strictly(state["session"], RealtimeSessionCreateRequest)


def test_create_call_with_raw_sdp_uses_the_default_session(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    session = call_state(base, call_id)["session"]
    assert session == default_session()
    assert session["model"] == "gpt-realtime" and session["audio"]["output"]["voice"] == "alloy"
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    check_strictly(session, RealtimeSessionCreateRequest)
    listed = ctl(base, "GET", "/calls").json()["calls"]
    assert [c["id"] for c in listed] == [call_id] and listed[0]["status"] == "active"
    assert ctl(base, "GET", "/stats").json() == {"calls": 1, "active": 1}


@pytest.mark.parametrize(("session", "param", "code"), [
    ({"type": "realtime", "foo": 1}, "session.foo", "unknown_parameter"),
    ({"type": "realtime", "audio": {"output": {"voice": "alloy", "pitch": 2}}}, "session.audio.output.pitch",
     "unknown_parameter"),
    ({"type": "realtime", "audio": {"output": {"voice": "robot"}}}, "session.audio.output.voice", "invalid_value"),
    ({"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-9"}}}},
     "session.audio.input.transcription.model", "invalid_value"),
    ({"type": "realtime", "model": "gpt-3"}, "session.model", "invalid_value"),
    ({"type": "transcription"}, "session.type", "invalid_value"),
    ({"type": "realtime", "instructions": 7}, "session.instructions", "invalid_type"),
])
def test_create_call_refuses_bad_sessions(client: openai.OpenAI, session: Any, param: str,
                                          code: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.realtime.calls.create(sdp=OFFER, session=session)
    assert caught.value.param == param and caught.value.code == code
    assert caught.value.type == "invalid_request_error"


def test_refusals(client: openai.OpenAI, base: str) -> None:
    wrong = openai.OpenAI(api_key="sk-wrong-key-0000", base_url=f"{base}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.realtime.calls.create(sdp=OFFER)
    assert auth.value.code == "invalid_api_key" and "sk-wrong-key-0000" not in auth.value.message
    with pytest.raises(openai.BadRequestError) as bad_sdp:
        client.realtime.calls.create(sdp="hello")
    assert bad_sdp.value.param == "sdp"
    with pytest.raises(openai.BadRequestError) as no_audio:
        client.realtime.calls.create(sdp="v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
    assert no_audio.value.param == "sdp"
    with pytest.raises(openai.BadRequestError) as huge:
        client.realtime.calls.create(sdp=OFFER + "a=x:" + "y" * 65536 + "\r\n")
    assert huge.value.param == "sdp"
    with pytest.raises(openai.NotFoundError) as missing:
        client.realtime.calls.hangup("rtc_" + "0" * 32)
    assert missing.value.code == "call_not_found"
    call_id = create_call(client)
    with pytest.raises(InvalidStatus) as denied:
        wrong.realtime.connect(call_id=call_id).enter()
    assert denied.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as unknown:
        client.realtime.connect(call_id="rtc_" + "1" * 32).enter()
    assert unknown.value.response.status_code == 404
    assert json.loads(unknown.value.response.body or b"{}")["error"]["code"] == "call_not_found"


def test_create_faults(client: openai.OpenAI, base: str) -> None:
    assert ctl(base, "POST", "/faults", {"createStatus": 429, "retryAfter": 2}).status_code == 200
    with pytest.raises(openai.RateLimitError) as limited:
        client.realtime.calls.create(sdp=OFFER)
    assert limited.value.response.headers["retry-after"] == "2" and limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):  # until cleared
        client.realtime.calls.create(sdp=OFFER)
    ctl(base, "POST", "/faults", {"createStatus": 500, "count": 1})
    with pytest.raises(openai.InternalServerError):
        client.realtime.calls.create(sdp=OFFER)
    create_call(client)  # count 1: the next one works
    ctl(base, "POST", "/faults", {"createStatus": 503})
    ctl(base, "POST", "/faults", {"createStatus": None})
    create_call(client)


# -- the sideband ------------------------------------------------------------------------------------
def test_sideband_sees_session_and_response_events(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client, {"type": "realtime", "audio": {"output": {"voice": "cedar"}}})
    with client.realtime.connect(call_id=call_id) as conn:
        created = recv(conn)
        assert created["type"] == "session.created"
        assert created["session"] == call_state(base, call_id)["session"]

        reply = ctl(base, "POST", f"/calls/{call_id}/responses", {"usage": USAGE, "transcript": "Hola, ¿qué tal?"})
        assert reply.status_code == 200 and reply.json()["delivered"] is True
        response_id = reply.json()["responseId"]
        assert response_id.startswith("resp_")
        started, transcript, done = recv(conn), recv(conn), recv(conn)
        assert started["type"] == "response.created" and started["response"]["status"] == "in_progress"
        assert started["response"]["id"] == response_id
        assert transcript["type"] == "response.output_audio_transcript.done"
        assert transcript["transcript"] == "Hola, ¿qué tal?" and transcript["response_id"] == response_id
        assert done["type"] == "response.done"
        response = done["response"]
        assert response["id"] == response_id and response["status"] == "completed"
        assert response["object"] == "realtime.response" and response["status_details"] is None
        assert response["usage"] == USAGE  # exact round trip, snake_case
        assert response["audio"]["output"]["voice"] == "cedar"
        (item,) = response["output"]
        assert item["id"] == transcript["item_id"] and item["role"] == "assistant"
        assert item["content"] == [{"type": "output_audio", "transcript": "Hola, ¿qué tal?"}]

        # "Voice cannot be changed during the session once the model has responded with audio" (SDK docs)
        conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "ash"}}})
        assert recv(conn)["error"]["param"] == "session.audio.output.voice"
        conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "cedar", "speed": 1.1}}})
        assert recv(conn)["session"]["audio"]["output"] == {
            "format": {"type": "audio/pcm", "rate": 24000}, "voice": "cedar", "speed": 1.1}

        conn.response.create()
        wait_for(lambda: any(e.get("type") == "response.create" for e in call_state(base, call_id)["clientEvents"]))
        assert call_state(base, call_id)["sidebandConnections"] == 1


def test_session_updates_reach_every_sideband(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    with client.realtime.connect(call_id=call_id) as first, client.realtime.connect(call_id=call_id) as second:
        recv(first), recv(second)
        first.session.update(session={"type": "realtime", "instructions": "Be brief.",
                                      "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
        for conn in (first, second):
            updated = recv(conn)
            assert updated["type"] == "session.updated"
            assert updated["session"]["instructions"] == "Be brief."
            assert updated["session"]["audio"]["input"]["turn_detection"] == {
                "type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True}
            assert updated["session"]["audio"]["output"]["voice"] == "alloy"  # the rest is kept

        browser = ctl(base, "POST", f"/calls/{call_id}/session",
                      {"type": "realtime", "audio": {"output": {"speed": 1.2}}})
        assert browser.status_code == 200
        for conn in (first, second):
            updated = recv(conn)
            assert updated["session"]["audio"]["output"]["speed"] == 1.2
            assert updated["session"]["instructions"] == "Be brief."
        assert call_state(base, call_id)["session"] == browser.json()["session"]

        unknown_field: Any = {"type": "realtime", "foo": 1}
        first.session.update(session=unknown_field, event_id="evt_client_1")
        error = recv(first)
        assert error["type"] == "error"
        assert error["error"]["code"] == "unknown_parameter" and error["error"]["param"] == "session.foo"
        assert error["error"]["event_id"] == "evt_client_1"
        bogus: Any = {"type": "bogus.event"}
        first.send(bogus)
        assert recv(first)["error"]["param"] == "type"
        bad = ctl(base, "POST", f"/calls/{call_id}/session", {"type": "realtime", "audio": {"output": {"voice": "x"}}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "session.audio.output.voice"

        wait_for(lambda: len(call_state(base, call_id)["clientEvents"]) == 3)
        kinds = [e["type"] for e in call_state(base, call_id)["clientEvents"]]
        assert kinds == ["session.update", "session.update", "bogus.event"]


def test_drop_then_reconnect_and_responses_wait_for_it(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    with client.realtime.connect(call_id=call_id) as conn:
        recv(conn)
        assert ctl(base, "POST", f"/calls/{call_id}/drop").json() == {"dropped": 1}
        with pytest.raises(ConnectionClosedError):
            drain(conn)
    assert call_state(base, call_id)["status"] == "active"

    result: dict[str, Any] = {}
    poster = threading.Thread(target=lambda: result.update(
        ctl(base, "POST", f"/calls/{call_id}/responses", {"usage": USAGE, "transcript": "again"}).json()))
    poster.start()
    time.sleep(0.3)
    assert poster.is_alive()  # waiting for a sideband
    with client.realtime.connect(call_id=call_id) as conn:
        assert recv(conn)["type"] == "session.created"
        kinds = [recv(conn)["type"] for _ in range(3)]
        assert kinds == ["response.created", "response.output_audio_transcript.done", "response.done"]
    poster.join(timeout=10)
    assert result["delivered"] is True
    assert call_state(base, call_id)["sidebandConnects"] == 2


def test_undelivered_response_and_control_errors(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    reply = ctl(base, "POST", f"/calls/{call_id}/responses", {"usage": USAGE, "transcript": "x", "waitSeconds": 0.1})
    assert reply.status_code == 200 and reply.json()["delivered"] is False
    bad = ctl(base, "POST", f"/calls/{call_id}/responses", {"usage": {"total_tokens": "many"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "usage.total_tokens"
    unknown = ctl(base, "POST", f"/calls/{call_id}/responses", {"usage": {"totalTokens": 3}})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_parameter"
    assert ctl(base, "POST", "/calls/rtc_nope/responses", {"usage": USAGE}).status_code == 404
    assert ctl(base, "GET", "/calls/rtc_nope").status_code == 404
    assert ctl(base, "POST", f"/calls/{call_id}/end").status_code == 200
    assert ctl(base, "POST", f"/calls/{call_id}/responses", {"usage": USAGE}).status_code == 409
    assert ctl(base, "POST", f"/calls/{call_id}/end").status_code == 409


def test_end_closes_sidebands_normally_and_refuses_new_ones(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    with client.realtime.connect(call_id=call_id) as conn:
        recv(conn)
        assert ctl(base, "POST", f"/calls/{call_id}/end").status_code == 200
        assert drain(conn) == []  # iteration stops: ConnectionClosedOK
    state = call_state(base, call_id)
    assert state["status"] == "ended" and state["sidebandConnections"] == 0
    with pytest.raises(InvalidStatus) as refused:
        client.realtime.connect(call_id=call_id).enter()
    assert refused.value.response.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.hangup(call_id)


def test_hangup_closes_sidebands(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    with client.realtime.connect(call_id=call_id) as conn:
        recv(conn)
        raw = client.realtime.calls.with_raw_response.hangup(call_id)
        assert raw.status_code == 200 and raw.content == b""
        assert drain(conn) == []
    state = call_state(base, call_id)
    assert state["status"] == "hung_up" and state["sidebandConnections"] == 0 and state["sidebandConnects"] == 1
    assert ctl(base, "GET", "/stats").json() == {"calls": 1, "active": 0}
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.hangup(call_id)


def test_transcriptions_and_items(client: openai.OpenAI, base: str) -> None:
    call_id = create_call(client)
    with client.realtime.connect(call_id=call_id) as conn:
        recv(conn)
        reply = ctl(base, "POST", f"/calls/{call_id}/transcriptions", {"transcript": "Hello", "usage": TOKENS_USAGE})
        assert reply.status_code == 200 and reply.json()["delivered"] is True
        event = recv(conn)
        check_strictly(event, ConversationItemInputAudioTranscriptionCompletedEvent)
        assert event["type"] == "conversation.item.input_audio_transcription.completed"
        assert event["item_id"] == reply.json()["itemId"] and event["content_index"] == 0
        assert event["transcript"] == "Hello" and event["usage"] == TOKENS_USAGE
        ctl(base, "POST", f"/calls/{call_id}/transcriptions", {"transcript": "Bye", "usage": {"type": "duration",
                                                                                             "seconds": 3.2}})
        assert recv(conn)["usage"] == {"type": "duration", "seconds": 3.2}
        assert ctl(base, "POST", f"/calls/{call_id}/transcriptions",
                   {"transcript": "x", "usage": {"type": "tokens"}}).status_code == 400

        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "from the browser"}]}
        browser = ctl(base, "POST", f"/calls/{call_id}/items", {"item": item})
        assert browser.status_code == 200
        added, done = recv(conn), recv(conn)
        assert added["type"] == "conversation.item.added" and done["type"] == "conversation.item.done"
        assert added["item"]["id"] == browser.json()["itemId"] == done["item"]["id"]
        assert added["item"]["content"] == item["content"] and added["item"]["object"] == "realtime.item"

        conn.conversation.item.create(item={"type": "message", "role": "system",
                                            "content": [{"type": "input_text", "text": "Be kind."}]})
        mine = recv(conn)
        assert mine["type"] == "conversation.item.added" and mine["item"]["role"] == "system"
        assert mine["previous_item_id"] == browser.json()["itemId"]
        assert recv(conn)["type"] == "conversation.item.done"
        conn.conversation.item.delete(item_id=mine["item"]["id"])
        deleted = recv(conn)
        assert deleted["type"] == "conversation.item.deleted" and deleted["item_id"] == mine["item"]["id"]
        conn.conversation.item.delete(item_id="item_missing")
        assert recv(conn)["type"] == "error"
        wait_for(lambda: [e["type"] for e in call_state(base, call_id)["clientEvents"]] == [
            "conversation.item.create", "conversation.item.delete", "conversation.item.delete"])
