"""Health polling against real local servers — one that hangs never delays the others beyond its timeout —
and instance liveness from heartbeats."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from devtools.infra import free_port
from portal.catalog.health import health_poll, health_roll_up, instances_mark, uptime
from portal.catalog.models import HealthCheck, HealthHour, Instance, Service
from portal.catalog.services import instance_heartbeat
from tests.servers import LocalServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def hanging() -> Iterator[str]:
    """Accepts connections (the kernel does, into the backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/health/ready"
    finally:
        listener.close()


def _service(slug: str, health_url: str = "") -> Service:
    return Service.objects.create(slug=slug, display_name=slug, health_url=health_url)


def test_every_due_service_is_checked_at_once_and_a_hanging_one_costs_only_its_own_timeout(settings, hanging):
    # margins wide enough for a loaded CI machine: up answers at once, slow after 0.8 s (< the 1.5 s timeout)
    settings.CATALOG_HEALTH_TIMEOUT = 1.5
    settings.CATALOG_HEALTH_SLOW_MS = 500
    up = LocalServer(lambda seen: (200, {}, b"ok"))
    down = LocalServer(lambda seen: (503, {}, b"database unavailable"))
    slow = LocalServer(lambda seen: (time.sleep(0.8), (200, {}, b"ok"))[1])
    try:
        _service("up", f"{up.url}/health/ready")
        _service("down", f"{down.url}/health/ready")
        _service("slow", f"{slow.url}/health/ready")
        _service("hanging", hanging)
        _service("refused", f"http://127.0.0.1:{free_port()}/health/ready")
        _service("no-url")

        began = time.monotonic()
        counts = health_poll()
        elapsed = time.monotonic() - began
    finally:
        for server in (up, down, slow):
            server.stop()

    # checked at once: the whole poll takes about the hanging one's timeout, not the sum
    assert counts["checked"] == 5
    assert elapsed < 1.5 + 0.8, elapsed
    latest = {c.service.slug: c for c in HealthCheck.objects.select_related("service")}
    assert set(latest) == {"up", "down", "slow", "hanging", "refused"}
    assert (latest["up"].status, latest["up"].http_status) == ("passing", 200)
    assert latest["up"].latency_ms < 500
    assert (latest["up"].error, latest["slow"].error) == ("", "")
    assert (latest["down"].status, latest["down"].http_status, latest["down"].error) == ("critical", 503, "status")
    assert (latest["slow"].status, latest["slow"].http_status) == ("warning", 200)
    assert latest["slow"].latency_ms >= 800
    assert (latest["hanging"].status, latest["hanging"].error) == ("critical", "timeout")
    assert latest["hanging"].latency_ms >= 1400
    assert (latest["refused"].status, latest["refused"].error) == ("critical", "refused")
    assert dict(Service.objects.values_list("slug", "health_status")) == {
        "up": "passing",
        "down": "critical",
        "slow": "warning",
        "hanging": "critical",
        "refused": "critical",
        "no-url": "",
    }
    # each service is due again only after its own interval
    assert health_poll() == {"checked": 0}
    Service.objects.filter(slug="up").update(
        last_checked_at=timezone.now() - dt.timedelta(seconds=16),
        health_url="http://127.0.0.1:1/",  # refused
    )
    assert health_poll()["checked"] == 1
    assert Service.objects.get(slug="up").health_status == "critical"


def test_instances_that_stop_heartbeating_turn_critical_then_gone_and_come_back(settings):
    settings.CATALOG_HEARTBEAT_SECONDS = 10
    settings.CATALOG_INSTANCE_GONE_SECONDS = 3600
    _service("ledger")
    for name in ("fresh", "quiet", "long-gone"):
        instance_heartbeat(slug="ledger", instance=name, client_id=None)
    now = timezone.now()
    Instance.objects.filter(instance="quiet").update(last_heartbeat=now - dt.timedelta(seconds=31))
    Instance.objects.filter(instance="long-gone").update(last_heartbeat=now - dt.timedelta(hours=2))

    assert instances_mark() == {"critical": 1, "gone": 1}

    assert dict(Instance.objects.values_list("instance", "status")) == {
        "fresh": "passing",
        "quiet": "critical",
        "long-gone": "gone",
    }
    assert instances_mark() == {"critical": 0, "gone": 0}
    # a heartbeat brings it back; nothing was deleted
    instance_heartbeat(slug="ledger", instance="long-gone", client_id=None)
    assert Instance.objects.get(instance="long-gone").status == "passing"
    assert Instance.objects.count() == 3


def _checks(service: Service, now: dt.datetime, spec: list[tuple[dt.timedelta, str]]) -> None:
    HealthCheck.objects.bulk_create(
        [HealthCheck(service=service, status=status, latency_ms=10, checked_at=now - ago) for ago, status in spec]
    )


def test_uptime_over_each_window_survives_rolling_old_checks_into_hours(settings):
    settings.CATALOG_HEALTH_RAW_DAYS = 2
    now = timezone.now()
    ledger, quiet = _service("ledger"), _service("quiet")
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    # last 24 h: 3 passing, 1 critical (75 %); 3 days ago: 1 warning, 3 critical; 10 days ago: 2 critical
    _checks(ledger, now, [(hour, "passing"), (2 * hour, "passing"), (3 * hour, "passing"), (4 * hour, "critical")])
    _checks(ledger, now, [(3 * day, "warning"), (3 * day + hour, "critical"), (3 * day + 2 * hour, "critical")])
    _checks(ledger, now, [(3 * day + 3 * hour, "critical"), (10 * day, "critical"), (10 * day + hour, "critical")])
    before = uptime([ledger, quiet], now=now)
    assert before[ledger.id] == {"24h": 75.0, "7d": 50.0, "30d": 40.0}
    assert before[quiet.id] == {"24h": None, "7d": None, "30d": None}

    hours = health_roll_up(now=now)

    assert hours == 6  # the six hours the old checks fell in
    assert HealthCheck.objects.filter(service=ledger).count() == 4  # the last 24 h stay single
    assert uptime([ledger, quiet], now=now) == before
    assert health_roll_up(now=now) == 0  # nothing left to fold: nothing counted twice
    assert sum(h.critical for h in HealthHour.objects.all()) == 5


def test_the_api_shows_health_and_uptime(settings, mint_token):
    from django.test import Client

    from tests.portal.factories import machine_client

    service = _service("ledger", "http://127.0.0.1:1/health")
    _checks(service, timezone.now(), [(dt.timedelta(minutes=1), "passing"), (dt.timedelta(minutes=2), "critical")])
    Service.objects.filter(id=service.id).update(health_status="passing", last_checked_at=timezone.now())
    reader = machine_client(audiences=["portal"], scopes=["portal:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(reader, 'portal', scope='portal:read')}")

    body = api.get("/api/v1/catalog/services/ledger").json()

    assert body["health_status"] == "passing"
    assert body["uptime"] == {"24h": 50.0, "7d": 50.0, "30d": 50.0}
    assert api.get("/api/v1/catalog/services").json()[0]["uptime"]["24h"] == 50.0
