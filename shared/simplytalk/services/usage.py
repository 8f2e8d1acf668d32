from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.models import TokenUsage

if TYPE_CHECKING:
    from google.cloud.firestore import Client


def usage_summary(db: Client, uid: str) -> dict[str, Any]:
    """The caller's usage totals; zeros before `init-user` has run."""
    snap = db.collection(col.TOKEN_USAGE).document(uid).get()
    usage = TokenUsage.model_validate(snap.to_dict()) if snap.exists else TokenUsage(user_id=uid)
    return {"userId": uid, "totals": usage.totals().to_json()}
