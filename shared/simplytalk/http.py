"""HTTP plumbing for the thin entry points: routing, auth, parsing, errors.

An entry point declares its routes and hands requests to `Api`:

    api = Api("token-usage")

    @api.route("GET", "/")
    def get_usage(req: ApiRequest) -> Reply: ...

`Api.__call__(flask_request)` verifies the Firebase ID token (unless a route
says `public=True`), matches the route (405 with `Allow` for a known path and
wrong method), runs the handler and serializes its reply. Every error leaves
through `error_response`, the one place that maps the exception tree to the
contract's JSON error shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from simplytalk import logs
from simplytalk.auth import Caller, bearer_token, verify_id_token
from simplytalk.config import settings
from simplytalk.errors import (
    Aborted,
    ApiError,
    Conflict,
    FailedPrecondition,
    InvalidInput,
    LimitReached,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PaymentNeeded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from simplytalk.ids import valid_document_id
from simplytalk.validation import parse_model

if TYPE_CHECKING:
    import flask

log = logs.get_logger("http")

# The contract's HTTP status and canonical status for each error (AIP-193), in one place.
ERROR_STATUS: dict[type[ApiError], tuple[int, str]] = {
    InvalidInput: (400, "INVALID_ARGUMENT"),
    Unauthenticated: (401, "UNAUTHENTICATED"),
    PaymentNeeded: (402, "FAILED_PRECONDITION"),
    PermissionDenied: (403, "PERMISSION_DENIED"),
    FailedPrecondition: (400, "FAILED_PRECONDITION"),
    NotFound: (404, "NOT_FOUND"),
    MethodNotAllowed: (405, "METHOD_NOT_ALLOWED"),
    Conflict: (409, "ALREADY_EXISTS"),
    Aborted: (409, "ABORTED"),
    PayloadTooLarge: (413, "OUT_OF_RANGE"),
    LimitReached: (429, "RESOURCE_EXHAUSTED"),
    Unavailable: (503, "UNAVAILABLE"),
}
INTERNAL = (500, "INTERNAL")


def status_of(exc: ApiError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return INTERNAL
M = TypeVar("M", bound=BaseModel)
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiRequest:
    raw: flask.Request
    caller: Caller | None
    params: dict[str, str]
    max_body_bytes: int | None = None

    @property
    def uid(self) -> str:
        assert self.caller is not None, "route is public"
        return self.caller.uid

    def require_current_account(self) -> None:
        """For admin and payment routes: the account must not be disabled and this token not
        revoked (the plain check trusts a token until it expires, up to an hour)."""
        verify_id_token(bearer_token(self.raw.headers.get("Authorization")), check_revoked=True)

    def query(self, name: str) -> str | None:
        return self.raw.args.get(name)

    def body(self) -> bytes:
        limit = self.max_body_bytes or settings().max_body_bytes
        length = self.raw.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        data = self.raw.stream.read(limit + 1) if length is None else self.raw.get_data()
        if len(data) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        return data

    def json(self) -> Any:
        data = self.body()
        if not data.strip():
            raise InvalidInput("request body must be a JSON object")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # nested deeper than any request of ours
            raise InvalidInput("request body is nested too deeply") from exc

    def parse(self, model: type[M]) -> M:
        return parse_model(model, self.json())


Handler = Callable[[ApiRequest], Reply]


@dataclass(frozen=True)
class RouteDoc:
    """What a route takes and gives, for the OpenAPI document (`python -m devtools.openapi`).

    Description only: the handler still parses and answers as it does. `body`, `response` and
    `query` are pydantic models (a query model's fields are the query parameters); `errors`
    are the error statuses this route answers besides the ones every route may (400, 401 for
    a signed-in route, 404 for a path with ids, 413 for a body); `security` names a public
    route's own credentials (webhooks), as OpenAPI security requirements (any one suffices).
    """

    summary: str = ""
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    security: tuple[tuple[str, ...], ...] = ()
    response_headers: tuple[str, ...] = ()  # e.g. "Location"


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    public: bool
    path: str = "/"
    doc: RouteDoc = field(default_factory=RouteDoc)


CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key"
CORS_EXPOSE_HEADERS = "Location, Retry-After, Allow"
CORS_MAX_AGE = "3600"


class Api:
    def __init__(self, name: str, max_body_bytes: int | None = None, *, cors: bool = True) -> None:
        """`cors`: browsers from `SIMPLYTALK_ALLOWED_ORIGINS` may call it (not webhooks)."""
        self.name = name
        self.max_body_bytes = max_body_bytes  # None: the configured default
        self.cors = cors
        self._routes: list[_Route] = []

    def route(self, method: str, path: str, *, public: bool = False, summary: str = "",
              body: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, status: int = 200, errors: tuple[int, ...] = (),
              security: tuple[tuple[str, ...], ...] = (),
              response_headers: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
        """Register a handler. `{name}` in `path` matches one path segment. The keywords after
        `public` describe the route for the OpenAPI document (`RouteDoc`) and change nothing else."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path.rstrip("/") or "")
        pattern = re.compile(f"^{regex}/?$")
        doc = RouteDoc(summary, body, response, query, status, errors, security, response_headers)

        def register(handler: Handler) -> Handler:
            self._routes.append(_Route(method.upper(), pattern, handler, public, path, doc))
            return handler

        return register

    @property
    def routes(self) -> tuple[_Route, ...]:
        """The registered routes, in order (read by the OpenAPI generator)."""
        return tuple(self._routes)

    def __call__(self, request: flask.Request) -> flask.Response:
        from flask import Response  # loaded already: functions-framework serves on Flask

        body, status, headers = self._answer(request)
        response = Response(body, status, headers)
        if not body:  # 204 and the like: no body, so no Content-Type (Flask would say text/html)
            response.headers.remove("Content-Type")
        return response

    def _answer(self, request: flask.Request) -> tuple[str, int, dict[str, str]]:
        trace = logs.set_trace(logs.trace_from_headers(request.headers, settings().project_id))
        try:
            cors = self._cors(request)
            if cors and "Access-Control-Allow-Origin" in cors and request.method == "OPTIONS" and \
                    request.headers.get("Access-Control-Request-Method"):
                preflight = self._preflight(request.path or "/")
                if preflight is not None:
                    return "", 204, {**cors, **preflight}
            try:
                body, status, headers = _serialize(self._dispatch(request))
            except ApiError as exc:
                body, status, headers = error_response(exc)
            except Exception:
                log.exception("unhandled error in %s", self.name)
                body, status, headers = error_response(ApiError("internal error"))
            return body, status, {**headers, **(cors or {})}
        finally:
            logs.reset_trace(trace)

    def _cors(self, request: flask.Request) -> dict[str, str] | None:
        """The CORS headers for this request's origin (None: not a CORS-enabled API)."""
        if not self.cors:
            return None
        origin = request.headers.get("Origin")
        if not origin or origin.lower() not in settings().allowed_origins:
            return {"Vary": "Origin"}  # nothing for other origins; caches must still tell them apart
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
                "Vary": "Origin"}

    def _preflight(self, path: str) -> dict[str, str] | None:
        methods = {r.method for r in self._routes if r.pattern.match(path)}
        if not methods:
            return None  # no such resource: the 404 answers
        if "GET" in methods:
            methods.add("HEAD")
        return {"Access-Control-Allow-Methods": ", ".join(sorted(methods)),
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS, "Access-Control-Max-Age": CORS_MAX_AGE}

    def _dispatch(self, request: flask.Request) -> Reply:
        path = request.path or "/"
        method = request.method.upper()
        matches = [(r, m) for r in self._routes if (m := r.pattern.match(path))]
        if not matches:
            raise NotFound(f"no such resource: {path}")
        for candidate, match in matches:
            if candidate.method == method or (method == "HEAD" and candidate.method == "GET"):
                route, params = candidate, match.groupdict()
                break
        else:
            allowed = sorted({r.method for r, _ in matches})
            raise MethodNotAllowed(f"method {method} not allowed; use {', '.join(allowed)}", allowed)
        if not all(valid_document_id(v) for v in params.values()):
            raise NotFound(f"no such resource: {path}")  # no document can have that id
        caller = None
        if not route.public:
            caller = verify_id_token(bearer_token(request.headers.get("Authorization")))
        return route.handler(ApiRequest(raw=request, caller=caller, params=params,
                                        max_body_bytes=self.max_body_bytes))


def _serialize(reply: Reply) -> tuple[str, int, dict[str, str]]:
    if reply.body is None:
        return "", reply.status, reply.headers
    body = reply.body
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json", by_alias=True)
    return json.dumps(body, separators=(",", ":")), reply.status, {**JSON_HEADERS, **reply.headers}


def error_response(exc: ApiError) -> tuple[str, int, dict[str, str]]:
    """The contract's error body (Google's JSON error shape) for any ApiError."""
    code, status = status_of(exc)
    error: dict[str, Any] = {"code": code, "status": status, "message": exc.message}
    if exc.details:
        error["details"] = [{"field": d.field, "description": d.description} for d in exc.details]
    headers = dict(JSON_HEADERS)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, LimitReached) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if code >= 500:
        log.error("%s: %s", status, exc.message)
    return json.dumps({"error": error}), code, headers
