"""Pub/Sub `monthly-invoicing` (Cloud Scheduler `0 3 1 * *` UTC): bill the previous month.

The message may name the period: `{"period": "YYYY-MM"}`. A long run stops before
the function's timeout and publishes a continuation; the run resumes from its cursor.
"""

from __future__ import annotations

from typing import Any

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.events import pubsub_json, too_old
from simplytalk.pricing import valid_period
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.invoicing import previous_period, run_period

log = logs.get_logger("monthly-invoicing")
BUDGET_SECONDS = 420.0  # under the function's 540 s timeout


def handle(cloud_event: Any) -> None:
    from simplytalk.config import settings

    if too_old(cloud_event, "monthly-invoicing", settings().max_event_age_seconds):
        return  # an operator reruns the month (python -m ops.invoicing): each user is idempotent
    message = pubsub_json(cloud_event)
    period = message.get("period") or previous_period(utcnow())
    if not isinstance(period, str) or not valid_period(period):
        log.error("monthly-invoicing: bad period %r; nothing done", period)
        return  # acknowledge: retrying cannot fix the message
    from simplytalk.stripe_gateway import stripe_client

    billing = firestore_billing(stripe_client=stripe_client())
    summary = run_period(billing, period, billing.rate_cards.list(), stop_after=BUDGET_SECONDS)
    log.info("monthly-invoicing %s: %s", period, summary.as_doc(), extra={"fields": summary.as_doc()})
    if summary.failed:  # an operator reruns it (python -m ops.invoicing --period ...): each user is idempotent
        log.error("monthly-invoicing %s: %d users failed: %s", period, len(summary.failed), summary.failed[:20])
    if not summary.completed:
        from simplytalk.pubsub import publisher

        publisher().publish("monthly-invoicing", {"period": period})  # raises (so retries) when it cannot
