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
from portal.catalog.health import health_poll, instances_mark
from portal.catalog.models import HealthCheck, Instance, Service
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
    settings.CATALOG_HEALTH_TIMEOUT = 1.0
    settings.CATALOG_HEALTH_SLOW_MS = 200
    up = LocalServer(lambda seen: (200, {}, b"ok"))
    down = LocalServer(lambda seen: (503, {}, b"database unavailable"))
    slow = LocalServer(lambda seen: (time.sleep(0.4), (200, {}, b"ok"))[1])
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
    assert elapsed < 1.0 + 0.8, elapsed
    latest = {c.service.slug: c for c in HealthCheck.objects.select_related("service")}
    assert set(latest) == {"up", "down", "slow", "hanging", "refused"}
    assert (latest["up"].status, latest["up"].http_status) == ("passing", 200)
    assert latest["up"].latency_ms < 500
    assert (latest["down"].status, latest["down"].http_status) == ("critical", 503)
    assert "database unavailable" in latest["down"].detail
    assert (latest["slow"].status, latest["slow"].detail) == ("warning", "slow")
    assert (latest["hanging"].status, latest["hanging"].detail) == ("critical", "timed out")
    assert latest["hanging"].latency_ms >= 900
    assert latest["refused"].status == "critical"
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
