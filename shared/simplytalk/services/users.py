from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import TYPE_CHECKING

from simplytalk import collections as col
from simplytalk import logs
from simplytalk.models import TokenUsage

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction

log = logs.get_logger("users")
ASSISTANT_ARRAYS = ("vapiAssistants", "openaiAssistants")


class InitOutcome(StrEnum):
    INITIALIZED = "initialized"
    ALREADY_DONE = "already-done"
    USER_GONE = "user-gone"


def init_user(db: Client, uid: str, now: dt.datetime) -> InitOutcome:
    """Give a new user a zero `tokenUsage/{uid}` and empty assistant arrays where missing.

    One transaction: reads both documents, writes only what is missing, so a
    repeated or late delivery writes nothing. A user deleted before the event
    arrived is left alone (nothing is recreated).
    """
    from google.cloud import firestore

    user_ref = db.collection(col.USERS).document(uid)
    usage_ref = db.collection(col.TOKEN_USAGE).document(uid)

    @firestore.transactional
    def run(tx: Transaction) -> InitOutcome:
        user = user_ref.get(transaction=tx)
        if not user.exists:
            return InitOutcome.USER_GONE
        usage = usage_ref.get(transaction=tx)
        fields = user.to_dict() or {}
        missing: dict[str, list[str]] = {n: [] for n in ASSISTANT_ARRAYS if n not in fields}
        for name in ASSISTANT_ARRAYS:
            if name in fields and not isinstance(fields[name], list):
                log.warning("users/%s.%s is not an array; left as it is", uid, name)
        if missing:
            tx.update(user_ref, missing)
        if not usage.exists:
            tx.create(usage_ref, TokenUsage.zero(uid, now).to_firestore())
        return InitOutcome.INITIALIZED if missing or not usage.exists else InitOutcome.ALREADY_DONE

    return run(db.transaction())
