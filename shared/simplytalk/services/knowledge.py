"""Assistant knowledge: fetch `scrapedUrls` into `scrapedContent`.

Runs from the `scrape-knowledge` trigger when an assistant's URLs change, and
on demand (`POST /openai-assistants/{id}/scrape`). `knowledge.urlsHash` records
which URL list the content came from, so a repeated or late event, or the
trigger's own write, does nothing. Writes carry a precondition on the update
time that was read: content scraped for an older URL list never overwrites a
newer edit (the newer edit's event scrapes again).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk.scraping import FetchError, FetchPolicy, Page, fetch

if TYPE_CHECKING:
    from google.cloud.firestore import Client

MAX_CONTENT_CHARS = 100_000
Fetcher = Callable[[str, FetchPolicy], Page]


class ScrapeOutcome(StrEnum):
    SCRAPED = "scraped"
    UP_TO_DATE = "up-to-date"
    STALE = "stale"  # the assistant changed while we fetched; its own event takes over
    GONE = "gone"


def urls_hash(urls: list[str]) -> str:
    return hashlib.sha256(json.dumps(urls).encode()).hexdigest()[:32]


def scrape(urls: list[str], policy: FetchPolicy, now: dt.datetime,
           fetcher: Fetcher = fetch) -> dict[str, Any]:
    """Fetch every URL; the fields to store (content capped, a report per source)."""
    sections: list[str] = []
    sources: list[dict[str, Any]] = []
    budget = MAX_CONTENT_CHARS
    for url in urls:
        try:
            page = fetcher(url, policy)
        except FetchError as exc:
            sources.append({"url": url, "ok": False, "error": str(exc)[:300], "chars": 0})
            continue
        if page.status >= 400:
            sources.append({"url": url, "ok": False, "error": f"HTTP {page.status}", "chars": 0})
            continue
        section = f"Source: {url}\n{page.text}".strip()[: max(budget, 0)]
        budget -= len(section) + 2
        sections.append(section)
        sources.append({"url": url, "ok": True, "chars": len(section),
                        "truncated": page.truncated or len(section) < len(page.text)})
    return {
        "scrapedContent": "\n\n".join(s for s in sections if s)[:MAX_CONTENT_CHARS],
        "knowledge": {"urlsHash": urls_hash(urls), "scrapedAt": now, "sources": sources},
    }


def needs_scrape(fields: dict[str, Any]) -> bool:
    urls = fields.get("scrapedUrls") or []
    if not urls and not fields.get("scrapedContent"):
        return False
    knowledge = fields.get("knowledge") or {}
    return not isinstance(knowledge, dict) or knowledge.get("urlsHash") != urls_hash(list(urls))


def refresh_knowledge(db: Client, assistant_id: str, fields: dict[str, Any], update_time: dt.datetime,
                      policy: FetchPolicy, now: dt.datetime, force: bool = False,
                      fetcher: Fetcher = fetch) -> ScrapeOutcome:
    """Scrape for the assistant as it was at `update_time`; write only if it has not changed since."""
    from google.api_core import exceptions as gexc

    if not force and not needs_scrape(fields):
        return ScrapeOutcome.UP_TO_DATE
    result = scrape(list(fields.get("scrapedUrls") or []), policy, now, fetcher)
    ref = db.collection(col.OPENAI_ASSISTANTS).document(assistant_id)
    try:
        ref.update(result, option=db.write_option(last_update_time=update_time))
    except gexc.NotFound:
        return ScrapeOutcome.GONE
    except gexc.FailedPrecondition:
        return ScrapeOutcome.STALE
    return ScrapeOutcome.SCRAPED


def scrape_now(db: Client, uid: str, assistant_id: str, policy: FetchPolicy, now: dt.datetime,
               fetcher: Fetcher = fetch, attempts: int = 3) -> None:
    """On demand: fetch the caller's assistant's URLs again, whatever was fetched before.

    When the assistant changes during the fetch (the trigger wrote the same
    URLs' content first, or the user edited it), read it again: content for its
    current URLs is done; otherwise fetch again.
    """
    from simplytalk.errors import Aborted, NotFound

    ref = db.collection(col.OPENAI_ASSISTANTS).document(assistant_id)
    for attempt in range(attempts):
        snap = ref.get()
        fields = snap.to_dict() if snap.exists else None
        if not fields or fields.get("userId") != uid:
            raise NotFound("assistant not found")
        if attempt > 0 and not needs_scrape(fields):
            return
        outcome = refresh_knowledge(db, assistant_id, fields, snap.update_time, policy, now,
                                    force=True, fetcher=fetcher)
        if outcome is ScrapeOutcome.GONE:
            raise NotFound("assistant not found")
        if outcome is ScrapeOutcome.SCRAPED:
            return
    raise Aborted("the assistant kept changing while its pages were fetched; try again")
