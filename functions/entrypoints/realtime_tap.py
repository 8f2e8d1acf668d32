"""Pub/Sub `realtime-taps`: one tap run watches a call (`{"callId", "generation"}`).

Raise to retry (the run could not reach the sideband); return to acknowledge.
"""

from __future__ import annotations

import uuid
from typing import Any

from simplytalk import logs
from simplytalk.config import settings
from simplytalk.events import pubsub_json, too_old
from simplytalk.ids import valid_document_id
from simplytalk.realtime import WatchPolicy
from simplytalk.services.realtime_deps import firestore_deps
from simplytalk.services.realtime_tap import TapSettings, run_tap, sweep_calls

log = logs.get_logger("realtime-tap")


def tap_settings() -> TapSettings:
    cfg = settings()
    return TapSettings(run_seconds=cfg.tap_run_seconds, lease_seconds=cfg.tap_lease_seconds,
                       handover_seconds=min(20.0, cfg.tap_run_seconds / 4),
                       policy=WatchPolicy(max_call_seconds=cfg.max_call_seconds, idle_seconds=cfg.call_idle_seconds,
                                          max_tampering=cfg.max_session_tampering, free_minutes=cfg.free_minutes))


def handle(cloud_event: Any) -> None:
    if too_old(cloud_event, "realtime-tap", settings().max_event_age_seconds):
        return
    message = pubsub_json(cloud_event)
    call_id, generation = message.get("callId"), message.get("generation", 0)
    if not isinstance(call_id, str) or not valid_document_id(call_id) or not isinstance(generation, int) \
            or isinstance(generation, bool) or not 0 <= generation < 1_000_000:
        log.error("realtime-tap: not a tap message: %.200r; acknowledged", message)
        return
    owner = uuid.uuid4().hex
    outcome = run_tap(firestore_deps(), tap_settings(), call_id, generation, owner)
    log.info("tap run %s of %s (generation %d): %s", owner[:8], call_id, generation, outcome,
             extra={"fields": {"callId": call_id, "generation": generation, "outcome": outcome.value}})


def sweep(cloud_event: Any) -> None:
    """Pub/Sub `realtime-watchdog` (Cloud Scheduler, every minute): the tap's safety net."""
    report = sweep_calls(firestore_deps(), tap_settings())
    log.info("realtime-watchdog: %d active, %d taps restarted, %d ended", report.active, report.restarted,
             report.ended, extra={"fields": {"active": report.active, "restarted": report.restarted,
                                             "ended": report.ended}})
