"""001: every existing user gets a `tokenUsage/{uid}` document.

Zero totals for a user without usage; for a user with usage events, the events
are counted through the same exactly-once path as the trigger (markers +
sharded counters), and the summary is rolled up from the counters, so the
totals equal the events. `create()` never overwrites one that init-user (or a
concurrent event) made meanwhile.
"""

from __future__ import annotations

from typing import Any

from simplytalk.models import TokenUsage

from migrations.runner import Context

NUMBER = 1
NAME = "token-usage-for-existing-users"


def _users_with_events(db: Any) -> set[str]:
    """One pass over the raw events (only their userId), instead of a query per user."""
    users = set()
    for snap in db.collection("usageEvents").select(["userId"]).stream():
        uid = (snap.to_dict() or {}).get("userId")
        if isinstance(uid, str):
            users.add(uid)
    return users


def run(ctx: Context) -> None:
    from pydantic import ValidationError
    from simplytalk.models import UsageEvent
    from simplytalk.services.aggregation import apply_event, rollup, user_events

    db = ctx.db
    with_events = _users_with_events(db)
    for page in ctx.user_pages():
        refs = [db.collection("tokenUsage").document(snap.id) for snap in page]
        existing = {snap.id for snap in db.get_all(refs) if snap.exists}
        zero: list[str] = []
        for snap in page:
            uid = snap.id
            ctx.counts["users"] += 1
            if not snap.to_dict():
                ctx.report("user", f"users/{uid}", "empty user document")
            if uid in existing:
                ctx.counts["already"] += 1
            elif uid not in with_events:
                zero.append(uid)
            else:
                ctx.counts["from-events"] += 1
                ctx.writer.writes += 1
                if ctx.dry_run:
                    continue
                for event_id, data in user_events(db, uid):
                    try:
                        apply_event(db, event_id, UsageEvent.model_validate(data), ctx.now)
                    except ValidationError as exc:
                        ctx.report("usage-event", f"usageEvents/{event_id}", f"malformed: {exc.errors()[0]['msg']}")
                rollup(db, uid, None)
        _create_zero(ctx, zero)


def _create_zero(ctx: Context, uids: list[str]) -> None:
    """Zero documents in batches of at most 500; a batch that meets one created meanwhile (by
    init-user) is refused whole, so that batch is redone one create at a time."""
    from google.api_core import exceptions as gexc

    ctx.counts["zero"] += len(uids)
    if ctx.dry_run:
        ctx.writer.writes += len(uids)
        return
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        batch = ctx.db.batch()
        for uid in chunk:
            batch.create(ctx.db.collection("tokenUsage").document(uid), TokenUsage.zero(uid, ctx.now).to_firestore())
        try:
            batch.commit()
            ctx.writer.writes += len(chunk)
            ctx.writer.commits += 1
        except gexc.AlreadyExists:
            for uid in chunk:
                try:
                    ctx.db.collection("tokenUsage").document(uid).create(TokenUsage.zero(uid, ctx.now).to_firestore())
                    ctx.writer.writes += 1
                except gexc.AlreadyExists:
                    ctx.counts["created-meanwhile"] += 1
