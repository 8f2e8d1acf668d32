"""vapi server messages: an end-of-call report becomes a usage event keyed by the call id."""

from __future__ import annotations

import datetime as dt
import hmac
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from simplytalk import collections as col
from simplytalk.errors import InvalidArgument, Unauthenticated
from simplytalk.ids import valid_document_id

if TYPE_CHECKING:
    from google.cloud.firestore import Client


def check_secret(received: str | None, expected: str | None) -> None:
    """vapi sends the configured secret in `x-vapi-secret`; compare in constant time."""
    if not expected:
        raise Unauthenticated("vapi webhook secret is not configured")
    if not received or not hmac.compare_digest(received.encode(), expected.encode()):
        raise Unauthenticated("bad or missing x-vapi-secret")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _document_id(value: str | None) -> str | None:
    if value is not None and not valid_document_id(value):
        raise ValueError("not a usable id")
    return value


class VapiCall(_Loose):
    id: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_document_id)]
    assistant_id: Annotated[str | None, AfterValidator(_document_id)] = Field(default=None, alias="assistantId")


class VapiAssistantRef(_Loose):
    id: Annotated[str | None, AfterValidator(_document_id)] = None


class EndOfCallReport(_Loose):
    type: str
    call: VapiCall
    assistant: VapiAssistantRef | None = None
    started_at: AwareDatetime | None = Field(default=None, alias="startedAt")
    ended_at: AwareDatetime | None = Field(default=None, alias="endedAt")
    duration_ms: int | None = Field(default=None, alias="durationMs", ge=0)
    duration_seconds: Decimal | None = Field(default=None, alias="durationSeconds", ge=0)
    cost: Decimal | None = None
    cost_breakdown: dict[str, Any] | None = Field(default=None, alias="costBreakdown")
    ended_reason: str | None = Field(default=None, alias="endedReason")

    def assistant_id(self) -> str | None:
        return self.call.assistant_id or (self.assistant.id if self.assistant else None)

    def call_seconds(self) -> Decimal:
        """From the call's start and end; vapi's own duration only when those are missing."""
        if self.started_at and self.ended_at:
            seconds = Decimal((self.ended_at - self.started_at) // dt.timedelta(microseconds=1)) / 1_000_000
            if seconds < 0:
                raise InvalidArgument("endedAt is before startedAt")
            return seconds
        if self.duration_ms is not None:
            return Decimal(self.duration_ms) / 1000
        if self.duration_seconds is not None:
            return self.duration_seconds
        raise InvalidArgument("end-of-call-report has neither startedAt/endedAt nor a duration")


def record_end_of_call(db: Client, report: EndOfCallReport, received_at: dt.datetime) -> str:
    """Store the call as `usageEvents/{callId}`; a repeated report changes nothing."""
    from google.api_core import exceptions as gexc

    assistant_id = report.assistant_id()
    owner = None
    if assistant_id:
        snap = db.collection(col.VAPI_ASSISTANTS).document(assistant_id).get()
        owner = (snap.to_dict() or {}).get("userId") if snap.exists else None
    event: dict[str, Any] = {
        "provider": "vapi",
        "assistantId": assistant_id,
        "userId": owner,
        "model": None,
        "occurredAt": report.ended_at or report.started_at or received_at,
        "callSeconds": float(report.call_seconds()),
        "vapi": {
            "cost": str(report.cost) if report.cost is not None else None,
            "costBreakdown": report.cost_breakdown,
            "endedReason": report.ended_reason,
            "startedAt": report.started_at,
            "endedAt": report.ended_at,
        },
        "receivedAt": received_at,
    }
    # A call we cannot attribute is kept for an operator, never counted against anyone.
    target = col.USAGE_EVENTS if owner else "unattributedUsage"
    try:
        db.collection(target).document(report.call.id).create(event)
    except gexc.AlreadyExists:
        return "duplicate"
    return "recorded" if owner else "unattributed"
