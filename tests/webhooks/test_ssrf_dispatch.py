"""The SSRF guard at send time: every connection the dispatcher makes goes through the kit's outbound guard, to the
address it checked (pinned). Endpoints here are written straight to the database, past the API's check on save,
as an endpoint saved before a network turned internal (or a name that later resolves inward) would be.

A receiver listens on 127.0.0.1 at the port every URL names: it must see nothing, and each attempt is
``ssrf_blocked``. The same spellings, allow-listed, do reach it (so the table can fail)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from services.kit.outbound import system_resolve
from services.webhooks.models import Attempt, Delivery
from tests.servers import LocalServer
from tests.webhooks.dispatching import FAST, dispatch_once, dispatching, endpoint_new, message_make, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# {port} is the receiver's port on 127.0.0.1.
REFUSED = [
    "http://127.0.0.1:{port}/",  # loopback
    "http://127.0.0.1.:{port}/",  # a trailing dot
    "http://127.1:{port}/",  # two-part spelling
    "http://127.0.1:{port}/",  # three-part spelling
    "http://2130706433:{port}/",  # decimal
    "http://0177.0.0.1:{port}/",  # octal
    "http://017700000001:{port}/",  # octal, one part
    "http://0x7f000001:{port}/",  # hex
    "http://0x7f.0.0.1:{port}/",  # hex part
    "http://0x7F.1:{port}/",  # hex, upper case, two parts
    "http://localhost:{port}/",  # a name for loopback (the system's resolver)
    "http://internal.example:{port}/",  # a name resolving to loopback
    "http://mixed.example:{port}/",  # a public and a private answer: every answer is checked
    "http://0.0.0.0:{port}/",  # unspecified (reaches the local host)
    "http://0:{port}/",  # unspecified, one part
    "http://10.0.0.1:{port}/",  # 10/8
    "http://172.16.0.1:{port}/",  # 172.16/12
    "http://172.31.255.254:{port}/",  # 172.16/12, its top
    "http://192.168.1.1:{port}/",  # 192.168/16
    "http://100.64.0.1:{port}/",  # CGNAT
    "http://169.254.169.254:{port}/",  # the cloud metadata address
    "http://224.0.0.1:{port}/",  # multicast
    "http://240.0.0.1:{port}/",  # reserved
    "http://255.255.255.255:{port}/",  # broadcast
    "http://192.0.2.1:{port}/",  # documentation
    "http://198.18.0.1:{port}/",  # benchmarking
    "http://[::1]:{port}/",  # IPv6 loopback
    "http://[::]:{port}/",  # IPv6 unspecified
    "http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped loopback
    "http://[::ffff:7f00:1]:{port}/",  # IPv4-mapped, hex spelling
    "http://[0:0:0:0:0:ffff:a00:1]:{port}/",  # IPv4-mapped 10.0.0.1, long spelling
    "http://[::127.0.0.1]:{port}/",  # IPv4-compatible
    "http://[2002:7f00:1::]:{port}/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::7f00:1]:{port}/",  # NAT64 of 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/",  # Teredo
    "http://[fc00::1]:{port}/",  # unique local
    "http://[fd12:3456:789a::1]:{port}/",  # unique local
    "http://[fe80::1]:{port}/",  # link-local
    "http://[FE80::1]:{port}/",  # link-local, upper case
    "http://[ff02::1]:{port}/",  # multicast
]

NAMES = {
    "internal.example": ["127.0.0.1"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
}


def resolver(host: str, port: int) -> list[str]:
    return NAMES[host] if host in NAMES else system_resolve(host, port)


def test_every_internal_address_and_spelling_is_refused_at_send_time():
    receiver = LocalServer(lambda seen: (200, {}, b""))
    try:
        assert len(REFUSED) >= 25
        endpoints = [endpoint_new(url.format(port=receiver.port))[0] for url in REFUSED]
        message_make(endpoints)

        dispatch_once(replace(FAST, allow=(), resolver=resolver, schedule=(0,)))

        assert receiver.requests == []
        errors = {a.endpoint_id: (a.error, a.status_code) for a in Attempt.objects.all()}
        wrong = {e.url: errors.get(e.id) for e in endpoints if errors.get(e.id) != ("ssrf_blocked", None)}
        assert wrong == {}
        assert Delivery.objects.filter(state="failed").count() == len(REFUSED)
    finally:
        receiver.stop()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/", "http://2130706433:{port}/", "http://0x7f.1:{port}/", "http://0177.1:{port}/"]
)
def test_the_same_spellings_allow_listed_reach_the_receiver(url):
    """The control: these spellings do mean 127.0.0.1, so it is the guard that stops them above."""
    receiver = LocalServer(lambda seen: (200, {}, b""))
    try:
        endpoint, _ = endpoint_new(url.format(port=receiver.port))
        message_make([endpoint])

        dispatch_once(replace(FAST, allow=("127.0.0.1/32",)))

        assert len(receiver.requests) == 1
        assert receiver.requests[0].headers["host"] == f"127.0.0.1:{receiver.port}"
    finally:
        receiver.stop()


class Rebinding:
    """A resolver that answers an allowed address first and 127.0.0.1 on every later call (DNS rebinding)."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self.lock:
            self.calls += 1
            return [self.first] if self.calls == 1 else ["127.0.0.1"]


def test_dns_rebinding_never_reaches_127_0_0_1():
    """The first answer (an allowed address: 127.0.0.2 stands for a public one here, since every test stays on
    this host) is pinned: every connection goes there, however many are opened (the receivers speak HTTP/1.0, a
    connection per request), and the name is not looked up again until the cache expires. The second answer,
    127.0.0.1, is refused when it comes. A receiver on 127.0.0.1, same port, sees nothing throughout."""
    public = LocalServer(lambda seen: (200, {}, b""), host="127.0.0.2")
    internal = LocalServer(lambda seen: (200, {}, b""), host="127.0.0.1", port=public.port)
    rebinding = Rebinding("127.0.0.2")
    try:
        endpoint, _ = endpoint_new(f"http://hooks.example.test:{public.port}/in", max_in_flight=4)
        config = replace(FAST, allow=("127.0.0.2/32",), resolver=rebinding, dns_ttl=1.0, schedule=(0,))
        with dispatching(config):
            for _ in range(12):
                message_make([endpoint])
            wait_for(lambda: Attempt.objects.filter(endpoint_id=endpoint.id).count() == 12)
            assert rebinding.calls == 1
            assert len(public.requests) == 12
            time.sleep(1.2)  # the pinned answer expires: the next send resolves again, and gets 127.0.0.1
            late = [message_make([endpoint]) for _ in range(3)]
            wait_for(lambda: Attempt.objects.filter(endpoint_id=endpoint.id).count() == 15)

        assert internal.requests == []
        assert len(public.requests) == 12
        assert all(seen.headers["host"] == f"hooks.example.test:{public.port}" for seen in public.requests)
        assert rebinding.calls == 2
        errors = set(
            Attempt.objects.filter(endpoint_id=endpoint.id, message_id__in=[m.id for m in late]).values_list(
                "error", flat=True
            )
        )
        assert errors == {"ssrf_blocked"}
    finally:
        public.stop()
        internal.stop()


def test_a_name_that_resolves_inward_from_the_start_is_never_connected_to():
    internal = LocalServer(lambda seen: (200, {}, b""))
    try:
        endpoint, _ = endpoint_new(f"http://hooks.example.test:{internal.port}/", max_in_flight=4)
        message_make([endpoint])

        dispatch_once(replace(FAST, allow=(), resolver=lambda host, port: ["127.0.0.1"], schedule=(0,)))

        assert internal.requests == []
        [attempt] = Attempt.objects.filter(endpoint_id=endpoint.id)
        assert attempt.error == "ssrf_blocked"
    finally:
        internal.stop()


def test_a_name_that_does_not_resolve_is_error_dns():
    endpoint, _ = endpoint_new("http://nowhere.invalid:9/")
    message_make([endpoint])

    def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    dispatch_once(replace(FAST, allow=(), resolver=nxdomain, schedule=(0,)))

    [attempt] = Attempt.objects.filter(endpoint_id=endpoint.id)
    assert attempt.error == "dns"


def test_production_requires_https_unless_allow_listed():
    receiver = LocalServer(lambda seen: (200, {}, b""))
    try:
        listed, _ = endpoint_new(f"http://hooks.example.test:{receiver.port}/listed")
        message_make([listed])
        dispatch_once(replace(FAST, allow=("127.0.0.1/32",), require_https=True, resolver=lambda h, p: ["127.0.0.1"]))
        assert len(receiver.requests) == 1

        plain, _ = endpoint_new(f"http://hooks.example.test:{receiver.port}/plain")
        message_make([plain])
        dispatch_once(replace(FAST, allow=(), require_https=True, resolver=lambda h, p: ["93.184.216.34"]))
        [attempt] = Attempt.objects.filter(endpoint_id=plain.id)
        assert attempt.error == "ssrf_blocked"
    finally:
        receiver.stop()
