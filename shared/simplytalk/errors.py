"""The one exception tree, in the canonical error vocabulary (google.rpc.Code).

Services and the core raise these without knowing about HTTP; `simplytalk.http`
maps them to the contract's statuses in one table (`ERROR_STATUS`), at the edge.
"""

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
    """An error a caller sees: a message and, for bad input, the fields at fault."""

    def __init__(self, message: str, details: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidInput(ApiError):
    """The input is not acceptable; the details name the fields."""

    @classmethod
    def of(cls, field: str, problem: str) -> InvalidInput:
        """One field at fault: `InvalidInput.of("period", "must be YYYY-MM")`."""
        return cls(f"{field}: {problem}", [FieldViolation(field, problem)])


class Unauthenticated(ApiError):
    """No valid credentials."""


class PaymentNeeded(ApiError):
    """The caller must add a payment method or subscribe first."""


class PermissionDenied(ApiError):
    """Authenticated, but not allowed to do this."""


class FailedPrecondition(ApiError):
    """The system is not in a state that allows this (the caller must change something first)."""


class NotFound(ApiError):
    """No such resource, or one the caller may not know exists."""


class MethodNotAllowed(ApiError):
    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Conflict(ApiError):
    """The resource already exists."""


class Aborted(ApiError):
    """Lost a race with a concurrent change; the caller may simply retry."""


class PayloadTooLarge(ApiError):
    """The request body is over the limit."""


class LimitReached(ApiError):
    """A quota or rate limit; `retry_after` (seconds) says when trying again may work."""

    def __init__(self, message: str, details: list[FieldViolation] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class Unavailable(ApiError):
    """A dependency (Stripe, OpenAI) cannot be reached right now; retrying later may work."""
