"""The one exception tree. `simplytalk.http` maps it to HTTP in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class SimplyTalkError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigError(SimplyTalkError):
    """The instance is misconfigured; it must not serve."""


class ApiError(SimplyTalkError):
    """An error a caller sees, in Google's JSON error shape."""

    http_status = 500
    status = "INTERNAL"

    def __init__(self, message: str, details: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidArgument(ApiError):
    http_status, status = 400, "INVALID_ARGUMENT"


class Unauthenticated(ApiError):
    http_status, status = 401, "UNAUTHENTICATED"


class PaymentRequired(ApiError):
    http_status, status = 402, "FAILED_PRECONDITION"


class PermissionDenied(ApiError):
    http_status, status = 403, "PERMISSION_DENIED"


class FailedPrecondition(ApiError):
    http_status, status = 403, "FAILED_PRECONDITION"


class NotFound(ApiError):
    http_status, status = 404, "NOT_FOUND"


class MethodNotAllowed(ApiError):
    http_status, status = 405, "METHOD_NOT_ALLOWED"

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Conflict(ApiError):
    http_status, status = 409, "ALREADY_EXISTS"


class Aborted(ApiError):
    """Lost a race with a concurrent change; the caller may simply retry."""

    http_status, status = 409, "ABORTED"


class PayloadTooLarge(ApiError):
    http_status, status = 413, "OUT_OF_RANGE"


class ResourceExhausted(ApiError):
    http_status, status = 429, "RESOURCE_EXHAUSTED"


class Unavailable(ApiError):
    http_status, status = 503, "UNAVAILABLE"

