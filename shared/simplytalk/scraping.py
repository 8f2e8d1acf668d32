"""Fetching a web page's readable text for an assistant's knowledge, safely.

SSRF guard: only http(s); the host is resolved and every address must be
public (no private, loopback, link-local, multicast, reserved or unspecified
address, IPv4-mapped forms included) before anything connects; the connection
goes to the address that was checked (no second lookup to rebind); redirects
are followed by hand, each hop checked again; timeouts and a size cap bound
every fetch. Loopback is allowed only by an explicit test-only setting.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from simplytalk.errors import SimplyTalkError

USER_AGENT = "SimplyTalkBot/1.0 (+assistant knowledge)"
REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(SimplyTalkError):
    pass


class BlockedAddress(FetchError):
    pass


@dataclass(frozen=True)
class FetchPolicy:
    allow_loopback: bool = False
    timeout: float = 10.0  # seconds for the whole fetch, redirects included
    max_bytes: int = 2_000_000
    max_redirects: int = 3


@dataclass(frozen=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    text: str
    truncated: bool


def check_address(address: str, policy: FetchPolicy) -> None:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback and policy.allow_loopback:
        return
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_link_local:
        raise BlockedAddress(f"address {address} is not public")


def resolve(host: str, port: int, policy: FetchPolicy) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(f"cannot resolve {host}")
    for address in addresses:  # every answer must be safe, not just the first
        check_address(address, policy)
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(url: str, policy: FetchPolicy) -> Page:
    deadline = time.monotonic() + policy.timeout
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BlockedAddress(f"only http(s) URLs are fetched: {url}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = resolve(parts.hostname, port, policy)
        except (ValueError, UnicodeError) as exc:  # a bad port or host (also from a redirect)
            raise FetchError(f"not a fetchable URL: {url}") from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timed out")
        conn_type = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = conn_type(parts.hostname, port, address, remaining)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": USER_AGENT,
                                               "Accept": "text/html,text/plain;q=0.9,*/*;q=0.1"})
            response = conn.getresponse()
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchError(f"redirect without Location from {url}")
                url = urljoin(url, location)
                continue
            body, truncated = _read_capped(response, policy.max_bytes, deadline)
            content_type = response.getheader("Content-Type", "") or ""
            return Page(url, response.status, content_type, _to_text(body, content_type), truncated)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"fetching {url} failed: {exc}") from exc
        finally:
            conn.close()
    raise FetchError(f"more than {policy.max_redirects} redirects")


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise FetchError("timed out while reading")
        chunk = response.read(min(65536, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:max_bytes], True


def _charset(content_type: str) -> str:
    match = re.search(r"charset=([\w.:-]+)", content_type, re.I)
    return match.group(1) if match else "utf-8"


def _to_text(body: bytes, content_type: str) -> str:
    try:
        decoded = body.decode(_charset(content_type), errors="replace")
    except LookupError:
        decoded = body.decode("utf-8", errors="replace")
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("text/html", "application/xhtml+xml") or (not ctype and "<html" in decoded[:1000].lower()):
        return html_to_text(decoded)
    if ctype.startswith("text/") or not ctype:
        return _squeeze(decoded)
    raise FetchError(f"not a text page ({ctype})")


class _TextExtractor(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "head"})
    BLOCK = frozenset({"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
                       "section", "article", "header", "footer", "blockquote", "pre", "table", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.title: list[str] = []
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in self.SKIP:
            self.skipping += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in self.SKIP and self.skipping:
            self.skipping -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skipping:
            self.parts.append(data)


def _squeeze(text: str) -> str:
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    title = _squeeze("".join(parser.title))
    body = _squeeze("".join(parser.parts))
    return f"{title}\n{body}".strip() if title else body
