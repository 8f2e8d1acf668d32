"""The HTTP plumbing on public routes (no token, no I/O): routing, parsing, the error shape."""

from __future__ import annotations

import json
from typing import Any

import flask
import pytest
from pydantic import BaseModel, ConfigDict, Field
from simplytalk.errors import Conflict, FieldViolation, InvalidInput, LimitReached
from simplytalk.http import Api, ApiRequest, Reply, error_response


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    size: int = Field(ge=0)


api = Api("things")


@api.route("GET", "/", public=True)
def list_things(req: ApiRequest) -> Reply:
    return Reply(200, {"things": []})


@api.route("POST", "/", public=True)
def create_thing(req: ApiRequest) -> Reply:
    return Reply(201, req.parse(Thing))


@api.route("GET", "/{thing_id}", public=True)
def get_thing(req: ApiRequest) -> Reply:
    if req.params["thing_id"] == "boom":
        raise RuntimeError("secret internals")
    if req.params["thing_id"] == "busy":
        raise LimitReached("slow down", retry_after=30)
    return Reply(200, {"id": req.params["thing_id"]})


@api.route("DELETE", "/{thing_id}", public=True)
def delete_thing(req: ApiRequest) -> Reply:
    return Reply(204)


app = flask.Flask("test")


def call(method: str, path: str, body: bytes | None = None, extra: dict[str, str] | None = None,
         target: Api = api, **headers: str) -> tuple[int, dict[str, str], Any]:
    with app.test_request_context(path, method=method, data=body, headers={**headers, **(extra or {})}):
        response = target(flask.request)
    text = response.get_data(as_text=True)
    out_headers = {k: v for k, v in response.headers.items() if k != "Content-Length"}
    return response.status_code, out_headers, json.loads(text) if text else None


def test_route_with_parameter() -> None:
    assert call("GET", "/abc") == (200, {"Content-Type": "application/json", "Vary": "Origin"}, {"id": "abc"})


def test_trailing_slash_is_the_same_route() -> None:
    assert call("GET", "/abc/")[2] == {"id": "abc"}
    assert call("GET", "/")[0] == 200


def test_wrong_method_is_405_with_allow_header() -> None:
    status, headers, body = call("PUT", "/abc")

    assert status == 405
    assert headers["Allow"] == "DELETE, GET"
    assert body["error"]["status"] == "METHOD_NOT_ALLOWED"


def test_unknown_path_is_404() -> None:
    status, _, body = call("GET", "/a/b/c")

    assert status == 404
    assert body["error"] == {"code": 404, "status": "NOT_FOUND", "message": "no such resource: /a/b/c"}


def test_valid_body_is_parsed() -> None:
    status, _, body = call("POST", "/", b'{"name": "x", "size": 3}', extra={"Content-Type": "application/json"})

    assert (status, body) == (201, {"name": "x", "size": 3})


def test_unknown_field_is_400_naming_the_field() -> None:
    status, _, body = call("POST", "/", b'{"name": "x", "size": 1, "colour": "red"}')

    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["details"] == [{"field": "colour", "description": "unknown field"}]


def test_every_violation_is_listed() -> None:
    status, _, body = call("POST", "/", b'{"name": "", "size": -1}')

    assert status == 400
    assert {d["field"] for d in body["error"]["details"]} == {"name", "size"}
    assert body["error"]["message"].startswith("name: ")


@pytest.mark.parametrize("raw", [b"", b"   ", b"{not json", b"\xff\xfe", b"[1, 2]", b"null"])
def test_bad_json_is_400(raw: bytes) -> None:
    status, _, body = call("POST", "/", raw)

    assert status == 400
    assert body["error"]["code"] == 400


def test_oversized_body_is_413() -> None:
    status, _, body = call("POST", "/", b'{"name": "' + b"x" * 70_000 + b'", "size": 1}')

    assert status == 413
    assert body["error"]["code"] == 413


def test_unexpected_error_is_500_without_internals() -> None:
    status, _, body = call("GET", "/boom")

    assert status == 500
    assert body["error"] == {"code": 500, "status": "INTERNAL", "message": "internal error"}


def test_api_errors_keep_their_status() -> None:
    status, headers, _ = call("GET", "/busy")

    assert (status, headers["Retry-After"]) == (429, "30")


def test_every_error_of_the_tree_has_its_status_in_the_one_table() -> None:
    from simplytalk import errors
    from simplytalk.http import ERROR_STATUS

    declared = {cls for cls in vars(errors).values()
                if isinstance(cls, type) and issubclass(cls, errors.ApiError) and cls is not errors.ApiError}

    assert declared == set(ERROR_STATUS)


def test_no_content_has_no_body() -> None:
    assert call("DELETE", "/abc") == (204, {"Vary": "Origin"}, None)


def test_error_response_shape() -> None:
    text, status, headers = error_response(
        InvalidInput("name: must not be empty", [FieldViolation("name", "must not be empty")]))

    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(text) == {"error": {
        "code": 400, "status": "INVALID_ARGUMENT", "message": "name: must not be empty",
        "details": [{"field": "name", "description": "must not be empty"}]}}
    assert error_response(Conflict("taken"))[1] == 409


def test_protected_route_without_token_is_401() -> None:
    protected = Api("protected")

    @protected.route("GET", "/")
    def handler(req: ApiRequest) -> Reply:
        raise AssertionError("must not run")

    status, _, body = call("GET", "/", target=protected)

    assert status == 401
    assert body["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("bad", ["..", ".", "__name__"])
def test_a_path_id_no_document_can_have_is_404(bad: str) -> None:
    assert call("GET", f"/{bad}")[0] == 404


LOCAL = "http://localhost:3000"


def test_a_preflight_from_an_allowed_origin_gets_the_routes_methods_and_headers() -> None:
    status, headers, body = call("OPTIONS", "/abc", Origin=LOCAL, extra={"Access-Control-Request-Method": "DELETE",
                                                                        "Access-Control-Request-Headers": "x"})

    assert (status, body) == (204, None)
    assert headers["Access-Control-Allow-Origin"] == LOCAL and headers["Vary"] == "Origin"
    assert headers["Access-Control-Allow-Methods"] == "DELETE, GET, HEAD"
    assert headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type, Idempotency-Key"
    assert headers["Access-Control-Max-Age"] == "3600"


def test_responses_and_errors_carry_cors_headers_for_an_allowed_origin_only() -> None:
    ok = call("GET", "/abc", Origin=LOCAL)[1]
    failed = call("GET", "/busy", Origin=LOCAL)[1]
    other = call("GET", "/abc", Origin="https://evil.example")[1]
    preflight_other = call("OPTIONS", "/abc", Origin="https://evil.example",
                           extra={"Access-Control-Request-Method": "GET"})

    assert ok["Access-Control-Allow-Origin"] == LOCAL and "Location" in ok["Access-Control-Expose-Headers"]
    assert failed["Access-Control-Allow-Origin"] == LOCAL and failed["Retry-After"] == "30"
    assert "Access-Control-Allow-Origin" not in other and other["Vary"] == "Origin"
    assert preflight_other[0] == 405 and "Access-Control-Allow-Origin" not in preflight_other[1]


def test_webhooks_answer_no_browser() -> None:
    hook = Api("hook", cors=False)

    @hook.route("POST", "/", public=True)
    def receive(req: ApiRequest) -> Reply:
        return Reply(200, {"ok": True})

    status, headers, _ = call("OPTIONS", "/", target=hook, extra={
        "Origin": LOCAL, "Access-Control-Request-Method": "POST"})

    assert status == 405 and not any(h.startswith("Access-Control") or h == "Vary" for h in headers)


def test_json_nested_past_the_parsers_depth_is_a_400() -> None:
    status, _, body = call("POST", "/", b'{"name": ' + b"[" * 30000 + b"]" * 30000 + b"}",
                           extra={"Content-Type": "application/json"})

    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
