from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simplytalk import scraping
from simplytalk.scraping import (
    BlockedAddress,
    FetchError,
    FetchPolicy,
    FetchTimeout,
    check_address,
    embedded_ipv4,
    fetch,
    html_to_text,
    refusal,
)

BLOCKED = ["10.1.2.3", "172.16.0.1", "192.168.0.10", "127.0.0.1", "169.254.169.254", "0.0.0.0",
           "100.64.0.1", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
           "::ffff:10.0.0.1", "::", "ff02::1",
           "192.88.99.1",  # the 6to4 relay anycast
           "fec0::1", "feff::1",  # site-local (deprecated)
           "2002:a00:1::1", "2002:808:808::1",  # 6to4, whatever it embeds
           "2001:0:4136:e378:8000:63bf:f5ff:fffe", "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo
           "::ffff:169.254.169.254", "::ffff:192.88.99.1", "::ffff:100.64.0.1",  # IPv4-mapped
           "::a00:1", "::7f00:1", "::808:808",  # IPv4-compatible (deprecated), whatever it embeds
           "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::c058:6301",  # NAT64
           "64:ff9b:1::a00:1", "64:ff9b:1::808:808",  # local-use NAT64: where the IPv4 is depends on the network
           "2001:db8::1", "3fff::1", "100::1", "2001:2::1", "fe80::1%1"]
PUBLIC = ["8.8.8.8", "93.184.216.34", "192.88.98.1", "192.88.100.1", "2606:4700:4700::1111",
          "2001:4860:4860::8888", "2003::1", "2001:200::1", "::ffff:8.8.8.8", "64:ff9b::808:808",
          "64:ff9b::5db8:d822"]


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_special_addresses_are_blocked(address: str) -> None:
    with pytest.raises(BlockedAddress):
        check_address(address, FetchPolicy())


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    check_address(address, FetchPolicy())


@pytest.mark.parametrize(("address", "found"), [
    ("::ffff:10.0.0.1", [("IPv4-mapped", "10.0.0.1")]),
    ("::a00:1", [("IPv4-compatible", "10.0.0.1")]),
    ("64:ff9b::a00:1", [("NAT64", "10.0.0.1")]),
    ("64:ff9b:1::a00:1", [("NAT64", "10.0.0.1")]),
    ("2002:c0a8:101::1", [("6to4", "192.168.1.1")]),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", [("Teredo client", "10.0.0.1"),
                                             ("Teredo server", "65.54.227.120")]),
    ("::1", []), ("::", []), ("2606:4700:4700::1111", []),
])
def test_the_ipv4_inside_ipv6_is_found(address: str, found: list[tuple[str, str]]) -> None:
    assert embedded_ipv4(ipaddress.IPv6Address(address)) == [
        (form, ipaddress.IPv4Address(v4)) for form, v4 in found]


@pytest.mark.parametrize(("address", "reason"), [
    ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254: link-local"),
    ("::a00:1", "IPv4-compatible 10.0.0.1: private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 169.254.169.254: link-local"),
    ("2002:a00:1::1", "6to4 10.0.0.1: private"),
    ("2002:808:808::1", "6to4"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo client 10.0.0.1: private"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo"),
    ("::808:808", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("fec0::1", "site-local (deprecated)"),
    ("192.88.99.1", "6to4 relay anycast"),
])
def test_the_refusal_says_why(address: str, reason: str) -> None:
    assert refusal(address) == reason


def test_the_test_allowance_opens_loopback_only() -> None:
    allow = FetchPolicy(allow_loopback=True)

    check_address("127.0.0.1", allow)
    check_address("::1", allow)
    check_address("::ffff:127.0.0.1", allow)
    for address in ("10.0.0.1", "169.254.169.254", "0.0.0.0", "64:ff9b::7f00:1", "::7f00:1",
                    "2002:7f00:1::1"):
        with pytest.raises(BlockedAddress):
            check_address(address, allow)


def test_html_to_text_keeps_title_and_readable_text() -> None:
    html = """<html><head><title> Acme  </title><script>alert(1)</script></head>
    <body><nav>Home</nav><h1>Hours</h1><p>Mon&ndash;Fri<br>9&nbsp;-&nbsp;17</p>
    <style>.x{}</style><svg><text>logo</text></svg><ul><li>One</li><li>Two</li></ul></body></html>"""

    assert html_to_text(html) == "Acme\nHome\nHours\nMon\u2013Fri\n9\u00a0-\u00a017\nOne\nTwo"


# --- the deadline against a server that drips one byte every half second ----------------------

DRIP_INTERVAL = 0.5
DEADLINE = 2.0
MARGIN = 0.5
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


class _DripServer:
    """A local server (loopback) that answers every connection as `mode` says, one byte every
    DRIP_INTERVAL seconds where it drips, until the client goes or the server stops."""

    def __init__(self, mode: str, tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.tls = tls
        self.dripped = 0
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket, head: bytes, byte: bytes) -> None:
        conn.sendall(head)
        while not self.stopping.wait(DRIP_INTERVAL):
            conn.sendall(byte)
            self.dripped += 1

    def _answer(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            if self.mode == "handshake":  # a TLS record header announcing 16 KiB, then its body slowly
                conn.recv(65536)  # the ClientHello
                self._drip(conn, b"\x16\x03\x03\x40\x00", b"\x00")
                return
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            if self.mode == "status":
                self._drip(conn, b"", b"H")
            elif self.mode == "headers":
                self._drip(conn, HEAD + b"X-Drip: ", b"a")
            elif self.mode == "body":
                self._drip(conn, HEAD + b"Content-Length: 1000000\r\n\r\n", b"x")
            elif self.mode == "chunked":
                self._drip(conn, HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n", b"1")
            else:
                conn.sendall(HEAD + b"Content-Length: 11\r\n\r\nhello world")

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.listener.close()


@contextlib.contextmanager
def drip_server(mode: str, tls: ssl.SSLContext | None = None) -> Iterator[_DripServer]:
    server = _DripServer(mode, tls)
    try:
        yield server
    finally:
        server.close()


def timed_fetch(url: str, timeout: float = DEADLINE) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        fetch(url, FetchPolicy(allow_loopback=True, timeout=timeout))
    except FetchError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.parametrize("mode", ["status", "headers", "body", "chunked"])
def test_a_slow_drip_cannot_stretch_the_deadline(mode: str) -> None:
    with drip_server(mode) as server:
        elapsed, error = timed_fetch(f"http://127.0.0.1:{server.port}/")

    assert isinstance(error, FetchTimeout), error
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + MARGIN
    assert server.dripped >= 3  # the peer kept sending all along, each byte well within a read timeout


def test_a_slow_tls_handshake_cannot_stretch_the_deadline() -> None:
    with drip_server("handshake") as server:
        elapsed, error = timed_fetch(f"https://127.0.0.1:{server.port}/")

    assert isinstance(error, FetchTimeout), error
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + MARGIN
    assert server.dripped >= 3


def test_a_slow_lookup_cannot_stretch_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def slow(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            time.sleep(DEADLINE + 3)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)

    elapsed, error = timed_fetch("http://slow.example/", timeout=1.0)

    assert isinstance(error, FetchTimeout), error
    assert 0.95 <= elapsed < 1.0 + MARGIN


def test_a_quick_page_is_read_through_the_deadline_socket() -> None:
    with drip_server("quick") as server:
        page = fetch(f"http://127.0.0.1:{server.port}/", FetchPolicy(allow_loopback=True, timeout=DEADLINE))

    assert (page.status, page.text) == (200, "hello world")


@pytest.fixture(scope="module")
def local_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (the server's context, a client context trusting it)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cafile=str(folder / "cert.pem"))
    client.sslsocket_class = scraping._DeadlineSSLSocket
    return server, client


def test_https_pages_are_read_and_a_slow_drip_over_tls_cannot_stretch_the_deadline(
        local_tls: tuple[ssl.SSLContext, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch) -> None:
    server_tls, client_tls = local_tls
    monkeypatch.setattr(scraping, "_tls_context", lambda: client_tls)

    with drip_server("quick", server_tls) as server:
        page = fetch(f"https://127.0.0.1:{server.port}/", FetchPolicy(allow_loopback=True, timeout=DEADLINE))
    with drip_server("body", server_tls) as server:
        elapsed, error = timed_fetch(f"https://127.0.0.1:{server.port}/")

    assert (page.status, page.text) == (200, "hello world")
    assert isinstance(error, FetchTimeout), error
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + MARGIN
    assert server.dripped >= 3
