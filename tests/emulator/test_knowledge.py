"""Knowledge scraping: the trigger, the on-demand endpoint, and the fetch guard (loopback only)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
import requests
from simplytalk.errors import LimitReached, NotFound
from simplytalk.repositories.knowledge import FirestoreKnowledge
from simplytalk.scraping import BlockedAddress, FetchError, FetchPolicy, FetchTimeout, Page, fetch
from simplytalk.services.knowledge import (
    MAX_CONTENT_CHARS,
    ScrapeOutcome,
    claim_scrape,
    refresh_knowledge,
    scrape,
    scrape_now,
    urls_hash,
)

from devtools.stack import Stack
from tests.emulator.conftest import wait_for
from tests.unit.test_scraping import drip_server

LOCAL = FetchPolicy(allow_loopback=True, timeout=2.0, max_bytes=1_000_000)


@pytest.fixture
def ann(db: Any, new_user: Any) -> Any:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    return user


def test_urls_are_scraped_by_the_trigger_on_create_and_update(stack: Stack, db: Any, ann: Any,
                                                              pages: Any) -> None:
    url = stack.function_url("openai-assistants")
    created = requests.post(url, json={"name": "kb", "scrapedUrls": [f"{pages.base}/about"]},
                            headers=ann.headers, timeout=10).json()
    ref = db.collection("openaiAssistants").document(created["id"])

    content = wait_for(lambda: ref.get().to_dict().get("scrapedContent"))
    assert "Acme Dental" in content and "Mon-Fri 9-17" in content
    assert "var x" not in content and "p{}" not in content
    shown = requests.get(f"{url}/{created['id']}", headers=ann.headers, timeout=10).json()
    assert shown["scrapedContent"] == content
    assert shown["knowledge"]["sources"] == [{"url": f"{pages.base}/about", "ok": True,
                                              "chars": len(content), "truncated": False, "error": None}]

    requests.patch(f"{url}/{created['id']}", json={"scrapedUrls": [f"{pages.base}/plain"]},
                   headers=ann.headers, timeout=10)
    wait_for(lambda: "second line" in ref.get().to_dict().get("scrapedContent", ""))
    assert "Acme" not in ref.get().to_dict()["scrapedContent"]


def test_the_trigger_does_not_fetch_again_for_the_same_urls(stack: Stack, db: Any, ann: Any,
                                                            pages: Any) -> None:
    url = stack.function_url("openai-assistants")
    target = f"{pages.base}/plain?once"
    created = requests.post(url, json={"name": "kb", "scrapedUrls": [target]}, headers=ann.headers,
                            timeout=10).json()
    ref = db.collection("openaiAssistants").document(created["id"])
    wait_for(lambda: ref.get().to_dict().get("scrapedContent"))

    requests.patch(f"{url}/{created['id']}", json={"name": "renamed"}, headers=ann.headers, timeout=10)
    time.sleep(0.5)  # let the written-events of the rename and of the scrape itself arrive

    assert pages.hits.count("/plain?once") == 1


def test_scrape_on_demand(stack: Stack, db: Any, ann: Any, pages: Any) -> None:
    url = stack.function_url("openai-assistants")
    created = requests.post(url, json={"name": "kb", "scrapedUrls": [f"{pages.base}/about",
                                                                    f"{pages.base}/missing"]},
                            headers=ann.headers, timeout=10).json()

    response = requests.post(f"{url}/{created['id']}/scrape", headers=ann.headers, timeout=30)

    assert response.status_code == 200, response.text
    body = response.json()
    assert "Opening hours" in body["scrapedContent"]
    assert [s["ok"] for s in body["knowledge"]["sources"]] == [True, False]
    assert body["knowledge"]["sources"][1]["error"] == "HTTP 404"


def test_fetch_extracts_text_and_follows_redirects(pages: Any) -> None:
    page = fetch(f"{pages.base}/redirect", LOCAL)

    assert page.url == f"{pages.base}/about"
    assert page.text.splitlines()[0] == "Acme Dental"


def test_loopback_is_refused_without_the_test_allowance(pages: Any) -> None:
    before = len(pages.hits)

    with pytest.raises(BlockedAddress):
        fetch(f"{pages.base}/about", FetchPolicy())

    assert len(pages.hits) == before  # refused before connecting


@pytest.mark.parametrize("path", ["/redirect-blocked", "/redirect-ftp"])
def test_redirects_are_checked_at_every_hop(pages: Any, path: str) -> None:
    with pytest.raises(BlockedAddress):
        fetch(f"{pages.base}{path}", LOCAL)


def test_redirect_loops_end(pages: Any) -> None:
    with pytest.raises(FetchError, match="redirects"):
        fetch(f"{pages.base}/loop", LOCAL)


def test_size_is_capped(pages: Any) -> None:
    page = fetch(f"{pages.base}/big", LOCAL)

    assert page.truncated
    assert len(page.text) == LOCAL.max_bytes


def test_slow_pages_time_out(pages: Any) -> None:
    started = time.monotonic()

    with pytest.raises(FetchError):
        fetch(f"{pages.base}/slow", FetchPolicy(allow_loopback=True, timeout=0.5))

    assert time.monotonic() - started < 2


def test_binary_pages_are_not_knowledge(pages: Any) -> None:
    with pytest.raises(FetchError, match="not a text page"):
        fetch(f"{pages.base}/binary", LOCAL)


def test_scraped_content_is_capped_across_sources(pages: Any) -> None:
    result = scrape([f"{pages.base}/big", f"{pages.base}/about"], LOCAL, dt.datetime.now(dt.UTC))

    assert len(result["scrapedContent"]) <= MAX_CONTENT_CHARS
    assert [s["truncated"] for s in result["knowledge"]["sources"]] == [True, True]


def test_a_page_that_drips_is_recorded_as_timed_out_by_the_trigger(stack: Stack, db: Any, ann: Any,
                                                                   pages: Any) -> None:
    url = stack.function_url("openai-assistants")
    with drip_server("body") as slow:
        target = f"http://127.0.0.1:{slow.port}/drip"
        created = requests.post(url, json={"name": "kb", "scrapedUrls": [target, f"{pages.base}/about"]},
                                headers=ann.headers, timeout=10).json()
        ref = db.collection("openaiAssistants").document(created["id"])

        started = time.monotonic()
        knowledge = wait_for(lambda: ref.get().to_dict().get("knowledge"), timeout=30)
        took = time.monotonic() - started
        dripped = slow.dripped

    # the fetch kept its 10 s deadline (the page dripped all along) and the failure is on the assistant
    assert took < 10 + 5 and dripped >= 15
    assert knowledge["sources"][0]["url"] == target and not knowledge["sources"][0]["ok"]
    assert "timed out after 10 s" in knowledge["sources"][0]["error"]
    assert knowledge["sources"][1]["ok"]
    assert "Opening hours" in ref.get().to_dict()["scrapedContent"]


def test_no_fetch_failure_escapes_a_scrape(db: Any, ann: Any) -> None:
    """So the trigger acknowledges: a retry of a failed or timed-out fetch would only fail again."""
    def fetcher(url: str, policy: FetchPolicy) -> Page:
        if url.endswith("/timeout"):
            raise FetchTimeout(f"fetching {url} timed out after {policy.timeout:g} s")
        raise RuntimeError("a bug")

    now = dt.datetime.now(dt.UTC)
    ref = db.collection("openaiAssistants").document("kb1")
    urls = ["https://a.example/timeout", "https://b.example/"]
    ref.set({"userId": ann.uid, "name": "kb", "scrapedUrls": urls,
             "knowledge": {"urlsHash": urls_hash(urls)}})  # so the trigger leaves it to this test
    snap = ref.get()

    outcome = refresh_knowledge(FirestoreKnowledge(db), "kb1", snap.to_dict(), snap.update_time, LOCAL, now, force=True,
                                fetcher=fetcher)

    assert outcome is ScrapeOutcome.SCRAPED
    sources = ref.get().to_dict()["knowledge"]["sources"]
    assert [(s["ok"], s["error"]) for s in sources] == [
        (False, "fetching https://a.example/timeout timed out after 2 s"),
        (False, "fetch failed (internal error)")]


def test_a_scrape_keeps_one_budget_for_all_its_urls() -> None:
    seen: list[float] = []

    def fetcher(url: str, policy: FetchPolicy) -> Page:
        seen.append(policy.timeout)
        time.sleep(policy.timeout)
        raise FetchTimeout("timed out")

    started = time.monotonic()
    result = scrape([f"https://example.com/{i}" for i in range(5)], FetchPolicy(timeout=1.0),
                    dt.datetime.now(dt.UTC), fetcher, deadline=time.monotonic() + 1.8)

    assert time.monotonic() - started < 1.8 + 0.2
    assert len(seen) == 2 and seen[0] == 1.0 and 0.6 < seen[1] < 0.85  # the second gets what is left
    assert [s["error"] for s in result["knowledge"]["sources"]][2:] == [
        "not fetched: the scrape ran out of time"] * 3


def test_scrape_on_demand_has_a_cooldown_per_assistant(stack: Stack, ann: Any, new_user: Any,
                                                       pages: Any) -> None:
    url = stack.function_url("openai-assistants")
    first, second = (requests.post(url, json={"name": f"kb{i}", "scrapedUrls": [f"{pages.base}/plain?cool{i}"]},
                                   headers=ann.headers, timeout=10).json() for i in range(2))
    mallory = new_user()

    assert requests.post(f"{url}/{first['id']}/scrape", headers=mallory.headers,
                         timeout=30).status_code == 404  # a stranger neither scrapes nor starts the cooldown
    assert requests.post(f"{url}/{first['id']}/scrape", headers=ann.headers, timeout=30).status_code == 200
    again = requests.post(f"{url}/{first['id']}/scrape", headers=ann.headers, timeout=30)
    other = requests.post(f"{url}/{second['id']}/scrape", headers=ann.headers, timeout=30)

    assert again.status_code == 429, again.text
    assert again.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    assert other.status_code == 200, other.text  # per assistant


def test_the_cooldown_ends_and_holds_under_concurrency(db: Any, ann: Any, pages: Any) -> None:
    ref = db.collection("openaiAssistants").document("kb2")
    urls = [f"{pages.base}/plain"]
    ref.set({"userId": ann.uid, "name": "kb", "scrapedUrls": urls, "knowledge": {"urlsHash": urls_hash(urls)}})
    now = dt.datetime.now(dt.UTC)
    repo = FirestoreKnowledge(db)

    scrape_now(repo, ann.uid, "kb2", LOCAL, now, cooldown_seconds=60)
    with pytest.raises(LimitReached) as held:
        scrape_now(repo, ann.uid, "kb2", LOCAL, now + dt.timedelta(seconds=45), cooldown_seconds=60)
    scrape_now(repo, ann.uid, "kb2", LOCAL, now + dt.timedelta(seconds=60), cooldown_seconds=60)
    with pytest.raises(NotFound):
        scrape_now(repo, "someone-else", "kb2", LOCAL, now + dt.timedelta(seconds=999), cooldown_seconds=60)

    assert held.value.retry_after == 15
    later = now + dt.timedelta(seconds=600)
    outcomes: list[str] = []

    def claim() -> None:
        try:
            claim_scrape(repo, ann.uid, "kb2", later, 60)
            outcomes.append("claimed")
        except LimitReached:
            outcomes.append("refused")

    racers = [threading.Thread(target=claim) for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sorted(outcomes) == ["claimed", "refused", "refused"]
