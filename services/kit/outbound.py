"""The one guard for requests that leave Atrium for a URL someone else chose (health URLs, webhook endpoints).

A URL given by a client must not turn the portal into a proxy into its own network (SSRF): other services'
internals on loopback, the cloud metadata address, the private network. :func:`outbound_request` therefore

* parses the URL itself: ``http`` or ``https``, no user info, at most :data:`MAX_URL_LENGTH` characters, a
  host that is an IP literal or a plain ASCII host name; what it cannot parse safely is ``invalid_url``;
* reads IPv4 in every spelling a resolver or browser accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``,
  ``127.1``, a trailing dot) as the address it means, and IPv6 literals (bracketed, any case; zone ids are
  refused), resolves host names itself and checks **every** address they resolve to;
* refuses loopback, private (RFC 1918, IPv6 unique local), link-local (the metadata address included), CGNAT,
  multicast, unspecified, broadcast, reserved, documentation and benchmark ranges, and IPv4 carried in IPv6
  (mapped, compatible, NAT64, 6to4, Teredo) — unless the address is in a network the operator allow-lists
  (``ATRIUM_OUTBOUND_ALLOW_NETWORKS``; the unspecified address never);
* connects to the address it checked (pinned: a second lookup that answers otherwise, DNS rebinding, is
  never made), with the original ``Host`` header and, for https, the original name for SNI and for the
  certificate check;
* never follows redirects, ignores proxy settings from the environment, bounds the time (connect, and a
  deadline for the whole exchange that cuts a slow-dripping answer off) and what it reads of the answer;
* reports a failure as an error class only (:data:`ERRORS`), never an exception's text or a response body:
  a caller learns no more about what answers at an address than the class says.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port → the addresses it resolves to (as text). The default asks the system (getaddrinfo).
Resolver = Callable[[str, int], Sequence[str]]

# Error classes, the only thing a caller (and whoever reads what it stores) learns of a failure.
INVALID_URL = "invalid_url"  # not a URL this guard sends to (scheme, user info, length, an odd host)
BLOCKED = "blocked"  # the host is, or resolves to, an address that is not allowed
DNS = "dns"  # the name did not resolve (in time)
REFUSED = "refused"  # the connection was refused
TIMEOUT = "timeout"  # no connection, or no complete answer, in time
TLS = "tls"  # the TLS handshake or the certificate check failed
CONNECTION = "connection"  # the connection broke, or the answer was not HTTP
STATUS = "status"  # an answer, but not 2xx (its status code is given)
ERRORS = (INVALID_URL, BLOCKED, DNS, REFUSED, TIMEOUT, TLS, CONNECTION, STATUS)

MAX_URL_LENGTH = 2048
USER_AGENT = "Atrium-Outbound/1"

# Refused unless allow-listed: named explicitly, since what ``ipaddress`` calls private or global has
# changed between Python versions. Its ``is_global`` is a second line below.
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # CGNAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, the cloud metadata address 169.254.169.254
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address 255.255.255.255
        "::/96",  # unspecified, loopback, IPv4-compatible ::a.b.c.d
        "::ffff:0:0/96",  # IPv4-mapped ::ffff:a.b.c.d
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
        "64:ff9b::/96",  # NAT64 (RFC 6052)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking 2001:2::/48, ORCHID
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: an IPv4 address inside
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

# A host (a bracketed IPv6 literal, or anything without brackets or colons: checked below) and a decimal port.
_NETLOC = re.compile(r"(?P<host>\[[0-9A-Za-z:.%]+\]|[^\[\]:]+)(:[0-9]{1,5})?")
_HOST_NAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*")
_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0x[0-9a-f]*")
_OCTAL = re.compile(r"0[0-7]*")


class OutboundRefused(Exception):
    """The guard refused a URL before any connection: ``error`` is ``invalid_url``, ``blocked`` or ``dns``."""

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(error)


@dataclass(frozen=True)
class OutboundURL:
    """A URL as the guard reads it: ``host`` normalised (lower case, no trailing dot, no brackets; an IP
    literal in its canonical spelling), ``address`` the IP it names when it is a literal."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as given
    address: IPAddress | None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class OutboundTarget:
    """A checked URL and the address it will be connected to (pinned)."""

    url: OutboundURL
    address: IPAddress


@dataclass(frozen=True)
class OutboundResult:
    """What came of a request: a status code, or an error class (:data:`ERRORS`), never a text.

    ``body`` holds at most the ``max_bytes`` asked for (``truncated`` when the answer had more).
    ``elapsed_ms`` is set when the request was sent (an answer, or a timeout)."""

    error: str | None
    status_code: int | None = None
    elapsed_ms: int | None = None
    body: bytes = b""
    truncated: bool = False
    address: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------------------------------------
# Addresses


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 address as resolvers (``inet_aton``) and browsers (WHATWG) read it: decimal,
    ``0x`` hex, or octal after a leading zero."""
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if _OCTAL.fullmatch(part) else None
    if _DECIMAL.fullmatch(part):
        return int(part)
    return None


def _ipv4_parse(host: str) -> ipaddress.IPv4Address:
    """An IPv4 address in any spelling (one to four parts, the last one filling the remaining bytes)."""
    parts = host.split(".")
    if len(parts) > 4 or any(p == "" for p in parts):
        raise OutboundRefused(INVALID_URL)
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        raise OutboundRefused(INVALID_URL)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise OutboundRefused(INVALID_URL)
    number = values[-1]
    for index, value in enumerate(values[:-1]):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _ends_in_a_number(host: str) -> bool:
    """Whether ``host`` is an IPv4 address rather than a name (WHATWG: its last label is a number)."""
    last = host.rsplit(".", 1)[-1]
    return bool(_DECIMAL.fullmatch(last) or _HEX.fullmatch(last))


@lru_cache(maxsize=32)
def _networks(values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v) for v in values)


def allow_networks(values: Iterable[str | IPNetwork] | None = None) -> tuple[IPNetwork, ...]:
    """The allow-listed networks: ``values``, or ``ATRIUM_OUTBOUND_ALLOW_NETWORKS`` (CIDRs)."""
    if values is None:
        values = getattr(settings, "ATRIUM_OUTBOUND_ALLOW_NETWORKS", ())
    return _networks(tuple(str(v) for v in values))


def address_allowed(address: IPAddress, allow: Iterable[str | IPNetwork] | None = None) -> bool:
    """Whether the guard may connect to ``address``: public, or in an allow-listed network (never the
    unspecified address, which reaches the local host)."""
    if address.is_unspecified:
        return False
    if any(address.version == net.version and address in net for net in allow_networks(allow)):
        return True
    if any(address.version == net.version and address in net for net in BLOCKED_NETWORKS):
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


# ---------------------------------------------------------------------------------------------------------
# URLs


def url_parse(url: str) -> OutboundURL:
    """Read ``url`` as the guard does (no network); :class:`OutboundRefused` ``invalid_url`` if it cannot."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise OutboundRefused(INVALID_URL)
    # Whitespace, control characters and backslashes are read differently by different parsers.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise OutboundRefused(INVALID_URL)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(INVALID_URL) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "@" in parts.netloc or not parts.netloc:
        raise OutboundRefused(INVALID_URL)
    if port is None:
        port = 443 if scheme == "https" else 80
    if not 0 < port < 65536:
        raise OutboundRefused(INVALID_URL)
    netloc = _NETLOC.fullmatch(parts.netloc)
    if netloc is None:
        raise OutboundRefused(INVALID_URL)
    raw = netloc["host"]
    if raw.startswith("["):
        literal = raw[1:-1]
        if "%" in literal:  # a zone id is meaningful on this host only
            raise OutboundRefused(INVALID_URL)
        try:
            address: IPAddress | None = ipaddress.IPv6Address(literal)
        except ValueError as exc:
            raise OutboundRefused(INVALID_URL) from exc
        host = str(address)
    else:
        host = raw.lower()
        if host.endswith("."):
            host = host[:-1]
        # Names are plain ASCII (an internationalised name is given in its xn-- form): no look-alike digits,
        # no full-width dots, nothing a resolver might read otherwise.
        if not host.isascii() or len(host) > 253 or not _HOST_NAME.fullmatch(host):
            raise OutboundRefused(INVALID_URL)
        if _ends_in_a_number(host):
            address = _ipv4_parse(host)
            host = str(address)
        else:
            address = None
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return OutboundURL(scheme=scheme, host=host, port=port, target=target, address=address)


# ---------------------------------------------------------------------------------------------------------
# Resolution


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (every family, TCP), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


# getaddrinfo cannot be interrupted: lookups run here, and a caller waits for one no longer than its
# connect timeout (a lookup that hangs keeps a thread of this small pool until the resolver gives up).
_lookups = ThreadPoolExecutor(max_workers=8, thread_name_prefix="outbound-dns")


def _resolve(host: str, port: int, resolver: Resolver | None, timeout: float) -> list[IPAddress]:
    if resolver is None:
        future = _lookups.submit(system_resolve, host, port)
        try:
            found = future.result(timeout=timeout)
        except (FutureTimeout, OSError, UnicodeError) as exc:
            raise OutboundRefused(DNS) from exc
    else:
        try:
            found = list(resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused(DNS) from exc
    addresses: list[IPAddress] = []
    for text in found:
        try:
            # A link-local answer may carry a zone (fe80::1%eth0): blocked either way.
            addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError as exc:
            raise OutboundRefused(BLOCKED) from exc
    if not addresses:
        raise OutboundRefused(DNS)
    return addresses


def outbound_target(
    url: str,
    *,
    allow: Iterable[str | IPNetwork] | None = None,
    resolver: Resolver | None = None,
    timeout: float = 5.0,
) -> OutboundTarget:
    """Parse ``url``, resolve its host (once) and check every address; the target pins the first one.

    Raises :class:`OutboundRefused` (``invalid_url``, ``dns`` or ``blocked``)."""
    parsed = url_parse(url)
    addresses = (
        [parsed.address] if parsed.address is not None else _resolve(parsed.host, parsed.port, resolver, timeout)
    )
    # Every answer is checked: a name resolving to a public and a private address is refused, whichever the
    # connection would have picked.
    if not all(address_allowed(a, allow) for a in addresses):
        raise OutboundRefused(BLOCKED)
    return OutboundTarget(url=parsed, address=addresses[0])


# ---------------------------------------------------------------------------------------------------------
# Requests

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _default_ssl_context() -> ssl.SSLContext:
    """One verifying context per process (loading the CA bundle is the slow part of a client)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


class _Deadline:
    """Cuts the connection when the whole exchange overruns: a server that answers one byte at a time never
    holds a caller longer than its timeout. The socket comes from httpx's trace of the connection."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._done = False
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def trace(self, name: str, info: Mapping[str, Any]) -> None:
        if name in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._socket = sock
                late = self.fired
            if late:
                self._fire()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._socket is not None:
                try:
                    # The plain socket's shutdown (also under TLS): the blocked read returns, the SSL object
                    # is left to the thread using it.
                    socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _error_class(exc: BaseException) -> str:
    """The class of a transport failure, from the exception and what caused it."""
    if isinstance(exc, httpx.TimeoutException):
        return TIMEOUT
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return TLS
        if isinstance(seen, ConnectionRefusedError):
            return REFUSED
        if isinstance(seen, TimeoutError):
            return TIMEOUT
        seen = seen.__cause__ or seen.__context__
    return CONNECTION


def outbound_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    connect_timeout: float = 3.0,
    timeout: float = 10.0,
    max_bytes: int = 64 * 1024,
    allow: Iterable[str | IPNetwork] | None = None,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | None = None,
) -> OutboundResult:
    """Send one request to ``url`` through the guard; never raises for anything the network or the URL does.

    ``connect_timeout`` bounds the lookup and the connection, ``timeout`` the whole exchange; at most
    ``max_bytes`` of the answer are read (0: none). A non-2xx answer is error ``status`` with its code;
    redirects are answers, never followed. ``allow`` and ``resolver`` replace the allow-list setting and
    the system resolver; ``verify`` the CA bundle (certifi's)."""
    started = time.monotonic()
    try:
        target = outbound_target(url, allow=allow, resolver=resolver, timeout=connect_timeout)
    except OutboundRefused as refused:
        return OutboundResult(error=refused.error)
    pinned = str(target.address)
    host = f"[{pinned}]" if target.address.version == 6 else pinned
    send_headers = httpx.Headers({"User-Agent": USER_AGENT})
    send_headers.update(headers or {})
    # The connection goes to the checked address; the server sees the name it was given. The answer is read
    # as sent (no decompression: what is bounded is what is read).
    send_headers["Host"] = target.url.host_header
    send_headers["Accept-Encoding"] = "identity"
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https" and target.url.address is None:
        extensions["sni_hostname"] = target.url.host  # SNI and the certificate check: the name, not the IP
    remaining = max(timeout - (time.monotonic() - started), 0.001)
    client = httpx.Client(
        transport=httpx.HTTPTransport(verify=verify or _default_ssl_context(), retries=0),
        timeout=httpx.Timeout(remaining, connect=min(connect_timeout, remaining)),
        follow_redirects=False,
        trust_env=False,  # no HTTP(S)_PROXY: the request goes to the address checked, from here
        # A connection verified for one name is never reused for another name on the same address.
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    deadline = _Deadline(remaining)
    extensions["trace"] = deadline.trace
    body = bytearray()
    truncated = False
    try:
        with client, deadline:
            request = client.build_request(
                method.upper(),
                f"{target.url.scheme}://{host}:{target.url.port}{target.url.target}",
                headers=send_headers,
                content=content,
                extensions=extensions,
            )
            response = client.send(request, stream=True)
            try:
                if max_bytes > 0:
                    for chunk in response.iter_raw():
                        body += chunk
                        if len(body) > max_bytes:
                            truncated = True
                            del body[max_bytes:]
                            break
            finally:
                response.close()
    except httpx.InvalidURL:  # a path or query httpx will not send (the host was read above)
        return OutboundResult(error=INVALID_URL)
    except httpx.HTTPError as exc:
        error = TIMEOUT if deadline.fired else _error_class(exc)
        elapsed = int((time.monotonic() - started) * 1000) if error == TIMEOUT else None
        return OutboundResult(error=error, elapsed_ms=elapsed, address=pinned)
    elapsed = int((time.monotonic() - started) * 1000)
    if deadline.fired:  # cut off: an answer read to its (early) end is still no answer in time
        return OutboundResult(error=TIMEOUT, elapsed_ms=elapsed, address=pinned)
    code = response.status_code
    return OutboundResult(
        error=None if 200 <= code < 300 else STATUS,
        status_code=code,
        elapsed_ms=elapsed,
        body=bytes(body),
        truncated=truncated,
        address=pinned,
    )
