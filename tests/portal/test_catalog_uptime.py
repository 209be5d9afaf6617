"""Honest uptime: measured only over the time health checks covered, with that time shown. A check covers the time
until its service's next check, at most ``CATALOG_UPTIME_GAP_INTERVALS`` (3) check intervals; time no check covers
(the stack stopped, a long gap) is unknown, neither up nor down.

The cases the issue names: five minutes after a fresh start (not "30-day uptime 100 %"), the whole stack stopped
and started again (the stopped hours are not up), a long gap between checks; and a down period, and old checks
rolled up into hours, which keep their covered time."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from portal.catalog.health import health_roll_up, uptime_detail
from portal.catalog.models import HealthCheck, HealthHour, Service
from portal.catalog.pages.common import ObservedUptime
from tests.portal.factories import machine_client, user_with_role

pytestmark = pytest.mark.django_db

INTERVAL = 15  # seconds between a service's checks
DAY = 86400.0


@pytest.fixture
def ledger(settings) -> Service:
    settings.CATALOG_UPTIME_GAP_INTERVALS = 3
    return Service.objects.create(
        slug="ledger", display_name="Ledger", health_interval_seconds=INTERVAL, base_url="https://ledger.example"
    )


def _run(service: Service, *, start: dt.datetime, seconds: int, status: str = "passing") -> None:
    """A check every ``INTERVAL`` seconds from ``start`` for ``seconds`` (the poller running)."""
    HealthCheck.objects.bulk_create(
        [
            HealthCheck(service=service, status=status, checked_at=start + dt.timedelta(seconds=s))
            for s in range(0, seconds, INTERVAL)
        ]
    )


def _uptime(service: Service, now: dt.datetime) -> dict[str, ObservedUptime]:
    return {w: ObservedUptime(u) for w, u in uptime_detail([service], now=now)[service.id].items()}


def test_five_minutes_after_a_fresh_start_it_says_five_minutes_were_observed(ledger):
    # given: the stack started 5 minutes ago, its API passing every check since
    now = timezone.now()
    _run(ledger, start=now - dt.timedelta(minutes=5), seconds=300)

    # when
    figures = _uptime(ledger, now)

    # then: 100 % of 5 minutes, not of 30 days
    month = figures["30d"]
    assert month.percent == 100.0
    assert month.figure.observed_seconds == pytest.approx(300, abs=0.5)
    assert month.figure.coverage == pytest.approx(100 * 300 / (30 * DAY), abs=0.001)
    assert month.sentence == "100.00 % of the 5 minutes observed in the last 30 days"
    assert figures["24h"].sentence == "100.00 % of the 5 minutes observed in the last 24 hours"


def test_the_hours_the_stack_was_stopped_are_unknown_not_up(ledger):
    # given: 10 minutes up, the last check before the stop critical (it was going down); stopped for 2 hours;
    # started again 5 minutes ago
    now = timezone.now()
    first = now - dt.timedelta(hours=2, minutes=15)
    _run(ledger, start=first, seconds=585)
    HealthCheck.objects.create(service=ledger, status="critical", checked_at=first + dt.timedelta(seconds=585))
    _run(ledger, start=now - dt.timedelta(minutes=5), seconds=300)

    # when
    day = _uptime(ledger, now)["24h"]

    # then: observed = the 15 minutes it ran (the critical check covers 3 intervals, not the 2 hours after it)
    assert day.figure.observed_seconds == pytest.approx(585 + 3 * INTERVAL + 300, abs=0.5)
    assert day.figure.up_seconds == pytest.approx(585 + 300, abs=0.5)
    assert day.percent == pytest.approx(100 * 885 / 930, abs=0.01)
    assert day.sentence == "95.16 % of the 16 minutes observed in the last 24 hours"
    assert day.figure.coverage < 1.1  # of 24 hours: the stopped 2 hours are not in it, as up or as down


def test_a_gap_longer_than_three_check_intervals_is_unknown(ledger):
    now = timezone.now()
    _run(ledger, start=now - dt.timedelta(minutes=20), seconds=60)  # 4 checks, then 10 minutes of nothing
    _run(ledger, start=now - dt.timedelta(minutes=9), seconds=60)

    week = _uptime(ledger, now)["7d"].figure

    # 3 spans of 15 s + the one before the gap (capped at 45 s) + 3 spans of 15 s + the latest (45 s, capped)
    assert week.observed_seconds == pytest.approx(45 + 45 + 45 + 45, abs=0.5)
    assert week.up_seconds == week.observed_seconds


def test_checks_at_their_interval_cover_the_time_between_them_and_down_time_counts_as_down(ledger):
    now = timezone.now()
    _run(ledger, start=now - dt.timedelta(minutes=30), seconds=900)
    _run(ledger, start=now - dt.timedelta(minutes=15), seconds=300, status="critical")
    _run(ledger, start=now - dt.timedelta(minutes=10), seconds=600)

    day = _uptime(ledger, now)["24h"]

    assert day.figure.observed_seconds == pytest.approx(1800, abs=0.5)
    assert day.percent == pytest.approx(100 * 1500 / 1800, abs=0.01)  # the 5 minutes down, of 30 observed


def test_nothing_checked_is_unknown_uptime_not_100(ledger):
    figures = _uptime(ledger, timezone.now())

    assert {w: f.percent for w, f in figures.items()} == {"24h": None, "7d": None, "30d": None}
    assert figures["30d"].sentence == "Uptime unknown: nothing observed in the last 30 days."
    assert figures["30d"].text == "\u2014"


def test_rolling_old_checks_into_hours_keeps_their_covered_time(ledger, settings):
    settings.CATALOG_HEALTH_RAW_DAYS = 2
    now = timezone.now()
    _run(ledger, start=now - dt.timedelta(days=5), seconds=1800)  # 30 minutes, 5 days ago
    _run(ledger, start=now - dt.timedelta(days=4), seconds=600, status="critical")  # 10 minutes down
    _run(ledger, start=now - dt.timedelta(minutes=5), seconds=300)
    before = uptime_detail([ledger], now=now)[ledger.id]

    assert health_roll_up(now=now) > 0

    after = uptime_detail([ledger], now=now)[ledger.id]
    assert HealthCheck.objects.filter(checked_at__lt=now - dt.timedelta(days=2)).count() == 0
    # each run's last check covers 3 intervals (nothing follows it closely): 1,830 s and 630 s
    assert sum(h.covered_seconds for h in HealthHour.objects.all()) == pytest.approx(1830 + 630, abs=1)
    for window in ("24h", "7d", "30d"):
        assert after[window].observed_seconds == pytest.approx(before[window].observed_seconds, abs=1), window
        assert after[window].up_seconds == pytest.approx(before[window].up_seconds, abs=1), window
    assert after["7d"].percent == pytest.approx(100 * (1830 + 300) / (1830 + 630 + 300), abs=0.05)


def test_the_api_and_the_overview_show_the_observed_time(ledger, mint_token, client):
    now = timezone.now()
    _run(ledger, start=now - dt.timedelta(minutes=5), seconds=300)
    reader = machine_client(audiences=["portal"], scopes=["portal:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(reader, 'portal', scope='portal:read')}")

    v1 = api.get("/api/v1/catalog/services/ledger").json()
    v2 = api.get("/api/v2/catalog/services/ledger").json()
    client.force_login(user_with_role("viewer"))
    page = client.get("/admin/catalog/overview/").content.decode()

    assert v1["uptime"]["30d"] == 100.0
    assert v1["uptime_observed_seconds"]["30d"] == pytest.approx(300, abs=5)
    assert v2["uptime"]["30d"]["percent"] == 100.0
    assert v2["uptime"]["30d"]["observed_seconds"] == pytest.approx(300, abs=5)
    assert v2["uptime"]["30d"]["window_seconds"] == 30 * DAY
    assert "of the 5 minutes observed in the last 30 days" in page, page[page.find('id="service-ledger"') :][:3000]
