"""002: `users/{uid}.vapiAssistants` and `.openaiAssistants` list the user's assistants.

One pass over each assistant collection builds uid -> ids (memory grows with the
number of assistants, fine to a few million; beyond that, query per user). Each
user is then brought in line with atomic array transforms, never an overwrite: a
missing id is added with ArrayUnion (so an assistant created during the run is
never lost; it also creates an absent field), an id with no such assistant of
this user is removed with ArrayRemove after a fresh check, and an absent field
of a user with no assistants is set empty only if the user is unchanged. Other
fields are never touched. Writes go in batches of at most 500.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from migrations.runner import Context

NUMBER = 2
NAME = "assistant-references-on-users"
FIELDS = {"vapiAssistants": "assistants", "openaiAssistants": "openaiAssistants"}


def _owners(ctx: Context, collection: str) -> dict[str, set[str]]:
    owners: dict[str, set[str]] = defaultdict(set)
    for snap in ctx.db.collection(collection).select(["userId"]).stream():
        uid = (snap.to_dict() or {}).get("userId")
        if not isinstance(uid, str) or not uid:
            ctx.report("assistant", f"{collection}/{snap.id}", "no userId")
            continue
        owners[uid].add(snap.id)
    return owners


def run(ctx: Context) -> None:
    from google.cloud.firestore import ArrayRemove, ArrayUnion

    db = ctx.db
    owners = {name: _owners(ctx, collection) for name, collection in FIELDS.items()}
    seen_users: set[str] = set()
    for page in ctx.user_pages():
        for snap in page:
            uid = snap.id
            seen_users.add(uid)
            ctx.counts["users"] += 1
            data = snap.to_dict() or {}
            if "email" not in data:
                ctx.report("user", f"users/{uid}", "no email")
            changed = False
            empties: list[str] = []
            for name, collection in FIELDS.items():
                want = owners[name].get(uid, set())
                current = data.get(name)
                ref = db.collection("users").document(uid)
                if current is None or not isinstance(current, list):
                    if current is not None:
                        ctx.report("user", f"users/{uid}.{name}", f"not an array ({type(current).__name__}); replaced")
                    if want:  # ArrayUnion creates (or replaces a non-array with) the array, never losing an id
                        ctx.writer.add("update", ref, {name: ArrayUnion(sorted(want))})
                    else:
                        empties.append(name)
                    changed = True
                    continue
                missing = sorted(want - set(current))
                extra = [i for i in current if i not in want]
                stale = [i for i in extra if not _owned_now(db, collection, i, uid)]
                if missing:
                    ctx.writer.add("update", ref, {name: ArrayUnion(missing)})
                    changed = True
                if stale:
                    ctx.writer.add("update", ref, {name: ArrayRemove(stale)})
                    changed = True
            if empties:
                _set_empty(ctx, db.collection("users").document(uid), empties, snap.update_time)
            ctx.counts["changed" if changed else "unchanged"] += 1
    for name, per_user in owners.items():
        for uid in per_user:
            if uid not in seen_users and ctx.checkpoint is None:
                ctx.report("assistant", f"{FIELDS[name]} of {uid}", "userId names no user")


def _set_empty(ctx: Context, ref: Any, names: list[str], read_at: Any) -> None:
    """Empty arrays, only if the user is unchanged since it was read (otherwise the app wrote
    the field meanwhile, with the right contents)."""
    from google.api_core import exceptions as gexc

    ctx.writer.writes += 1
    if ctx.dry_run:
        return
    try:
        ref.update({name: [] for name in names}, option=ctx.db.write_option(last_update_time=read_at))
    except (gexc.FailedPrecondition, gexc.NotFound):
        ctx.counts["changed-meanwhile"] += 1


def _owned_now(db: Any, collection: str, assistant_id: str, uid: str) -> bool:
    if not isinstance(assistant_id, str) or not assistant_id:
        return False
    snap = db.collection(collection).document(assistant_id).get()
    return bool(snap.exists and (snap.to_dict() or {}).get("userId") == uid)
