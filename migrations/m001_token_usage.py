"""001: every existing user gets a `tokenUsage/{uid}` document.

Zero totals for a user without usage; for a user with usage events, the events
are counted through the same exactly-once path as the trigger (markers +
sharded counters), and the summary is rolled up from the counters, so the
totals equal the events. A user who already has a tokenUsage document from
before the counters keeps its totals: what the raw events do not explain is
kept as a `legacy` counter shard, and the events are counted too. `create()` never overwrites one that init-user (or a
concurrent event) made meanwhile.
"""

from __future__ import annotations

import contextlib
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

    db = ctx.db
    with_events = _users_with_events(db)
    for page in ctx.user_pages():
        refs = [db.collection("tokenUsage").document(snap.id) for snap in page]
        existing = {snap.id: snap.to_dict() or {} for snap in db.get_all(refs) if snap.exists}
        zero: list[str] = []
        for snap in page:
            uid = snap.id
            ctx.counts["users"] += 1
            if not snap.to_dict():
                ctx.report("user", f"users/{uid}", "empty user document")
            if uid in existing:
                ctx.counts["already"] += 1
                if uid in with_events or _nonzero(existing[uid]):
                    _keep_legacy_and_count(ctx, uid, existing[uid], uid in with_events)
            elif uid not in with_events:
                zero.append(uid)
            else:
                ctx.counts["from-events"] += 1
                ctx.writer.writes += 1
                if not ctx.dry_run:
                    _count_events(ctx, uid)
        _create_zero(ctx, zero)


def _nonzero(summary: dict[str, Any]) -> bool:
    return any(int(summary.get(f) or 0) for f in ("totalTokens", "inputTokens", "outputTokens"))


def _count_events(ctx: Context, uid: str) -> None:
    """Count the user's raw events exactly once (the trigger's own path) and roll up."""
    from pydantic import ValidationError
    from simplytalk.services.aggregation import count_events
    from simplytalk.services.usage_deps import firestore_usage_deps

    def malformed(event_id: str, exc: ValidationError) -> None:
        ctx.report("usage-event", f"usageEvents/{event_id}", f"malformed: {exc.errors()[0]['msg']}")

    deps = firestore_usage_deps(ctx.db)
    count_events(deps.usage, uid, ctx.now, deps.cards, malformed)


def _keep_legacy_and_count(ctx: Context, uid: str, summary: dict[str, Any], has_events: bool) -> None:
    """A user whose tokenUsage predates the counters: totals beyond what the raw events show
    are kept as a `legacy` counter (so a rollup never shrinks them), then the events are counted."""
    from google.api_core import exceptions as gexc
    from simplytalk.models import UsageEvent
    from simplytalk.repositories.usage import FirestoreUsage
    from simplytalk.usage_counters import fold_events

    usage = FirestoreUsage(ctx.db)
    if usage.read_aggregate(uid).read_time is not None:
        return  # counters exist already: the trigger has been counting this user
    events = []
    for _, data in usage.user_events(uid) if has_events else []:
        try:
            events.append(UsageEvent.model_validate(data))
        except ValueError:
            continue
    from_events = fold_events(events).totals
    legacy = {f: max(0, int(summary.get(f) or 0) - getattr(from_events, a)) for f, a in (
        ("totalTokens", "total_tokens"), ("inputTokens", "input_tokens"), ("outputTokens", "output_tokens"))}
    ctx.counts["legacy-kept" if any(legacy.values()) else "legacy-none"] += 1
    if any(legacy.values()) and not has_events:
        ctx.report("token-usage", f"tokenUsage/{uid}", "totals without raw events; kept as a legacy counter")
    ctx.writer.writes += 1
    if ctx.dry_run:
        return
    if any(legacy.values()):
        shard = ctx.db.collection("tokenUsage").document(uid).collection("usageShards").document("legacy")
        with contextlib.suppress(gexc.AlreadyExists):
            shard.create({"totals": legacy, "legacy": True, "createdAt": ctx.now})
    _count_events(ctx, uid)


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
