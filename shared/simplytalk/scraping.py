"""Fetching a web page's readable text for an assistant's knowledge, safely.

SSRF guard: only http(s); the host is resolved and every address must be a
public unicast address before anything connects (see `check_address`: IPv4
inside IPv6, NAT64, 6to4 and Teredo included); the connection goes to the
address that was checked (no second lookup to rebind); redirects are followed
by hand, each hop checked again; a size cap bounds every fetch. Loopback is
allowed only by an explicit test-only setting.

Deadline: `FetchPolicy.timeout` is one wall-clock budget for the whole fetch
(lookup, connect, TLS, headers, body, every redirect), whatever the peer does.
Every send and receive on the socket waits at most for the time that is left
(`_DeadlineSocket`), so a server that drips one byte at a time, in the headers
or in the body, cannot stretch it; the lookup runs in a thread the fetch stops
waiting for at the deadline.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from simplytalk.errors import SimplyTalkError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

USER_AGENT = "SimplyTalkBot/1.0 (+assistant knowledge)"
REDIRECTS = {301, 302, 303, 307, 308}
READ_CHUNK = 16384


class FetchError(SimplyTalkError):
    pass


class BlockedAddress(FetchError):
    pass


class FetchTimeout(FetchError):
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


# --- which addresses may be fetched ---------------------------------------------------------

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*specs: tuple[str, str]) -> tuple[tuple[_Net, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in specs)


# Not to be fetched whatever the Python version's `ipaddress` thinks (IANA special-purpose registries).
_V4_BLOCKED = _nets(
    ("0.0.0.0/8", "this network"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGN)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"), ("255.255.255.255/32", "broadcast"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_BLOCKED = _nets(
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"), ("100::/64", "discard-only"), ("2001::/32", "Teredo"),
    ("2001::/23", "IETF protocol assignments"), ("2001:db8::/32", "documentation"), ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"), ("fc00::/7", "unique local"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"), ("ff00::/8", "multicast"),
)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # the IPv4 address itself, through a dual-stack socket
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the network's NAT64 translates to the IPv4
_COMPAT = ipaddress.IPv6Network("::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _listed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
            nets: tuple[tuple[_Net, str], ...]) -> str | None:
    return next((why for net, why in nets if ip in net), None)


def _v4_refusal(ip: ipaddress.IPv4Address) -> str | None:
    why = _listed(ip, _V4_BLOCKED)
    if why is None and (not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified
                        or ip.is_link_local or ip.is_loopback or ip.is_private):
        why = "not public"
    return why


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, and in which form.

    IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96 but :: and ::1), NAT64 (64:ff9b::/96,
    and 64:ff9b:1::/48 read as a /96), 6to4 (2002::/16, bits 16-48) and Teredo (2001::/32: the
    server in bits 32-64, the client obfuscated in the last 32 bits).
    """
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        found.append(("IPv4-mapped", ip.ipv4_mapped))
    elif ip in _COMPAT and int(ip) > 1:
        found.append(("IPv4-compatible", low32))
    elif ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(("NAT64", low32))
    elif ip.sixtofour is not None:
        found.append(("6to4", ip.sixtofour))
    elif ip.teredo is not None:
        server, client = ip.teredo
        found += [("Teredo client", client), ("Teredo server", server)]
    return found


def refusal(address: str) -> str | None:
    """Why `address` must not be fetched from (None: a public unicast address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scoped IPv6 address: its scope is no help
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_refusal(ip)
    for form, v4 in embedded_ipv4(ip):
        why = _v4_refusal(v4)
        if why is not None:
            return f"{form} {v4}: {why}"
    if ip in _MAPPED or ip in _NAT64:
        return None  # the connection goes to the IPv4 address checked above
    why = _listed(ip, _V6_BLOCKED)
    if why is None and ip not in _V6_GLOBAL_UNICAST:
        why = "not global unicast"
    if why is None and (not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified
                        or ip.is_link_local or ip.is_site_local or ip.is_loopback or ip.is_private):
        why = "not public"
    return why


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_address(address: str, policy: FetchPolicy) -> None:
    if policy.allow_loopback and _is_loopback(address):
        return
    why = refusal(address)
    if why is not None:
        raise BlockedAddress(f"address {address} is not public ({why})")


# --- a fetch that keeps its deadline -----------------------------------------------------------

def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _getaddrinfo(host: str, port: int, deadline: float) -> list[str]:
    """The addresses of `host`, or TimeoutError at the deadline (the resolver has no timeout of
    its own that we control; a lookup still running then is left to finish in its thread)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal: nothing to look up
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        return [str(info[4][0]) for info in infos]
    answer: Future[list[str]] = Future()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.set_result([str(info[4][0]) for info in infos])
        except BaseException as exc:  # handed to the waiting fetch
            answer.set_exception(exc)

    threading.Thread(target=lookup, name="scrape-lookup", daemon=True).start()
    return answer.result(timeout=_time_left(deadline))


def resolve(host: str, port: int, policy: FetchPolicy, deadline: float | None = None) -> str:
    try:
        found = _getaddrinfo(host, port, time.monotonic() + policy.timeout if deadline is None else deadline)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}") from exc
    addresses = list(dict.fromkeys(found))
    if not addresses:
        raise FetchError(f"cannot resolve {host}")
    for address in addresses:  # every answer must be safe, not just the first
        check_address(address, policy)
    return addresses[0]


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every send and receive waits at most until `deadline` (time.monotonic())."""

    deadline = 0.0

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_time_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.settimeout(_time_left(self.deadline))
        return super().recv(bufsize, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self.settimeout(_time_left(self.deadline))
        return super().send(data, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self.settimeout(_time_left(self.deadline))  # sendall's timeout is for all of it
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The same over TLS (`recv_into` and `sendall` of SSLSocket come through these)."""

    deadline = 0.0

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_time_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.settimeout(_time_left(self.deadline))
        return super().recv(buflen, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self.settimeout(_time_left(self.deadline))
        return super().send(data, flags)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _connect(address: str, port: int, deadline: float) -> _DeadlineSocket:
    sock = _DeadlineSocket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.deadline = deadline
    try:
        sock.settimeout(_time_left(deadline))
        sock.connect((address, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, deadline: float) -> None:
        super().__init__(host, port, timeout=_time_left(deadline))
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self._deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, deadline: float) -> None:
        super().__init__(host, port, timeout=_time_left(deadline), context=_tls_context())
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self._deadline)
        try:
            tls = _tls_context().wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        except BaseException:
            sock.close()
            raise
        try:
            assert isinstance(tls, _DeadlineSSLSocket)
            tls.deadline = self._deadline
            tls.settimeout(_time_left(self._deadline))  # one budget for the whole handshake
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
        self.sock = tls


def fetch(url: str, policy: FetchPolicy) -> Page:
    deadline = time.monotonic() + policy.timeout
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BlockedAddress(f"only http(s) URLs are fetched: {url}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = resolve(parts.hostname, port, policy, deadline)
        except TimeoutError as exc:
            raise FetchTimeout(f"fetching {url} timed out after {policy.timeout:g} s (lookup)") from exc
        except (ValueError, UnicodeError) as exc:  # a bad port or host (also from a redirect)
            raise FetchError(f"not a fetchable URL: {url}") from exc
        conn: http.client.HTTPConnection
        try:
            if parts.scheme == "https":
                conn = _PinnedHTTPSConnection(parts.hostname, port, address, deadline)
            else:
                conn = _PinnedHTTPConnection(parts.hostname, port, address, deadline)
        except TimeoutError as exc:
            raise FetchTimeout(f"fetching {url} timed out after {policy.timeout:g} s") from exc
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
        except TimeoutError as exc:
            raise FetchTimeout(f"fetching {url} timed out after {policy.timeout:g} s") from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise FetchError(f"fetching {url} failed: {exc}") from exc
        finally:
            conn.close()
    raise FetchError(f"more than {policy.max_redirects} redirects")


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    """The body, up to `max_bytes`, in small reads; the deadline is checked between them (and
    every socket read under them waits at most for the time left)."""
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        _time_left(deadline)
        chunk = response.read(min(READ_CHUNK, max_bytes + 1 - size))
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
