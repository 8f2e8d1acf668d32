"""Pub/Sub `usage-rollup` (Cloud Scheduler, every minute): bring usage mirrors up to date."""

from __future__ import annotations

import datetime as dt
from typing import Any

from simplytalk import logs
from simplytalk.services.aggregation import Rollup
from simplytalk.services.usage_deps import firestore_usage_deps

log = logs.get_logger("usage-rollup")
LOOKBACK = dt.timedelta(minutes=10)  # overlaps the previous runs: a missed run loses nothing


def handle(cloud_event: Any) -> None:
    deps = firestore_usage_deps()
    outcomes = deps.sweep(deps.clock() - LOOKBACK)
    rolled = sum(1 for o in outcomes.values() if o == Rollup.ROLLED_UP)
    log.info("usage-rollup: %d users changed, %d rolled up", len(outcomes), rolled,
             extra={"fields": {"changed": len(outcomes), "rolledUp": rolled}})
