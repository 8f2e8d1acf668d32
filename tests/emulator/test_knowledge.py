"""Knowledge scraping: the trigger, the on-demand endpoint, and the fetch guard (loopback only)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import requests
from simplytalk.scraping import BlockedAddress, FetchError, FetchPolicy, fetch
from simplytalk.services.knowledge import MAX_CONTENT_CHARS, scrape

from devtools.stack import Stack
from tests.emulator.conftest import wait_for

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
