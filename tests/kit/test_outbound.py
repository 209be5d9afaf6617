"""The outbound-request guard (services/kit/outbound.py): which addresses it reaches in every spelling, that it
connects to the address it checked (DNS rebinding), never follows redirects, bounds time and what it reads, and
reports failures as an error class only. The network tests talk to real servers on loopback addresses, which
each test allow-lists explicitly (``allow=``)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.infra import free_port
from services.kit import outbound
from services.kit.outbound import OutboundRefused, outbound_request, outbound_target, url_parse
from tests.servers import LocalServer

LOOPBACK = ["127.0.0.1/32"]

# Names a test resolver answers (a real DNS server cannot be run here); "localhost" is the system's own.
NAMES = {
    "public.example": ["93.184.215.14"],
    "dual.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "internal.example": ["10.1.2.3"],
    "mixed.example": ["93.184.215.14", "10.0.0.1"],  # one bad answer is enough
    "ula.example": ["fd12:3456::1"],
    "mapped.example": ["::ffff:10.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "scoped.example": ["fe80::1%eth0"],
    "garbage.example": ["not-an-address"],
    "empty.example": [],
}


def table_resolver(host: str, port: int) -> list[str]:
    if host in NAMES:
        return NAMES[host]
    if host in ("localhost",):
        return outbound.system_resolve(host, port)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def check(url: str, allow: Sequence[str] | None = ()) -> str:
    """What the guard makes of ``url``: the address it would connect to, or the error class."""
    try:
        return str(outbound_target(url, allow=allow, resolver=table_resolver).address)
    except OutboundRefused as refused:
        return refused.error


# (url, allow-list, expected: the pinned address or the error class)
CASES: list[tuple[str, list[str], str]] = [
    # loopback, in every spelling
    ("http://127.0.0.1/", [], "blocked"),
    ("http://127.0.0.2:8080/health", [], "blocked"),
    ("http://127.255.255.254/", [], "blocked"),
    ("http://2130706433/", [], "blocked"),  # decimal
    ("http://0177.0.0.1/", [], "blocked"),  # octal
    ("http://0177.0000.0000.0001/", [], "blocked"),
    ("http://017700000001/", [], "blocked"),  # one octal number
    ("http://0x7f.0.0.1/", [], "blocked"),  # hex
    ("http://0X7F.0.0.1/", [], "blocked"),  # upper-case hex
    ("http://0x7f000001/", [], "blocked"),
    ("http://0x7f.0x0.0x0.0x1/", [], "blocked"),
    ("http://127.1/", [], "blocked"),  # short forms
    ("http://127.0.1/", [], "blocked"),
    ("http://127.0.0.1./", [], "blocked"),  # trailing dot
    ("http://127.0.0.1:8001/health/ready", [], "blocked"),
    ("http://[::1]/", [], "blocked"),
    ("http://[0:0:0:0:0:0:0:1]:8000/", [], "blocked"),
    ("http://localhost/", [], "blocked"),  # a name resolving to loopback (the system's resolver)
    ("http://LOCALHOST./", [], "blocked"),
    # unspecified: reaches the local host
    ("http://0/", [], "blocked"),
    ("http://0.0.0.0/", [], "blocked"),
    ("http://0x0/", [], "blocked"),
    ("http://[::]/", [], "blocked"),
    # IPv4 inside IPv6
    ("http://[::ffff:127.0.0.1]/", [], "blocked"),
    ("http://[::FFFF:7F00:1]/", [], "blocked"),  # the same, upper-case hex
    ("http://[::ffff:169.254.169.254]/", [], "blocked"),
    ("http://[::ffff:8.8.8.8]/", [], "blocked"),  # mapped: refused even for a public address
    ("http://[::127.0.0.1]/", [], "blocked"),  # IPv4-compatible
    ("http://[64:ff9b::7f00:1]/", [], "blocked"),  # NAT64
    ("http://[64:ff9b::808:808]/", [], "blocked"),
    ("http://[2002:7f00:1::1]/", [], "blocked"),  # 6to4
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", [], "blocked"),  # Teredo
    # link-local and the cloud metadata address
    ("http://169.254.169.254/latest/meta-data/", [], "blocked"),
    ("http://2852039166/", [], "blocked"),  # 169.254.169.254 in decimal
    ("http://0xa9fea9fe/", [], "blocked"),  # ... in hex
    ("http://0251.0376.0251.0376/", [], "blocked"),  # ... in octal
    ("http://169.254.43518/", [], "blocked"),  # ... short form
    ("http://[fe80::1]/", [], "blocked"),
    ("http://[FE80::A:B]/", [], "blocked"),
    ("http://metadata.example/", [], "blocked"),
    ("http://scoped.example/", [], "blocked"),
    # private, CGNAT
    ("http://10.0.0.1/", [], "blocked"),
    ("http://012.1.2.3/", [], "blocked"),  # 10.1.2.3 in octal
    ("http://172.16.5.4/", [], "blocked"),
    ("http://172.31.255.255/", [], "blocked"),
    ("http://192.168.1.1/", [], "blocked"),
    ("http://3232235777/", [], "blocked"),  # 192.168.1.1
    ("http://[fd00::1]/", [], "blocked"),
    ("http://[fc00::1]/", [], "blocked"),
    ("http://100.64.0.1/", [], "blocked"),
    ("http://100.127.255.254/", [], "blocked"),
    ("http://internal.example/", [], "blocked"),
    ("http://ula.example/", [], "blocked"),
    ("http://mapped.example/", [], "blocked"),
    ("http://mixed.example/", [], "blocked"),
    # multicast, broadcast, reserved, documentation, benchmarking
    ("http://224.0.0.1/", [], "blocked"),
    ("http://239.255.255.250/", [], "blocked"),
    ("http://[ff02::1]/", [], "blocked"),
    ("http://255.255.255.255/", [], "blocked"),
    ("http://4294967295/", [], "blocked"),
    ("http://240.0.0.1/", [], "blocked"),
    ("http://192.0.0.8/", [], "blocked"),
    ("http://192.0.2.1/", [], "blocked"),
    ("http://198.51.100.7/", [], "blocked"),
    ("http://203.0.113.9/", [], "blocked"),
    ("http://198.18.0.1/", [], "blocked"),
    ("http://[2001:db8::1]/", [], "blocked"),
    ("http://[100::1]/", [], "blocked"),
    ("http://garbage.example/", [], "blocked"),  # an answer that is no address
    # public addresses
    ("http://93.184.215.14/", [], "93.184.215.14"),
    ("https://8.8.8.8:8443/x?y=1", [], "8.8.8.8"),
    ("http://134744072/", [], "8.8.8.8"),  # decimal spelling of a public address: read as what it means
    ("http://0x8.0x8.0x8.0x8/", [], "8.8.8.8"),
    ("http://[2606:4700:4700::1111]/", [], "2606:4700:4700::1111"),
    ("http://public.example/health", [], "93.184.215.14"),
    ("HTTPS://PUBLIC.EXAMPLE./", [], "93.184.215.14"),
    ("http://dual.example/", [], "93.184.215.14"),  # every answer checked, the first one pinned
    # allow-listed networks, and only those
    ("http://127.0.0.1:8001/health/ready", LOOPBACK, "127.0.0.1"),
    ("http://0x7f.1:8001/", LOOPBACK, "127.0.0.1"),
    ("http://2130706433/", LOOPBACK, "127.0.0.1"),
    ("http://127.0.0.2/", LOOPBACK, "blocked"),
    ("http://[::ffff:127.0.0.1]/", LOOPBACK, "blocked"),  # IPv6 is not the IPv4 network allowed
    ("http://[::1]/", LOOPBACK, "blocked"),
    ("http://[::1]/", ["::1/128"], "::1"),
    ("http://10.20.30.40/", ["10.0.0.0/8"], "10.20.30.40"),
    ("http://internal.example/", ["10.0.0.0/8"], "10.1.2.3"),
    ("http://mixed.example/", ["10.0.0.0/8"], "93.184.215.14"),
    ("http://169.254.169.254/", ["10.0.0.0/8"], "blocked"),
    ("http://0.0.0.0/", ["0.0.0.0/0"], "blocked"),  # never the unspecified address
    ("http://[::]/", ["::/0"], "blocked"),
    # what the guard does not read: refused before any lookup
    ("http://[fe80::1%25eth0]/", [], "invalid_url"),  # zone id
    ("http://user:secret@93.184.215.14/", [], "invalid_url"),
    ("http://93.184.215.14@127.0.0.1/", [], "invalid_url"),
    ("http://127.0.0.1\\@93.184.215.14/", [], "invalid_url"),
    ("ftp://93.184.215.14/", [], "invalid_url"),
    ("file:///etc/passwd", [], "invalid_url"),
    ("gopher://127.0.0.1:6379/_INFO", [], "invalid_url"),
    ("http:///health", [], "invalid_url"),
    ("http://[::1/", [], "invalid_url"),
    ("http://[::1]junk/", [], "invalid_url"),
    ("http://1.2.3.4.5/", [], "invalid_url"),
    ("http://256.0.0.1/", [], "invalid_url"),
    ("http://4294967296/", [], "invalid_url"),
    ("http://08.0.0.1/", [], "invalid_url"),  # not octal, not decimal
    ("http://foo.123/", [], "invalid_url"),
    ("http://127.0.0.1../", [], "invalid_url"),
    ("http://exa mple.com/", [], "invalid_url"),
    ("http://example.com:0/", [], "invalid_url"),
    ("http://example.com:99999/", [], "invalid_url"),
    ("http://bücher.example/", [], "invalid_url"),  # give it as xn--bcher-kva.example
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", [], "invalid_url"),  # full-width digits
    ("http://127。0。0。1/", [], "invalid_url"),  # ideographic full stops
    ("http://%31%32%37.0.0.1/", [], "invalid_url"),
    ("http://example.com/" + "a" * outbound.MAX_URL_LENGTH, [], "invalid_url"),
    # names that do not resolve
    ("http://nowhere.invalid/", [], "dns"),
    ("http://empty.example/", [], "dns"),
]


@pytest.mark.parametrize(("url", "allow", "expected"), CASES, ids=[f"{c[0][:60]}|{','.join(c[1])}" for c in CASES])
def test_the_guard_refuses_inside_addresses_in_every_spelling(url: str, allow: list[str], expected: str):
    assert check(url, allow) == expected


def test_the_allow_list_defaults_to_the_setting(settings):
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = []
    assert check("http://127.0.0.1/", allow=None) == "blocked"
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = ["127.0.0.0/8", "fd00::/8"]
    assert check("http://127.0.0.9/", allow=None) == "127.0.0.9"
    assert check("http://ula.example/", allow=None) == "fd12:3456::1"
    assert check("http://10.0.0.1/", allow=None) == "blocked"


def test_odd_spellings_are_read_as_the_address_they_mean_and_sent_with_its_canonical_host():
    for url in ("http://0x7f.1:8001/x", "http://2130706433:8001/x", "http://0177.0.0.1:8001/x", "http://127.1:8001/x"):
        parsed = url_parse(url)
        assert (parsed.host, parsed.port, parsed.target, str(parsed.address)) == ("127.0.0.1", 8001, "/x", "127.0.0.1")
    assert url_parse("http://[::FFFF:7F00:1]:8080/a?b=c").host_header == "[::ffff:7f00:1]:8080"
    assert url_parse("HTTPS://Ledger.Example.:443/h").host_header == "ledger.example"


def test_the_settings_refuse_a_malformed_allow_list(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from services.kit.conf import outbound_allow_networks

    monkeypatch.setenv("ATRIUM_OUTBOUND_ALLOW_NETWORKS", "127.0.0.1/32, ::1/128")
    assert outbound_allow_networks() == ["127.0.0.1/32", "::1/128"]
    for bad in ("10.0.0.5/8", "localhost", "127.0.0.1/33"):
        monkeypatch.setenv("ATRIUM_OUTBOUND_ALLOW_NETWORKS", bad)
        with pytest.raises(ImproperlyConfigured, match="ATRIUM_OUTBOUND_ALLOW_NETWORKS"):
            outbound_allow_networks()


# ---------------------------------------------------------------------------------------------------------
# Real requests


@pytest.fixture
def ok_server() -> Iterator[LocalServer]:
    server = LocalServer(lambda seen: (200, {"Content-Type": "text/plain"}, b"fine"))
    try:
        yield server
    finally:
        server.stop()


def test_a_request_reaches_an_allowed_address_with_its_own_host_header(ok_server: LocalServer):
    result = outbound_request("GET", f"{ok_server.url}/health/ready", allow=LOOPBACK)

    assert (result.ok, result.error, result.status_code, result.body) == (True, None, 200, b"fine")
    assert result.address == "127.0.0.1"
    (seen,) = ok_server.calls()
    assert (seen.method, seen.path, seen.headers["host"]) == ("GET", "/health/ready", f"127.0.0.1:{ok_server.port}")
    assert seen.headers["user-agent"] == outbound.USER_AGENT


def test_a_post_carries_its_body_and_headers_but_never_a_host_the_caller_chose(ok_server: LocalServer):
    url = f"http://hooks.example:{ok_server.port}/in?x=1"

    result = outbound_request(
        "POST",
        url,
        headers={"Content-Type": "application/json", "webhook-id": "msg_1", "host": "evil.example"},
        content=b'{"type":"payment.settled"}',
        allow=LOOPBACK,
        resolver=lambda host, port: ["127.0.0.1"],
    )

    assert result.status_code == 200
    (seen,) = ok_server.calls()
    assert (seen.method, seen.path, seen.body) == ("POST", "/in?x=1", b'{"type":"payment.settled"}')
    assert seen.headers["host"] == f"hooks.example:{ok_server.port}"
    assert seen.headers["webhook-id"] == "msg_1"


def test_a_blocked_url_is_never_requested(ok_server: LocalServer):
    for url in (ok_server.url, f"http://2130706433:{ok_server.port}/", f"http://localhost:{ok_server.port}/"):
        result = outbound_request("GET", url, allow=[])
        assert (result.error, result.status_code, result.address, result.elapsed_ms) == ("blocked", None, None, None)
    assert ok_server.calls() == []


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The system resolver, except that ``rebind.test`` answers 127.0.0.1 to the first lookup and 127.0.0.2 to
    every later one (what a hostile DNS server with a zero TTL does). Returns the lookups made for it."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        lookups.append(host)
        return real("127.0.0.1" if len(lookups) == 1 else "127.0.0.2", port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_dns_rebinding_connects_to_the_checked_address_and_a_new_answer_is_checked_again(rebinding: list[str]):
    # given the checked address and the one a second lookup would give, on the same port
    checked = LocalServer(lambda seen: (200, {}, b"checked"))
    rebound = LocalServer(lambda seen: (200, {}, b"rebound"), host="127.0.0.2", port=checked.port)
    url = f"http://rebind.test:{checked.port}/health"
    try:
        # when the guard is asked for it (127.0.0.1 allowed, 127.0.0.2 not)
        first = outbound_request("GET", url, allow=LOOPBACK)
        # then it looked the name up once and connected to the address that lookup gave, naming the host
        assert (first.status_code, first.body, first.address) == (200, b"checked", "127.0.0.1")
        assert rebinding == ["rebind.test"]
        assert [s.headers["host"] for s in checked.calls()] == [f"rebind.test:{checked.port}"]

        # and the next request's lookup answers the other address: checked again, and refused
        second = outbound_request("GET", url, allow=LOOPBACK)
        assert (second.error, second.address) == ("blocked", None)
        assert rebinding == ["rebind.test", "rebind.test"]
        assert rebound.calls() == []
    finally:
        checked.stop()
        rebound.stop()


def test_redirects_are_answers_never_followed(ok_server: LocalServer):
    for code in (301, 302, 303, 307, 308):
        redirecting = LocalServer(lambda seen, code=code: (code, {"Location": f"{ok_server.url}/inside"}, b""))
        try:
            result = outbound_request("GET", f"{redirecting.url}/health", allow=LOOPBACK)
        finally:
            redirecting.stop()
        assert (result.error, result.status_code) == ("status", code)
    assert ok_server.calls() == []


class RawServer:
    """A TCP server on 127.0.0.1 that runs ``serve(connection)`` for each connection and keeps what it says."""

    def __init__(self, serve: Callable[[socket.socket, RawServer], None]) -> None:
        self.serve = serve
        self.sent = 0
        self.errors: list[str] = []
        self.done = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            connection.recv(65536)  # the request
            try:
                self.serve(connection, self)
            except OSError as exc:
                self.errors.append(type(exc).__name__)
        self.done.set()

    def stop(self) -> None:
        self.listener.close()


def _huge(connection: socket.socket, server: RawServer) -> None:
    total = 64 * 1024 * 1024
    connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
    chunk = b"x" * 65536
    while server.sent < total:
        server.sent += connection.send(chunk)


def test_an_answer_is_read_up_to_the_bound_and_no_further():
    server = RawServer(_huge)
    try:
        result = outbound_request("GET", server.url, allow=LOOPBACK, max_bytes=1000)
        assert server.done.wait(10)
    finally:
        server.stop()

    assert (result.status_code, len(result.body), result.truncated) == (200, 1000, True)
    # the client stopped reading and closed: the server could not send the rest
    assert server.errors in (["BrokenPipeError"], ["ConnectionResetError"])
    assert server.sent < 16 * 1024 * 1024, server.sent


def test_no_body_is_read_when_none_is_wanted():
    server = RawServer(_huge)
    try:
        result = outbound_request("GET", server.url, allow=LOOPBACK, max_bytes=0)
        assert server.done.wait(10)
    finally:
        server.stop()
    assert (result.status_code, result.body, result.truncated, result.error) == (200, b"", False, None)
    assert server.sent < 16 * 1024 * 1024


def _drip_body(connection: socket.socket, server: RawServer) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(200):
        connection.sendall(b"x")
        time.sleep(0.05)


def _drip_headers(connection: socket.socket, server: RawServer) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
        connection.sendall(bytes([byte]))
        time.sleep(0.05)


@pytest.mark.parametrize("serve", [_drip_body, _drip_headers], ids=["body", "headers"])
def test_a_server_that_answers_one_byte_at_a_time_is_cut_off_at_the_deadline(serve):
    server = RawServer(serve)
    began = time.monotonic()
    try:
        result = outbound_request("GET", server.url, allow=LOOPBACK, timeout=1.0, max_bytes=1_000_000)
    finally:
        server.stop()
    took = time.monotonic() - began

    assert result.error == "timeout"
    assert 0.9 <= took < 1.6, took
    assert 900 <= (result.elapsed_ms or 0) < 1600


def _close(connection: socket.socket, server: RawServer) -> None:
    connection.shutdown(socket.SHUT_RDWR)


def _garbage(connection: socket.socket, server: RawServer) -> None:
    connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    time.sleep(0.2)


@pytest.fixture
def hanging() -> Iterator[str]:
    """Accepts connections (into the backlog) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()


def test_failures_are_reported_as_an_error_class_only(hanging: str):
    closing, garbage = RawServer(_close), RawServer(_garbage)
    failing = LocalServer(lambda seen: (503, {}, b"database at 10.0.0.7:5432 is down: password authentication failed"))
    missing = LocalServer(lambda seen: (404, {}, b"<h1>nginx</h1>"))
    try:
        results = {
            "refused": outbound_request("GET", f"http://127.0.0.1:{free_port()}/", allow=LOOPBACK),
            "timeout": outbound_request("GET", hanging, allow=LOOPBACK, timeout=0.5),
            "closed": outbound_request("GET", closing.url, allow=LOOPBACK),
            "garbage": outbound_request("GET", garbage.url, allow=LOOPBACK),
            "tls": outbound_request("GET", failing.url.replace("http:", "https:"), allow=LOOPBACK),
            "503": outbound_request("GET", failing.url, allow=LOOPBACK, max_bytes=0),
            "404": outbound_request("GET", missing.url, allow=LOOPBACK, max_bytes=0),
            "dns": outbound_request("GET", "http://nowhere.invalid/", resolver=table_resolver),
            "invalid": outbound_request("GET", "http://user:pw@127.0.0.1/", allow=LOOPBACK),
        }
    finally:
        for server in (closing, garbage):
            server.stop()
        for server in (failing, missing):
            server.stop()

    assert {name: (r.error, r.status_code) for name, r in results.items()} == {
        "refused": ("refused", None),
        "timeout": ("timeout", None),
        "closed": ("connection", None),
        "garbage": ("connection", None),
        "tls": ("tls", None),
        "503": ("status", 503),
        "404": ("status", 404),
        "dns": ("dns", None),
        "invalid": ("invalid_url", None),
    }
    assert all(r.body == b"" for r in results.values())  # none read: nothing of an answer to show
    assert set(outbound.ERRORS) >= {r.error for r in results.values()}


# ---------------------------------------------------------------------------------------------------------
# https: the connection is pinned to the address, TLS speaks to the name


def _certificate(subject: str, issuer: x509.Certificate | None, issuer_key, key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, list[str], list[str]]]:
    """An https server on 127.0.0.1 with a certificate for ``health.test`` from a CA of its own; yields its port,
    a client context trusting that CA, the SNI names it was sent and the Host headers it saw."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test CA", None, ca_key, ca_key, ca=True)
    leaf = _certificate("health.test", ca, ca_key, leaf_key, ca=False)
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    names: list[str] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    server_context.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[assignment,misc]
    server = LocalServer(lambda seen: (200, {}, b"tls ok"))
    server._server.socket = server_context.wrap_socket(server._server.socket, server_side=True)
    client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    try:
        yield server.port, client_context, names, server.requests
    finally:
        server.stop()


def test_https_is_pinned_to_the_checked_address_and_verified_against_the_name(tls_server):
    port, trust, names, requests = tls_server

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    # the name the certificate is for: SNI and the certificate check use it, the connection goes to 127.0.0.1
    good = outbound_request("GET", f"https://health.test:{port}/ready", allow=LOOPBACK, resolver=resolver, verify=trust)
    assert (good.status_code, good.body, good.address) == (200, b"tls ok", "127.0.0.1")
    assert names == ["health.test"]
    assert [r.headers["host"] for r in requests] == [f"health.test:{port}"]

    # another name on the same address: the certificate does not match it
    other = outbound_request("GET", f"https://other.test:{port}/", allow=LOOPBACK, resolver=resolver, verify=trust)
    # the address itself (no name): neither
    by_ip = outbound_request("GET", f"https://127.0.0.1:{port}/", allow=LOOPBACK, verify=trust)
    # the right name, a CA the guard does not trust (the default bundle)
    untrusted = outbound_request("GET", f"https://health.test:{port}/", allow=LOOPBACK, resolver=resolver)

    assert (other.error, by_ip.error, untrusted.error) == ("tls", "tls", "tls")
    assert len(requests) == 1
