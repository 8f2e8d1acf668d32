"""How usage figures are shown, the same in the API (`token-usage`) and in the mirrors a
dashboard listens to (`tokenUsage/{uid}.currentPeriod`, `openaiAssistants/{id}.currentPeriod`). Pure."""

from __future__ import annotations

from typing import Any

from simplytalk.pricing import RateCard, UsageFigures, cost_cents, format_minutes
from simplytalk.usage_counters import token_fields


def counts_json(figures: UsageFigures) -> dict[str, int]:
    """The three token figures (`tokenUsage`), in the counters' own field names."""
    return token_fields(figures)


def period_json(period: str, figures: UsageFigures, card: RateCard) -> dict[str, Any]:
    """One month's figures with their minutes and the cost estimated at that month's card."""
    token_minutes = figures.openai_minutes(card)
    vapi_minutes = figures.vapi_minutes()
    return {
        "id": period,
        **counts_json(figures),
        "tokenMinutes": format_minutes(token_minutes),
        "vapiMinutes": format_minutes(vapi_minutes),
        "totalMinutes": format_minutes(token_minutes + vapi_minutes),
        "estimatedCost": {"amount": cost_cents(token_minutes + vapi_minutes, card), "currency": card.currency},
        "rateCardId": card.id,
    }
