"""Scraping an assistant's pages on the in-memory repository, with fetchers that never touch the
network: the cooldown, the recorded outcome of failed fetches, the content cap, stale writes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from simplytalk.errors import LimitReached, NotFound
from simplytalk.repositories.knowledge import InMemoryKnowledge
from simplytalk.scraping import FetchPolicy, FetchTimeout, Page
from simplytalk.services.knowledge import (
    MAX_CONTENT_CHARS,
    Fetcher,
    ScrapeOutcome,
    claim_scrape,
    refresh_knowledge,
    scrape_now,
    urls_hash,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
POLICY = FetchPolicy(timeout=2.0)
URLS = ["https://a.example/", "https://b.example/"]


def pages(url: str, policy: FetchPolicy) -> Page:
    return Page(url, 200, "text/plain", f"Opening hours at {url}", False)


def huge(url: str, policy: FetchPolicy) -> Page:
    return Page(url, 200, "text/plain", "x" * MAX_CONTENT_CHARS, True)  # the fetch itself stopped at its cap


def timing_out(url: str, policy: FetchPolicy) -> Page:
    if url.startswith("https://a."):
        raise FetchTimeout(f"fetching {url} timed out after {policy.timeout:g} s")
    return pages(url, policy)


@pytest.fixture
def repo() -> InMemoryKnowledge:
    repo = InMemoryKnowledge()
    repo.put("kb", {"userId": "ann", "name": "kb", "scrapedUrls": URLS}, NOW)
    return repo


def fields(repo: InMemoryKnowledge, assistant_id: str = "kb") -> dict[str, Any]:
    return repo.assistants[assistant_id].fields


def refresh(repo: InMemoryKnowledge, fetcher: Fetcher = pages, force: bool = False) -> ScrapeOutcome:
    found = repo.assistants["kb"]
    return refresh_knowledge(repo, "kb", found.fields, found.read_at, POLICY, NOW, force=force, fetcher=fetcher)


# -- the trigger ----------------------------------------------------------------------------

def test_new_urls_are_scraped_into_the_content_with_a_report_per_source(repo: InMemoryKnowledge) -> None:
    assert refresh(repo) is ScrapeOutcome.SCRAPED

    stored = fields(repo)
    assert stored["scrapedContent"] == ("Source: https://a.example/\nOpening hours at https://a.example/\n\n"
                                        "Source: https://b.example/\nOpening hours at https://b.example/")
    assert stored["knowledge"]["urlsHash"] == urls_hash(URLS) and stored["knowledge"]["scrapedAt"] == NOW
    assert [s["ok"] for s in stored["knowledge"]["sources"]] == [True, True]


def test_the_same_urls_are_not_fetched_again(repo: InMemoryKnowledge) -> None:
    refresh(repo)
    fetched: list[str] = []

    def counting(url: str, policy: FetchPolicy) -> Page:
        fetched.append(url)
        return pages(url, policy)

    assert refresh(repo, counting) is ScrapeOutcome.UP_TO_DATE
    assert fetched == []


def test_a_timed_out_fetch_is_recorded_in_its_source_and_the_scrape_succeeds(repo: InMemoryKnowledge) -> None:
    assert refresh(repo, timing_out) is ScrapeOutcome.SCRAPED

    sources = fields(repo)["knowledge"]["sources"]
    assert [(s["ok"], s.get("error")) for s in sources] == [
        (False, "fetching https://a.example/ timed out after 2 s"), (True, None)]
    assert "https://a.example/" not in fields(repo)["scrapedContent"]


def test_a_fetch_that_fails_unexpectedly_is_recorded_not_raised(repo: InMemoryKnowledge) -> None:
    def broken(url: str, policy: FetchPolicy) -> Page:
        raise RuntimeError("a bug")

    assert refresh(repo, broken) is ScrapeOutcome.SCRAPED
    assert {s["error"] for s in fields(repo)["knowledge"]["sources"]} == {"fetch failed (internal error)"}


def test_content_is_capped_across_sources(repo: InMemoryKnowledge) -> None:
    refresh(repo, huge)

    stored = fields(repo)
    assert len(stored["scrapedContent"]) == MAX_CONTENT_CHARS
    first, second = stored["knowledge"]["sources"]
    assert first["ok"] and first["chars"] == MAX_CONTENT_CHARS and first["truncated"]
    assert second["ok"] and second["chars"] == 0 and second["truncated"]


def test_content_for_an_assistant_changed_meanwhile_is_not_written(repo: InMemoryKnowledge) -> None:
    found = repo.assistants["kb"]
    repo.put("kb", {**found.fields, "scrapedUrls": ["https://c.example/"]}, NOW)

    outcome = refresh_knowledge(repo, "kb", found.fields, found.read_at, POLICY, NOW, fetcher=pages)

    assert outcome is ScrapeOutcome.STALE
    assert "scrapedContent" not in fields(repo)


def test_content_for_a_deleted_assistant_is_not_written(repo: InMemoryKnowledge) -> None:
    found = repo.assistants.pop("kb")

    outcome = refresh_knowledge(repo, "kb", found.fields, found.read_at, POLICY, NOW, fetcher=pages)

    assert outcome is ScrapeOutcome.GONE and repo.assistants == {}


# -- on demand and its cooldown ---------------------------------------------------------------

def test_on_demand_fetches_again_whatever_was_fetched_before(repo: InMemoryKnowledge) -> None:
    refresh(repo)

    scrape_now(repo, "ann", "kb", POLICY, NOW + dt.timedelta(hours=1), fetcher=timing_out, cooldown_seconds=60)

    assert fields(repo)["knowledge"]["scrapedAt"] == NOW + dt.timedelta(hours=1)
    assert repo.cooldowns["kb"] == {"userId": "ann", "requestedAt": NOW + dt.timedelta(hours=1)}


def test_the_cooldown_refuses_within_its_window_and_ends_after_it(repo: InMemoryKnowledge) -> None:
    scrape_now(repo, "ann", "kb", POLICY, NOW, fetcher=pages, cooldown_seconds=60)

    with pytest.raises(LimitReached) as held:
        scrape_now(repo, "ann", "kb", POLICY, NOW + dt.timedelta(seconds=45), fetcher=pages, cooldown_seconds=60)
    scrape_now(repo, "ann", "kb", POLICY, NOW + dt.timedelta(seconds=60), fetcher=pages, cooldown_seconds=60)

    assert held.value.retry_after == 15
    assert repo.cooldowns["kb"]["requestedAt"] == NOW + dt.timedelta(seconds=60)


def test_a_refused_claim_leaves_the_cooldown_as_it_was(repo: InMemoryKnowledge) -> None:
    claim_scrape(repo, "ann", "kb", NOW, 60)

    with pytest.raises(LimitReached) as held:
        claim_scrape(repo, "ann", "kb", NOW + dt.timedelta(milliseconds=10), 60)

    assert held.value.retry_after == 60
    assert repo.cooldowns["kb"]["requestedAt"] == NOW


def test_the_cooldown_is_per_assistant(repo: InMemoryKnowledge) -> None:
    repo.put("kb2", {"userId": "ann", "scrapedUrls": URLS}, NOW)

    scrape_now(repo, "ann", "kb", POLICY, NOW, fetcher=pages, cooldown_seconds=60)
    scrape_now(repo, "ann", "kb2", POLICY, NOW, fetcher=pages, cooldown_seconds=60)

    assert set(repo.cooldowns) == {"kb", "kb2"}


def test_a_stranger_neither_scrapes_nor_starts_the_cooldown(repo: InMemoryKnowledge) -> None:
    with pytest.raises(NotFound):
        scrape_now(repo, "mallory", "kb", POLICY, NOW, fetcher=pages, cooldown_seconds=60)
    with pytest.raises(NotFound):
        scrape_now(repo, "ann", "missing", POLICY, NOW, fetcher=pages, cooldown_seconds=60)

    assert repo.cooldowns == {} and "scrapedContent" not in fields(repo)


def test_an_edit_during_the_fetch_to_the_same_urls_ends_the_on_demand_scrape(repo: InMemoryKnowledge) -> None:
    reads: list[str] = []

    def trigger_wins(assistant_id: str) -> None:  # the trigger writes this URL list's content first
        reads.append(assistant_id)
        if len(reads) == 1:
            found = repo.assistants[assistant_id]
            repo.put(assistant_id, {**found.fields, "knowledge": {"urlsHash": urls_hash(URLS)}}, NOW)

    repo.on_read = trigger_wins
    scrape_now(repo, "ann", "kb", POLICY, NOW, fetcher=pages, cooldown_seconds=0)

    assert len(reads) == 2 and "scrapedContent" not in fields(repo)
