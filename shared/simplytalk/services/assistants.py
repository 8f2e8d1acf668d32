"""OpenAI assistants: create (within the per-user limit), list, read, update, delete, and the
list of both providers; `listedAt` of vapi assistants for that list.

The documents, their codecs and the precondition retries are the repository's
(`simplytalk.repositories.assistants`); every assistant the API shows carries its
`tokenUsage` from the usage counters (`UsageTotals`), the figures `token-usage` gives,
never the document's mirror (rolled up about a second behind).

The list of both providers pages each provider by a query from the page token's cursor,
`size + 1` of each, merged in the order (createdAt, provider, id), newest first: vapi
assistants (`createdAt` in several stored shapes) by `listedAt`, which the `vapi-listed-at`
trigger keeps equal to their parsed `createdAt` (`sync_listed_at`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from simplytalk.assistant_input import AssistantCreate, AssistantPatch
from simplytalk.clock import rfc3339, rfc3339_sortable
from simplytalk.errors import LimitReached
from simplytalk.models import OpenAIAssistant, TokenCounts
from simplytalk.paging import decode_token, next_page_token
from simplytalk.pricing import UsageFigures
from simplytalk.repositories.assistants import (
    PROVIDERS,
    Assistants,
    ListCursor,
    ListedAssistant,
    ListedAtOutcome,
    parse_time,
)
from simplytalk.usage_counters import token_fields


class UsageTotals(Protocol):
    def assistant_totals(self, uid: str) -> dict[str, UsageFigures]:
        """Each of the user's assistants' all-time figures, from the counters (exact)."""
        ...


def new_assistant_id() -> str:
    return "asst_" + secrets.token_hex(12)


@dataclass(frozen=True)
class AssistantDeps:
    assistants: Assistants
    usage: UsageTotals
    clock: Callable[[], dt.datetime]
    new_id: Callable[[], str] = new_assistant_id


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_page_token: str | None


def create_assistant(deps: AssistantDeps, uid: str, data: AssistantCreate, limit: int) -> OpenAIAssistant:
    now = deps.clock()

    def build(is_subscribed: bool) -> OpenAIAssistant:
        return OpenAIAssistant.model_validate({
            **data.document_fields(), "id": deps.new_id(), "userId": uid,
            "isSubscribed": is_subscribed, "createdAt": now, "updatedAt": now,
        })

    created = deps.assistants.create(uid, limit, build)
    if created is None:
        raise LimitReached(
            f"assistant limit reached: {limit} OpenAI assistants per user; delete one to create another")
    return created


def get_assistant(deps: AssistantDeps, uid: str, assistant_id: str) -> OpenAIAssistant:
    found = deps.assistants.owned(uid, assistant_id)
    return _with_usage(found, deps.usage.assistant_totals(uid))


def update_assistant(deps: AssistantDeps, uid: str, assistant_id: str, patch: AssistantPatch) -> OpenAIAssistant:
    updated = deps.assistants.update(uid, assistant_id, patch, deps.clock())
    return _with_usage(updated, deps.usage.assistant_totals(uid))


def delete_assistant(deps: AssistantDeps, uid: str, assistant_id: str) -> None:
    deps.assistants.delete(uid, assistant_id)


def _counts(figures: UsageFigures | None) -> TokenCounts:
    return TokenCounts.model_validate(token_fields(figures or UsageFigures()))


def _with_usage(assistant: OpenAIAssistant, totals: dict[str, UsageFigures]) -> OpenAIAssistant:
    """The assistant with its token usage from the counters, as token-usage reports it (the
    document's `tokenUsage` is a mirror, rolled up about a second behind)."""
    return assistant.model_copy(update={"token_usage": _counts(totals.get(assistant.id))})


def list_openai_assistants(deps: AssistantDeps, uid: str, size: int, token: str | None) -> Page:
    """The caller's OpenAI assistants, newest first (createdAt desc, id desc)."""
    cursor = decode_token(token, ("createdAt", "id"), times=("createdAt",), ids=("id",))
    after = (parse_time(cursor["createdAt"]), cursor["id"]) if cursor else None
    found = deps.assistants.page(uid, size + 1, after)
    totals = deps.usage.assistant_totals(uid) if found else {}
    items = [_with_usage(a, totals) for a in found[:size]]
    next_token = next_page_token(found, size, lambda a: {"createdAt": rfc3339(a.created_at), "id": a.id})
    return Page([a.to_json() for a in items], next_token)


# -- both providers ---------------------------------------------------------------

def _summary(entry: ListedAssistant, totals: dict[str, UsageFigures]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": entry.id,
        "provider": entry.provider,
        "name": entry.name,
        "createdAt": rfc3339_sortable(entry.created_at),
        "updatedAt": rfc3339_sortable(entry.updated_at) if entry.updated_at else None,
    }
    if entry.provider == "openai":
        item["tokenUsage"] = _counts(totals.get(entry.id)).to_json()
        item["isSubscribed"] = entry.is_subscribed
    else:
        item["callSeconds"] = entry.call_seconds
    return item


def list_all_assistants(deps: AssistantDeps, uid: str, size: int, token: str | None) -> Page:
    """Both providers, newest first, paged by (createdAt, provider, id).

    Each provider's assistants come from a query in that order, from the cursor on, `size + 1`
    of them, merged: a page reads at most 2 * (size + 1) documents, however many the caller
    has. OpenAI assistants are ordered by their `createdAt` timestamp, vapi assistants by
    `listedAt`, which the `vapi-listed-at` trigger sets from their `createdAt` (any stored
    shape). A vapi document the trigger has not reached yet (just written; or from before the
    trigger, until migration 003 has run) has no listedAt and is missing from the list until
    it has one; one whose createdAt just changed keeps its old place until then.
    """
    cursor = decode_token(token, ("createdAt", "provider", "id"), times=("createdAt",), ids=("id",))
    after: ListCursor | None = (cursor["createdAt"], cursor["provider"], cursor["id"]) if cursor else None
    keyed: list[tuple[ListCursor, dict[str, Any]]] = []
    totals = deps.usage.assistant_totals(uid)
    for provider in PROVIDERS:
        for entry in deps.assistants.listed(uid, provider, size + 1, after):
            # keyed by the field the query orders by, so pages follow the queries even while
            # the trigger has yet to move a vapi listedAt after a change of createdAt
            keyed.append(((rfc3339_sortable(entry.listed_at), provider, entry.id), _summary(entry, totals)))

    keyed.sort(key=lambda pair: pair[0], reverse=True)
    if after:  # the queries start there already; this only guards the merge
        keyed = [pair for pair in keyed if pair[0] < after]
    next_token = next_page_token(keyed, size, lambda pair: {"createdAt": pair[0][0], "provider": pair[0][1],
                                                            "id": pair[0][2]})
    return Page([item for _, item in keyed[:size]], next_token)


def sync_listed_at(deps: AssistantDeps, assistant_id: str) -> ListedAtOutcome:
    """Bring `assistants/{id}.listedAt` in line with the document as it is now (the trigger's
    and migration 003's way): written only when it differs, on a fresh read, retried when the
    document changed meanwhile; a deleted document is left alone."""
    return deps.assistants.sync_listed_at(assistant_id)
