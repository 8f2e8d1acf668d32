"""Assistant knowledge: fetch `scrapedUrls` into `scrapedContent`.

Runs from the `scrape-knowledge` trigger when an assistant's URLs change, and
on demand (`POST /openai-assistants/{id}/scrape`). `knowledge.urlsHash` records
which URL list the content came from, so a repeated or late event, or the
trigger's own write, does nothing. Writes carry a precondition on the update
time that was read: content scraped for an older URL list never overwrites a
newer edit (the newer edit's event scrapes again).

Time: each fetch keeps `FetchPolicy.timeout` whatever the page's server does,
and a whole scrape keeps one budget (`deadline`, time.monotonic()) under its
function's timeout: URLs it does not reach are recorded as not fetched. A
failed fetch, timed out or not, is recorded in its source's report
(`knowledge.sources[].error`) and never raised, so the trigger acknowledges it.

On demand, an assistant may be scraped once per `scrape_cooldown_seconds`
(`scrapeCooldowns/{assistantId}`, server-only, taken in a transaction so it
holds across instances); sooner is RESOURCE_EXHAUSTED with a Retry-After.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from simplytalk import logs
from simplytalk.errors import Aborted, LimitReached, NotFound
from simplytalk.repositories.knowledge import Knowledge, Stored
from simplytalk.scraping import FetchError, FetchPolicy, Page, fetch

MAX_CONTENT_CHARS = 100_000
TRIGGER_BUDGET_SECONDS = 90.0  # a whole scrape from the trigger (scrape-knowledge times out at 120 s)
ON_DEMAND_BUDGET_SECONDS = 40.0  # a whole POST .../scrape, retries included (openai-assistants: 60 s)
Fetcher = Callable[[str, FetchPolicy], Page]

log = logs.get_logger("knowledge")


class ScrapeOutcome(StrEnum):
    SCRAPED = "scraped"
    UP_TO_DATE = "up-to-date"
    STALE = "stale"  # the assistant changed while we fetched; its own event takes over
    GONE = "gone"


def urls_hash(urls: list[str]) -> str:
    return hashlib.sha256(json.dumps(urls).encode()).hexdigest()[:32]


def scrape(urls: list[str], policy: FetchPolicy, now: dt.datetime,
           fetcher: Fetcher = fetch, deadline: float | None = None) -> dict[str, Any]:
    """Fetch every URL; the fields to store (content capped, a report per source).

    Every failure is in its source's report, never raised. By `deadline` (time.monotonic())
    every fetch has ended; URLs left by then are reported as not fetched.
    """
    sections: list[str] = []
    sources: list[dict[str, Any]] = []
    budget = MAX_CONTENT_CHARS
    for url in urls:
        each = policy
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < 0.5:
                sources.append({"url": url, "ok": False, "chars": 0,
                                "error": "not fetched: the scrape ran out of time"})
                continue
            each = dataclasses.replace(policy, timeout=min(policy.timeout, left))
        try:
            page = fetcher(url, each)
        except FetchError as exc:
            sources.append({"url": url, "ok": False, "error": str(exc)[:300], "chars": 0})
            continue
        except Exception:  # a bug or a surprise from the peer: report it, do not fail the scrape
            log.exception("fetching %s failed unexpectedly", url)
            sources.append({"url": url, "ok": False, "error": "fetch failed (internal error)", "chars": 0})
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


def refresh_knowledge(repo: Knowledge, assistant_id: str, fields: dict[str, Any], update_time: dt.datetime,
                      policy: FetchPolicy, now: dt.datetime, force: bool = False,
                      fetcher: Fetcher = fetch, deadline: float | None = None) -> ScrapeOutcome:
    """Scrape for the assistant as it was at `update_time`; write only if it has not changed since.

    Fetch failures are recorded, not raised; only a failed write raises."""
    if not force and not needs_scrape(fields):
        return ScrapeOutcome.UP_TO_DATE
    result = scrape(list(fields.get("scrapedUrls") or []), policy, now, fetcher, deadline)
    stored = repo.store(assistant_id, result, update_time)
    if stored is Stored.GONE:
        return ScrapeOutcome.GONE
    if stored is Stored.STALE:
        return ScrapeOutcome.STALE
    return ScrapeOutcome.SCRAPED


def cooldown_check(now: dt.datetime, cooldown_seconds: int) -> Callable[[dt.datetime | None], None]:
    """Refuses (LimitReached, with Retry-After) while the last on-demand scrape's cooldown runs."""
    cooldown = dt.timedelta(seconds=cooldown_seconds)

    def check(last: dt.datetime | None) -> None:
        if last is not None and now < last + cooldown:
            wait = max(1, min(cooldown_seconds, math.ceil((last + cooldown - now).total_seconds())))
            raise LimitReached(f"this assistant's pages were fetched moments ago; try again in {wait} s",
                               retry_after=wait)

    return check


def claim_scrape(repo: Knowledge, uid: str, assistant_id: str, now: dt.datetime, cooldown_seconds: int) -> None:
    """Start the assistant's on-demand cooldown, or LimitReached (with Retry-After) while
    the last one runs. One transaction on `scrapeCooldowns/{assistantId}`: of two requests at
    the same moment, on any instances, one scrapes."""
    repo.claim_cooldown(assistant_id, uid, now, cooldown_check(now, cooldown_seconds))


def scrape_now(repo: Knowledge, uid: str, assistant_id: str, policy: FetchPolicy, now: dt.datetime,
               fetcher: Fetcher = fetch, attempts: int = 3, cooldown_seconds: int | None = None,
               budget_seconds: float = ON_DEMAND_BUDGET_SECONDS) -> None:
    """On demand: fetch the caller's assistant's URLs again, whatever was fetched before.

    At most once per `cooldown_seconds` per assistant (the setting when None; 0: no
    cooldown), and within `budget_seconds` in all. When the assistant changes during the
    fetch (the trigger wrote the same URLs' content first, or the user edited it), read it
    again: content for its current URLs is done; otherwise fetch again.
    """
    from simplytalk.config import settings

    deadline = time.monotonic() + budget_seconds
    cooldown = settings().scrape_cooldown_seconds if cooldown_seconds is None else cooldown_seconds
    for attempt in range(attempts):
        found = repo.assistant(assistant_id)
        if not found or not found.fields or found.fields.get("userId") != uid:
            raise NotFound("assistant not found")
        fields = found.fields
        if attempt == 0 and cooldown > 0:
            claim_scrape(repo, uid, assistant_id, now, cooldown)
        if attempt > 0 and not needs_scrape(fields):
            return
        if attempt > 0 and deadline - time.monotonic() < 1:
            break  # no time left to fetch again (a scrape with nothing fetched would wipe the content)
        outcome = refresh_knowledge(repo, assistant_id, fields, found.read_at, policy, now,
                                    force=True, fetcher=fetcher, deadline=deadline)
        if outcome is ScrapeOutcome.GONE:
            raise NotFound("assistant not found")
        if outcome is ScrapeOutcome.SCRAPED:
            return
    raise Aborted("the assistant kept changing while its pages were fetched; try again")
