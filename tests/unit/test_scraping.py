from __future__ import annotations

import pytest
from simplytalk.scraping import BlockedAddress, FetchPolicy, check_address, html_to_text

BLOCKED = ["10.1.2.3", "172.16.0.1", "192.168.0.10", "127.0.0.1", "169.254.169.254", "0.0.0.0",
           "100.64.0.1", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
           "::ffff:10.0.0.1", "::", "ff02::1"]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_special_addresses_are_blocked(address: str) -> None:
    with pytest.raises(BlockedAddress):
        check_address(address, FetchPolicy())


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    check_address(address, FetchPolicy())


def test_the_test_allowance_opens_loopback_only() -> None:
    allow = FetchPolicy(allow_loopback=True)

    check_address("127.0.0.1", allow)
    check_address("::1", allow)
    for address in ("10.0.0.1", "169.254.169.254", "0.0.0.0"):
        with pytest.raises(BlockedAddress):
            check_address(address, allow)


def test_html_to_text_keeps_title_and_readable_text() -> None:
    html = """<html><head><title> Acme  </title><script>alert(1)</script></head>
    <body><nav>Home</nav><h1>Hours</h1><p>Mon&ndash;Fri<br>9&nbsp;-&nbsp;17</p>
    <style>.x{}</style><svg><text>logo</text></svg><ul><li>One</li><li>Two</li></ul></body></html>"""

    assert html_to_text(html) == "Acme\nHome\nHours\nMon\u2013Fri\n9\u00a0-\u00a017\nOne\nTwo"
