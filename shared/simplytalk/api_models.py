"""The HTTP API's shapes for the OpenAPI document: query parameters, and responses the
handlers build as dicts.

Description only: handlers do not validate or serialize through these (their answers are
what the services return); the routes name them (`Api.route(..., response=...)`) and
`python -m devtools.openapi` turns them into `openapi.json`. The fuzz test
(tests/emulator/test_fuzz.py) checks the live answers against them, so a handler whose
shape drifts from its model fails there. Request bodies are the models the handlers parse
(`AssistantCreate`, `StartCall`, `RateCardInput`, ...); a few stored models answer as they
are (`OpenAIAssistant`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from simplytalk.models import OpenAIAssistant, RealtimeCall, TokenCounts
from simplytalk.paging import MAX_PAGE_SIZE


class _Shape(BaseModel):
    """A response: camelCase keys, every key present (null where it says so) unless it says when not."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Open(_Shape):
    """A shape that may carry more keys than it names (a provider's objects)."""

    model_config = ConfigDict(extra="allow")


# -- errors -------------------------------------------------------------------------------

ErrorStatus = Literal["INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNAUTHENTICATED",
                      "PERMISSION_DENIED", "NOT_FOUND", "METHOD_NOT_ALLOWED", "ALREADY_EXISTS", "ABORTED",
                      "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"]


class ErrorFieldViolation(_Shape):
    field: str = Field(description="the request field at fault (dotted path, `body` for the whole body)")
    description: str


class ErrorStatusBody(_Shape):
    code: int = Field(description="the HTTP status")
    status: ErrorStatus = Field(description="the canonical status (AIP-193)")
    message: str
    details: list[ErrorFieldViolation] = Field(
        default_factory=list, exclude_if=lambda v: not v,
        description="for INVALID_ARGUMENT: the fields at fault (absent when none are named)")


class Error(_Shape):
    """Google's JSON error shape; every error of every function has it."""

    error: ErrorStatusBody


# -- query parameters ------------------------------------------------------------------------

class _Query(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PageQuery(_Query):
    page_size: int = Field(default=20, ge=1, le=MAX_PAGE_SIZE, description="items a page (default 20)")
    page_token: str | None = Field(default=None, description="`nextPageToken` of the previous page")


class UsageQuery(PageQuery):
    period: str | None = Field(default=None, pattern=r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$",
                               description="the month, YYYY-MM (default: the current month, UTC)")
    assistant_id: str | None = Field(default=None, description="only this assistant's usage")
    group_by: Literal["event", "call"] | None = Field(
        default=None, description="history entries: one a usage event (default) or one a call")


# -- shared pieces ---------------------------------------------------------------------------

NextPageToken = Annotated[str | None, Field(description="pass as `pageToken` for the next page; null: the last")]


class Counts(_Shape):
    total_tokens: int
    input_tokens: int
    output_tokens: int


# -- token-usage -----------------------------------------------------------------------------

class Money(_Shape):
    amount: int = Field(description="in the currency's smallest unit (cents)")
    currency: str


class UsagePeriod(Counts):
    id: str = Field(description="YYYY-MM")
    token_minutes: str = Field(description="decimal string")
    vapi_minutes: str = Field(description="decimal string")
    total_minutes: str = Field(description="decimal string")
    estimated_cost: Money
    rate_card_id: str


class AssistantUsage(_Shape):
    assistant_id: str
    provider: str
    total_tokens: int
    minutes: str = Field(description="decimal string")


class HistoryEntry(Counts):
    event_id: str
    assistant_id: str | None
    assistant_name: str = Field(description="the assistant's name now, or a phrase for a deleted one")
    provider: str | None
    kind: str | None = Field(description="response, transcription or call")
    call_id: str | None
    model: str | None
    occurred_at: str | None = Field(description="RFC 3339")
    call_seconds: float | None
    description: str = Field(description='what happened, to show as is: "Call with Support: 3 responses, '
                             '2 min 05 s"')
    minutes: str = Field(description="the minutes it bills at its month's rate card (decimal string)")
    cost: Money = Field(description="its cost at its month's rate card, rounded to the cent on its own "
                        "(an invoice rounds each line once)")
    rate_card_id: str


class UsageView(_Shape):
    user_id: str
    totals: Counts
    period: UsagePeriod
    by_assistant: list[AssistantUsage]
    history: list[HistoryEntry]
    next_page_token: NextPageToken


# -- assistants ------------------------------------------------------------------------------

class OpenAIAssistantPage(_Shape):
    assistants: list[OpenAIAssistant]
    next_page_token: NextPageToken


class OpenAIAssistantSummary(_Shape):
    id: str
    provider: Literal["openai"]
    name: str
    created_at: str = Field(description="RFC 3339")
    updated_at: str | None = Field(description="RFC 3339")
    token_usage: TokenCounts
    is_subscribed: bool


class VapiAssistantSummary(_Shape):
    id: str
    provider: Literal["vapi"]
    name: str
    created_at: str = Field(description="RFC 3339")
    updated_at: str | None = Field(description="RFC 3339")
    call_seconds: float


AssistantSummary = Annotated[OpenAIAssistantSummary | VapiAssistantSummary, Field(discriminator="provider")]


class AssistantSummaryPage(_Shape):
    assistants: list[AssistantSummary]
    next_page_token: NextPageToken


# -- billing ---------------------------------------------------------------------------------

class InvoiceLine(_Shape):
    assistant_id: str | None
    provider: str | None
    usage_period: str | None = Field(description="YYYY-MM: the month the usage is from")
    minutes: str | None = Field(description="decimal string")
    amount: int | None = Field(description="cents")
    rate_card_id: str | None


class Invoice(_Shape):
    id: str | None
    user_id: str | None
    period: str | None = Field(description="YYYY-MM")
    status: Literal["draft", "open", "failed", "paid", "void", "carried", "review"] | None
    status_reason: str | None
    currency: str | None
    total: int | None = Field(description="cents")
    rate_card_id: str | None
    stripe_invoice_id: str | None
    hosted_invoice_url: str | None
    amount_due: int | None
    amount_paid: int | None
    starting_balance: int | None
    lines: list[InvoiceLine]
    created_at: str | None = Field(description="RFC 3339")
    updated_at: str | None = Field(description="RFC 3339")


class InvoicePage(_Shape):
    invoices: list[Invoice]
    next_page_token: NextPageToken


class RateCard(_Shape):
    id: str
    effective_from: dt.date
    tokens_per_minute: int
    cents_per_minute: str = Field(description="exact decimal string")
    currency: str
    openai_basis: Literal["tokens", "call-duration"]


class RateCardList(_Shape):
    rate_cards: list[RateCard]


class MarginQuery(_Query):
    period: str = Field(pattern=r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$",
                        description="the month, YYYY-MM (UTC)")
    user_id: str | None = Field(default=None, description="only this user's assistants")


class _MarginFigures(_Shape):
    minutes: str = Field(description="billed minutes at the period's rate card, decimal string (display only)")
    invoiced_revenue: int = Field(description="cents invoices billed for this usage period (not carried or void)")
    estimated_revenue: int = Field(description="cents of counted minutes no invoice has billed yet, at the card")
    voided_revenue: int = Field(description="cents billed on invoices since voided (not in revenue)")
    estimated: bool = Field(description="part of the revenue is an estimate (usage not invoiced yet)")
    provider_cost: Money = Field(description="what the providers charged, rounded to the cent (usd)")
    provider_cost_usd: str = Field(description="the exact provider cost, USD decimal string")
    events: int
    unpriced_events: int = Field(description="events that could not be priced (cost 0): the margin is overstated")
    undetailed_events: int = Field(description="events partly priced at the dearest rate: their cost is an upper bound")


class MarginLine(_MarginFigures):
    user_id: str
    assistant_id: str
    provider: str = Field(description="openai, vapi (unknown: no event or counter names it)")
    revenue: Money | None = Field(description="invoiced + estimated, in the revenue currency (null: mixed currencies)")
    margin: Money | None = Field(description="revenue - provider cost (usd); null when the revenue is not in usd")
    comparable: bool = Field(description="revenue in usd beside the usd cost (lines that are not stay out of totals)")


class MarginTotals(_MarginFigures):
    revenue: Money
    margin: Money
    not_comparable: int = Field(description="lines left out of the totals (revenue not in usd)")


class MarginReport(_Shape):
    period: str = Field(description="YYYY-MM")
    user_id: str | None
    currency: Literal["usd"]
    rate_card_id: str = Field(description="the card in force for the period (minutes and estimates)")
    price_versions: list[str] = Field(description="the provider price table versions the events were priced with")
    unpriced_reasons: dict[str, int] = Field(description="why events could not be priced, and how many each")
    rounding: str = Field(description="how exact money became cents")
    assistants: list[MarginLine] = Field(description="per user and assistant, by user then assistant id")
    totals: MarginTotals


class SetupIntent(_Shape):
    setup_intent_id: str
    client_secret: str | None = Field(description="for Stripe.js `confirmSetup`")
    customer_id: str
    status: str


class Subscription(_Shape):
    is_subscribed: bool
    status: str | None = Field(description="Stripe's subscription status; null: never subscribed")
    subscription_id: str | None
    has_payment_method: bool
    customer_id: str | None


# -- realtime-calls --------------------------------------------------------------------------

class StartedCall(_Shape):
    call_id: str
    assistant_id: str
    sdp: str = Field(description="OpenAI's SDP answer")
    started_at: str = Field(description="RFC 3339")
    model: str
    status: Literal["active", "ended"]


class Call(RealtimeCall):
    """A call as the API shows it: the stored call with its id as `callId`."""

    model_config = ConfigDict(extra="forbid")

    call_id: str


class CallPage(_Shape):
    calls: list[Call]
    next_page_token: NextPageToken


class TranscriptLine(_Shape):
    item_id: str
    role: str | None
    text: str | None
    at: str = Field(description="RFC 3339")
    response_id: str | None


class Transcript(_Shape):
    transcript: list[TranscriptLine]
    next_page_token: NextPageToken


# -- webhooks --------------------------------------------------------------------------------

class VapiMessage(_Open):
    type: str = Field(description="`end-of-call-report` is recorded; other types are acknowledged")


class VapiServerMessage(_Open):
    """A vapi server message (its full shape: vapi's docs)."""

    message: VapiMessage


class VapiReceived(_Shape):
    received: Literal[True]
    outcome: str | None = Field(default=None, exclude_if=lambda v: v is None,
                                description="for an end-of-call report: what became of it")


class StripeEventData(_Open):
    object: dict[str, Any]


class StripeEvent(_Open):
    """A Stripe event (its full shape: Stripe's docs), signed in `Stripe-Signature`."""

    id: str
    type: str
    data: StripeEventData


class StripeReceived(_Shape):
    received: Literal[True]
    outcome: str
