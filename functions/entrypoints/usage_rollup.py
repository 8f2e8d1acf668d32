"""Pub/Sub `usage-rollup` (Cloud Scheduler, every minute): bring usage mirrors up to date."""

from __future__ import annotations

import datetime as dt
from typing import Any

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.firestore import firestore_client
from simplytalk.services.aggregation import sweep

log = logs.get_logger("usage-rollup")
LOOKBACK = dt.timedelta(minutes=10)  # overlaps the previous runs: a missed run loses nothing


def handle(cloud_event: Any) -> None:
    outcomes = sweep(firestore_client(), utcnow() - LOOKBACK)
    rolled = sum(1 for o in outcomes.values() if o == "rolled-up")
    log.info("usage-rollup: %d users changed, %d rolled up", len(outcomes), rolled,
             extra={"fields": {"changed": len(outcomes), "rolledUp": rolled}})
