"""Pub/Sub `usage-mirrors`: a usage event's trigger found the mirrors rolled up too recently to
roll up again; wait the interval out and make sure they cover the event. Raise to retry.

Message: `{"userId": uid, "covering": RFC 3339 time}`: cover every commit before it (see
`aggregation.mirror_message` and `FollowUps`).
"""

from __future__ import annotations

from typing import Any

from simplytalk import logs
from simplytalk.config import settings
from simplytalk.events import pubsub_json, too_old
from simplytalk.services.aggregation import MIRROR_PATIENCE, Rollup, parse_mirror_message
from simplytalk.services.usage_deps import firestore_usage_deps

log = logs.get_logger("mirror-usage")


def handle(cloud_event: Any) -> None:
    if too_old(cloud_event, "mirror-usage", settings().max_event_age_seconds):
        return  # the usage-rollup sweep has long covered it
    request = parse_mirror_message(pubsub_json(cloud_event))
    if request is None:
        log.error("mirror-usage: unreadable message; acknowledged")
        return
    uid, covering = request
    outcome = firestore_usage_deps().follow_up(uid, covering, patience=MIRROR_PATIENCE)
    log.info("mirror-usage %s: %s", uid, outcome, extra={"fields": {"uid": uid, "rollup": outcome}})
    if outcome in (Rollup.DEFERRED, Rollup.GAVE_UP):
        raise RuntimeError(f"mirrors of {uid} not rolled up yet ({outcome}); retry")
