from __future__ import annotations

import datetime as dt
from enum import StrEnum

from simplytalk import logs
from simplytalk.models import TokenUsage
from simplytalk.repositories.users import Found, NewUsers, Setup

log = logs.get_logger("users")
ASSISTANT_ARRAYS = ("vapiAssistants", "openaiAssistants")


class InitOutcome(StrEnum):
    INITIALIZED = "initialized"
    ALREADY_DONE = "already-done"
    USER_GONE = "user-gone"


def init_user(users: NewUsers, uid: str, now: dt.datetime) -> InitOutcome:
    """Give a new user a zero `tokenUsage/{uid}` and empty assistant arrays where missing.

    One transaction: reads both documents, writes only what is missing, so a
    repeated or late delivery writes nothing. A user deleted before the event
    arrived is left alone (nothing is recreated).
    """

    def plan(found: Found) -> Setup:
        for name in ASSISTANT_ARRAYS:
            if name in found.profile and not isinstance(found.profile[name], list):
                log.warning("users/%s.%s is not an array; left as it is", uid, name)
        return Setup(arrays={n: [] for n in ASSISTANT_ARRAYS if n not in found.profile},
                     usage=None if found.has_usage else TokenUsage.zero(uid, now))

    done = users.set_up(uid, plan)
    if done is None:
        return InitOutcome.USER_GONE
    return InitOutcome.ALREADY_DONE if done.empty else InitOutcome.INITIALIZED
